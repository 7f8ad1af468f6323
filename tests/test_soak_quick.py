"""``benchmarks/soak.py --quick`` runs the DALI CPU graph over a few epochs and writes a JSON whose sample counts and
growth figures follow from its own series (no thresholds: 200 samples are too few for the 5 % criterion)."""
import json
import math
import statistics
import subprocess
import sys

import pytest

from conftest import ROOT

pytest.importorskip("nvidia.dali", reason="nvidia-dali is not installed")


def test_quick_soak_writes_consistent_json(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--quick", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "total RSS growth" in r.stdout
    rep = json.loads((tmp_path / "soak_cpu.json").read_text())
    assert (tmp_path / "soak_cpu.png").stat().st_size > 10_000
    for key in ("command", "machine", "versions", "settings", "samples", "stats", "per_epoch", "checks", "wall_s",
                "baseline", "growth", "series", "pass"):
        assert key in rep, key
    assert "--quick" in rep["command"] and rep["machine"]["cores"] >= 1
    st = rep["settings"]
    assert st["quick"] and st["device"] == "cpu" and st["py_num_workers"] == 2

    # nothing silently lost: the loader's count, the script's count and the epochs agree with the request
    want = st["samples"]
    assert rep["samples"]["requested"] == want == rep["samples"]["seen"] == rep["stats"]["samples"]
    assert sum(e["samples"] for e in rep["per_epoch"]) == want and len(rep["per_epoch"]) == st["epochs"]
    assert all(e["each_index_once"] for e in rep["per_epoch"] if e["complete"])
    assert all(rep["checks"].values())
    assert rep["stats"]["pasted"] > 0

    # the series: sample counts strictly increasing up to the total, every RSS positive, workers present
    ser = rep["series"]
    assert len(ser) >= 3
    done = [p["samples_done"] for p in ser]
    assert all(a < b for a, b in zip(done, done[1:])) and done[-1] == want
    for p in ser:
        assert p["main_rss_mb"] > 0 and p["workers_rss_mb"] > 0 and p["processes"] >= 1 + st["py_num_workers"]
        assert p["total_rss_mb"] == pytest.approx(p["main_rss_mb"] + p["workers_rss_mb"])
        assert p["elapsed_s"] >= 0
    assert rep["before_pipeline"]["main_rss_mb"] > 0

    # the growth figures, recomputed from the series
    g = rep["growth"]
    b = next(i for i, p in enumerate(ser) if p["samples_done"] >= st["warmup_samples"])
    base, last = ser[b], ser[-1]
    assert g["baseline_index"] == b == rep["baseline"]["index"]
    assert rep["baseline"]["total_rss_mb"] == base["total_rss_mb"] == g["baseline_total_rss_mb"]
    assert g["final_total_rss_mb"] == last["total_rss_mb"]
    for k in ("total", "main", "workers"):
        assert math.isfinite(g[k])
        assert g[k] == pytest.approx(last[f"{k}_rss_mb"] / base[f"{k}_rss_mb"] - 1.0)
    assert g["peak_total_rss_mb"] == max(p["total_rss_mb"] for p in ser)
    assert g["peak_main_rss_mb"] == max(p["main_rss_mb"] for p in ser)
    w, n = g["windowed"], st["warmup_samples"]
    first = [p["total_rss_mb"] for p in ser[b:] if p["samples_done"] < base["samples_done"] + n]
    tail = [p["total_rss_mb"] for p in ser[b:] if p["samples_done"] > last["samples_done"] - n]
    assert w["growth"] == pytest.approx(statistics.median(tail) / statistics.median(first) - 1.0)
    checks_ok = all(rep["checks"].values())
    assert rep["pass"] == (g["total"] < st["limit"] and checks_ok)
