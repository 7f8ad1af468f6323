"""Keypoints through a paste (crop, flip, affine, placement) or a resampling: the host side of every backend.

One mapper for the NumPy reference (one paste at a time) and the GPU backend (every paste of a batch at once), so
both give the same float32 bits: keypoints are tiny, they never go to the device. COCO convention: ``(x, y, v)``
with ``v = 0`` not labelled (and then ``x = y = 0``), 1 labelled but hidden, 2 visible.
"""
from __future__ import annotations

import numpy as np


def keep_on_canvas(x: np.ndarray, y: np.ndarray, v: np.ndarray, width, height,
                   dtype=np.float32) -> np.ndarray:
    """Keypoints ``(..., 3)`` of ``dtype`` from mapped coordinates: labelled points (``v > 0``) inside the closed
    canvas ``[0, width] x [0, height]`` keep ``(x, y, v)``, every other point becomes ``(0, 0, 0)``.

    Args:
        x, y: (...) float64 mapped coordinates; v: (...) visibility flags (same shape).
        width, height: canvas size, scalars or arrays that broadcast against ``x`` (e.g. (P, 1) per paste).
        dtype: of the result (float32 for a ``Sample``).

    A point exactly on the right or bottom edge (``x == width``) stays: COCO keypoints are continuous
    coordinates, and the edge is part of the image.
    """
    keep = (v > 0) & (x >= 0) & (x <= width) & (y >= 0) & (y <= height)
    out = np.zeros(np.shape(x) + (3,), dtype=dtype)
    out[..., 0] = np.where(keep, x, 0.0)
    out[..., 1] = np.where(keep, y, 0.0)
    out[..., 2] = np.where(keep, v, 0.0)
    return out


def check_keypoint_shape(file_name: str, source: tuple[int, ...], destination: tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless a source's keypoints (shape ``source``, per instance) can be pasted onto a
    destination whose instances have keypoints of shape ``destination`` (both ``(K, 3)``)."""
    if tuple(source) != tuple(destination):
        raise ValueError(f"{file_name}: source keypoints {source} do not match the destination's {destination}")


def paste_order(flip: bool, flip_index: tuple[int, ...] | None, k: int) -> np.ndarray:
    """(K,) int64 order in which a paste takes its instance's K keypoints: ``flip_index`` (left <-> right) for a
    flipped paste, the identity otherwise.

    Raises:
        ValueError: a flipped paste and no ``flip_index`` (even for K = 0: the plan cannot flip keypoints).
        IndexError: a ``flip_index`` that is not a permutation index of K points (wrong length or out of range).
    """
    if not flip:
        return np.arange(k, dtype=np.int64)
    if flip_index is None:
        raise ValueError("a flipped paste carries keypoints but the plan has no keypoint flip_index")
    order = np.asarray(flip_index, dtype=np.int64).reshape(-1)
    if len(order) != k or not np.all((order >= -k) & (order < k)):
        raise IndexError(f"the plan's keypoint flip_index {tuple(flip_index)} does not index {k} keypoints")
    return order


def map_paste_keypoints(kps: np.ndarray, fwd: np.ndarray, origin: np.ndarray, offset: np.ndarray,
                        order: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Keypoints of P pasted instances in their destinations: permute, map, keep what stays on the canvas.

    Args:
        kps: (P, K, 3) source keypoints (any float dtype; computed in float64).
        fwd: (P, 6) float64 ``geometry.fwd`` of each paste (crop -> canvas coordinates).
        origin: (P, 2) int crop top-left in the source (``src_box[:2]``).
        offset: (P, 2) int canvas top-left in the destination (``PasteOp.offset``).
        order: (P, K) int keypoint order (``paste_order``).
        size: (P, 2) int destination ``(W, H)``.

    Returns:
        (P, K, 3) float32: labelled points that land on the destination carried through, the others ``(0, 0, 0)``.
        Each point's arithmetic is ``((a x + b y) + c) + ox`` in float64 whatever P is, so one paste at a time
        and a whole batch at once give the same bits.
    """
    pts = np.take_along_axis(np.asarray(kps).astype(np.float64), np.asarray(order)[..., None], axis=1)
    x = pts[..., 0] - origin[:, 0:1]
    y = pts[..., 1] - origin[:, 1:2]
    a, b, c, d, e, f = (fwd[:, i:i + 1] for i in range(6))
    X = a * x + b * y + c + offset[:, 0:1]
    Y = d * x + e * y + f + offset[:, 1:2]
    return keep_on_canvas(X, Y, pts[..., 2], size[:, 0:1], size[:, 1:2])
