"""Image jitter of a pasted crop (seed: colour, brightness, contrast, sharpness in that order), in integers.

Each step is PIL/mmcv's enhance ``out = degenerate + n/10 * (img - degenerate)`` evaluated exactly in integers,
``floor((degenerate*(10-n) + img*n + 5) / 10)`` clipped to [0, 255], so the CUDA kernels reproduce it bit for bit.
Degenerate images: colour -> grey (ITU-R 601 luma, PIL's integer weights); brightness -> black; contrast -> the
crop's mean grey (rounded); sharpness -> the 3x3 smooth filter ``[[1,1,1],[1,5,1],[1,1,1]]/13`` (rounded), with
the crop's border pixels left as they are.
"""
from __future__ import annotations

import numpy as np


def luma(img: np.ndarray) -> np.ndarray:
    """(H, W) int32 grey of an (H, W, 3) RGB uint8/int image: ``(19595 R + 38470 G + 7471 B + 2**15) >> 16``."""
    x = img.astype(np.int32)
    return (x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 32768) >> 16


def blend_tenths(degenerate: np.ndarray, img: np.ndarray, n: int) -> np.ndarray:
    """``degenerate + n/10 * (img - degenerate)`` rounded half up and clipped, as uint8 (shapes broadcast)."""
    v = degenerate.astype(np.int32) * (10 - n) + img.astype(np.int32) * n
    return np.clip((v + 5) // 10, 0, 255).astype(np.uint8)


def smooth3x3(img: np.ndarray) -> np.ndarray:
    """PIL's SMOOTH filter on the interior of an (H, W, 3) uint8 image, border pixels unchanged."""
    out = img.copy()
    h, w = img.shape[:2]
    if h < 3 or w < 3:
        return out
    x = img.astype(np.int32)
    s = np.zeros((h - 2, w - 2, 3), dtype=np.int32)
    for dy in range(3):
        for dx in range(3):
            s += x[dy:dy + h - 2, dx:dx + w - 2]
    s += 4 * x[1:-1, 1:-1]
    out[1:-1, 1:-1] = ((s + 6) // 13).astype(np.uint8)
    return out


def jitter_image(img: np.ndarray, factors: tuple[int, int, int, int]) -> np.ndarray:
    """Colour, brightness, contrast and sharpness jitter of an (H, W, 3) uint8 crop; factors in tenths.

    Returns a new (H, W, 3) uint8 array; ``img`` is not modified.
    """
    n_col, n_bri, n_con, n_sha = factors
    out = blend_tenths(luma(img)[..., None], img, n_col)
    out = blend_tenths(np.zeros(1, dtype=np.int32), out, n_bri)
    g = luma(out)
    mean = (int(g.sum()) + g.size // 2) // max(g.size, 1)
    out = blend_tenths(np.full(1, mean, dtype=np.int32), out, n_con)
    out = blend_tenths(smooth3x3(out), out, n_sha)
    return out
