"""COCO-format instance data over pycocotools: polygons, RLE, crowd regions and keypoints."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from ocp_dali.data.base import draw_basket, sample_from_annotation
from ocp_dali.data.rle import pack_counts
from ocp_dali.errors import DataError
from ocp_dali.plan import ImageMeta
from ocp_dali.sample import Sample

log = logging.getLogger(__name__)

# COCO's 17 person keypoints: flipping swaps each left_* with its right_* partner.
COCO_KEYPOINT_FLIP = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)


def flip_index_from_names(names: list[str]) -> tuple[int, ...]:
    """Left/right permutation from keypoint names (``left_x`` <-> ``right_x``; others map to themselves)."""
    pos = {n: i for i, n in enumerate(names)}
    out = []
    for i, n in enumerate(names):
        if n.startswith("left_"):
            out.append(pos.get("right_" + n[5:], i))
        elif n.startswith("right_"):
            out.append(pos.get("left_" + n[6:], i))
        else:
            out.append(i)
    return tuple(out)


@dataclass(frozen=True)
class Skip:
    """An annotation left out of the samples, and why (counted and logged, never silent)."""

    file: str
    ann_id: int
    reason: str


@dataclass(frozen=True)
class _ImageAnns:
    rles: list  # non-crowd instances, in sample order
    labels: np.ndarray
    ann_ids: np.ndarray
    boxes: np.ndarray  # tight mask boxes, int64 (N, 4)
    keypoints: np.ndarray | None
    crowd_rles: list
    skipped: tuple[Skip, ...]


class CocoInstances:
    """Instances of a COCO json (``instances_*.json`` or ``person_keypoints_*.json``) and its image folder.

    Args:
        ann_file: the json.
        img_dir: folder the images' ``file_name`` is relative to.
        classes: category names to keep (``None``: all). Annotations of other categories are not loaded.

    ``meta(i)`` reads annotations only (RLE boxes, exact tight mask boxes); ``load(i)`` decodes the image and
    masks. Crowd annotations become ``Sample.crowd_masks`` (ignore regions, never pasted). Annotations that cannot
    make a non-empty mask are skipped, logged, and listed in ``skips``.
    """

    def __init__(self, ann_file: str | os.PathLike, img_dir: str | os.PathLike, classes: list[str] | None = None):
        self.ann_file = str(ann_file)
        self.img_dir = Path(img_dir)
        try:
            with open(self.ann_file, "rb") as f:
                dataset = json.load(f)
        except FileNotFoundError:
            raise DataError(self.ann_file, "annotation file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(self.ann_file, f"not a valid json file ({e})") from None
        if not isinstance(dataset, dict) or "images" not in dataset:
            raise DataError(self.ann_file, "not a COCO annotation file (no 'images' list)")
        dataset.setdefault("annotations", [])
        dataset.setdefault("categories", [])
        self.coco = COCO()
        self.coco.dataset = dataset
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco.createIndex()
        cats = self.coco.loadCats(self.coco.getCatIds())
        if classes is not None:
            by_name = {c["name"]: c["id"] for c in cats}
            unknown = [c for c in classes if c not in by_name]
            if unknown:
                raise DataError(self.ann_file, f"classes {unknown} not in its categories {sorted(by_name)}")
            self.cat_ids = [by_name[c] for c in classes]
        else:
            self.cat_ids = [c["id"] for c in cats]
        self.classes = [self.coco.cats[c]["name"] for c in self.cat_ids]
        self.img_ids = sorted(self.coco.imgs)
        kp_names = next((c.get("keypoints") for c in cats if c["id"] in self.cat_ids and c.get("keypoints")), None)
        self.keypoint_names: list[str] | None = list(kp_names) if kp_names else None
        self.flip_index = flip_index_from_names(self.keypoint_names) if self.keypoint_names else None
        self.skips: list[Skip] = []
        self._cache: dict[int, _ImageAnns] = {}

    def __len__(self) -> int:
        return len(self.img_ids)

    def file_path(self, index: int) -> Path:
        return self.img_dir / self.coco.imgs[self.img_ids[index]]["file_name"]

    def _skip(self, ann_id: int, reason: str, index: int) -> None:
        s = Skip(str(self.file_path(index)), int(ann_id), reason)
        self.skips.append(s)
        log.warning("skipped annotation %s of %s: %s", s.ann_id, s.file, reason)

    def _rle(self, ann: dict, h: int, w: int, index: int):
        """RLE of one annotation, or None (recorded as a skip) when it cannot make a mask."""
        seg = ann.get("segmentation")
        aid = ann.get("id", -1)
        try:
            if isinstance(seg, list):
                polys = [p for p in seg if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
                polys = [p for p in polys if all(isinstance(v, (int, float)) and math.isfinite(v) for v in p)]
                if not polys:
                    self._skip(aid, "no polygon with at least 3 finite points", index)
                    return None
                rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
            elif isinstance(seg, dict) and "counts" in seg:
                if list(seg.get("size", [h, w])) != [h, w]:
                    self._skip(aid, f"RLE size {seg.get('size')} differs from the image's {[h, w]}", index)
                    return None
                rle = mask_utils.frPyObjects(seg, h, w) if isinstance(seg["counts"], list) else dict(seg)
                if isinstance(rle["counts"], str):
                    rle["counts"] = rle["counts"].encode("ascii")
            else:
                self._skip(aid, "no segmentation (neither polygons nor RLE)", index)
                return None
        except Exception as e:  # pycocotools raises bare Exceptions / TypeErrors on malformed input
            self._skip(aid, f"segmentation cannot be rasterised ({type(e).__name__}: {e})", index)
            return None
        if int(mask_utils.area(rle)) == 0:
            self._skip(aid, "empty mask (zero area or outside the image)", index)
            return None
        return rle

    def _anns(self, index: int) -> _ImageAnns:
        if index in self._cache:
            return self._cache[index]
        if not 0 <= index < len(self):
            raise IndexError(f"{self.ann_file}: index {index} out of range for {len(self)} images")
        info = self.coco.imgs[self.img_ids[index]]
        h, w = int(info["height"]), int(info["width"])
        rles, labels, ann_ids, kps, crowd = [], [], [], [], []
        first_skip = len(self.skips)
        k = len(self.keypoint_names) if self.keypoint_names else 0
        for ann in self.coco.imgToAnns.get(self.img_ids[index], []):
            if ann.get("category_id") not in self.coco.cats:
                self._skip(ann.get("id", -1), f"unknown category id {ann.get('category_id')}", index)
                continue
            if ann["category_id"] not in self.cat_ids:
                continue
            rle = self._rle(ann, h, w, index)
            if rle is None:
                continue
            if ann.get("iscrowd", 0):
                crowd.append(rle)
                continue
            if k:
                kp = np.asarray(ann.get("keypoints") or np.zeros(3 * k), dtype=np.float32)
                if kp.size != 3 * k or not np.all(np.isfinite(kp)):
                    self._skip(ann.get("id", -1), f"keypoints must be {3 * k} finite numbers", index)
                    continue
                kps.append(kp.reshape(k, 3))
            rles.append(rle)
            labels.append(int(ann["category_id"]))
            ann_ids.append(int(ann.get("id", -1)))
        if rles:
            bb = mask_utils.toBbox(rles).astype(np.int64)
            boxes = np.stack([bb[:, 0], bb[:, 1], bb[:, 0] + bb[:, 2], bb[:, 1] + bb[:, 3]], axis=1)
        else:
            boxes = np.zeros((0, 4), dtype=np.int64)
        rec = _ImageAnns(
            rles=rles,
            labels=np.asarray(labels, dtype=np.int64),
            ann_ids=np.asarray(ann_ids, dtype=np.int64),
            boxes=boxes,
            keypoints=(np.stack(kps) if kps else np.zeros((0, k, 3), np.float32)) if k else None,
            crowd_rles=crowd,
            skipped=tuple(self.skips[first_skip:]),
        )
        self._cache[index] = rec
        return rec

    def meta(self, index: int) -> ImageMeta:
        """Planning metadata of image ``index`` (no decoding)."""
        a = self._anns(index)
        info = self.coco.imgs[self.img_ids[index]]
        return ImageMeta(int(info["height"]), int(info["width"]), a.boxes, a.labels, index, self.flip_index)

    def read_image(self, index: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB pixels of image ``index``; ``DataError`` naming the file when it cannot be read."""
        from PIL import Image, UnidentifiedImageError

        path = self.file_path(index)
        info = self.coco.imgs[self.img_ids[index]]
        try:
            with Image.open(path) as im:
                im.load()
                rgb = np.asarray(im.convert("RGB"))
        except FileNotFoundError:
            raise DataError(str(path), "image file not found") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise DataError(str(path), f"cannot decode image ({e})") from None
        if rgb.shape[:2] != (int(info["height"]), int(info["width"])):
            raise DataError(
                str(path), f"image is {rgb.shape[1]}x{rgb.shape[0]}, annotations say {info['width']}x{info['height']}"
            )
        return rgb

    def read_bytes(self, index: int) -> np.ndarray:
        """The encoded file of image ``index`` (uint8, for a decoder such as DALI's)."""
        path = self.file_path(index)
        try:
            return np.fromfile(path, dtype=np.uint8)
        except FileNotFoundError:
            raise DataError(str(path), "image file not found") from None

    def annotation(self, index: int) -> dict:
        """Annotations of image ``index`` as small arrays (see ``sample_from_annotation``), plus ``skipped``:
        ``(ann_id, reason)`` of annotations left out of this image."""
        a = self._anns(index)
        info = self.coco.imgs[self.img_ids[index]]
        return dict(height=int(info["height"]), width=int(info["width"]), counts=pack_counts(a.rles),
                    crowd_counts=pack_counts(a.crowd_rles), labels=a.labels, ann_ids=a.ann_ids,
                    keypoints=a.keypoints, image_id=int(self.img_ids[index]), file_name=str(self.file_path(index)),
                    skipped=[(s.ann_id, s.reason) for s in a.skipped])

    def load(self, index: int) -> Sample:
        """Decoded sample of image ``index``: visible = amodal masks, nothing pasted."""
        return sample_from_annotation(self.read_image(index), self.annotation(index))

    def basket_indices(self, rng: np.random.Generator, index: int, size: int) -> list[int]:
        """``size`` other images drawn without replacement (the paste sources)."""
        return draw_basket(rng, index, len(self), size)
