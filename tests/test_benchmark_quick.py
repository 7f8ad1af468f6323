"""``benchmarks/aug_throughput.py --quick`` runs and writes a JSON whose ratios come from its measured values."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT, data_path

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
    check_race(report, r.stdout)
    assert report["gpu"]["available"] in (True, False) and (report["gpu"]["available"] or report["gpu"]["reason"])


def check_race(report: dict, stdout: str) -> None:
    """The whole-pipeline race: every path per core (with peak RSS; the DALI graph's worker counted) and with one
    pool; ratios from the measured img/s; the table and the bar printed."""
    race = report["pipelines"]
    assert "whole pipelines raced" in stdout and "bar: dali_cpu_visible per core" in stdout
    paths = {"mmdet_copypaste", "ocp_ocp", "dali_cpu_visible", "dali_cpu_all", "ocp_dataset_visible",
             "ocp_dataset_all"}
    assert {row["path"] for row in race["rows"]} == paths == {t["path"] for t in race["table"]}
    per_core = {row["path"]: row for row in race["rows"] if row["workers"] == 0}
    assert set(per_core) == paths and {row["workers"] for row in race["rows"]} == {0, 1}
    for row in race["rows"]:
        assert row["images"] >= 1 and row["img_per_s"] > 0 and row["loadavg_before"] >= 0
        assert row["img_per_s"] == pytest.approx(row["images"] / row["seconds"])
    for p, row in per_core.items():
        assert row["peak_rss_mb"] > 50, p
        assert (row["peak_rss_workers_mb"] > 0) == p.startswith("dali_cpu"), p
    base = per_core["mmdet_copypaste"]["img_per_s"]
    for p in ("dali_cpu_visible", "dali_cpu_all"):
        got = race["ratios_vs_mmdet_per_core"][p]["img_per_s"]
        assert got == pytest.approx(per_core[p]["img_per_s"] / base)
        assert report["summary"][f"ratio_per_core_{p}_vs_mmdet_pipeline_1024"] == got
        assert race["bar"][p]["met"] == (got >= race["bar"][p]["want"])


def test_dali_cpu_profile_parts_add_up(tmp_path):
    """``benchmarks/dali_cpu_profile.py`` on one small batch of real images: every part timed, the stage's parts
    within its total, and the DALI overhead the loader's time beyond the parts."""
    ann = data_path("coco_mini", "annotations", "person_keypoints_val2017.json")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "dali_cpu_profile.py"), "--ann", str(ann),
                        "--images", str(ann.parents[1] / "val2017"), "--size", "256", "--batch-size", "2",
                        "--batches", "1", "--targets", "all", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "dali_cpu_profile_all.json").read_text())
    parts = report["ms_per_img"]
    assert report["images"] == 2 and report["loader_ms_per_img"] > 0
    stage = {k: v for k, v in parts.items() if k.startswith("stage: ")}
    assert {"stage: mask decode (RLE)", "stage: OC&P apply", "stage: LSJ geometry"} <= set(stage)
    assert all(v >= 0 for k, v in stage.items() if k != "stage: rest (python)")
    assert sum(stage.values()) == pytest.approx(parts["stage (total)"])
    top = [k for k in parts if not k.startswith("stage: ") and not k.startswith("DALI overhead")]
    assert sum(parts[k] for k in top) + parts["DALI overhead (loader - parts)"] == pytest.approx(
        report["loader_ms_per_img"])
