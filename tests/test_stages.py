"""Parity one stage at a time: the reference's stages (``reference.paste_window``, ``warp_paste``, ``paste_alpha``)
against the same stages of the GPU backend run by the kernel emulator (``ApplyBatch`` stopped after "feather"),
and the contracts every stage relies on: ``PastePlan.check``, the keypoint mapper, ``Sample.info`` counts."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from scenes import random_sample, scenes
from ocp_dali import OCPConfig, apply, plan_for, sample_plan
from ocp_dali.photometric import jitter_image
from ocp_dali.plan import JITTER_RANGES, ImageMeta, PastePlan
from ocp_dali.reference import apply_numpy, paste_alpha, paste_window, warp_paste
from ocp_dali.sample import COUNTS, Sample

emulate = pytest.importorskip("ocp_dali.kernels.emulate")
needs_cxx = pytest.mark.skipif(emulate.compiler() is None, reason="no C++ compiler for the kernel emulator")


def warped_batch(plans, dsts, sources):
    """The emulated GPU batch stopped after its "feather" stage."""
    from ocp_dali.kernels.apply import ApplyBatch

    batch = ApplyBatch(emulate.EmulatedBackend(), plans, dsts, sources)
    batch.pack()
    batch.allocate()
    batch.jitter()
    batch.warp()
    batch.feather()
    return batch


def assert_same_windows(plans, dsts, sources) -> int:
    """Every paste's window, mask, pixels (where the mask is set) and alpha equal on both sides; returns how many
    non-empty windows were compared."""
    active = [i for i, p in enumerate(plans) if p.pastes]
    if not active:
        return 0
    batch = warped_batch([plans[i] for i in active], [dsts[i] for i in active], [sources[i] for i in active])
    q, compared = 0, 0
    for i in active:
        plan, dst = plans[i], dsts[i]
        for t, op in enumerate(plan.pastes):
            window = paste_window(op, dst.height, dst.width)
            mask, pix, alpha = batch.window(q)
            q += 1
            wx0, wy0, wx1, wy1 = window
            if wx1 <= wx0 or wy1 <= wy0:
                assert mask.size == 0, f"paste {t}: empty window, the GPU warps {mask.shape}"
                continue
            ref_mask, ref_pix = warp_paste(sources[i][op.source], op, window)
            assert np.array_equal(mask, ref_mask), f"sample {i} paste {t}: warped masks differ"
            assert np.array_equal(pix[ref_mask], ref_pix[ref_mask]), f"sample {i} paste {t}: warped pixels differ"
            if plan.blend_sigma > 0:
                ref_alpha = paste_alpha(ref_mask, plan.blend_sigma, window, dst.height, dst.width)
                assert np.array_equal(alpha, ref_alpha), f"sample {i} paste {t}: alpha differs"
            compared += 1
    return compared


@needs_cxx
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenes())
def test_warp_and_feather_stages_match_the_emulated_kernels_on_random_scenes(scene):
    dmeta, smetas = scene.metas()
    plan = sample_plan(np.random.default_rng(scene.seed), dmeta, smetas, scene.cfg)
    assert_same_windows([plan], [scene.dst], [scene.sources])


@needs_cxx
def test_warp_and_feather_stages_match_the_emulated_kernels_on_real_images(coco_mini_train):
    ds = coco_mini_train
    plans, dsts, sources = [], [], []
    for i in range(min(len(ds), 10)):
        cfg = OCPConfig.ocp(prob=1.0, basket_size=3, paste_num=(2, 5), min_size_paste=0.0,
                            blend_sigma=[0.0, 2.0][i % 2])
        plan = plan_for(ds, i, seed=i, cfg=cfg)
        plans.append(plan)
        dsts.append(ds.load(i))
        sources.append([ds.load(plan.basket[b]) if b in plan.used_sources else None
                        for b in range(len(plan.basket))])
    assert assert_same_windows(plans, dsts, sources) >= 10


def assert_same_jittered_crops(plans, dsts, sources) -> int:
    """Every jittered paste's whole crop (border included) after the emulated "jitter" stage equals
    ``jitter_image`` bit for bit; returns how many crops were compared."""
    from ocp_dali.kernels.apply import PASTE_FIELDS, ApplyBatch

    batch = ApplyBatch(emulate.EmulatedBackend(), plans, dsts, sources)
    batch.pack()
    batch.allocate()
    batch.jitter()
    jit = np.asarray(batch.buf.jit_b)
    ops = [(src_list, op) for plan, src_list in zip(plans, sources) for op in plan.pastes]
    compared = 0
    for row, (src_list, op) in zip(batch.pastes_np, ops):
        if op.jitter is None:
            continue
        x0, y0, x1, y1 = op.src_box
        off = int(row[PASTE_FIELDS.index("jit_off")])
        got = jit[off:off + (y1 - y0) * (x1 - x0) * 3].reshape(y1 - y0, x1 - x0, 3)
        want = jitter_image(src_list[op.source].image[y0:y1, x0:x1], op.jitter)
        assert np.array_equal(got, want), f"paste {op.src_box} jitter {op.jitter}: crops differ"
        compared += 1
    return compared


def with_jitter(plan: PastePlan, rng: np.random.Generator) -> PastePlan:
    """``plan`` with every paste jittered, factors drawn from the seed's ranges (colour 0.9 and 1.1 included)."""
    return dataclasses.replace(plan, pastes=tuple(
        dataclasses.replace(op, jitter=tuple(int(rng.integers(lo, hi)) for lo, hi in JITTER_RANGES))
        for op in plan.pastes))


@needs_cxx
def test_jitter_stage_equals_jitter_image_on_whole_crops(coco_mini_train):
    """Real person crops (and thin synthetic ones, 1 and 2 pixels wide or high): the emulated kernels' jittered
    crops equal the NumPy reference everywhere, the border the sharpness filter reflects included."""
    ds, rng = coco_mini_train, np.random.default_rng(0)
    plans, dsts, sources = [], [], []
    for i in range(min(len(ds), 6)):
        cfg = OCPConfig.ocp(prob=1.0, basket_size=3, paste_num=(2, 5), min_size_paste=0.0)
        plan = with_jitter(plan_for(ds, i, seed=i, cfg=cfg), rng)
        plans.append(plan)
        dsts.append(ds.load(i))
        sources.append([ds.load(plan.basket[b]) if b in plan.used_sources else None
                        for b in range(len(plan.basket))])
    assert assert_same_jittered_crops(plans, dsts, sources) >= 10
    dst = random_sample(rng, 30, 34, 3, False, 0)
    src = random_sample(rng, 28, 31, 4, False, 1)
    plan = sample_plan(rng, ImageMeta.of_sample(dst), [ImageMeta.of_sample(src, 1)],
                       OCPConfig.ocp(prob=1.0, paste_num=(3, 5), min_size_paste=0.0))
    thin = [(0, 0, 1, 1), (3, 4, 4, 9), (2, 2, 9, 4), (5, 1, 7, 2)]  # 1x1, 1 wide, 2 high, 2x1
    ops = [dataclasses.replace(op, src_box=box) for op, box in zip(plan.pastes, thin)]
    plan = with_jitter(dataclasses.replace(plan, pastes=tuple(ops)), rng)
    assert assert_same_jittered_crops([plan], [dst], [[src]]) == len(ops)


# ---------------------------------------------------------------- PastePlan.check: one validation, both backends


def _scene(seed: int = 0):
    rng = np.random.default_rng(seed)
    dst = random_sample(rng, 30, 34, 3, False, 0)
    src = random_sample(rng, 28, 31, 4, False, 1)
    cfg = OCPConfig.ocp(prob=1.0, paste_num=(3, 5), min_size_paste=0.0)
    plan = sample_plan(rng, ImageMeta.of_sample(dst), [ImageMeta.of_sample(src, 1)], cfg)
    assert plan.pastes
    return plan, dst, src


def _bad_inputs():
    plan, dst, src = _scene()
    op = plan.pastes[0]
    small = random_sample(np.random.default_rng(1), 6, 6, 6, False, 2)  # instance rows exist, the crop does not fit
    few = random_sample(np.random.default_rng(2), 28, 31, 0, False, 3)
    return [
        (dataclasses.replace(plan, height=10, width=10), dst, [src], "plan made for 10x10, image is 34x30"),
        (plan, dst, [], "plan paste 0 reads basket position 0, but no source sample was given"),
        (plan, dst, [None], "plan paste 0 reads basket position 0, but no source sample was given"),
        (plan, dst, [few], f"scene-3: plan names instance {op.instance}, it has 0"),
        (plan, dst, [small], f"scene-2: paste 0 crops {op.src_box}, outside the 6x6 image"),
    ]


@pytest.mark.parametrize("case", range(5))
def test_plan_check_raises_the_same_message_on_every_backend(case):
    plan, dst, srcs, message = _bad_inputs()[case]
    with pytest.raises(ValueError) as ref:
        apply_numpy(plan, dst, srcs)
    assert message in str(ref.value)
    with pytest.raises(ValueError) as direct:
        plan.check(dst, srcs)
    assert str(direct.value) == str(ref.value)
    if emulate.compiler() is not None:
        from ocp_dali.kernels.apply import apply_cupy

        with pytest.raises(ValueError) as gpu:
            apply_cupy(plan, dst, srcs, backend=emulate.EmulatedBackend())
        assert str(gpu.value) == str(ref.value)


def test_plan_check_passes_what_apply_accepts():
    plan, dst, src = _scene(3)
    assert plan.check(dst, [src]) is None
    PastePlan(dst.height, dst.width).check(dst, [])  # nothing to paste: only the size is checked


# ---------------------------------------------------------------- keypoints: one mapper


def test_one_paste_and_a_batch_of_pastes_map_keypoints_to_the_same_bits():
    from ocp_dali.keypoints import map_paste_keypoints, paste_order
    from ocp_dali.reference import paste_keypoints

    rng = np.random.default_rng(11)
    dst = random_sample(rng, 40, 44, 2, True, 0)
    srcs = [random_sample(rng, 36, 30, 6, True, 1)]
    cfg = OCPConfig.ocp(prob=1.0, paste_num=(6, 9), min_size_paste=0.0)
    flip = (0, 2, 1, 4, 3)
    plan = sample_plan(rng, ImageMeta.of_sample(dst, 0, flip), [ImageMeta.of_sample(srcs[0], 1, flip)], cfg)
    ops = plan.pastes
    kps = np.stack([srcs[0].keypoints[op.instance] for op in ops])
    batch = map_paste_keypoints(kps, np.array([op.geometry.fwd for op in ops]),
                                np.array([op.src_box[:2] for op in ops]), np.array([op.offset for op in ops]),
                                np.stack([paste_order(op.flip, flip, 5) for op in ops]),
                                np.tile([dst.width, dst.height], (len(ops), 1)))
    for op, kp, got in zip(ops, kps, batch):
        one = paste_keypoints(kp, op, flip, dst.height, dst.width)
        assert one.dtype == np.float32 and np.array_equal(one.view(np.uint32), got.view(np.uint32))


def test_paste_order_rejects_a_flip_index_that_does_not_fit():
    from ocp_dali.keypoints import paste_order

    assert paste_order(False, None, 3).tolist() == [0, 1, 2]
    assert paste_order(True, (1, 0, 2), 3).tolist() == [1, 0, 2]
    with pytest.raises(ValueError, match="no keypoint flip_index"):
        paste_order(True, None, 0)
    for bad in [(1, 0), (0, 1, 2, 3), (0, 1, 3)]:
        with pytest.raises(IndexError):
            paste_order(True, bad, 3)


# ---------------------------------------------------------------- Sample.info: every count, always


def test_every_sample_carries_every_count():
    plan, dst, src = _scene(4)
    assert dst.info == dict.fromkeys(COUNTS, 0)
    empty = PastePlan(dst.height, dst.width)
    assert apply_numpy(empty, dst, []) is dst and dst.info["pasted"] == 0
    out = apply(plan, dst, [src])
    assert set(out.info) == set(COUNTS) and out.info["pasted"] + out.info["skipped"] == len(plan.pastes)
    assert out.info["dropped_by_crop"] == 0 and out.info["dropped_sources"] == 0
    extra = dataclasses.replace(out, info={"dropped_sources": 2, "note": 1})
    assert extra.info == {**dict.fromkeys(COUNTS, 0), "dropped_sources": 2, "note": 1}


@needs_cxx
def test_both_backends_give_the_same_counts_including_an_empty_plan():
    from ocp_dali.kernels.apply import apply_cupy_batch

    items = [_scene(s) for s in range(4)]
    plans = [p for p, _, _ in items] + [PastePlan(items[0][1].height, items[0][1].width)]
    dsts = [d for _, d, _ in items] + [items[0][1]]
    srcs = [[s] for _, _, s in items] + [[]]
    got = apply_cupy_batch(plans, dsts, srcs, backend=emulate.EmulatedBackend())
    for plan, dst, sources, out in zip(plans, dsts, srcs, got):
        assert out.info == apply_numpy(plan, dst, sources).info
        assert set(out.info) >= set(COUNTS)
    assert got[-1] is dsts[-1]


def test_a_sample_made_directly_has_the_counts():
    s = Sample.from_instances(np.zeros((4, 5, 3), np.uint8), np.ones((1, 4, 5), bool), [1])
    assert s.info == dict.fromkeys(COUNTS, 0) and s.info["pasted"] == 0
