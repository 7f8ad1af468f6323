"""Placement orders (``lsj.Geometry.placement``): the seed's order (destination geometry first; each source its own
LSJ, folded into the paste's warp) and ocp_dali's ``paste_first``; invariants on every output, on real images and
random scenes; the fold equal to resampling the source and then warping."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import data_path
from invariants import check_invariants, tight
from ocp_dali import CocoInstances, Geometry, OCPConfig, apply
from ocp_dali.augment import apply_placed, placed_plan_for, reference_sample
from ocp_dali.lsj import apply_lsj, sample_lsj
from ocp_dali.placement import boxes_on_canvas, fold_paste, meta_on_canvas, plan_sample, source_geometry
from ocp_dali.plan import ImageMeta, sample_plan, sample_rng
from ocp_dali.lsj import sample_affine
from ocp_dali.reference import paste_window, warp_paste
from ocp_dali.sample import Sample
from ocp_dali.wire import pack_plan, unpack_plan
from scenes import scenes

GEOMETRIES = [Geometry.lsj(384), Geometry.resize(((500, 300), (500, 400))), Geometry.fit((320, 256))]
IDS = ["lsj", "resize", "fit"]


@pytest.fixture(scope="module")
def coco():
    return CocoInstances(data_path("coco_mini", "annotations", "person_keypoints_val2017.json"),
                         data_path("coco_mini", "val2017"), classes=["person"], filter_empty_gt=True)


def run_placed(ds, index, cfg, geometry, epoch=0, seed=0):
    """The placed plan of a sample applied step by step, every invariant checked on the paste's own inputs."""
    placed = placed_plan_for(ds, index, epoch=epoch, seed=seed, cfg=cfg, geometry=geometry)
    dst = ds.load(index)
    if placed.geometry_first:
        dst = apply_lsj(dst, placed.geometry, ds.flip_index)
    plan = placed.plan
    sources = [ds.load(plan.basket[b]) if b in plan.used_sources else None for b in range(len(plan.basket))]
    out = apply(plan, dst, sources)
    check_invariants(out, dst, plan, sources)
    return placed, dst, out


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=IDS)
def test_every_invariant_in_the_seed_order_on_real_images(coco, geometry):
    cfg = OCPConfig.ocp(prob=1.0, paste_num=(1, 4), aug_paste_geom_jitter=True, aug_paste_img_jitter=True)
    pasted = 0
    for i in range(len(coco)):
        placed, dst, out = run_placed(coco, i, cfg, geometry, seed=i)
        assert placed.geometry_first and (out.height, out.width) == (placed.geometry.out_h, placed.geometry.out_w)
        assert (placed.plan.height, placed.plan.width) == (out.height, out.width)  # planned on the canvas
        if geometry.kind != "lsj":  # the seed's Mask R-CNN order: sources raw, the paste's own geometry
            for op in placed.plan.pastes:
                assert op.src_box == tuple(int(v) for v in coco.meta(placed.plan.basket[op.source]).boxes[op.instance])
        pasted += int(out.pasted.sum())
        # the whole sample, as every path makes it, is this step-by-step result
        ref = reference_sample(coco, i, epoch=0, seed=i, cfg=cfg, geometry=geometry)
        assert np.array_equal(ref.image, out.image) and np.array_equal(ref.masks, out.masks)
        assert ref.info["dropped_by_crop"] == dst.info["dropped_by_crop"]
    assert pasted > len(coco) // 2


def test_paste_first_is_the_paste_then_the_geometry(coco):
    cfg = OCPConfig.ocp(prob=1.0)
    geo = Geometry.lsj(384, placement="paste_first")
    for i in range(0, len(coco), 5):
        placed = placed_plan_for(coco, i, seed=3, cfg=cfg, geometry=geo)
        assert not placed.geometry_first and placed.plan == placed_plan_for(coco, i, seed=3, cfg=cfg).plan
        raw = apply(placed.plan, coco.load(i), [coco.load(b) for b in placed.plan.basket])
        want = apply_lsj(raw, placed.geometry, coco.flip_index)
        got = apply_placed(placed, coco.load(i), [coco.load(b) for b in placed.plan.basket],
                           flip_index=coco.flip_index)
        assert np.array_equal(got.image, want.image) and np.array_equal(got.masks, want.masks)


def test_orders_differ_and_resize_sizes_follow_the_scales(coco):
    cfg = OCPConfig.ocp(prob=1.0)
    seed_lsj = [placed_plan_for(coco, i, cfg=cfg, geometry=Geometry.lsj(1024)).plan for i in range(len(coco))]
    first = [placed_plan_for(coco, i, cfg=cfg, geometry=Geometry.lsj(1024, placement="paste_first")).plan
             for i in range(len(coco))]
    assert seed_lsj != first
    geo = Geometry.resize(((1333, 640), (1333, 800)))
    for i in range(len(coco)):
        p = placed_plan_for(coco, i, cfg=cfg, geometry=geo).geometry
        meta = coco.meta(i)
        short, long = min(p.out_h, p.out_w), max(p.out_h, p.out_w)
        assert (640 - 1 <= short <= 800 + 1 or long >= 1333 - 1) and long <= 1333 + 1 and short <= 800 + 1
        assert abs(p.out_w / p.out_h - meta.width / meta.height) < 0.01  # keep ratio


def rect_sample(h, w, rects):
    masks = np.zeros((len(rects), h, w), bool)
    for k, (x0, y0, x1, y1) in enumerate(rects):
        masks[k, y0:y1, x0:x1] = True
    return Sample.from_instances(np.zeros((h, w, 3), np.uint8), masks, np.ones(len(rects), np.int64))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 5), lsj=st.booleans())
def test_boxes_on_canvas_are_the_resampled_boxes_of_solid_masks(seed, n, lsj):
    """For masks without gaps (rectangles) the planned canvas box is exactly the resampled mask's tight box."""
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(8, 60)), int(rng.integers(8, 60))
    rects = []
    for _ in range(n):
        x0, y0 = int(rng.integers(0, w - 1)), int(rng.integers(0, h - 1))
        rects.append((x0, y0, int(rng.integers(x0 + 1, w + 1)), int(rng.integers(y0 + 1, h + 1))))
    s = rect_sample(h, w, rects)
    p = sample_lsj(rng, h, w, (int(rng.integers(8, 64)), int(rng.integers(8, 64))), lsj=lsj, ratio_range=(0.2, 3.0))
    boxes = boxes_on_canvas(np.asarray(rects), p, h, w)
    out = apply_lsj(s, p)
    on = boxes[:, 2] > boxes[:, 0]
    assert on.sum() == len(out)
    assert np.array_equal(boxes[on], out.boxes.astype(np.int64))
    assert all(tight(m) == b.tolist() for m, b in zip(out.masks, boxes[on]))


def test_fold_equals_resampling_the_source_then_warping(coco):
    """One warp of the raw crop (folded map) against the seed's two steps (LSJ resample of the source, then the
    paste's warp of the canvas crop): the same pixels of the pasted mask up to the resampling's rounding."""
    geo = Geometry.lsj(512)
    cfg = OCPConfig.ocp(prob=1.0, paste_num=(2, 3), aug_paste_geom_jitter=True)
    checked = 0
    for i in range(len(coco)):
        rng = sample_rng(0, 0, i)
        basket = coco.basket_indices(rng, i, 1)
        meta = coco.meta(basket[0])
        q = source_geometry(0, 0, i, 0, 0, meta, geo)
        canvas = ImageMeta(512, 512, np.zeros((0, 4), np.int64), np.zeros(0, np.int64))
        plan = sample_plan(rng, canvas, [meta_on_canvas(meta, q, keep_rows=True)], cfg)
        src = coco.load(basket[0])
        on_canvas = every_row_on_canvas(src, q)
        for op in plan.pastes:
            folded = fold_paste(op, q, meta.height, meta.width)
            window = paste_window(op, 512, 512)
            two_step_mask, _ = warp_paste(on_canvas, op, window)
            one_mask, _ = warp_paste(src, folded, window)
            union = (two_step_mask | one_mask).sum()
            if union > 400:
                assert (two_step_mask & one_mask).sum() / union > 0.85, (i, op)
                checked += 1
    assert checked >= 10


def every_row_on_canvas(src: Sample, q) -> Sample:
    """``src`` resampled onto its LSJ canvas with every instance row kept (a plan names the raw rows; ``apply_lsj``
    would drop the rows that leave the canvas)."""
    img, (masks,) = sample_affine(src.image, [src.masks], q.inv_q16, q.out_h, q.out_w, q.valid_w, q.valid_h)
    return Sample.from_instances(img, masks, src.labels)


@settings(max_examples=40, deadline=None)
@given(scene=scenes(max_side=40), size=st.integers(16, 48), placement=st.sampled_from(["seed", "paste_first"]))
def test_invariants_on_random_scenes_in_each_placement(scene, size, placement):
    geo = Geometry.lsj(size, ratio_range=(0.3, 2.5), placement=placement)
    dst_meta, metas = scene.metas()
    placed = plan_sample(sample_rng(scene.seed, 0, 0), (scene.seed, 0, 0, 0), dst_meta, metas, scene.cfg, geo)
    assert unpack_plan(pack_plan(placed.plan)) == placed.plan  # folded geometry travels exactly
    dst = apply_lsj(scene.dst, placed.geometry, dst_meta.flip_index) if placed.geometry_first else scene.dst
    out = apply(placed.plan, dst, scene.sources)
    check_invariants(out, dst, placed.plan, scene.sources)
