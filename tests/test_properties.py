"""Property-based tests: every invariant of spec §5 on random scenes, through the planner and the reference."""
import numpy as np
from hypothesis import HealthCheck, given, settings

from invariants import check_invariants, fingerprint
from scenes import scenes
from ocp_dali import OCPConfig, apply, sample_plan

STATS = {"scenes": 0, "pasted": 0, "exact": 0}


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenes())
def test_invariants_on_random_scenes(scene):
    before = [fingerprint(s) for s in (scene.dst, *scene.sources)]
    dmeta, smetas = scene.metas()
    plan = sample_plan(np.random.default_rng(scene.seed), dmeta, smetas, scene.cfg)
    out = apply(plan, scene.dst, scene.sources)
    counts = check_invariants(out, scene.dst, plan, scene.sources)
    assert [fingerprint(s) for s in (scene.dst, *scene.sources)] == before, "inputs were mutated"
    # pure: the same plan gives the same output
    again = apply(plan, scene.dst, scene.sources)
    assert fingerprint(again) == fingerprint(out)
    # the augmentation did something whenever it placed a paste
    if out.info.get("pasted", 0):
        assert out is not scene.dst and out.pasted.any() or out.info["dropped_pasted"] > 0
    STATS["scenes"] += 1
    STATS["pasted"] += counts["pasted"]
    STATS["exact"] += counts["exact_pixel_check"]


def test_random_scenes_really_paste():
    """Guards the property test against a strategy that never pastes anything."""
    if STATS["scenes"] == 0:
        import pytest

        pytest.skip("run together with test_invariants_on_random_scenes")
    assert STATS["pasted"] > STATS["scenes"] // 2
    assert STATS["exact"] > 0.8 * STATS["scenes"]


@settings(max_examples=100, deadline=None)
@given(scenes())
def test_prob_zero_and_k_zero_return_the_input(scene):
    dmeta, smetas = scene.metas()
    for cfg in (scene.cfg.replace(prob=0.0), OCPConfig(paste_num=(0, 1), basket_size=len(scene.sources))):
        before = fingerprint(scene.dst)
        plan = sample_plan(np.random.default_rng(scene.seed), dmeta, smetas, cfg)
        assert plan.pastes == ()
        out = apply(plan, scene.dst, scene.sources)
        assert out is scene.dst and fingerprint(out) == before


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenes())
def test_plans_survive_packing_into_arrays(scene):
    """Plans travel from the worker processes through DALI as float64 arrays: the round trip is exact."""
    from ocp_dali.wire import pack_plan, unpack_plan

    dmeta, smetas = scene.metas()
    plan = sample_plan(np.random.default_rng(scene.seed), dmeta, smetas, scene.cfg)
    assert unpack_plan(pack_plan(plan)) == plan
