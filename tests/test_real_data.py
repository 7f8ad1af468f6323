"""Every invariant on every output, on real COCO / OCHuman images from ../shared/data."""
import numpy as np
import pytest

from conftest import data_path
from invariants import check_invariants, fingerprint
from ocp_dali import CocoInstances, OCPConfig, apply, plan_for

SETS = [
    ("coco_mini", "person_keypoints_train2017.json", "train2017"),
    ("coco_mini", "person_keypoints_val2017.json", "val2017"),
    ("coco_tiny", "instances_train2017.json", "train2017"),
    ("coco_tiny", "instances_val2017.json", "val2017"),
]
CFGS = [OCPConfig.ocp(prob=1.0), OCPConfig.ocp(prob=1.0, blend_sigma=2.0), OCPConfig.basic(prob=1.0),
        OCPConfig.simple()]


def run_checked(ds, index, cfg, seed=0, epoch=0):
    plan = plan_for(ds, index, epoch=epoch, seed=seed, cfg=cfg)
    dst = ds.load(index)
    sources = [ds.load(plan.basket[b]) if b in plan.used_sources else None for b in range(len(plan.basket))]
    before = [fingerprint(s) for s in [dst] + [s for s in sources if s is not None]]
    out = apply(plan, dst, sources)
    check_invariants(out, dst, plan, sources)
    assert [fingerprint(s) for s in [dst] + [s for s in sources if s is not None]] == before
    return out, dst


@pytest.mark.parametrize("name, ann, imgs", SETS)
def test_every_invariant_on_every_real_image(name, ann, imgs):
    ds = CocoInstances(data_path(name, "annotations", ann), data_path(name, imgs), classes=["person"])
    assert len(ds) > 0
    pasted = changed = 0
    for i in range(len(ds)):
        out, dst = run_checked(ds, i, CFGS[i % len(CFGS)], seed=i)
        pasted += int(out.pasted.sum())
        changed += int(out is not dst and not np.array_equal(out.image, dst.image))
    assert pasted > len(ds) // 3, f"only {pasted} people pasted over {len(ds)} images"
    assert changed > len(ds) // 3


def test_crowd_regions_are_ignore_regions_never_pasted():
    ds = CocoInstances(data_path("coco_mini", "annotations", "instances_train2017.json"),
                       data_path("coco_mini", "train2017"), classes=["person"])
    crowd_idx = [i for i in range(len(ds)) if len(ds.load(i).crowd_masks)]
    assert crowd_idx, "coco_mini has crowd annotations"
    crowd_ann_ids = {a["id"] for a in ds.coco.dataset["annotations"] if a.get("iscrowd")}
    for i in range(len(ds)):
        s = ds.load(i)
        assert not set(s.ann_ids.tolist()) & crowd_ann_ids, "crowd regions must not be instances"
    for i in crowd_idx:
        for seed in range(3):
            out, _ = run_checked(ds, i, OCPConfig.basic(prob=1.0), seed=seed)
            assert not set(out.ann_ids.tolist()) & crowd_ann_ids


def test_polygon_masks_and_boxes_agree_with_pycocotools(coco_mini_train):
    ds = coco_mini_train
    for i in range(0, len(ds), 7):
        s = ds.load(i)
        for m, aid, box in zip(s.masks, s.ann_ids, ds.meta(i).boxes):
            ann = ds.coco.anns[int(aid)]
            ref = ds.coco.annToMask(ann).astype(bool)
            assert np.array_equal(m, ref)
            ys, xs = np.nonzero(m)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_keypoints_travel_with_pasted_people(coco_mini_train):
    ds = coco_mini_train
    moved = 0
    for i in range(len(ds)):
        out, _ = run_checked(ds, i, OCPConfig.ocp(prob=1.0), seed=100 + i)
        assert out.keypoints is not None and out.keypoints.shape[1:] == (17, 3)
        moved += int((out.keypoints[out.pasted][..., 2] > 0).sum())
    assert moved > 50


def test_targeted_placement_puts_most_pastes_over_people(coco_mini_train):
    """Measured: fraction of pasted people whose amodal mask meets a person of the input image."""
    ds = coco_mini_train

    def overlap_rate(cfg):
        hits = total = 0
        for i in range(len(ds)):
            if not len(ds.meta(i).boxes):
                continue
            for seed in (7, 8):
                out, dst = run_checked(ds, i, cfg, seed=seed)
                people = dst.masks.any(axis=0)
                for r in np.flatnonzero(out.pasted):
                    total += 1
                    hits += int((out.amodal_masks[r] & people).any())
        return hits / max(total, 1), total

    # OC&P with the seed's defaults against Basic C&P: same 5-image baskets and sizes, only placement differs
    ocp, n_ocp = overlap_rate(OCPConfig.ocp(prob=1.0, basket_size=5))
    untargeted, n_unt = overlap_rate(OCPConfig.ocp(prob=1.0, basket_size=5, targeted_paste_prob=0.0))
    basic, n_basic = overlap_rate(OCPConfig.basic(prob=1.0))
    print(f"pastes over existing people: OC&P {ocp:.2f} of {n_ocp}, OC&P untargeted {untargeted:.2f} of {n_unt}, "
          f"Basic C&P {basic:.2f} of {n_basic}")
    assert min(n_ocp, n_unt, n_basic) > 80
    assert ocp > 0.7, ocp
    assert basic < 0.5 and untargeted < 0.6, (basic, untargeted)
    assert ocp > untargeted + 0.2, (ocp, untargeted)


def test_ochuman_samples_keep_every_invariant():
    ds = CocoInstances(data_path("ochuman_samples", "mmpose", "test_ochuman.json"),
                       data_path("ochuman_samples", "mmpose"))
    for i in range(len(ds)):
        for cfg in CFGS:
            run_checked(ds, i, cfg, seed=3)
