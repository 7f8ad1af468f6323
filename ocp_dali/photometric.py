"""Image jitter of a pasted crop, the seed's arithmetic (colour, brightness, contrast, sharpness, in that order) in
integers.

The seed jitters with mmcv's cv2-backed ``adjust_color``, ``adjust_brightness``, ``adjust_contrast`` and
``adjust_sharpness``, each a blend ``out = degenerate + f * (img - degenerate)`` with ``f = n / 10``:

- colour: ``cv2.addWeighted`` on uint8, so the blend is *rounded* (half to even); degenerate = the grey of the crop;
- brightness, contrast, sharpness: ``cv2.addWeighted`` on float32 then ``astype(uint8)``, so the blend is
  *truncated* (after clipping to [0, 255]); degenerate = black, the crop's mean grey rounded half to even (Python's
  ``round``), and the crop smoothed by ``[[1,1,1],[1,5,1],[1,1,1]] / 13`` (``cv2.filter2D``: rounded, and over the
  whole crop, its border included, with OpenCV's default border ``BORDER_REFLECT_101``);
- grey: ``cv2.cvtColor(BGR2GRAY)`` on uint8, ``(9798 R + 19235 G + 3735 B + 2**14) >> 15``.

Here each blend is evaluated exactly, ``(degenerate * (10 - n) + img * n) / 10``, floored or rounded as the seed
does, so the CUDA kernels (``kernels/jitter.cu``) and the compiled CPU loop (``kernels/geometry_cpu.cpp``), both
through the same per-pixel functions (``kernels/photometric.cuh``), reproduce it bit for bit; ``jitter_image``
runs the compiled loop when it is available, ``jitter_image_numpy`` is the oracle and the fallback. Checked
exhaustively against cv2 4.13 (every uint8 pair, every factor): grey, filter, brightness, contrast and sharpness are
equal; the colour step differs only where the exact blend ends in .5 (factors 0.9 and 1.1), which OpenCV decides by
its float32 rounding error (4 and 105 of the 65536 (pixel, grey) pairs).
"""
from __future__ import annotations

import numpy as np

from ocp_dali import hostloops

GREY_WEIGHTS = (9798, 19235, 3735)  # R, G, B; OpenCV's 15-bit BGR2GRAY weights for uint8 images
GREY_SHIFT = 15


def grey(img: np.ndarray) -> np.ndarray:
    """(H, W) int64 grey of an (H, W, 3) RGB uint8/int image: ``(9798 R + 19235 G + 3735 B + 2**14) >> 15``."""
    x = img.astype(np.int64)
    wr, wg, wb = GREY_WEIGHTS
    return (x[..., 0] * wr + x[..., 1] * wg + x[..., 2] * wb + (1 << (GREY_SHIFT - 1))) >> GREY_SHIFT


def blend_floor(degenerate: np.ndarray, img: np.ndarray, n: int) -> np.ndarray:
    """``degenerate + n/10 * (img - degenerate)`` clipped to [0, 255] then truncated, as uint8 (shapes broadcast).

    The seed's float32 ``addWeighted`` + ``astype(uint8)``; exact, since the float result never falls below an
    integer the exact blend reaches (checked for every uint8 pair and factor)."""
    v = degenerate.astype(np.int64) * (10 - n) + img.astype(np.int64) * n
    return np.clip(v // 10, 0, 255).astype(np.uint8)


def blend_round_even(degenerate: np.ndarray, img: np.ndarray, n: int) -> np.ndarray:
    """``degenerate + n/10 * (img - degenerate)`` rounded half to even and clipped, as uint8 (shapes broadcast).

    The seed's uint8 ``addWeighted`` (``saturate_cast``: round half to even)."""
    v = degenerate.astype(np.int64) * (10 - n) + img.astype(np.int64) * n
    q, r = np.divmod(v, 10)
    return np.clip(q + ((r > 5) | ((r == 5) & (q % 2 == 1))), 0, 255).astype(np.uint8)


def round_half_even_div(total: int, count: int) -> int:
    """``round(total / count)`` with ties to even (Python's ``round`` of the seed's mean), for ``total >= 0``."""
    count = max(count, 1)
    q, r = divmod(total, count)
    return q + (1 if 2 * r > count or (2 * r == count and q % 2 == 1) else 0)


def reflect101(i: np.ndarray, n: int) -> np.ndarray:
    """Indices ``i`` in [-1, n] mapped into [0, n) as OpenCV's ``BORDER_REFLECT_101`` does (``n == 1``: 0)."""
    if n == 1:
        return np.zeros_like(i)
    return np.where(i < 0, -i, np.where(i >= n, 2 * n - 2 - i, i))


def smooth3x3(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: ``cv2.filter2D(img, -1, [[1,1,1],[1,5,1],[1,1,1]] / 13)``, every pixel, border included
    (``BORDER_REFLECT_101`` neighbours), rounded: ``(s + 6) // 13`` (s / 13 is never half an integer)."""
    h, w = img.shape[:2]
    x = img.astype(np.int64)
    rows = [reflect101(np.arange(h) + d, h) for d in (-1, 0, 1)]
    cols = [reflect101(np.arange(w) + d, w) for d in (-1, 0, 1)]
    s = 4 * x
    for ry in rows:
        for cx in cols:
            s = s + x[ry][:, cx]
    return ((s + 6) // 13).astype(np.uint8)


def jitter_image(img: np.ndarray, factors: tuple[int, int, int, int]) -> np.ndarray:
    """Colour, brightness, contrast and sharpness jitter of an (H, W, 3) RGB uint8 crop; factors in tenths.

    Returns a new (H, W, 3) uint8 array; ``img`` is not modified. Evaluated by the compiled CPU loop when it is
    available (``hostloops.cpu_loops``: ``kernels/photometric.cuh``, the CUDA kernels' own per-pixel steps; the
    same bits), else by ``jitter_image_numpy``.
    """
    fast = hostloops.cpu_loops()
    if fast is not None:
        return fast.jitter(img, factors)[0]
    return jitter_image_numpy(img, factors)


def jitter_image_numpy(img: np.ndarray, factors: tuple[int, int, int, int]) -> np.ndarray:
    """``jitter_image`` in NumPy: the oracle of the compiled loop and its fallback (same arguments and result)."""
    n_col, n_bri, n_con, n_sha = factors
    out = blend_round_even(grey(img)[..., None], img, n_col)
    out = blend_floor(np.zeros(1, dtype=np.int64), out, n_bri)
    mean = contrast_mean(out)
    out = blend_floor(np.full(1, mean, dtype=np.int64), out, n_con)
    out = blend_floor(smooth3x3(out), out, n_sha)
    return out


def contrast_mean(img: np.ndarray) -> int:
    """The contrast step's degenerate: the mean grey of an (H, W, 3) crop, rounded half to even (the seed's
    ``round(np.mean(grey))``)."""
    g = grey(img)
    return round_half_even_div(int(g.sum()), g.size)
