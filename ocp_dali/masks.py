"""Boxes from binary masks: the one definition every module uses (tight box, exclusive end)."""
from __future__ import annotations

import numpy as np


def tight_box(mask: np.ndarray) -> np.ndarray:
    """Tight box ``[x0, y0, x1 + 1, y1 + 1]`` (int64, shape (4,)) of a (H, W) bool mask; zeros when empty."""
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return np.zeros(4, dtype=np.int64)
    rows = np.flatnonzero(mask.any(axis=1))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.int64)


def tight_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight boxes (N, 4) int64 of (N, H, W) bool masks (zeros for empty masks)."""
    out = np.zeros((len(masks), 4), dtype=np.int64)
    for i, m in enumerate(masks):
        out[i] = tight_box(m)
    return out
