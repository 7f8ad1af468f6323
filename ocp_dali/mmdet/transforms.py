"""OC&P as an mmdet 3 transform (the CPU path) and the mix-dataset wrapper that seeds it per sample."""
from __future__ import annotations

import functools
import logging
import multiprocessing
import warnings
import weakref
from pathlib import Path
from typing import Any

import numpy as np
from mmcv.transforms import BaseTransform
from mmdet.datasets import MultiImageMixDataset
from mmdet.registry import DATASETS, TRANSFORMS
from mmengine.dataset import pseudo_collate
from mmengine.registry import FUNCTIONS
from mmdet.structures.bbox import HorizontalBoxes
from mmdet.structures.mask import BitmapMasks

from ocp_dali.config import OCPConfig
from ocp_dali.data.base import draw_basket
from ocp_dali.data.usable import UsableImages
from ocp_dali.errors import DataError
from ocp_dali.masks import tight_boxes
from ocp_dali.plan import ImageMeta, sample_plan, sample_rng
from ocp_dali.reference import apply_numpy
from ocp_dali.sample import Sample

_SRC_ID = 1_000_000  # ann ids of source instances: (basket position + 1) * _SRC_ID + row
SKIP_KEY = "ocp_skipped"  # an OCPMixDataset item that is a recorded skip, not a sample
log = logging.getLogger(__name__)


def probe_data_info(dataset, index: int) -> None:
    """The usable-image check of an mmdet dataset (``ocp_dali.data.usable``): the file of data info ``index`` is
    probed (``imageio.probe_image``, no pixel decoding) and checked against the annotated size; raises
    ``DataError`` naming the file when it is missing, unreadable, truncated or of another size. Files that are not
    local are left to the loading transform."""
    from ocp_dali.data.imageio import check_size, probe_image

    info = dataset.get_data_info(index)
    path = info.get("img_path")
    if path is None or "://" in str(path):
        return
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(str(path), "image file not found") from None
    except OSError as e:
        raise DataError(str(path), f"cannot read image file ({e})") from None
    header = probe_image(data, str(path))
    if info.get("width") and info.get("height"):
        check_size(str(path), header.width, header.height, info["width"], info["height"])


# One policy per mmdet dataset and process, kept beside the dataset rather than inside it: each file is checked
# once, not again every epoch nor again when it is drawn as a paste source.
_POLICIES: "weakref.WeakKeyDictionary[Any, UsableImages]" = weakref.WeakKeyDictionary()


def usable_images(dataset) -> UsableImages:
    """The usable-image policy of an mmdet dataset (``probe_data_info``)."""
    policy = _POLICIES.get(dataset)
    if policy is None:
        policy = UsableImages(functools.partial(probe_data_info, dataset), len(dataset),
                              str(getattr(dataset, "ann_file", "dataset")))
        _POLICIES[dataset] = policy
    return policy


def image_problem(dataset, index: int) -> DataError | None:
    """Why image ``index`` of an mmdet dataset cannot be used, or None (see ``probe_data_info``)."""
    return usable_images(dataset).problem(index)


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
    of a ``preset`` (``"ocp"``, ``"basic"``, ``"simple"``; ``OCPConfig.from_preset``).

    Required Keys: img (BGR; np.uint8, or float images rounded to 8 bits), gt_bboxes (HorizontalBoxes), gt_bboxes_labels (np.int64),
    gt_masks (BitmapMasks or PolygonMasks), gt_ignore_flags (bool), mix_results (list of dicts with those keys).

    Modified Keys: img, gt_bboxes (tight boxes of the visible masks), gt_bboxes_labels, gt_masks (visible),
    gt_ignore_flags. When the ``prob`` coin skips the sample none of them changes (the seed returns the sample
    unchanged, annotation boxes included); the added keys are still there: amodal masks = the masks, empty
    occluders, rate 0, no order, nothing pasted.

    Added Keys: gt_amodal_masks (BitmapMasks), gt_occluder_masks (BitmapMasks), gt_occlusion_rate (np.float32),
    gt_occlusion_order (np.bool_ (N, N)), gt_pasted (np.bool_); rows of ignore regions have rate 0, no order and
    empty occluders. ocp_info (dict): ``ran`` (bool, the ``prob`` coin let the transform run), ``num_candidates``
    (int, basket instances that passed ``min_size_paste``; 0 when it did not run) and ``Sample.info``'s counts
    (``ocp_dali.sample.COUNTS``: pasted, skipped, dropped_existing, dropped_pasted, ...; all 0 when it did not run).
    """

    def __init__(self, seed: int = 0, preset: str | None = None, **ocp: Any) -> None:
        self.cfg = OCPConfig.from_preset(preset, **ocp)  # ValueError naming an unknown or bad field
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
        """The basket, less images that cannot be used (logged: their pastes are left out, as on the DALI path)."""
        self._length = len(dataset)
        rng, index = self._rng()
        basket = draw_basket(rng, index, self._length, self.cfg.basket_size)
        usable = []
        for b in basket:
            err = image_problem(dataset, b) if hasattr(dataset, "get_data_info") else None
            if err is None:
                usable.append(b)
            else:
                log.warning("paste source %d of sample %d dropped: %s", b, index, err)
        return usable

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
        info = dict(ran=not plan.skipped_by_prob, num_candidates=int(plan.num_candidates))
        if plan.skipped_by_prob:  # the seed returns the sample as it came, annotation boxes included
            results = self._write_unchanged(results)
            results["ocp_info"] = {**info, **dst.info}
            return results
        out = apply_numpy(plan, dst, srcs)
        flags = np.asarray([flag_of[int(a)] for a in out.ann_ids], dtype=bool)
        crowd = _surviving_crowd_labels(dst.crowd_masks, crowd_labels, out.crowd_masks)
        results = self._write(results, out, flags, crowd)
        results["ocp_info"] = {**info, **out.info}
        return results

    @staticmethod
    def _write_unchanged(results: dict) -> dict:
        """A sample the ``prob`` coin skipped: img, boxes, masks, labels and flags stay as they are (mmdet's own
        objects); the occlusion keys say "nothing happened" so downstream code sees the same keys on every sample:
        amodal masks = the (N, H, W) masks (as 0/1 uint8 ``BitmapMasks``), empty occluders, rate 0, no order,
        nothing pasted. Rows are the input's, ignore rows included, in its order."""
        h, w = results["img"].shape[:2]
        masks = _masks_of(results, h, w).astype(np.uint8)  # a copy: amodal must not follow later edits of gt_masks
        n = len(masks)
        results["gt_amodal_masks"] = bitmap_masks(masks, h, w)
        results["gt_occluder_masks"] = bitmap_masks(np.zeros((n, h, w), np.uint8), h, w)
        results["gt_occlusion_rate"] = np.zeros(n, np.float32)
        results["gt_occlusion_order"] = np.zeros((n, n), dtype=bool)
        results["gt_pasted"] = np.zeros(n, dtype=bool)
        results.pop("mix_results", None)
        return results

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
    ``OCPEpochHook`` calls it every epoch. Each sample's ``data_samples`` metainfo gets ``ocp_index`` and
    ``ocp_epoch``.

    Bad images (``on_bad_image="skip"``, the default): an image that cannot be used (``image_problem``: missing,
    bad header, truncated, not the json's size) is a recorded skip, logged: the next usable image (in index order)
    stands in for it, so batches keep their size and distributed ranks stay in step; its metainfo says
    ``ocp_stand_in_for`` and it carries the skip record ``{SKIP_KEY: {"index", "epoch", "reason"}}``, which
    ``ocp_collate`` lists in the batch's ``ocp_skipped`` and ``OCPEpochHook`` accounts for. ``"raise"`` raises its
    ``DataError``. Pastes from a source image that cannot be used are left out (``OcclusionCopyPaste.get_indexes``).
    """

    def __init__(self, *args: Any, on_bad_image: str = "skip", **kwargs: Any) -> None:
        if on_bad_image not in ("skip", "raise"):
            raise ValueError(f"OCPMixDataset: on_bad_image must be 'skip' or 'raise', got {on_bad_image!r}")
        super().__init__(*args, **kwargs)
        self.on_bad_image = on_bad_image
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

    def _sample(self, idx: int, epoch: int) -> dict:
        for t in self.pipeline:
            if hasattr(t, "set_sample"):
                t.set_sample(idx, epoch)
        results = super().__getitem__(idx)
        if isinstance(results, dict) and hasattr(results.get("data_samples"), "set_metainfo"):
            results["data_samples"].set_metainfo(dict(ocp_index=int(idx), ocp_epoch=epoch))
        return results

    def __getitem__(self, idx: int) -> dict:
        epoch = self.epoch
        err = image_problem(self.dataset, idx)
        if err is None:
            return self._sample(idx, epoch)
        if self.on_bad_image == "raise":
            raise err
        log.warning("skipped image %d in epoch %d: %s", idx, epoch, err)
        results = self._sample(usable_images(self.dataset).stand_in(idx), epoch)
        results["data_samples"].set_metainfo(dict(ocp_stand_in_for=int(idx)))
        results[SKIP_KEY] = dict(index=int(idx), epoch=epoch, reason=str(err))
        return results


@FUNCTIONS.register_module()
def ocp_collate(data_batch: list) -> dict:
    """MMEngine's ``pseudo_collate``, with ``OCPMixDataset``'s skip records (carried by the stand-in samples) taken
    out of the samples and listed under ``ocp_skipped`` (``OCPEpochHook`` accounts for them). Use as
    ``train_dataloader.collate_fn = dict(type="ocp_collate")``."""
    skipped = [d.pop(SKIP_KEY) for d in data_batch if isinstance(d, dict) and SKIP_KEY in d]
    out = pseudo_collate(data_batch)
    out[SKIP_KEY] = skipped
    return out
