"""Occlusion-aware evaluation: oracle checks of the three figures, and the CLI on a trained checkpoint."""
import json
import subprocess
import sys

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from conftest import ROOT, data_path
from ocp_dali import CocoInstances, OCPConfig
from ocp_dali.data.rle import decode_counts, encode_mask, rle_counts
from ocp_dali.eval import (coco_from_ochuman, detections_from_gt, mask_ap, occluded_mask_ap, occluded_subset,
                           occlusion_stress_set)

TINY_CFG = "configs/mask_rcnn/mask-rcnn_r18_fpn_ocp_tiny-cpu.py"


def test_encode_mask_gives_json_ready_rle_that_both_decoders_read_back():
    rng = np.random.default_rng(0)
    masks = [rng.random((h, w)) < p for h, w, p in [(1, 1, 1.0), (1, 1, 0.0), (7, 5, 0.5), (40, 33, 0.9),
                                                  (33, 40, 0.05), (64, 2, 0.5)]]
    for m in masks:
        rle = encode_mask(m)
        assert isinstance(rle["counts"], str) and rle["size"] == list(m.shape)
        assert json.loads(json.dumps(rle)) == rle
        assert np.array_equal(mask_utils.decode(rle).astype(bool), m)
        assert np.array_equal(decode_counts(rle_counts(rle), *m.shape), m)
        ref = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))  # pycocotools' own bytes
        assert rle["counts"] == ref["counts"].decode("ascii")
    # any nonzero value is foreground (a 0/255 mask is the same mask, not runs of three values)
    m = masks[3]
    assert encode_mask(m.astype(np.uint8) * 255) == encode_mask(m) == encode_mask(m.astype(np.float32))


def test_oracle_detections_score_one_and_missing_ones_score_less(tmp_path):
    coco = json.loads(data_path("ochuman_samples", "mmpose", "test_ochuman.json").read_text())
    assert mask_ap(coco, detections_from_gt(coco))["AP"] == pytest.approx(1.0)
    native = coco_from_ochuman(data_path("ochuman_samples", "icevision", "annotations", "ochuman.json"))
    assert len(native["annotations"]) == 16  # persons with masks, as the data README counts
    assert mask_ap(native, detections_from_gt(native))["AP"] == pytest.approx(1.0)
    assert mask_ap(native, detections_from_gt(native, keep=0.5, seed=1))["AP"] < 0.9
    assert mask_ap(native, [])["AP"] == 0.0


def test_occluded_ap_uses_exact_rates_of_the_stress_set(tmp_path):
    ds = CocoInstances(data_path("ochuman_samples", "mmpose", "test_ochuman.json"),
                       data_path("ochuman_samples", "mmpose"), classes=["person"])
    path, img_dir, rates = occlusion_stress_set(ds, OCPConfig.ocp(prob=1.0), 0, tmp_path)
    gt = json.loads(path.read_text())
    assert len(list(img_dir.glob("*.png"))) == len(ds)
    occluded = [a for a in gt["annotations"] if a["occlusion_rate"] > 0.15]
    assert occluded and all(rates[a["id"]] == a["occlusion_rate"] for a in gt["annotations"])
    assert gt["categories"] == [{"id": 1, "name": "person"}]  # the source's names: mmdet matches classes by name
    subset, n = occluded_subset(gt, rates)
    assert n == len(occluded) and len(subset["annotations"]) == len(gt["annotations"])
    assert [a["iscrowd"] for a in subset["annotations"]] == [int(a["occlusion_rate"] <= 0.15)
                                                             for a in gt["annotations"]]
    res = occluded_mask_ap(gt, detections_from_gt(gt), rates)
    assert res["AP"] == pytest.approx(1.0) and res["num_occluded"] == len(occluded)
    # detections of only the non-occluded instances find nothing that counts
    plain = [d for d, a in zip(detections_from_gt(gt), gt["annotations"]) if a["occlusion_rate"] <= 0.15]
    assert occluded_mask_ap(gt, plain, rates)["AP"] == 0.0


def _cocometric_figures(ann_file, gt: dict, detections: list[dict]) -> dict:
    """mmdet's CocoMetric (what the evaluation's Runner.test() scores with) on ``detections`` of ``gt``'s images,
    fed as the model's outputs would be, reported as ocp_dali.mmdet.evaluate reports it."""
    import torch
    from mmdet.evaluation import CocoMetric

    from ocp_dali.mmdet.evaluate import CLASSES, figures

    metric = CocoMetric(ann_file=str(ann_file), metric=["segm", "bbox"])
    metric.dataset_meta = dict(classes=CLASSES)
    samples = []
    for im in gt["images"]:
        h, w = im["height"], im["width"]
        dets = [d for d in detections if d["image_id"] == im["id"]]
        masks = np.stack([mask_utils.decode(d["segmentation"]) for d in dets]) if dets else np.zeros((0, h, w))
        boxes = [mask_utils.toBbox(d["segmentation"]) for d in dets]
        pred = dict(bboxes=torch.tensor([[x, y, x + bw, y + bh] for x, y, bw, bh in boxes]).reshape(-1, 4),
                    scores=torch.tensor([d["score"] for d in dets]), labels=torch.zeros(len(dets), dtype=torch.long),
                    masks=torch.from_numpy(masks.astype(bool)))
        samples.append(dict(img_id=im["id"], ori_shape=(h, w), pred_instances=pred))
    metric.process({}, samples)
    return figures(metric.evaluate(len(gt["images"])))


def test_cocometric_on_the_occluded_subset_json_gives_occluded_mask_ap(tmp_path):
    pytest.importorskip("mmdet")
    ds = CocoInstances(data_path("ochuman_samples", "mmpose", "test_ochuman.json"),
                       data_path("ochuman_samples", "mmpose"), classes=["person"])
    path, _, rates = occlusion_stress_set(ds, OCPConfig.ocp(prob=1.0), 0, tmp_path)
    gt = json.loads(path.read_text())
    subset, _ = occluded_subset(gt, rates)
    subset_json = tmp_path / "occluded_subset.json"
    subset_json.write_text(json.dumps(subset))
    oracle = detections_from_gt(gt)
    assert _cocometric_figures(subset_json, gt, oracle)["AP"] == pytest.approx(1.0)
    assert _cocometric_figures(subset_json, gt, oracle)["bbox_AP"] == pytest.approx(1.0)
    plain = [d for d, a in zip(oracle, gt["annotations"]) if a["occlusion_rate"] <= 0.15]
    assert _cocometric_figures(subset_json, gt, plain)["AP"] == 0.0  # ignore regions: found, not counted
    # a partial oracle with mixed scores: the same figure as the reference function (CocoMetric rounds to 3 places)
    rng = np.random.default_rng(1)
    partial = [dict(d, score=float(rng.uniform(0.1, 1.0))) for d in detections_from_gt(gt, keep=0.6, seed=2)]
    ref = occluded_mask_ap(gt, partial, rates)
    assert 0.0 < ref["AP"] < 1.0
    got = _cocometric_figures(subset_json, gt, partial)
    for k in ("AP", "AP50", "AP75"):
        assert got[k] == pytest.approx(ref[k], abs=6e-4), k


def test_test_scale_comes_from_the_config_unless_overridden():
    pytest.importorskip("mmdet")
    from ocp_dali.mmdet.evaluate import eval_pipeline, load_config

    def resize_scales(pipeline):
        return [tuple(t["scale"]) for t in pipeline if t["type"] == "Resize"]

    full = load_config(str(ROOT / "configs/mask_rcnn/mask-rcnn_r50_fpn_ocp_coco-person.py"))
    pipeline, scale, source = eval_pipeline(full)
    assert scale == (1333, 800) and "test_dataloader" in source and resize_scales(pipeline) == [(1333, 800)]
    assert any(t["type"] == "PackDetInputs" for t in pipeline)
    pipeline, scale, source = eval_pipeline(full, (640, 480))
    assert scale == (640, 480) and source == "--scale" and resize_scales(pipeline) == [(640, 480)]
    assert resize_scales(full.test_dataloader.dataset.pipeline) == [(1333, 800)]  # the config is not changed
    tiny = load_config(str(ROOT / TINY_CFG))  # no test pipeline: the scale the model was trained at
    pipeline, scale, source = eval_pipeline(tiny)
    assert scale == (256, 256) and "train pipeline" in source and resize_scales(pipeline) == [(256, 256)]
    m2f = load_config(str(ROOT / "configs/mask2former/mask2former_r18_ocp_tiny-cpu.py"))  # RandomResize
    assert eval_pipeline(m2f)[1] == (256, 256)


def test_every_evaluation_flag_has_help():
    pytest.importorskip("mmdet")  # ocp_dali.mmdet registers modules in mmdet's registries on import
    from ocp_dali.mmdet.evaluate import arg_parser

    flags = [a for a in arg_parser()._actions if a.option_strings and a.dest != "help"]
    assert {f.dest for f in flags} >= {"config", "checkpoint", "data", "scale", "batch_size", "workers", "out"}
    for f in flags:
        assert f.help and len(f.help) > 10, f.option_strings


def test_evaluation_cli_gives_the_three_figures_for_a_checkpoint(tmp_path):
    data_path("ochuman_samples")
    pytest.importorskip("mmdet")
    cfg = "configs/mask_rcnn/mask-rcnn_r18_fpn_ocp_tiny-cpu.py"
    r = subprocess.run([sys.executable, "trainers/train_mmdet.py", "--config", cfg, "--work-dir", str(tmp_path),
                        "--cfg-options", "train_cfg.max_iters=2"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "ap.json"
    r = subprocess.run([sys.executable, "-m", "ocp_dali.mmdet.evaluate", "--config", cfg, "--checkpoint",
                        str(tmp_path / "iter_2.pth"), "--batch-size", "2", "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "test scale (256, 256)" in r.stderr  # the tiny config's scale, not a default that ignores it
    for label in ("[1/3] mask_AP", "[2/3] occluded_mask_AP", "[3/3] ochuman_mask_AP"):  # one bar per phase
        assert label in r.stderr
    res = json.loads(out.read_text())
    assert set(res) == {"mask_AP", "occluded_mask_AP", "ochuman_mask_AP"}
    for v in res.values():
        assert 0.0 <= v["AP"] <= 1.0 and 0.0 <= v["bbox_AP"] <= 1.0
    assert res["occluded_mask_AP"]["num_occluded"] > 0
    assert all(k in r.stdout for k in res)  # the printed table
