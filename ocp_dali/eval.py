"""Occlusion-aware evaluation: COCO mask AP, AP on occluded instances, OCHuman's own format, and an
occlusion-stress validation set made by OC&P (spec §4.2).

- ``mask_ap(gt, detections)``: COCO mask AP (pycocotools ``COCOeval``, ``iouType="segm"``).
- ``occluded_mask_ap(gt, detections, rates, thr=0.15)``: AP on ground-truth instances whose occlusion rate is above
  ``thr`` (the Amodal seed's figure), that is mask AP on ``occluded_subset(gt, rates, thr)``: the same images with
  the other instances made crowd (ignore) regions, so detections of them count neither as hits nor as false
  positives. ``ocp_dali.mmdet.evaluate`` writes that subset as a json for mmdet's ``CocoMetric``.
- ``coco_from_ochuman(path)``: OCHuman's native json (``images[].annotations[]`` with ``segms`` outer/inner polygons)
  as a COCO dict, following OCHumanApi's ``toCocoFormat`` (persons with a mask; mask = outer minus inner).
- ``occlusion_stress_set(dataset, cfg, seed, out_dir)``: every image augmented deterministically by OC&P, written
  with visible masks, amodal masks and exact occlusion rates; evaluation sets made at run time, never committed.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from ocp_dali.data.coco import segmentation_rle
from ocp_dali.data.rle import encode_mask

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _coco(d: dict) -> COCO:
    c = COCO()
    c.dataset = json.loads(json.dumps(d))  # a private copy: COCO mutates it
    with contextlib.redirect_stdout(io.StringIO()):
        c.createIndex()
    return c


def _json_rle(seg: list | dict, h: int, w: int) -> dict:
    """A COCO ``segmentation`` (polygons or RLE) of an ``h`` x ``w`` image as an RLE dict with ``str`` counts."""
    rle = segmentation_rle(seg, h, w)
    counts = rle["counts"]
    return {"size": [h, w], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def mask_ap(gt: dict, detections: list[dict]) -> dict[str, float]:
    """COCO mask AP of ``detections`` (``image_id``, ``category_id``, ``segmentation`` RLE, ``score``)."""
    if not detections:
        return {k: 0.0 for k in STAT_NAMES}
    g = _coco(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        d = g.loadRes(json.loads(json.dumps(detections)))
        ev = COCOeval(g, d, iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(max(v, 0.0)) for k, v in zip(STAT_NAMES, ev.stats[:6])}


def occluded_subset(gt: dict, rates: dict[int, float], thr: float = 0.15) -> tuple[dict, int]:
    """A copy of ``gt`` in which only the instances with occlusion rate ``> thr`` (``rates``: annotation id ->
    rate) are ground truth; the others become crowd regions (RLE, as COCOeval wants for crowds), which COCOeval
    ignores: detecting them neither scores nor costs. Returns (the COCO dict, number of occluded instances)."""
    g = json.loads(json.dumps(gt))
    sizes = {i["id"]: (int(i["height"]), int(i["width"])) for i in g["images"]}
    n = 0
    for a in g["annotations"]:
        if a.get("iscrowd", 0):
            continue
        if rates.get(int(a["id"]), 0.0) > thr:
            n += 1
        else:
            a["iscrowd"] = 1
            a["segmentation"] = _json_rle(a["segmentation"], *sizes[a["image_id"]])
    return g, n


def occluded_mask_ap(gt: dict, detections: list[dict], rates: dict[int, float], thr: float = 0.15) -> dict:
    """Mask AP on the instances with occlusion rate ``> thr``; the rest are ignore regions (``occluded_subset``).
    Also returns how many instances were evaluated (``num_occluded``)."""
    g, n = occluded_subset(gt, rates, thr)
    out = mask_ap(g, detections) if n else {k: 0.0 for k in STAT_NAMES}
    out["num_occluded"] = n
    return out


def coco_from_ochuman(path: str | Path) -> dict:
    """OCHuman's native annotation file as a COCO dict (persons with a mask; mask = union(outer) - union(inner))."""
    src = json.loads(Path(path).read_text())
    images, anns = [], []
    for k, im in enumerate(src["images"], start=1):
        h, w = int(im["height"]), int(im["width"])
        images.append(dict(id=k, file_name=im["file_name"], height=h, width=w))
        for a in im.get("annotations", []):
            segms = a.get("segms")
            if not segms or not segms.get("outer"):
                continue
            outer = [p for p in segms["outer"] if len(p) >= 6]
            if not outer:
                continue
            m = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(outer, h, w))).astype(bool)
            inner = [p for p in segms.get("inner") or [] if len(p) >= 6]
            if inner:
                m &= ~mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(inner, h, w))).astype(bool)
            if not m.any():
                continue
            x0, y0, x1, y1 = a["bbox"]
            anns.append(dict(id=len(anns) + 1, image_id=k, category_id=1, iscrowd=0, segmentation=encode_mask(m),
                             area=float(m.sum()), bbox=[x0, y0, x1 - x0, y1 - y0],
                             max_iou=float(a.get("max_iou", 0.0))))
    return dict(images=images, annotations=anns, categories=[dict(id=1, name="person")])


def occlusion_stress_set(dataset, cfg, seed: int, out_dir: str | Path) -> tuple[Path, Path, dict[int, float]]:
    """Apply OC&P (``cfg``, ``seed``, epoch 0) to every image of ``dataset`` and write a COCO set: PNG images (run
    time only: images made from others' photos are never to be committed), visible masks as ``segmentation``,
    ``amodal_segmentation``, ``occlusion_rate``. Categories keep the dataset's names where it has them
    (``cat_ids``, ``classes``: ``CocoInstances``), so that tools matching classes by name (mmdet) find them.
    Returns (json path, image folder, {ann id: occlusion rate})."""
    from PIL import Image

    from ocp_dali.augment import augment

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images, anns, rates = [], [], {}
    for i in tqdm(range(len(dataset)), desc=f"occlusion-stress set (OC&P, seed {seed})", unit="img", leave=False):
        s = augment(dataset, i, epoch=0, seed=seed, cfg=cfg)
        name = f"{i:06d}.png"
        Image.fromarray(s.image).save(out / "images" / name)
        images.append(dict(id=i + 1, file_name=name, height=s.height, width=s.width))
        for k in range(len(s)):
            x0, y0, x1, y1 = (float(v) for v in s.boxes[k])
            aid = len(anns) + 1
            rates[aid] = float(s.occlusion_rate[k])
            anns.append(dict(id=aid, image_id=i + 1, category_id=int(s.labels[k]), iscrowd=0,
                             segmentation=encode_mask(s.masks[k]), amodal_segmentation=encode_mask(s.amodal_masks[k]),
                             occlusion_rate=rates[aid], pasted=bool(s.pasted[k]), area=float(s.masks[k].sum()),
                             bbox=[x0, y0, x1 - x0, y1 - y0]))
    names = dict(zip(getattr(dataset, "cat_ids", []), getattr(dataset, "classes", [])))
    used = sorted({a["category_id"] for a in anns} | set(names)) or [1]
    cats = [dict(id=int(c), name=str(names.get(c, c))) for c in used]
    path = out / "occlusion_stress.json"
    path.write_text(json.dumps(dict(images=images, annotations=anns, categories=cats)))
    return path, out / "images", rates


def detections_from_gt(gt: dict, score: float = 1.0, keep: float = 1.0, seed: int = 0) -> list[dict[str, Any]]:
    """Ground truth as detections (an oracle for checking the evaluation itself); ``keep`` < 1 drops a fraction."""
    rng = np.random.default_rng(seed)
    out = []
    for a in gt["annotations"]:
        if a.get("iscrowd", 0) or rng.random() >= keep:
            continue
        seg = a["segmentation"]
        if isinstance(seg, list):
            im = next(i for i in gt["images"] if i["id"] == a["image_id"])
            seg = _json_rle(seg, im["height"], im["width"])
        out.append(dict(image_id=a["image_id"], category_id=a["category_id"], segmentation=seg, score=score))
    return out
