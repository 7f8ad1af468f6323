"""Unit tests of the NumPy reference on hand-built scenes whose answer is known."""
import numpy as np
import pytest
from PIL import Image, ImageEnhance

from invariants import check_invariants, fingerprint
from ocp_dali import ImageMeta, OCPConfig, PasteOp, PastePlan, Sample, apply, sample_plan
from ocp_dali.geometry import paste_geometry
from ocp_dali.photometric import jitter_image
from ocp_dali.reference import warp_crop


def box_masks(boxes, h, w):
    """mmdet's create_full_masks: box regions filled (int-truncated coordinates)."""
    m = np.zeros((len(boxes), h, w), dtype=bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        m[i, int(y0):int(y1), int(x0):int(x1)] = True
    return m


def plan_of(dst: Sample, ops: list[PasteOp], **kw) -> PastePlan:
    return PastePlan(dst.height, dst.width, basket=(1,), pastes=tuple(ops), **kw)


def op_at(src: Sample, i: int, offset, *, flip=False, scale=1.0, angle=0, jitter=None) -> PasteOp:
    x0, y0, x1, y1 = (int(v) for v in src.boxes[i])
    g = paste_geometry(x1 - x0, y1 - y0, flip, scale, angle)
    return PasteOp(0, i, int(src.labels[i]), (x0, y0, x1, y1), jitter, flip, scale, angle, g, False, -1,
                   (offset[0] + g.out_w // 2, offset[1] + g.out_h // 2), tuple(offset))


def test_mmdet_copypaste_scene_gives_four_objects_in_simple_mode():
    """mmdet's CopyPaste test: 2 destination objects, 3 pasted, one destination object fully covered -> 4."""
    h, w = 300, 400
    rng = np.random.default_rng(0)
    dst_boxes = np.array([[0.2 * w, 0.2 * h, 0.4 * w, 0.4 * h], [0.5 * w, 0.5 * h, 0.6 * w, 0.6 * h]])
    src_boxes = np.array([[0.1 * w, 0.1 * h, 0.3 * w, 0.5 * h], [0.4 * w, 0.4 * h, 0.7 * w, 0.7 * h],
                          [0.8 * w, 0.8 * h, 0.9 * w, 0.9 * h]])
    dst = Sample.from_instances(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), box_masks(dst_boxes, h, w),
                                np.ones(2), ann_ids=[1, 2])
    src = Sample.from_instances(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), box_masks(src_boxes, h, w),
                                np.full(3, 2), ann_ids=[11, 12, 13])
    cfg = OCPConfig.simple(selected=False)
    plan = sample_plan(np.random.default_rng(1), ImageMeta.of_sample(dst), [ImageMeta.of_sample(src, 1)], cfg)
    assert len(plan.pastes) == 3
    out = apply(plan, dst, [src])
    check_invariants(out, dst, plan, [src])
    assert len(out) == 4
    assert out.ann_ids.tolist() == [1, 11, 12, 13]
    assert out.labels.tolist() == [1, 2, 2, 2]
    # the surviving destination object is partially occluded: fewer pixels, kept by the mask-area rule
    assert out.masks[0].sum() < dst.masks[0].sum()
    assert out.masks[0].sum() > cfg.mask_occluded_thr
    # pasted at the same coordinates: pixels of the source inside its masks
    m = src.masks.any(0)
    assert np.array_equal(out.image[m], src.image[m]) and np.array_equal(out.image[~m], dst.image[~m])
    # an empty source (no objects selected) leaves the destination unchanged
    empty = Sample.from_instances(src.image, np.zeros((0, h, w), bool), np.zeros(0))
    plan0 = sample_plan(np.random.default_rng(1), ImageMeta.of_sample(dst), [ImageMeta.of_sample(empty, 1)], cfg)
    assert apply(plan0, dst, [empty]) is dst


def two_people(h=64, w=96, seed=0):
    rng = np.random.default_rng(seed)
    dst = Sample.from_instances(rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                                box_masks([[10, 10, 40, 60]], h, w), [1], ann_ids=[1])
    src_m = np.zeros((1, h, w), bool)
    yy, xx = np.mgrid[0:h, 0:w]
    src_m[0] = ((xx - 60) / 14.0) ** 2 + ((yy - 30) / 25.0) ** 2 <= 1
    src = Sample.from_instances(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), src_m, [1], ann_ids=[7])
    return dst, src


def test_hard_paste_without_geometry_copies_source_pixels_exactly():
    dst, src = two_people()
    op = op_at(src, 0, (20, 5))
    out = apply(plan_of(dst, [op]), dst, [src])
    x0, y0, x1, y1 = op.src_box
    m = src.masks[0, y0:y1, x0:x1]
    region = out.image[5:5 + (y1 - y0), 20:20 + (x1 - x0)]
    assert np.array_equal(region[m], src.image[y0:y1, x0:x1][m])
    assert np.array_equal(out.masks[-1, 5:5 + (y1 - y0), 20:20 + (x1 - x0)], m)
    assert out.occlusion_rate[0] > 0 and out.order[1, 0] and not out.order[0, 1]


def test_paste_reaches_the_last_row_and_column():
    """The seed clips one row and column short; ocp_dali pastes up to the canvas edge."""
    dst, src = two_people()
    x0, y0, x1, y1 = (int(v) for v in src.boxes[0])
    offset = (dst.width - (x1 - x0) + 3, dst.height - (y1 - y0) + 3)
    out = apply(plan_of(dst, [op_at(src, 0, offset)]), dst, [src])
    assert out.masks[-1][-1].any() or out.masks[-1][:, -1].any()
    assert out.boxes[-1][2] == dst.width or out.boxes[-1][3] == dst.height


def test_feathering_changes_only_the_band_inside_pasted_edges():
    dst, src = two_people(h=80, w=120, seed=3)
    op = op_at(src, 0, (30, 10))
    hard = apply(plan_of(dst, [op]), dst, [src])
    sigma = 2.0
    soft = apply(plan_of(dst, [op], blend_sigma=sigma), dst, [src])
    assert np.array_equal(hard.masks, soft.masks), "masks stay binary and identical"
    diff = (hard.image != soft.image).any(2)
    assert diff.any(), "feathering must change something"
    m = hard.masks[-1]
    r = int(np.ceil(3 * sigma))
    core = m.copy()
    for _ in range(r):  # erosion by a (2r+1)^2 square, the blur's support (border counts as outside)
        p = np.pad(core, 1)
        core = np.logical_and.reduce([p[1 + dy:p.shape[0] - 1 + dy, 1 + dx:p.shape[1] - 1 + dx]
                                      for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    band = m & ~core
    assert not (diff & ~band).any(), "feathering changed pixels outside the edge band"
    assert not (soft.image != dst.image).any(2)[~m].any(), "feathered paste changed pixels outside the mask"


def test_geometric_jitter_masks_follow_the_transform():
    dst, src = two_people(seed=5)
    for flip, scale, angle in [(True, 1.0, 0), (False, 1.19, 0), (False, 0.8, 9), (True, 1.1, -10)]:
        op = op_at(src, 0, (5, 2), flip=flip, scale=scale, angle=angle)
        out = apply(plan_of(dst, [op]), dst, [src])
        area_src = src.masks[0].sum()
        area = out.amodal_masks[-1].sum()
        assert abs(area / (area_src * scale * scale) - 1) < 0.15, (flip, scale, angle, area, area_src)
    # a pure flip mirrors the crop exactly
    op = op_at(src, 0, (0, 0), flip=True)
    x0, y0, x1, y1 = op.src_box
    m, pix = warp_crop(src.image[y0:y1, x0:x1], src.masks[0, y0:y1, x0:x1], op.geometry, 0, 0, x1 - x0, y1 - y0)
    assert np.array_equal(m, src.masks[0, y0:y1, x0:x1][:, ::-1])
    assert np.array_equal(pix[m], src.image[y0:y1, x0:x1][:, ::-1][m])


def test_image_jitter_is_close_to_pil_enhance_inside_the_crop():
    """Each step is PIL's enhance up to rounding inside the crop (PIL truncates every step, the seed's mmcv rounds
    the colour step); on the crop's border the sharpness step filters with reflected neighbours like the seed's
    cv2.filter2D, where PIL leaves the border as it is. Exact seed equality: tests/test_jitter_seed.py."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)
    enhancers = (ImageEnhance.Color, ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Sharpness)
    for step, enh in enumerate(enhancers):
        for n in (0, 5, 8, 11, 14, 19):
            factors = [10, 10, 10, 10]
            factors[step] = n
            ours = jitter_image(img, tuple(factors)).astype(int)[1:-1, 1:-1]
            pil = np.asarray(enh(Image.fromarray(img)).enhance(n / 10)).astype(int)[1:-1, 1:-1]
            diff = np.abs(ours - pil)
            assert diff.max() <= 2 and diff.mean() < 0.6, (enh.__name__, n, diff.max(), diff.mean())
    assert np.array_equal(jitter_image(img, (10, 10, 10, 10)), img), "factor 1.0 everywhere is the identity"
    assert not np.array_equal(jitter_image(img, (8, 15, 7, 3)), img)


def test_keypoints_flip_swaps_left_and_right_and_border_points_work():
    h, w = 40, 60
    rng = np.random.default_rng(1)
    m = box_masks([[10, 5, 30, 35]], h, w)
    kp = np.array([[[12, 10, 2], [28, 10, 2], [20, 20, 1], [w, h, 2], [0, 0, 0]]], np.float32)
    src = Sample.from_instances(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), m, [1], keypoints=kp)
    dst_kp = np.array([[[w, h, 2], [w, 0, 2], [0, h, 2], [1, 1, 2], [0, 0, 0]]], np.float32)
    dst = Sample.from_instances(rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                                box_masks([[0, 0, w, h]], h, w), [1], keypoints=dst_kp)
    flip_index = (1, 0, 2, 3, 4)  # point 0 is "left", point 1 is "right"
    op = op_at(src, 0, (40, 20), flip=True)
    out = apply(PastePlan(h, w, (1,), (op,), flip_index=flip_index), dst, [src])
    pk = out.keypoints[-1]
    # the left point (x=12 -> 2 px from the crop's left edge) becomes the right one, mirrored in the crop
    crop_w = 20
    assert pk[1].tolist() == [40 + crop_w - (12 - 10), 20 + 10 - 5, 2]
    assert pk[0].tolist() == [40 + crop_w - (28 - 10), 20 + 10 - 5, 2]
    # a point that leaves the canvas stops being visible (and labelled); x == W on the border is no IndexError
    assert pk[3].tolist() == [0, 0, 0]
    # the destination's point at (W, H) lies on the last pixel, under the paste -> v=1
    assert out.keypoints[0][0].tolist() == [w, h, 1]
    assert out.keypoints[0][3].tolist() == [1, 1, 2]


def test_inputs_are_never_mutated_and_output_differs_from_input():
    dst, src = two_people(seed=9)
    before = fingerprint(dst), fingerprint(src)
    op = op_at(src, 0, (20, 5), flip=True, scale=1.1, angle=7, jitter=(9, 15, 12, 4))
    out = apply(plan_of(dst, [op], blend_sigma=1.5), dst, [src])
    assert (fingerprint(dst), fingerprint(src)) == before
    assert not np.array_equal(out.image, dst.image)
    check_invariants(out, dst, plan_of(dst, [op], blend_sigma=1.5), [src])


def test_plan_size_mismatch_is_a_clear_error():
    dst, src = two_people()
    bad = PastePlan(10, 10, (1,), (op_at(src, 0, (0, 0)),))
    with pytest.raises(ValueError, match="plan made for 10x10"):
        apply(bad, dst, [src])
    with pytest.raises(ValueError, match="backend must be one of"):
        apply(plan_of(dst, [op_at(src, 0, (0, 0))]), dst, [src], backend="torch")
