"""What every instance dataset offers the augmentation: metadata without pixels, samples, and baskets."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from ocp_dali.data.rle import decode_packed
from ocp_dali.plan import ImageMeta
from ocp_dali.sample import Sample
from ocp_dali.targets import Targets


class InstanceDataset(Protocol):
    """A dataset OC&P can draw destinations and paste sources from.

    ``meta(i)`` must be cheap (no image decoding): planning runs on it. ``load(i)`` decodes the image and masks;
    its non-crowd instances are in the order of ``meta(i).boxes``.

    Datasets read from files also offer ``probe(i, data=None) -> ocp_dali.data.imageio.ImageHeader``: the image's
    header (no pixel decoding) checked against the annotations, raising ``DataError`` naming the file when the image
    is missing, truncated, unreadable or not the annotated size (``CocoInstances``, ``SyntheticScenes``). Loaders
    can call it to skip a bad image before it reaches a decoder.
    """

    def __len__(self) -> int: ...

    def meta(self, index: int) -> ImageMeta: ...

    def load(self, index: int) -> Sample: ...

    def read_bytes(self, index: int) -> np.ndarray: ...

    def annotation(self, index: int) -> dict[str, Any]: ...


def draw_basket(rng: np.random.Generator, index: int, length: int, size: int) -> list[int]:
    """``size`` distinct dataset indices other than ``index`` (fewer when the dataset is smaller)."""
    others = length - 1
    if others <= 0 or size <= 0:
        return []
    picks = rng.choice(others, size=min(size, others), replace=False)
    return [int(p) + (1 if p >= index else 0) for p in picks]


def draw_batch_basket(rng: np.random.Generator, batch: Sequence[int], pos: int, size: int) -> list[int]:
    """``source="batch"``: ``size`` images of ``batch`` other than the one at position ``pos`` (dataset indices,
    drawn without replacement; fewer when the batch is smaller)."""
    others = [p for p in range(len(batch)) if p != pos]
    if not others:
        return []
    pick = rng.choice(len(others), size=min(size, len(others)), replace=False)
    return [int(batch[others[int(p)]]) for p in pick]


def sample_from_record(image: Any, ann: dict[str, Any], masks: Any, crowd: Any,
                       targets: Targets | None = None) -> Sample:
    """The one constructor of a loaded ``Sample`` from an ``annotation(i)`` record (see ``sample_from_annotation``)
    and its decoded pixels and masks: ``image`` (H, W, 3) uint8, ``masks`` (N, H, W) bool, ``crowd`` (C, H, W)
    bool, NumPy or CuPy alike (the sample stays in the image's array module); ``targets``: those it carries
    (default all, see ``Sample``)."""
    h, w = int(ann["height"]), int(ann["width"])
    if tuple(image.shape[:2]) != (h, w):
        raise ValueError(f"{ann['file_name']}: image is {image.shape[1]}x{image.shape[0]}, annotations say {w}x{h}")
    return Sample.from_instances(image, masks, ann["labels"], keypoints=ann["keypoints"], ann_ids=ann["ann_ids"],
                                 crowd_masks=crowd, image_id=ann["image_id"], file_name=ann["file_name"],
                                 targets=targets)


def sample_from_annotation(image: np.ndarray, ann: dict[str, Any], only: list[int] | None = None) -> Sample:
    """A ``Sample`` from decoded pixels and an ``annotation(i)`` record.

    The record (what workers send, no pixels): ``height``, ``width``, ``counts`` / ``crowd_counts`` (packed RLE run
    counts, ``ocp_dali.data.rle.pack_counts``), ``labels`` (N,) int64, ``ann_ids`` (N,) int64, ``keypoints``
    (N, K, 3) float32 or None, ``image_id``, ``file_name``. With ``only``, just those instance masks are decoded
    (paste sources need only the pasted instances); the others are left empty, and so are the crowd regions.
    """
    h, w = int(ann["height"]), int(ann["width"])
    masks = decode_packed(ann["counts"], h, w, only)
    crowd = decode_packed(ann["crowd_counts"], h, w) if only is None else np.zeros((0, h, w), dtype=bool)
    return sample_from_record(image, ann, masks, crowd)
