"""The three occlusion figures of an mmdet checkpoint on OCHuman-style data.

    python -m ocp_dali.mmdet.evaluate --config CFG --checkpoint CKPT [--data ../shared/data/ochuman_samples]
        [--out results.json] [--scale 1333 800]

1. ``mask_AP``: COCO mask AP on the COCO-format json (``mmpose/test_ochuman.json``);
2. ``occluded_mask_AP``: AP on instances with occlusion rate > 0.15 of the occlusion-stress set that OC&P makes
   from the same images (fixed seed, exact rates; written to a temporary folder, never kept);
3. ``ochuman_mask_AP``: mask AP on OCHuman's native-format json (``icevision/annotations/ochuman.json``).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ocp_dali.config import OCPConfig
from ocp_dali.data.coco import CocoInstances
from ocp_dali.eval import coco_from_ochuman, mask_ap, occluded_mask_ap, occlusion_stress_set


def predict(model, pipeline, gt: dict, img_dir: Path, label_to_cat: list[int]) -> list[dict]:
    """Detections (RLE masks) of ``model`` on every image of ``gt``."""
    from mmdet.apis import inference_detector
    from pycocotools import mask as mask_utils

    dets = []
    for im in tqdm(gt["images"], desc="inference", leave=False):
        res = inference_detector(model, str(img_dir / im["file_name"]), test_pipeline=pipeline)
        inst = res.pred_instances
        masks = inst.masks.cpu().numpy().astype(np.uint8) if len(inst) else np.zeros((0, 1, 1), np.uint8)
        for m, s, lab in zip(masks, inst.scores.cpu().numpy(), inst.labels.cpu().numpy()):
            rle = mask_utils.encode(np.asfortranarray(m))
            rle["counts"] = rle["counts"].decode("ascii")
            dets.append(dict(image_id=im["id"], category_id=label_to_cat[int(lab)], segmentation=rle,
                             score=float(s)))
    return dets


def evaluate(config: str, checkpoint: str, data: Path, scale: tuple[int, int] = (1333, 800)) -> dict:
    from mmcv.transforms import Compose
    from mmdet.apis import init_detector
    from mmdet.utils import register_all_modules

    import ocp_dali.mmdet  # noqa: F401
    from ocp_dali.mmdet.checkpoint import trust_own_checkpoints

    from mmengine.config import Config

    register_all_modules()
    trust_own_checkpoints()
    cfg = Config.fromfile(config)
    if cfg.get("test_dataloader") is None:  # init_detector reads the test dataset's metainfo
        cfg.test_dataloader = dict(dataset=dict(type="CocoDataset", metainfo=dict(classes=("person",)), pipeline=[]))
    model = init_detector(cfg, checkpoint, device="cpu")
    pipeline = Compose([dict(type="LoadImageFromFile"), dict(type="Resize", scale=scale, keep_ratio=True),
                        dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape",
                                                              "scale_factor"))])
    out: dict = {}
    coco_json = data / "mmpose" / "test_ochuman.json"
    gt = json.loads(coco_json.read_text())
    out["mask_AP"] = mask_ap(gt, predict(model, pipeline, gt, data / "mmpose", [1]))
    with tempfile.TemporaryDirectory() as tmp:
        ds = CocoInstances(coco_json, data / "mmpose", classes=["person"])
        path, img_dir, rates = occlusion_stress_set(ds, OCPConfig.ocp(prob=1.0), 0, tmp)
        sgt = json.loads(path.read_text())
        out["occluded_mask_AP"] = occluded_mask_ap(sgt, predict(model, pipeline, sgt, img_dir, [1]), rates)
    native = coco_from_ochuman(data / "icevision" / "annotations" / "ochuman.json")
    out["ochuman_mask_AP"] = mask_ap(native, predict(model, pipeline, native, data / "icevision" / "images", [1]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", default="../shared/data/ochuman_samples")
    ap.add_argument("--scale", nargs=2, type=int, default=(1333, 800))
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    res = evaluate(args.config, args.checkpoint, Path(args.data), tuple(args.scale))
    print(f"{'figure':<20}{'AP':>8}{'AP50':>8}{'AP75':>8}")
    for k, v in res.items():
        print(f"{k:<20}{v['AP']:>8.3f}{v['AP50']:>8.3f}{v['AP75']:>8.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
