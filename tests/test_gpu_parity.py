"""GPU parity: ``apply(..., backend="cupy")`` against the NumPy reference, array for array, on a CUDA GPU.

Runs on a GPU machine (``make test-gpu``); elsewhere the whole module is skipped with the reason. Every array
must be identical, pixels included: the reference is integer arithmetic throughout (Q16 geometry, integer
bilinear weights, integer jitter and feathering) precisely so that the kernels can reproduce it bit for bit.
The same kernels are also checked on the CPU by the emulator (``tests/test_kernels_compile.py``).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from conftest import data_path
from invariants import check_invariants, fingerprint
from scenes import scenes
from test_kernels_compile import assert_same_sample, chained_scene, many_paste_scene, plan_of_scene
from ocp_dali import CocoInstances, OCPConfig, Sample, apply, plan_for


def _gpu_unusable() -> str | None:
    """Why the suite cannot run here, or None when a CUDA device is usable."""
    try:
        import cupy
    except Exception as e:  # pragma: no cover - depends on the machine
        return f"no CUDA GPU: parity suite runs on a GPU machine (make test-gpu) [cupy import failed: {e}]"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA GPU: parity suite runs on a GPU machine (make test-gpu)"
        int(cupy.arange(4).sum())  # a tiny allocation and launch must succeed
    except Exception as e:  # pragma: no cover - depends on the machine
        return f"no CUDA GPU: parity suite runs on a GPU machine (make test-gpu) [{type(e).__name__}: {e}]"
    return None


UNUSABLE = _gpu_unusable()
if UNUSABLE and os.environ.get("OCP_REQUIRE_GPU") == "1":  # make test-gpu: skipping would hide a broken setup
    pytest.fail(f"OCP_REQUIRE_GPU=1 but {UNUSABLE}", pytrace=False)
pytestmark = pytest.mark.skipif(UNUSABLE is not None, reason=UNUSABLE or "")
GPU_EXAMPLES = int(os.environ.get("OCP_GPU_EXAMPLES", "2000"))

SETS = [
    ("coco_mini", "person_keypoints_train2017.json", "train2017"),
    ("coco_mini", "person_keypoints_val2017.json", "val2017"),
    ("coco_tiny", "instances_train2017.json", "train2017"),
    ("coco_tiny", "instances_val2017.json", "val2017"),
]
CFGS = {
    "ocp": OCPConfig.ocp(prob=1.0),
    "basic": OCPConfig.basic(prob=1.0),
    "simple": OCPConfig.simple(),
    "ocp-blend2": OCPConfig.ocp(prob=1.0, blend_sigma=2.0),
}


def to_numpy(sample: Sample) -> Sample:
    """A copy of a (CuPy) Sample with every array on the host."""
    import cupy

    return sample.map_arrays(cupy.asnumpy)


def to_device(sample: Sample) -> Sample:
    """A copy of a NumPy Sample with every array uploaded (the GPU backend's native input)."""
    import cupy

    return sample.map_arrays(cupy.asarray)


def check_gpu(plan, dst, sources, where=""):
    """The cupy backend equals the reference exactly, satisfies every invariant, and mutates nothing."""
    import cupy

    before = [fingerprint(s) for s in [dst] + [s for s in sources if s is not None]]
    ref = apply(plan, dst, sources, backend="numpy")
    out = apply(plan, dst, sources, backend="cupy")
    if ref is dst:
        assert out is dst, f"{where}an empty plan must return the destination itself"
        return ref
    assert isinstance(out.image, cupy.ndarray) and isinstance(out.masks, cupy.ndarray)
    host = to_numpy(out)
    assert_same_sample(ref, host, where)
    check_invariants(host, dst, plan, sources)
    assert [fingerprint(s) for s in [dst] + [s for s in sources if s is not None]] == before, "inputs mutated"
    return ref


# ---------------------------------------------------------------- (a) random scenes


@settings(max_examples=GPU_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenes())
def test_gpu_matches_reference_on_random_scenes(scene):
    check_gpu(plan_of_scene(scene), scene.dst, scene.sources)


@pytest.mark.parametrize("seed", range(4))
def test_gpu_matches_reference_with_more_than_32_pastes(seed):
    plan, dst, sources = many_paste_scene(seed, blend=[0.0, 1.5][seed % 2], keypoints=seed < 2)
    assert len(plan.pastes) > 32
    check_gpu(plan, dst, sources)


@pytest.mark.parametrize("stale_targets", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_gpu_matches_reference_on_outputs_of_apply(seed, stale_targets):
    plan, dst, sources = chained_scene(seed, stale_targets)
    ref = apply(plan, dst, sources)
    if ref is not dst:
        assert_same_sample(ref, to_numpy(apply(plan, dst, sources, backend="cupy")))


# ---------------------------------------------------------------- (b) real data


def coco(name, ann, imgs):
    return CocoInstances(data_path(name, "annotations", ann), data_path(name, imgs), classes=["person"])


@pytest.mark.parametrize("cfg_name", list(CFGS))
@pytest.mark.parametrize("name, ann, imgs", SETS)
def test_gpu_matches_reference_on_every_real_image(name, ann, imgs, cfg_name):
    ds = coco(name, ann, imgs)
    cfg = CFGS[cfg_name]
    changed = 0
    for i in range(len(ds)):
        plan = plan_for(ds, i, seed=i, cfg=cfg)
        dst = ds.load(i)
        sources = [ds.load(plan.basket[b]) if b in plan.used_sources else None for b in range(len(plan.basket))]
        ref = check_gpu(plan, dst, sources, f"{name}/{imgs} #{i} {cfg_name}: ")
        changed += ref is not dst
    assert changed > len(ds) // 5, f"only {changed} of {len(ds)} images were augmented"


def test_gpu_accepts_device_inputs():
    ds = coco(*SETS[0])
    for i in range(0, len(ds), 9):
        plan = plan_for(ds, i, seed=i, cfg=CFGS["ocp-blend2"])
        dst = ds.load(i)
        sources = [ds.load(plan.basket[b]) if b in plan.used_sources else None for b in range(len(plan.basket))]
        ref = apply(plan, dst, sources)
        dev_sources = [None if s is None else to_device(s) for s in sources]
        out = apply(plan, to_device(dst), dev_sources, backend="cupy")
        if ref is dst:
            continue
        assert_same_sample(ref, to_numpy(out), f"#{i} device inputs: ")


def test_gpu_benchmark_sized_scene():
    """One 1024x1024 image with 10 people and 10 pastes (the benchmark's setting) is exact too."""
    from ocp_dali import SyntheticScenes

    ds = SyntheticScenes(num_images=8, image_size=(1024, 1024), max_people=10)
    cfg = OCPConfig.ocp(prob=1.0, paste_num=(10, 11), basket_size=3, min_size_paste=0.0)
    for i in range(2):
        plan = plan_for(ds, i, seed=i, cfg=cfg)
        dst = ds.load(i)
        sources = [ds.load(plan.basket[b]) if b in plan.used_sources else None for b in range(len(plan.basket))]
        check_gpu(plan, dst, sources, f"synthetic 1024 #{i}: ")


# ---------------------------------------------------------------- (c) batched == loop of singles


@pytest.mark.parametrize("cfg_name", ["ocp", "ocp-blend2", "simple"])
def test_gpu_batch_equals_loop_of_singles(cfg_name):
    from ocp_dali.kernels.apply import apply_cupy, apply_cupy_batch

    ds = coco(*SETS[0])
    plans, dsts, srcs = [], [], []
    for i in range(16):
        cfg = CFGS[cfg_name] if i % 5 else CFGS[cfg_name].replace(prob=0.0)  # some empty plans in the batch
        plan = plan_for(ds, i, seed=100 + i, cfg=cfg)
        plans.append(plan)
        dsts.append(ds.load(i))
        srcs.append([ds.load(plan.basket[b]) if b in plan.used_sources else None for b in range(len(plan.basket))])
    batch = apply_cupy_batch(plans, dsts, srcs)
    for i, (plan, dst, s, got) in enumerate(zip(plans, dsts, srcs, batch)):
        if not plan.pastes:
            assert got is dst
            continue
        single = apply_cupy(plan, dst, s)
        assert_same_sample(to_numpy(single), to_numpy(got), f"batch item {i}: ")
        assert_same_sample(apply(plan, dst, s), to_numpy(got), f"batch item {i} vs reference: ")


# ---------------------------------------------------------------- (d) RLE decode


@pytest.mark.parametrize("name, ann", [(s, f"instances_{part}2017.json") for s in ("coco_mini", "coco_tiny")
                                       for part in ("train", "val")])
def test_gpu_rle_decode_equals_pycocotools_on_every_person_mask(name, ann):
    import cupy
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    from ocp_dali.kernels.rle import decode_rles

    api = COCO(str(data_path(name, "annotations", ann)))
    person = api.getCatIds(catNms=["person"])
    anns = [a for a in api.dataset["annotations"] if a["category_id"] in person]
    assert anns
    rles = [api.annToRLE(a) for a in anns]  # polygons, compressed and uncompressed RLE (crowd) alike
    got = decode_rles(rles)
    for a, r, g in zip(anns, rles, got):
        ref = mask_utils.decode(r).astype(bool)
        g = cupy.asnumpy(g)
        inter, union = np.logical_and(g, ref).sum(), np.logical_or(g, ref).sum()
        assert union == 0 or inter / union >= 0.995, f"ann {a['id']}: IoU {inter / union}"
        assert np.array_equal(g, ref), f"ann {a['id']}: decode differs from pycocotools"
