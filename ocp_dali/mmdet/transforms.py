"""OC&P as an mmdet 3 transform (the CPU path) and the mix-dataset wrapper that seeds it per sample."""
from __future__ import annotations

import multiprocessing
import warnings
from typing import Any

import numpy as np
from mmcv.transforms import BaseTransform
from mmdet.datasets import MultiImageMixDataset
from mmdet.registry import DATASETS, TRANSFORMS
from mmdet.structures.bbox import HorizontalBoxes
from mmdet.structures.mask import BitmapMasks

from ocp_dali.config import OCPConfig
from ocp_dali.data.base import draw_basket
from ocp_dali.masks import tight_boxes
from ocp_dali.plan import ImageMeta, sample_plan, sample_rng
from ocp_dali.reference import apply_numpy
from ocp_dali.sample import Sample

_SRC_ID = 1_000_000  # ann ids of source instances: (basket position + 1) * _SRC_ID + row


def _masks_of(results: dict, h: int, w: int) -> np.ndarray:
    m = results.get("gt_masks")
    if m is None:
        return np.zeros((0, h, w), dtype=bool)
    arr = np.asarray(m.masks if isinstance(m, BitmapMasks) else m.to_ndarray()).reshape(-1, h, w)
    if arr.dtype == np.uint8 and (arr.size == 0 or arr.max() <= 1):
        return arr.view(bool)  # 0/1 bytes are valid bools: no copy
    return arr.astype(bool)


def bitmap_masks(masks: np.ndarray, h: int, w: int) -> BitmapMasks:
    """``BitmapMasks`` over an (N, h, w) uint8 array without copying it (its constructor np.stack-s the array,
    a full copy of every mask)."""
    bm = BitmapMasks.__new__(BitmapMasks)
    bm.height, bm.width, bm.masks = h, w, masks.reshape(-1, h, w)
    return bm


def results_to_sample(results: dict, tag: int, ignore_as_crowd: bool) -> tuple[Sample, np.ndarray, np.ndarray]:
    """An mmdet results dict as a ``Sample`` (RGB copy of mmdet's BGR image), the ignore flag of each instance row
    and the labels of the crowd regions.

    Ignore-flagged objects become crowd regions (never pasted) when ``ignore_as_crowd``; otherwise they stay
    instances (mmdet ``CopyPaste`` semantics) and the returned flags say which rows they are.
    """
    img = results["img"]
    if img.dtype != np.uint8:  # e.g. LoadImageFromFile(to_float32=True): OC&P works on 8-bit pixels
        img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    h, w = img.shape[:2]
    masks = _masks_of(results, h, w)
    labels = np.asarray(results.get("gt_bboxes_labels", np.zeros(len(masks))), dtype=np.int64)
    flags = np.asarray(results.get("gt_ignore_flags", np.zeros(len(masks), bool)), dtype=bool)
    if len(labels) != len(masks) or len(flags) != len(masks):
        raise ValueError(f"{results.get('img_path', 'sample')}: {len(masks)} masks, {len(labels)} labels, "
                         f"{len(flags)} ignore flags")
    nonempty = masks.reshape(len(masks), -1).any(axis=1) if len(masks) else np.zeros(0, bool)
    rows = np.flatnonzero(nonempty & ~flags) if ignore_as_crowd else np.flatnonzero(nonempty)
    crowd_rows = np.flatnonzero(flags & nonempty) if ignore_as_crowd else np.zeros(0, np.int64)
    # mmdet images are BGR and OC&P's colour jitter expects RGB: a reversed view, no copy
    sample = Sample.from_instances(img[..., ::-1], masks[rows] if len(rows) < len(masks) else masks, labels[rows],
                                   ann_ids=tag * _SRC_ID + rows, crowd_masks=masks[crowd_rows],
                                   file_name=str(results.get("img_path", "")))
    return sample, flags[rows], labels[crowd_rows]


def _surviving_crowd_labels(before: np.ndarray, labels: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Labels of the crowd regions ``apply`` kept: each kept region is what a pasted-over input region left, in
    input order."""
    out, j = [], 0
    for m in after:
        while j < len(before) and (m & ~before[j]).any():
            j += 1
        out.append(labels[min(j, len(labels) - 1)])
        j += 1
    return np.asarray(out, dtype=np.int64)


@TRANSFORMS.register_module()
class OcclusionCopyPaste(BaseTransform):
    """Occlusion Copy & Paste (or, with ``mode="simple"``, mmdet ``CopyPaste`` semantics) for mmdet 3 pipelines.

    Use inside ``OCPMixDataset`` (or ``MultiImageMixDataset``): ``get_indexes`` draws the basket. Randomness comes
    from ``(seed, epoch, sample index)`` (set by ``OCPMixDataset``), never from the global NumPy generator, so a
    sample is augmented the same way in any worker. Parameters are ``OCPConfig``'s (seed names), optionally on top
    of a ``preset`` (``"ocp"``, ``"basic"``, ``"simple"``).

    Required Keys: img (BGR; np.uint8, or float images rounded to 8 bits), gt_bboxes (HorizontalBoxes), gt_bboxes_labels (np.int64),
    gt_masks (BitmapMasks or PolygonMasks), gt_ignore_flags (bool), mix_results (list of dicts with those keys).

    Modified Keys: img, gt_bboxes (tight boxes of the visible masks), gt_bboxes_labels, gt_masks (visible),
    gt_ignore_flags.

    Added Keys: gt_amodal_masks (BitmapMasks), gt_occluder_masks (BitmapMasks), gt_occlusion_rate (np.float32),
    gt_occlusion_order (np.bool_ (N, N)), gt_pasted (np.bool_); rows of ignore regions have rate 0, no order and
    empty occluders.
    """

    def __init__(self, seed: int = 0, preset: str | None = None, **ocp: Any) -> None:
        if isinstance(ocp.get("paste_num"), list):
            ocp["paste_num"] = tuple(ocp["paste_num"])
        if preset is None:
            self.cfg = OCPConfig(**ocp)
        elif preset in ("ocp", "basic", "simple"):
            self.cfg = getattr(OCPConfig, preset)(**ocp)
        else:
            raise ValueError(f"OcclusionCopyPaste: preset must be 'ocp', 'basic', 'simple' or None, got {preset!r}")
        self.seed = int(seed)
        self._key: tuple[int, int] | None = None
        self._length = 0
        self._fallback = np.random.default_rng(seed)

    def set_sample(self, index: int, epoch: int) -> None:
        """The sample the next ``get_indexes`` / ``transform`` pair works on (called by ``OCPMixDataset``)."""
        self._key = (int(index), int(epoch))

    def _rng(self) -> tuple[np.random.Generator, int]:
        """The sample's generator, positioned before the basket draw (or the fallback outside OCPMixDataset)."""
        if self._key is None:
            warnings.warn("OcclusionCopyPaste outside OCPMixDataset: randomness is not derived from "
                          "(seed, epoch, index) and is not reproducible across workers", stacklevel=3)
            return self._fallback, 0
        index, epoch = self._key
        return sample_rng(self.seed, epoch, index), index

    def get_indexes(self, dataset) -> list[int]:
        self._length = len(dataset)
        rng, index = self._rng()
        return draw_basket(rng, index, self._length, self.cfg.basket_size)

    def transform(self, results: dict) -> dict:
        if "mix_results" not in results:
            raise KeyError("OcclusionCopyPaste needs results['mix_results']: wrap the dataset in OCPMixDataset")
        rng, index = self._rng()
        if self._key is not None:  # replay the basket draw: the plan comes from the same stream as augment()
            draw_basket(rng, index, self._length, self.cfg.basket_size)
        simple = self.cfg.mode == "simple"
        dst, dst_flags, crowd_labels = results_to_sample(results, 0, ignore_as_crowd=not simple)
        srcs, flag_of = [], {int(a): bool(f) for a, f in zip(dst.ann_ids, dst_flags)}
        for b, r in enumerate(results["mix_results"]):
            src, fl, _ = results_to_sample(r, b + 1, ignore_as_crowd=not simple)
            srcs.append(src)
            flag_of.update({int(a): bool(f) for a, f in zip(src.ann_ids, fl)})
        plan = sample_plan(rng, ImageMeta.of_sample(dst), [ImageMeta.of_sample(s) for s in srcs], self.cfg)
        out = apply_numpy(plan, dst, srcs)
        flags = np.asarray([flag_of[int(a)] for a in out.ann_ids], dtype=bool)
        crowd = _surviving_crowd_labels(dst.crowd_masks, crowd_labels, out.crowd_masks)
        return self._write(results, out, flags, crowd)

    @staticmethod
    def _write(results: dict, out: Sample, flags: np.ndarray, crowd_labels: np.ndarray) -> dict:
        h, w = out.height, out.width
        n, c = len(out), len(out.crowd_masks)
        masks = np.concatenate([out.masks, out.crowd_masks]) if c else out.masks
        boxes = np.concatenate([out.boxes, tight_boxes(out.crowd_masks).astype(np.float32)]) if c else out.boxes
        pad = np.zeros((c,), dtype=bool)
        results["img"] = out.image[..., ::-1]  # back to BGR, as a view (PackDetInputs makes it contiguous)
        results["gt_bboxes"] = HorizontalBoxes(boxes.reshape(-1, 4))
        results["gt_bboxes_labels"] = np.concatenate([out.labels, crowd_labels])
        results["gt_masks"] = bitmap_masks(masks.view(np.uint8), h, w)  # bool -> 0/1 bytes: a view
        results["gt_ignore_flags"] = np.concatenate([flags, np.ones(c, dtype=bool)])
        amodal = np.concatenate([out.amodal_masks, out.crowd_masks]) if c else out.amodal_masks
        results["gt_amodal_masks"] = bitmap_masks(amodal.view(np.uint8), h, w)
        occluders = np.concatenate([out.occluder_masks, np.zeros((c, h, w), bool)]) if c else out.occluder_masks
        results["gt_occluder_masks"] = bitmap_masks(occluders.view(np.uint8), h, w)
        results["gt_occlusion_rate"] = np.concatenate([out.occlusion_rate, np.zeros(c, np.float32)])
        order = np.zeros((n + c, n + c), dtype=bool)
        order[:n, :n] = out.order
        results["gt_occlusion_order"] = order
        results["gt_pasted"] = np.concatenate([out.pasted, pad])
        results.pop("mix_results", None)
        return results

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(seed={self.seed}, cfg={self.cfg})"


@DATASETS.register_module()
class OCPMixDataset(MultiImageMixDataset):
    """``MultiImageMixDataset`` that tells each transform which ``(index, epoch)`` it is augmenting.

    The epoch lives in shared memory so forked ``DataLoader`` workers (also persistent ones) see ``set_epoch``;
    ``OCPEpochHook`` calls it every epoch.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epoch = multiprocessing.Value("q", 0, lock=False)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.value = int(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_epoch"] = int(self._epoch.value)  # spawned workers get a snapshot
        return state

    def __setstate__(self, state: dict) -> None:
        epoch = state.pop("_epoch")
        self.__dict__.update(state)
        self._epoch = multiprocessing.Value("q", epoch, lock=False)

    def __getitem__(self, idx: int) -> dict:
        for t in self.pipeline:
            if hasattr(t, "set_sample"):
                t.set_sample(idx, self.epoch)
        return super().__getitem__(idx)
