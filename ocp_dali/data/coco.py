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
from typing import TYPE_CHECKING

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from ocp_dali.data.base import draw_basket, sample_from_annotation
from ocp_dali.data.rle import counts_from_string, pack_counts
from ocp_dali.errors import DataError
from ocp_dali.plan import ImageMeta
from ocp_dali.sample import Sample

if TYPE_CHECKING:
    from ocp_dali.data.imageio import ImageHeader

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


def _is_number(v: object) -> bool:
    """A JSON number (bool is an int to Python, not to JSON)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _positive_int(v: object) -> bool:
    """A positive integer, also when a tool wrote it as a float (``640.0``)."""
    return _is_number(v) and math.isfinite(v) and float(v).is_integer() and v > 0  # type: ignore[arg-type]


def bbox_problem(bbox: object) -> str | None:
    """Why a COCO ``bbox`` ``[x, y, w, h]`` is unusable, or None when it is 4 finite numbers with w, h >= 0."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        return f"bbox {bbox!r} is not 4 numbers"
    if not all(math.isfinite(v) for v in bbox):
        return f"bbox {list(bbox)} is not finite"
    if bbox[2] < 0 or bbox[3] < 0:
        return f"bbox {list(bbox)} has negative size"
    return None


def segmentation_rle(seg: object, h: int, w: int) -> dict:
    """pycocotools RLE (compressed counts) of a COCO ``segmentation`` for an ``h`` x ``w`` image.

    Polygons: lists of ``[x0, y0, x1, y1, ...]`` numbers, rasterised and merged by pycocotools. Self-intersecting
    polygons are rasterised as pycocotools does and kept; parts outside the image are clipped by the
    rasteriser. Parts with fewer than 3 points have no area and are left out of a multi-part mask (pycocotools
    would read a first part of 4 numbers as a box). RLE: ``{"size": [h, w], "counts": str | list[int]}``.

    Raises ``ValueError`` with the reason when no mask can be made: no polygon of 3 points, an odd number of
    coordinates, coordinates that are not finite numbers, an RLE of another size, RLE counts that are not
    non-negative integers or do not cover exactly ``h * w`` pixels. An empty result is not an error here.
    """
    if isinstance(seg, list):
        if not seg:
            raise ValueError("empty segmentation")
        for part in seg:
            if not isinstance(part, list):
                raise ValueError(f"polygon {part!r} is not a list of coordinates")
            if not all(_is_number(v) and math.isfinite(v) for v in part):
                raise ValueError("polygon coordinates are not all finite numbers")
            if len(part) % 2:
                raise ValueError(f"polygon has an odd number of coordinates ({len(part)})")
        polys = [p for p in seg if len(p) >= 6]
        if not polys:
            raise ValueError("no polygon with at least 3 points")
        return mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
    if isinstance(seg, dict) and "counts" in seg:
        if list(seg.get("size", [h, w])) != [h, w]:
            raise ValueError(f"RLE size {seg.get('size')} differs from the image's {[h, w]}")
        counts = seg["counts"]
        if isinstance(counts, (str, bytes)):
            try:
                runs = counts_from_string(counts)
            except (IndexError, OverflowError, UnicodeEncodeError, ValueError) as e:
                raise ValueError(f"RLE counts string cannot be decoded ({type(e).__name__})") from None
            covered = int(runs.astype(np.int64).sum())
            rle = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        elif isinstance(counts, list):
            if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
                raise ValueError("RLE counts must be non-negative integers")
            covered = sum(counts)
            rle = None
        else:
            raise ValueError(f"RLE counts must be a string or a list, got {type(counts).__name__}")
        if covered != h * w:
            raise ValueError(f"RLE counts cover {covered} pixels, the {w}x{h} image has {h * w}")
        return rle if rle is not None else mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    raise ValueError("no segmentation (neither polygons nor RLE)")


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
        filter_empty_gt, min_size: mmdet's ``filter_cfg`` for training sets: with ``filter_empty_gt`` only images
            with a non-crowd annotation of the kept classes are used, and images whose shorter side is below
            ``min_size`` are left out. Filtered images are neither destinations nor paste sources (they are not
            indices of the dataset); their number is logged once. ``OCPCocoDataset`` and ``DALIDetDataLoader`` pass
            the config's ``filter_cfg``.

    ``meta(i)`` reads annotations only (RLE boxes, exact tight mask boxes); ``probe(i)`` reads the image's header;
    ``load(i)`` decodes the image and masks. Crowd annotations become ``Sample.crowd_masks`` (ignore regions, never
    pasted).

    Bad input, and what becomes of it:

    - the json (not found, not json, not COCO, an image entry without an id, a file name or positive integer
      width and height, a category without an id): ``DataError`` naming the json at construction;
    - an image file (missing, empty, corrupt, truncated, unsupported, or not the size the json gives, compared
      after EXIF orientation): ``DataError`` naming the file from ``probe``, ``read_image`` and ``load``;
    - an annotation: a *skip*, logged as a warning, listed in ``skips`` and in ``annotation(i)["skipped"]``, never
      silent. At construction: annotations without an integer id, whose ``image_id`` is not an image of the json
      (pycocotools would drop them silently), without an integer ``category_id``, or repeating an earlier
      annotation's id. When image ``i``'s annotations are first read: an unknown category id, a ``bbox`` that is
      not 4 finite numbers with non-negative size (boxes are otherwise recomputed from the masks), a segmentation
      that cannot make a non-empty mask (see ``segmentation_rle``), and keypoints that are not ``3 * K`` finite
      numbers with visibility 0, 1 or 2 and every labelled point inside ``[0, W] x [0, H]`` (points exactly on the
      border are kept). Unlabelled points (``v = 0``) are set to ``(0, 0, 0)``, COCO's convention.
    """

    def __init__(self, ann_file: str | os.PathLike, img_dir: str | os.PathLike, classes: list[str] | None = None,
                 *, filter_empty_gt: bool = False, min_size: int = 0):
        self.ann_file = str(ann_file)
        self.img_dir = Path(img_dir)
        try:
            with open(self.ann_file, "rb") as f:
                dataset = json.load(f)
        except FileNotFoundError:
            raise DataError(self.ann_file, "annotation file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(self.ann_file, f"not a valid json file ({e})") from None
        if not isinstance(dataset, dict) or not isinstance(dataset.get("images"), list):
            raise DataError(self.ann_file, "not a COCO annotation file (no 'images' list)")
        for key in ("annotations", "categories"):
            dataset.setdefault(key, [])
            if not isinstance(dataset[key], list):
                raise DataError(self.ann_file, f"not a COCO annotation file ('{key}' is not a list)")
        self._check_images(dataset["images"])
        for k, cat in enumerate(dataset["categories"]):
            if not isinstance(cat, dict) or not isinstance(cat.get("id"), int):
                raise DataError(self.ann_file, f"category #{k} has no integer 'id'")
        self.skips: list[Skip] = []
        # skips found at construction, by image id: they also count in that image's annotation(i)["skipped"]
        self._early_skips: dict[int, list[Skip]] = {}
        dataset["annotations"] = self._usable_annotations(dataset)
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
        self.img_ids = self._filtered(sorted(self.coco.imgs), bool(filter_empty_gt), int(min_size))
        kp_names = next((c.get("keypoints") for c in cats if c["id"] in self.cat_ids and c.get("keypoints")), None)
        self.keypoint_names: list[str] | None = list(kp_names) if kp_names else None
        self.flip_index = flip_index_from_names(self.keypoint_names) if self.keypoint_names else None
        self._cache: dict[int, _ImageAnns] = {}

    def _filtered(self, img_ids: list[int], filter_empty_gt: bool, min_size: int) -> list[int]:
        """``img_ids`` less the images mmdet's ``filter_cfg`` leaves out of training (see the class docstring)."""
        if not filter_empty_gt and min_size <= 0:
            return img_ids
        kept_cats = set(self.cat_ids)
        with_gt = {a["image_id"] for a in self.coco.anns.values()
                   if a["category_id"] in kept_cats and not a.get("iscrowd", 0)}
        keep = [i for i in img_ids if (not filter_empty_gt or i in with_gt)
                and min(self.coco.imgs[i]["width"], self.coco.imgs[i]["height"]) >= min_size]
        log.info("%s: %d of %d images left out by filter_empty_gt=%s, min_size=%d", self.ann_file,
                 len(img_ids) - len(keep), len(img_ids), filter_empty_gt, min_size)
        return keep

    def _check_images(self, images: list) -> None:
        """``DataError`` naming the json and the image id for an image entry that cannot be used."""
        seen: set[int] = set()
        for k, im in enumerate(images):
            if not isinstance(im, dict) or not isinstance(im.get("id"), int) or isinstance(im.get("id"), bool):
                raise DataError(self.ann_file, f"image entry #{k} has no integer 'id'")
            iid = im["id"]
            if iid in seen:
                raise DataError(self.ann_file, f"image id {iid} appears twice in 'images'")
            seen.add(iid)
            if not isinstance(im.get("file_name"), str) or not im["file_name"]:
                raise DataError(self.ann_file, f"image id {iid} has no 'file_name'")
            if not (_positive_int(im.get("width")) and _positive_int(im.get("height"))):
                raise DataError(self.ann_file, f"image id {iid} ({im['file_name']}): width and height must be "
                                               f"positive integers, got {im.get('width')!r} x {im.get('height')!r}")

    def _usable_annotations(self, dataset: dict) -> list[dict]:
        """The annotations pycocotools can index; the others become skips (pycocotools would raise on a missing
        id or category and silently ignore annotations of images the json does not list)."""
        files = {im["id"]: str(self.img_dir / im["file_name"]) for im in dataset["images"]}
        keep, ids = [], set()
        for k, ann in enumerate(dataset["annotations"]):
            aid = ann.get("id") if isinstance(ann, dict) else None
            if not isinstance(aid, int) or isinstance(aid, bool):
                self._record(Skip(self.ann_file, -1, f"annotation #{k} has no integer 'id'"))
                continue
            iid = ann.get("image_id")
            if not isinstance(iid, int) or iid not in files:
                self._record(Skip(self.ann_file, aid, f"image_id {iid!r} is not an image of this file"))
                continue
            cat = ann.get("category_id")
            why = ("no category_id" if cat is None else
                   f"category_id {cat!r} is not an integer" if not isinstance(cat, int) else
                   "annotation id appears twice" if aid in ids else None)
            if why is not None:
                s = Skip(files[iid], aid, why)
                self._record(s)
                self._early_skips.setdefault(iid, []).append(s)
                continue
            ids.add(aid)
            keep.append(ann)
        return keep

    def __len__(self) -> int:
        return len(self.img_ids)

    def file_path(self, index: int) -> Path:
        return self.img_dir / self.coco.imgs[self.img_ids[index]]["file_name"]

    def _record(self, s: Skip) -> None:
        self.skips.append(s)
        log.warning("skipped annotation %s of %s: %s", s.ann_id, s.file, s.reason)

    def _skip(self, ann_id: int, reason: str, index: int) -> None:
        self._record(Skip(str(self.file_path(index)), int(ann_id), reason))

    def _rle(self, ann: dict, h: int, w: int, index: int):
        """RLE of one annotation, or None (recorded as a skip) when it cannot make a non-empty mask."""
        aid = ann["id"]
        try:
            rle = segmentation_rle(ann.get("segmentation"), h, w)
        except ValueError as e:
            self._skip(aid, str(e), index)
            return None
        except Exception as e:  # pycocotools raises bare Exceptions / TypeErrors on malformed input
            self._skip(aid, f"segmentation cannot be rasterised ({type(e).__name__}: {e})", index)
            return None
        if int(mask_utils.area(rle)) == 0:
            self._skip(aid, "empty mask (zero area or outside the image)", index)
            return None
        return rle

    def _keypoints(self, ann: dict, k: int, h: int, w: int, index: int) -> np.ndarray | None:
        """(K, 3) float32 keypoints of one annotation, or None (recorded as a skip) when they are unusable."""
        raw = ann.get("keypoints") or [0] * (3 * k)
        if not isinstance(raw, list) or not all(_is_number(v) for v in raw):
            self._skip(ann["id"], f"keypoints must be {3 * k} finite numbers", index)
            return None
        kp = np.asarray(raw, dtype=np.float32)
        if kp.size != 3 * k or not np.all(np.isfinite(kp)):
            self._skip(ann["id"], f"keypoints must be {3 * k} finite numbers", index)
            return None
        kp = kp.reshape(k, 3)
        if not np.isin(kp[:, 2], (0, 1, 2)).all():
            self._skip(ann["id"], "keypoint visibility must be 0, 1 or 2", index)
            return None
        kp[kp[:, 2] == 0] = 0  # unlabelled: COCO's (0, 0, 0); the coordinates carry nothing
        lab = kp[:, 2] > 0
        outside = lab & ((kp[:, 0] < 0) | (kp[:, 0] > w) | (kp[:, 1] < 0) | (kp[:, 1] > h))
        if outside.any():
            j = int(np.flatnonzero(outside)[0])
            self._skip(ann["id"], f"keypoint {j} at ({kp[j, 0]:g}, {kp[j, 1]:g}) is outside the {w}x{h} image", index)
            return None
        return kp

    def _anns(self, index: int) -> _ImageAnns:
        if index in self._cache:
            return self._cache[index]
        if not 0 <= index < len(self):
            raise IndexError(f"{self.ann_file}: index {index} out of range for {len(self)} images")
        img_id = self.img_ids[index]
        info = self.coco.imgs[img_id]
        h, w = int(info["height"]), int(info["width"])
        rles, labels, ann_ids, kps, crowd = [], [], [], [], []
        first_skip = len(self.skips)
        k = len(self.keypoint_names) if self.keypoint_names else 0
        for ann in self.coco.imgToAnns.get(img_id, []):
            if ann["category_id"] not in self.coco.cats:
                self._skip(ann["id"], f"unknown category id {ann['category_id']!r}", index)
                continue
            if ann["category_id"] not in self.cat_ids:
                continue
            if ann.get("bbox") is not None and (why := bbox_problem(ann["bbox"])) is not None:
                self._skip(ann["id"], why, index)
                continue
            rle = self._rle(ann, h, w, index)
            if rle is None:
                continue
            if ann.get("iscrowd", 0):
                crowd.append(rle)
                continue
            if k:
                kp = self._keypoints(ann, k, h, w, index)
                if kp is None:
                    continue
                kps.append(kp)
            rles.append(rle)
            labels.append(int(ann["category_id"]))
            ann_ids.append(int(ann["id"]))
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
            skipped=tuple(self._early_skips.get(img_id, [])) + tuple(self.skips[first_skip:]),
        )
        self._cache[index] = rec
        return rec

    def instances(self, index: int) -> _ImageAnns:
        """The parsed annotations of image ``index``: RLEs, labels (category ids), annotation ids, tight boxes,
        keypoints and crowd RLEs of what survived the checks, and the skips (for adapters such as mmdet's)."""
        return self._anns(index)

    def meta(self, index: int) -> ImageMeta:
        """Planning metadata of image ``index`` (no decoding)."""
        a = self._anns(index)
        info = self.coco.imgs[self.img_ids[index]]
        return ImageMeta(int(info["height"]), int(info["width"]), a.boxes, a.labels, index, self.flip_index)

    def _check_size(self, index: int, width: int, height: int) -> None:
        """``DataError`` naming the file when the displayed size differs from the json's."""
        from ocp_dali.data.imageio import check_size  # Pillow only when images are read

        info = self.coco.imgs[self.img_ids[index]]
        check_size(str(self.file_path(index)), width, height, info["width"], info["height"])

    def probe(self, index: int, data: np.ndarray | bytes | None = None) -> ImageHeader:
        """Header of image ``index`` (no pixel decoding), checked against the json: ``DataError`` naming the file
        when it is missing, unreadable, truncated, of an unsupported format, or not the json's size after EXIF
        orientation. ``data``: the file's bytes when the caller has read them already (``read_bytes``)."""
        from ocp_dali.data.imageio import probe_image  # Pillow only when images are read

        path = str(self.file_path(index))
        header = probe_image(self.read_bytes(index) if data is None else data, path)
        self._check_size(index, header.width, header.height)
        return header

    def read_image(self, index: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB pixels of image ``index``, EXIF orientation applied (``imageio.decode_image``);
        ``DataError`` naming the file when it cannot be read or is not the json's size."""
        from ocp_dali.data.imageio import decode_image  # Pillow only when images are read

        rgb = decode_image(self.read_bytes(index), str(self.file_path(index)))
        self._check_size(index, rgb.shape[1], rgb.shape[0])
        return rgb

    def read_bytes(self, index: int) -> np.ndarray:
        """The encoded file of image ``index`` (uint8, for a decoder such as DALI's; see
        ``imageio.bytes_for_decoder`` for the files that must be re-encoded first)."""
        path = self.file_path(index)
        try:
            return np.fromfile(path, dtype=np.uint8)
        except FileNotFoundError:
            raise DataError(str(path), "image file not found") from None
        except OSError as e:  # a folder, no permission ...
            raise DataError(str(path), f"cannot read image file ({type(e).__name__}: {e})") from None

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
