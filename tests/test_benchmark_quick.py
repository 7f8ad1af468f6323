"""``benchmarks/aug_throughput.py --quick`` runs and writes a JSON whose ratios come from its measured values."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT

pytest.importorskip("mmdet", reason="mmdet is not installed")


def test_quick_benchmark_writes_consistent_json(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "aug_throughput.py"), "--quick", "--out",
                        str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "speedup vs mmdet CopyPaste (CPU, per core, 1024², simple mode):" in r.stdout
    report = json.loads((tmp_path / "aug_throughput_cpu_quick.json").read_text())
    assert (tmp_path / "aug_throughput_cpu_quick.png").stat().st_size > 10_000
    for key in ("command", "machine", "device", "versions", "settings", "results", "gpu", "summary"):
        assert key in report, key
    assert "--quick" in report["command"] and report["machine"]["cores"] >= 1
    paths = {row["path"] for row in report["results"]}
    assert paths == {"mmdet_copypaste", "ocp_simple", "ocp_ocp"}
    per_core = {row["path"]: row for row in report["results"] if row["workers"] == 0}
    for row in per_core.values():
        for key in ("step_ms", "pipeline_ms"):
            q = row[key]
            assert 0 < q["p25"] <= q["median"] <= q["p75"] and q["n"] >= 1
        assert row["peak_rss_mb"] > 50
    pools = [row for row in report["results"] if row["workers"] > 0]
    assert pools and all(row["img_per_s"]["median"] > 0 for row in pools)
    s = report["summary"]
    want = per_core["mmdet_copypaste"]["step_ms"]["median"] / per_core["ocp_simple"]["step_ms"]["median"]
    assert s["speedup_step_ocp_simple_vs_mmdet_1024"] == pytest.approx(want)
    want = per_core["mmdet_copypaste"]["pipeline_ms"]["median"] / per_core["ocp_simple"]["pipeline_ms"]["median"]
    assert s["speedup_pipeline_ocp_simple_vs_mmdet_1024"] == pytest.approx(want)
    eff = s["scaling_efficiency_ocp_simple"]
    one = [r for r in pools if r["path"] == "ocp_simple" and r["workers"] == 1][0]["img_per_s"]["median"]
    two = [r for r in pools if r["path"] == "ocp_simple" and r["workers"] == 2][0]["img_per_s"]["median"]
    assert eff["1"] == pytest.approx(1.0) and eff["2"] == pytest.approx(two / (2 * one))
    assert report["gpu"]["available"] in (True, False) and (report["gpu"]["available"] or report["gpu"]["reason"])
