"""Occlusion-aware evaluation: oracle checks of the three figures, and the CLI on a trained checkpoint."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT, data_path
from ocp_dali import CocoInstances, OCPConfig
from ocp_dali.eval import (coco_from_ochuman, detections_from_gt, mask_ap, occluded_mask_ap,
                           occlusion_stress_set)


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
    res = occluded_mask_ap(gt, detections_from_gt(gt), rates)
    assert res["AP"] == pytest.approx(1.0) and res["num_occluded"] == len(occluded)
    # detections of only the non-occluded instances find nothing that counts
    plain = [d for d, a in zip(detections_from_gt(gt), gt["annotations"]) if a["occlusion_rate"] <= 0.15]
    assert occluded_mask_ap(gt, plain, rates)["AP"] == 0.0


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
                        str(tmp_path / "iter_2.pth"), "--scale", "256", "256", "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert set(res) == {"mask_AP", "occluded_mask_AP", "ochuman_mask_AP"}
    for v in res.values():
        assert 0.0 <= v["AP"] <= 1.0
    assert res["occluded_mask_AP"]["num_occluded"] > 0
