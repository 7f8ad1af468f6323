"""Compiled CPU loops of the paste warp, the LSJ resample, the image jitter and the composite:
``kernels/geometry_cpu.cpp``, loaded with ctypes.

Why: the NumPy reference evaluates the fixed-point geometry on every pixel of full-size arrays (a 1024^2 canvas,
every mask of every instance at full size), which dominates the CPU stage, and the image jitter in int64 arrays
(its sharpness filter alone nine shifted copies of the crop); its composite is a masked copy through a broadcast
mask. These loops evaluate the same per-pixel functions as
the CUDA kernels (``kernels/geometry.cuh``, ``kernels/photometric.cuh``), so their outputs are the reference's bit
for bit by construction, the geometry only where an output can be non-zero (see the .cpp).
``tests/test_geometry_cpu.py`` checks them against the NumPy code, which stays the oracle
(``reference.warp_crop_numpy``, ``lsj.sample_affine_arrays``, ``photometric.jitter_image_numpy``,
``reference.composite_numpy``).

Nothing is built at install time: the first use compiles the library with the host C++ compiler (``$CXX`` or
g++, ``-O3``, a few seconds) into ``$OCP_CPU_CACHE`` (default ``~/.cache/ocp_dali/cpu``), keyed by a hash of the
sources. ``loops()`` is None, and the callers use NumPy, when there is no compiler, when the build fails (a
warning says why) or when ``OCP_CPU_LOOPS=0``. Only NumPy arrays: the GPU path never comes here.
"""
from __future__ import annotations

import ctypes
import functools
import os
import warnings
from pathlib import Path

import numpy as np

from ocp_dali.kernels import hostbuild

KERNEL_DIR = Path(__file__).resolve().parent
SOURCE = KERNEL_DIR / "geometry_cpu.cpp"
HEADERS = ("geometry.cuh", "photometric.cuh")
SWITCH = "OCP_CPU_LOOPS"
FLAGS = ["-std=c++17", "-O3", "-fno-strict-aliasing", "-Wall"]

_P = ctypes.c_void_p
_I = ctypes.c_longlong
# argument types of each C function (named as in the .cpp; declared here once)
SIGNATURES = {
    "cpu_geo_warp_crop": ([_P, _I, _P, _I, _I, _I, _P, _I, _I, _I, _I, _P, _P], _I),
    "cpu_geo_lsj_image": ([_P, _I, _I, _I, _P, _I, _I, _P, _I], None),
    "cpu_geo_lsj_hits": ([_P, _I, _I, _I, _I, _I, _P, _I, _I, _P], None),
    "cpu_geo_lsj_masks": ([_P, _I, _I, _I, _I, _P, _I, _P, _I, _I, _P, _I, _I, _P], None),
    "cpu_jitter": ([_P, _I, _I, _I, _P, _P], _I),
    "cpu_composite": ([_P, _I, _I, _I, _I, _I, _P, _I, _P, _I, _P, _I], None),
}


@functools.lru_cache(maxsize=None)
def loops() -> ctypes.CDLL | None:
    """The loaded library (built on first use), or None when the compiled loops cannot or must not be used."""
    if os.environ.get(SWITCH, "1") == "0" or hostbuild.compiler() is None:
        return None
    deps = "".join((KERNEL_DIR / h).read_text() for h in HEADERS)
    try:  # a failed build, an unwritable cache or an unloadable library: NumPy, with a warning saying why
        lib = hostbuild.build_library("geometry_cpu", SOURCE.read_text(), deps, FLAGS,
                                      hostbuild.cache_dir("OCP_CPU_CACHE", "cpu"))
        dll = ctypes.CDLL(str(lib))
    except (RuntimeError, OSError) as e:
        warnings.warn(f"compiled CPU geometry unavailable, using NumPy: {e}", RuntimeWarning, stacklevel=2)
        return None
    for name, (args, res) in SIGNATURES.items():
        fn = getattr(dll, name)
        fn.argtypes, fn.restype = args, res
    return dll


def _ptr(a: np.ndarray) -> int:
    """The address of ``a``'s data: only an address, so the caller must hold ``a`` (by a name) until the call
    returns; an array made inside the call's argument list is freed before the C function runs."""
    return int(a.ctypes.data)


def _inv(inv_q16: tuple[int, ...]) -> np.ndarray:
    return np.array([int(v) for v in inv_q16], dtype=np.int64)


def image_rows(img: np.ndarray) -> tuple[np.ndarray, int]:
    """``img`` (h, w, 3) uint8 as the loops read it, 3 contiguous bytes per pixel (copied only when it is not),
    and its row stride in bytes."""
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (h, w, 3) uint8 image, got {img.shape} {img.dtype}")
    if img.strides[1:] != (3, 1):
        img = np.ascontiguousarray(img)
    return img, img.strides[0]


def mask_rows(m: np.ndarray) -> np.ndarray:
    """``m`` (..., h, w) bool with contiguous rows (copied only when they are not)."""
    if m.dtype != np.bool_:
        raise ValueError(f"expected a bool mask, got {m.dtype}")
    return m if m.strides[-1] == 1 else np.ascontiguousarray(m)


def warp_crop(crop_img: np.ndarray, crop_mask: np.ndarray, inv_q16: tuple[int, ...], x0: int, y0: int, ww: int,
              wh: int) -> tuple[np.ndarray, np.ndarray]:
    """``reference.warp_crop_numpy`` of a non-identity geometry (its Q16 ``inv_q16``): ``(mask (wh, ww) bool,
    pixels (wh, ww, 3) uint8)`` of the canvas window at ``(x0, y0)``, pixels zero where the mask is not set."""
    img, img_row = image_rows(crop_img)
    m = mask_rows(crop_mask)
    h, w = m.shape
    mask = np.zeros((wh, ww), dtype=bool)
    pix = np.zeros((wh, ww, 3), dtype=np.uint8)
    inv = _inv(inv_q16)  # a name keeps the array alive through the call (a temporary is freed first)
    loops().cpu_geo_warp_crop(_ptr(img), img_row, _ptr(m), m.strides[0], h, w, _ptr(inv), x0, y0, ww,
                              wh, _ptr(mask), _ptr(pix))
    return mask, pix


def lsj_image(image: np.ndarray, inv_q16: tuple[int, ...], out_h: int, out_w: int, valid_w: int,
              valid_h: int) -> np.ndarray:
    """(out_h, out_w, 3) uint8 canvas of ``lsj.sample_affine_arrays`` for an axis-aligned map (``inv_q16`` b = d =
    0): bilinear content in ``[0, valid_w) x [0, valid_h)``, zero padding."""
    img, img_row = image_rows(image)
    h, w = img.shape[:2]
    out = np.zeros((out_h, out_w, 3), dtype=np.uint8)
    inv = _inv(inv_q16)  # a name keeps the array alive through the call (a temporary is freed first)
    loops().cpu_geo_lsj_image(_ptr(img), img_row, h, w, _ptr(inv), valid_w, valid_h, _ptr(out),
                              out.strides[0])
    return out


def lsj_hits(stack: np.ndarray, inv_q16: tuple[int, ...], valid_w: int, valid_h: int) -> np.ndarray:
    """(n,) bool: which planes of the (n, h, w) bool ``stack`` keep a pixel on the canvas under the axis-aligned
    ``inv_q16`` (``sample_affine_arrays(...)[1][0].any(axis=(1, 2))``)."""
    m = mask_rows(stack)
    n, h, w = m.shape
    hit = np.zeros(n, dtype=bool)
    if n:
        inv = _inv(inv_q16)  # a name keeps the array alive through the call (a temporary is freed first)
        loops().cpu_geo_lsj_hits(_ptr(m), n, m.strides[0], m.strides[1], h, w, _ptr(inv), valid_w,
                                 valid_h, _ptr(hit))
    return hit


def lsj_masks(stack: np.ndarray, rows: np.ndarray, inv_q16: tuple[int, ...], out_h: int, out_w: int,
              valid_w: int, valid_h: int) -> tuple[np.ndarray, np.ndarray]:
    """Planes ``rows`` (k,) int of the (n, h, w) bool ``stack`` on the canvas under the axis-aligned ``inv_q16``,
    nearest with clamped indices: ``((k, out_h, out_w) bool, (k, 4) int64 tight xyxy boxes, zeros when empty)``."""
    m = mask_rows(stack)
    h, w = m.shape[1:]
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    k = len(rows)
    out = np.zeros((k, out_h, out_w), dtype=bool)
    boxes = np.zeros((k, 4), dtype=np.int64)
    if k:
        inv = _inv(inv_q16)  # a name keeps the array alive through the call (a temporary is freed first)
        loops().cpu_geo_lsj_masks(_ptr(m), m.strides[0], m.strides[1], h, w, _ptr(rows), k, _ptr(inv),
                                  valid_w, valid_h, _ptr(out), out.strides[0], out.strides[1], _ptr(boxes))
    return out, boxes


def jitter(img: np.ndarray, factors: tuple[int, int, int, int]) -> tuple[np.ndarray, int]:
    """``photometric.jitter_image_numpy`` of an (h, w, 3) uint8 crop with ``factors`` (colour, brightness,
    contrast, sharpness) in tenths: ``(jittered crop (h, w, 3) uint8, the contrast step's mean grey)``."""
    src, row = image_rows(img)
    h, w = src.shape[:2]
    out = np.empty((h, w, 3), dtype=np.uint8)
    if h == 0 or w == 0:
        return out, 0
    f = np.array(factors, dtype=np.int64)  # named: a temporary would be freed before the call
    mean = loops().cpu_jitter(_ptr(src), row, h, w, _ptr(f), _ptr(out))
    return out, int(mean)


def composite(image: np.ndarray, window: tuple[int, int, int, int], mask: np.ndarray, pix: np.ndarray,
              alpha: np.ndarray | None) -> bool:
    """``reference.composite_numpy``, in place on ``image`` (same arguments). False, with nothing written, when
    ``image`` is not a writable (H, W, 3) uint8 array with 3 contiguous bytes per pixel: the caller uses NumPy."""
    if (image.dtype != np.uint8 or image.ndim != 3 or image.strides[1:] != (3, 1)
            or not image.flags.writeable):
        return False
    wx0, wy0, wx1, wy1 = window
    ww, wh = wx1 - wx0, wy1 - wy0
    if not (0 <= wx0 <= wx1 <= image.shape[1] and 0 <= wy0 <= wy1 <= image.shape[0]):
        raise ValueError(f"window {window} outside the {image.shape[1]}x{image.shape[0]} image")
    if mask.shape != (wh, ww) or pix.shape != (wh, ww, 3) or (alpha is not None and alpha.shape != (wh, ww)):
        raise ValueError(f"window {ww}x{wh}: mask {mask.shape}, pixels {pix.shape} do not fit")
    m = mask_rows(mask)
    p, pix_row = image_rows(pix)
    a = None if alpha is None else np.ascontiguousarray(alpha, dtype=np.int32)
    loops().cpu_composite(_ptr(image), image.strides[0], wx0, wy0, ww, wh, _ptr(m), m.strides[0], _ptr(p), pix_row,
                          None if a is None else _ptr(a), 0 if a is None else a.strides[0] // 4)
    return True
