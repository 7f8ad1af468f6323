"""What every instance dataset offers the augmentation: metadata without pixels, samples, and baskets."""
from __future__ import annotations

from typing import Protocol

import numpy as np

from ocp_dali.plan import ImageMeta
from ocp_dali.sample import Sample


class InstanceDataset(Protocol):
    """A dataset OC&P can draw destinations and paste sources from.

    ``meta(i)`` must be cheap (no image decoding): planning runs on it. ``load(i)`` decodes the image and masks;
    its non-crowd instances are in the order of ``meta(i).boxes``.
    """

    def __len__(self) -> int: ...

    def meta(self, index: int) -> ImageMeta: ...

    def load(self, index: int) -> Sample: ...


def draw_basket(rng: np.random.Generator, index: int, length: int, size: int) -> list[int]:
    """``size`` distinct dataset indices other than ``index`` (fewer when the dataset is smaller)."""
    others = length - 1
    if others <= 0 or size <= 0:
        return []
    picks = rng.choice(others, size=min(size, others), replace=False)
    return [int(p) + (1 if p >= index else 0) for p in picks]
