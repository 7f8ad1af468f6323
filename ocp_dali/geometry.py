"""Geometry of one paste: flip / scale / rotate of a crop about its centre, on an enlarged canvas.

Precision rule (why this module exists): the mapping from output pixels to crop coordinates is computed *once*, on
the CPU, in float64, and handed to both backends as Q16 fixed-point integers. Every backend then evaluates
``U = a*X + b*Y + c`` in int64, so nearest-neighbour mask sampling and the integer bilinear pixel interpolation give
bit-identical results on NumPy and CUDA, whatever their floating-point contraction rules.

Conventions: pixel ``i`` covers ``[i, i+1)`` (centre ``i + 0.5``); crop coordinates are continuous, origin at the
crop's top-left corner; a positive angle rotates clockwise on screen (y points down).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Q_BITS = 16
Q_ONE = 1 << Q_BITS
Q_HALF = 1 << (Q_BITS - 1)


@dataclass(frozen=True)
class PasteGeometry:
    """How a ``w x h`` crop maps onto an ``out_w x out_h`` canvas.

    Attributes:
        out_w, out_h: canvas size after geometric jitter (the crop size when there is none).
        inv_q16: ``(a, b, c, d, e, f)`` ints: crop coordinate of output pixel ``(X, Y)``'s centre is
            ``((a*X + b*Y + c) / 2**16, (d*X + e*Y + f) / 2**16)``.
        fwd: ``(a, b, c, d, e, f)`` floats mapping continuous crop coordinates to continuous canvas coordinates
            (used for keypoints).
        identity: no flip, scale 1, angle 0: the canvas is the crop, pixel for pixel.
    """

    out_w: int
    out_h: int
    inv_q16: tuple[int, int, int, int, int, int]
    fwd: tuple[float, float, float, float, float, float]
    identity: bool


def paste_geometry(w: int, h: int, flip: bool = False, scale: float = 1.0, angle_deg: int = 0) -> PasteGeometry:
    """Geometry of a ``w x h`` crop after horizontal flip, then rotation and scale about its centre."""
    if w <= 0 or h <= 0:
        raise ValueError(f"crop must be non-empty, got {w}x{h}")
    identity = (not flip) and scale == 1.0 and angle_deg == 0
    if identity:
        return PasteGeometry(w, h, (Q_ONE, 0, Q_HALF, 0, Q_ONE, Q_HALF), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), True)
    t = math.radians(angle_deg)
    cos, sin = math.cos(t), math.sin(t)
    out_w = max(1, int(round(scale * (w * abs(cos) + h * abs(sin)))))
    out_h = max(1, int(round(scale * (w * abs(sin) + h * abs(cos)))))
    # forward: p -> flip -> s * R * (p - c) + c'
    flip_m = np.array([[-1.0, 0.0, w], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) if flip else np.eye(3)
    to_centre = np.array([[1.0, 0.0, -w / 2], [0.0, 1.0, -h / 2], [0.0, 0.0, 1.0]])
    rot = np.array([[scale * cos, -scale * sin, 0.0], [scale * sin, scale * cos, 0.0], [0.0, 0.0, 1.0]])
    from_centre = np.array([[1.0, 0.0, out_w / 2], [0.0, 1.0, out_h / 2], [0.0, 0.0, 1.0]])
    fwd = from_centre @ rot @ to_centre @ flip_m
    inv = np.linalg.inv(fwd)
    # evaluate at pixel centres: fold the +0.5 of X and Y into the constant term
    a, b, c0 = inv[0]
    d, e, f0 = inv[1]
    c = c0 + 0.5 * (a + b)
    f = f0 + 0.5 * (d + e)
    inv_q = tuple(int(round(v * Q_ONE)) for v in (a, b, c, d, e, f))
    fwd_t = tuple(float(v) for v in (*fwd[0], *fwd[1]))
    return PasteGeometry(out_w, out_h, inv_q, fwd_t, False)  # type: ignore[arg-type]

