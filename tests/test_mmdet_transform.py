"""The mmdet 3 transform: mmdet CopyPaste's own checks in Simple mode, and a real mmdet pipeline on coco_mini."""
import copy

import numpy as np
import pytest

pytest.importorskip("mmdet", reason="mmdet is not installed")
from mmdet.datasets.transforms import CopyPaste  # noqa: E402
from mmdet.structures.bbox import HorizontalBoxes  # noqa: E402
from mmdet.structures.mask import BitmapMasks  # noqa: E402

from conftest import data_path  # noqa: E402
from ocp_dali.mmdet import OCPMixDataset, OcclusionCopyPaste  # noqa: E402


def full_masks(boxes, w, h):
    m = np.zeros((len(boxes), h, w), dtype=np.uint8)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        m[i, int(y0):int(y1), int(x0):int(x1)] = 1
    return BitmapMasks(m, h, w)


@pytest.fixture
def mmdet_scene():
    """mmdet's test_copypaste scene: 2 destination objects (the second, an ignore object, fully covered), 3
    source objects (the third an ignore object)."""
    rng = np.random.default_rng(0)
    h, w = 288, 512
    dst_b = np.array([[0.2 * w, 0.2 * h, 0.4 * w, 0.4 * h], [0.5 * w, 0.5 * h, 0.6 * w, 0.6 * h]], np.float32)
    src_b = np.array([[0.1 * w, 0.1 * h, 0.3 * w, 0.5 * h], [0.4 * w, 0.4 * h, 0.7 * w, 0.7 * h],
                      [0.8 * w, 0.8 * h, 0.9 * w, 0.9 * h]], np.float32)
    dst = dict(img=rng.integers(0, 256, (h, w, 3), dtype=np.uint8), gt_bboxes=HorizontalBoxes(dst_b),
               gt_bboxes_labels=np.ones(2, np.int64), gt_masks=full_masks(dst_b, w, h),
               gt_ignore_flags=np.array([0, 1], bool))
    src = dict(img=rng.integers(0, 256, (h, w, 3), dtype=np.uint8), gt_bboxes=HorizontalBoxes(src_b),
               gt_bboxes_labels=np.full(3, 2, np.int64), gt_masks=full_masks(src_b, w, h),
               gt_ignore_flags=np.array([0, 0, 1], bool))
    return dst, src


def test_simple_mode_passes_mmdet_copypaste_checks_and_matches_it(mmdet_scene):
    dst, src = mmdet_scene
    t = OcclusionCopyPaste(preset="simple", selected=False)
    with pytest.raises(KeyError, match="mix_results"):
        t(copy.deepcopy(dst))
    res = copy.deepcopy(dst)
    res["mix_results"] = [copy.deepcopy(src)]
    out = t(res)
    assert out["img"].shape == dst["img"].shape
    # one destination object is totally occluded: 2 + 3 - 1 objects
    assert out["gt_bboxes"].shape[0] == 4 == len(out["gt_masks"]) == len(out["gt_bboxes_labels"])
    assert out["gt_ignore_flags"].tolist() == [False, False, False, True]
    # the partially occluded destination object keeps it by mmdet's rule
    ori, occ = dst["gt_masks"].masks[0], out["gt_masks"].masks[0]
    assert ori.sum() > occ.sum()
    box_moved = np.abs(out["gt_bboxes"].tensor[0].numpy() - dst["gt_bboxes"].tensor[0].numpy())
    assert np.all(box_moved <= t.cfg.bbox_occluded_thr) or occ.sum() > t.cfg.mask_occluded_thr
    # the same output as mmdet's own CopyPaste (non-overlapping sources: same pixels, masks and labels)
    ref_in = copy.deepcopy(dst)
    ref_in["mix_results"] = [copy.deepcopy(src)]
    ref = CopyPaste(selected=False)(ref_in)
    assert np.array_equal(out["img"], ref["img"])
    assert np.array_equal(out["gt_masks"].masks.astype(bool), ref["gt_masks"].masks.astype(bool))
    assert out["gt_bboxes_labels"].tolist() == ref["gt_bboxes_labels"].tolist()
    assert out["gt_ignore_flags"].tolist() == ref["gt_ignore_flags"].tolist()
    # selected objects, and an empty source
    res = copy.deepcopy(dst)
    res["mix_results"] = [copy.deepcopy(src)]
    OcclusionCopyPaste(preset="simple")(res)
    empty = copy.deepcopy(src)
    empty.update(gt_bboxes=src["gt_bboxes"][[False] * 3], gt_bboxes_labels=src["gt_bboxes_labels"][[False] * 3],
                 gt_masks=src["gt_masks"][[False] * 3], gt_ignore_flags=src["gt_ignore_flags"][[False] * 3])
    res = copy.deepcopy(dst)
    res["mix_results"] = [empty]
    out = OcclusionCopyPaste(preset="simple")(res)
    assert out["gt_bboxes"].shape[0] == 2 and np.array_equal(out["img"], dst["img"])


def test_ocp_mode_keeps_ignore_objects_as_ignore_regions(mmdet_scene):
    dst, src = mmdet_scene
    res = copy.deepcopy(dst)
    res["mix_results"] = [copy.deepcopy(src)]
    t = OcclusionCopyPaste(preset="ocp", prob=1.0, min_size_paste=0.0)
    t.set_sample(0, 0)
    out = t(res)
    flags = out["gt_ignore_flags"]
    assert flags.sum() <= 1, "source ignore objects are never pasted"
    assert len(out["gt_occlusion_rate"]) == len(flags) == out["gt_occlusion_order"].shape[0]
    assert out["gt_pasted"].sum() >= 1 and not np.array_equal(out["img"], dst["img"])


def test_prob_skip_returns_the_sample_unchanged_with_the_occlusion_keys(mmdet_scene):
    dst, src = mmdet_scene
    loose = dst["gt_bboxes"].tensor.numpy() + np.array([-1.5, -2.0, 3.25, 1.0], np.float32)  # not the mask boxes
    dst["gt_bboxes"] = HorizontalBoxes(loose)
    res = copy.deepcopy(dst)
    res["mix_results"] = [copy.deepcopy(src)]
    t = OcclusionCopyPaste(preset="ocp", prob=0.0)  # the coin always skips
    t.set_sample(0, 0)
    out = t(res)
    # the seed returns the sample unchanged, annotation boxes included
    assert np.array_equal(out["gt_bboxes"].tensor.numpy(), loose)
    assert np.array_equal(out["img"], dst["img"])
    assert np.array_equal(out["gt_masks"].masks, dst["gt_masks"].masks)
    assert out["gt_bboxes_labels"].tolist() == dst["gt_bboxes_labels"].tolist()
    assert out["gt_ignore_flags"].tolist() == dst["gt_ignore_flags"].tolist()
    # the occlusion keys say nothing happened, one row per input row (the ignore row included)
    assert isinstance(out["gt_amodal_masks"], BitmapMasks)
    assert np.array_equal(out["gt_amodal_masks"].masks, dst["gt_masks"].masks)
    assert out["gt_occluder_masks"].masks.shape == dst["gt_masks"].masks.shape
    assert not out["gt_occluder_masks"].masks.any()
    assert out["gt_occlusion_rate"].dtype == np.float32 and out["gt_occlusion_rate"].tolist() == [0.0, 0.0]
    assert out["gt_occlusion_order"].shape == (2, 2) and not out["gt_occlusion_order"].any()
    assert out["gt_pasted"].tolist() == [False, False]
    assert "mix_results" not in out
    info = out["ocp_info"]
    assert info["ran"] is False and info["num_candidates"] == 0 and info["pasted"] == info["dropped_existing"] == 0
    # a sample the transform ran on carries the same keys
    res = copy.deepcopy(dst)
    res["mix_results"] = [copy.deepcopy(src)]
    t = OcclusionCopyPaste(preset="ocp", prob=1.0, min_size_paste=0.0)
    t.set_sample(0, 0)
    ran = t(res)
    assert set(ran) == set(out)
    assert ran["ocp_info"]["ran"] is True and ran["ocp_info"]["num_candidates"] == 2  # the source's 2 objects
    assert ran["ocp_info"]["pasted"] == int(ran["gt_pasted"].sum()) + ran["ocp_info"]["dropped_pasted"]


def coco_pipeline_dataset(preset, **kw):
    from mmdet.utils import register_all_modules

    register_all_modules()
    from mmdet.datasets import CocoDataset

    ann = data_path("coco_mini", "annotations", "instances_val2017.json")
    base = CocoDataset(data_root=str(ann.parents[1]), ann_file=str(ann), data_prefix=dict(img="val2017/"),
                       metainfo=dict(classes=("person",)), filter_cfg=dict(filter_empty_gt=True),
                       pipeline=[dict(type="LoadImageFromFile"),
                                 dict(type="LoadAnnotations", with_bbox=True, with_mask=True, poly2mask=True),
                                 dict(type="Resize", scale=(320, 320), keep_ratio=True)])
    return OCPMixDataset(dataset=base, pipeline=[dict(type="OcclusionCopyPaste", preset=preset, seed=3, **kw)])


def test_real_mmdet_pipeline_is_deterministic_per_sample_and_epoch():
    a = coco_pipeline_dataset("ocp", prob=1.0)
    b = coco_pipeline_dataset("ocp", prob=1.0)
    changed = 0
    for i in range(8):
        ra, rb = a[i], b[i]
        assert np.array_equal(ra["img"], rb["img"])
        assert np.array_equal(ra["gt_masks"].masks, rb["gt_masks"].masks)
        n = len(ra["gt_bboxes_labels"])
        assert len(ra["gt_masks"]) == n == ra["gt_bboxes"].shape[0] == len(ra["gt_pasted"])
        for m, box, ign in zip(ra["gt_masks"].masks, ra["gt_bboxes"].tensor.numpy(), ra["gt_ignore_flags"]):
            ys, xs = np.nonzero(m)
            assert len(xs), "every output object has a non-empty mask"
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        changed += int(ra["gt_pasted"].any())
    assert changed >= 4
    a.set_epoch(1)
    assert any(not np.array_equal(a[i]["img"], b[i]["img"]) for i in range(8)), "a new epoch, new plans"
