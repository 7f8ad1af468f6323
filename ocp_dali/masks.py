"""Boxes from binary masks: the one definition every module uses (tight box, exclusive end)."""
from __future__ import annotations

import numpy as np

from ocp_dali.xp import array_module


def tight_box(mask: np.ndarray) -> np.ndarray:
    """Tight box ``[x0, y0, x1 + 1, y1 + 1]`` (int64, shape (4,)) of a (H, W) bool mask; zeros when empty."""
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return np.zeros(4, dtype=np.int64)
    rows = np.flatnonzero(mask.any(axis=1))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.int64)


def tight_boxes(masks) -> np.ndarray:
    """Tight boxes (N, 4) int64 of (N, H, W) bool masks (zeros for empty masks); NumPy or CuPy in, same out."""
    xp = array_module(masks)
    n = masks.shape[0]
    if n == 0:
        return xp.zeros((0, 4), dtype=xp.int64)
    rows = masks.any(axis=2)
    cols = masks.any(axis=1)
    y0 = rows.argmax(axis=1)
    y1 = rows.shape[1] - rows[:, ::-1].argmax(axis=1)
    x0 = cols.argmax(axis=1)
    x1 = cols.shape[1] - cols[:, ::-1].argmax(axis=1)
    boxes = xp.stack([x0, y0, x1, y1], axis=1).astype(xp.int64)
    boxes[~rows.any(axis=1)] = 0
    return boxes
