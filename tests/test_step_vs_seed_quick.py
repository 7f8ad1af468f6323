"""``benchmarks/ocp_step_vs_seed.py`` stays runnable without the seed's code: its ocp_dali side times 2 real LSJ'd
samples, its stage profile adds up, and the script skips (exit 0) when no seed source is given."""
import importlib.util
import sys

import numpy as np
import pytest

from conftest import ROOT, data_path


def load_script():
    spec = importlib.util.spec_from_file_location("ocp_step_vs_seed", ROOT / "benchmarks" / "ocp_step_vs_seed.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_ocp_dali_side_times_two_real_samples():
    bench = load_script()
    ann = data_path("coco_mini", "annotations", "person_keypoints_val2017.json")
    samples, metas = bench.lsj_samples(str(ann), str(ann.parents[1] / "val2017"), size=512, limit=2)
    assert len(samples) == 2 and all(s.image.shape == (512, 512, 3) for s in samples)
    pairs = bench.draw_pairs(len(samples), 6)
    assert all(d != s for d, s in pairs)
    side = bench.ocp_dali_side(samples, metas)
    bench.race([side], pairs, warmup=1, progress=False)
    assert len(side.wall) == len(side.cpu) == 6
    q = bench.stats(side.wall)
    assert 0 < q["median"] <= q["p90"] <= q["p99"] <= q["max"] and q["n"] == 6
    out = side.run(0, *pairs[0], timed=False)  # the step's output is a real Sample on the destination's canvas
    assert out.image.shape == samples[pairs[0][0]].image.shape and out.masks.dtype == np.bool_
    prof = bench.stage_profile(side, pairs[:3])
    assert prof["calls"] == 3 and set(bench.STAGES) <= set(prof["ms_per_call"])
    assert sum(prof["ms_per_call"].values()) == pytest.approx(prof["total_ms_per_call"])
    ratios = bench.ratios({"ocp_dali": {k: q for k in ("wall_ms", "cpu_ms")},
                           "seed": {k: dict(q, mean=2 * q["mean"]) for k in ("wall_ms", "cpu_ms")}})
    assert ratios["seed_over_ocp_dali"]["wall_ms"]["mean"] == pytest.approx(2.0)


def test_skips_without_seed_source(tmp_path, capsys):
    bench = load_script()
    assert bench.main(["--seed-src", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 0
    assert "skipped: no seed source" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())
