"""COCO RLE -> masks on the GPU: all masks of a batch decoded by one launch of ``ocp_rle_decode``.

The compressed COCO string is turned into run counts on the CPU (``ocp_dali.data.rle.rle_counts``, pycocotools'
``rleFrString`` reimplemented; kilobytes), the counts go to the device, ``cumsum`` gives each run's end, and every
output pixel finds its run by binary search. Identical to ``pycocotools.mask.decode`` by construction.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ocp_dali.data.rle import rle_counts
from ocp_dali.kernels.launch import BLOCK, grid_x

RLE_KERNEL = ("rle.cu", "ocp_rle_decode")


def decode_rles(rles: Sequence[dict], *, backend=None) -> list:
    """Decode pycocotools RLE dicts (``{"size": [h, w], "counts": bytes | str | list}``) on the device.

    Returns one (h, w) bool array per RLE (views into one batch buffer), row-major like ``mask.decode``'s output
    (which is Fortran-ordered but holds the same values). A run list that is shorter than h*w leaves the rest 0;
    one that is longer is cut at h*w.
    """
    if backend is None:
        from ocp_dali.kernels.loader import CupyBackend

        backend = CupyBackend()
    be, xp = backend, backend.xp
    if not rles:
        return []
    counts = [np.asarray(rle_counts(r), dtype=np.int64) for r in rles]
    sizes = [(int(r["size"][0]), int(r["size"][1])) for r in rles]
    desc = np.zeros((len(rles), 5), dtype=np.int64)
    c_off = o_off = 0
    for i, (c, (h, w)) in enumerate(zip(counts, sizes)):
        desc[i] = (c_off, len(c), h, w, o_off)
        c_off += len(c)
        o_off += h * w
    all_counts = np.concatenate(counts) if c_off else np.zeros(1, dtype=np.int64)
    ends = be.cumsum(be.asarray(all_counts))
    out = xp.zeros(max(o_off, 1), dtype=xp.bool_)
    max_hw = max(h * w for h, w in sizes)
    if max_hw:
        gx = grid_x(max_hw, per_thread=8)
        be.launch(RLE_KERNEL[0], RLE_KERNEL[1], (gx, len(rles)), BLOCK,
                  (be.asarray(desc), np.int64(len(rles)), ends, out))
    return [out[int(d[4]):int(d[4]) + h * w].reshape(h, w) for d, (h, w) in zip(desc, sizes)]
