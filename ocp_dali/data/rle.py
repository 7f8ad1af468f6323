"""COCO run-length encoding without pixels: compressed strings <-> run counts, and counts -> masks.

Masks travel between processes (and to the GPU) as uncompressed run counts: column-major runs alternating 0 and 1,
starting with 0 (pycocotools' convention). Kilobytes instead of megabytes, and identical to pycocotools by
construction. ``encode_mask`` goes the other way for json output: a mask as a COCO RLE dict with ``str`` counts.
"""
from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def counts_from_string(s: bytes | str) -> np.ndarray:
    """Run counts (uint32) of a COCO compressed RLE string (pycocotools' ``rleFrString``, reimplemented)."""
    if isinstance(s, str):
        s = s.encode("ascii")
    out: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x = k = 0
        more = True
        while more:
            c = s[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return np.asarray(out, dtype=np.uint32)


def encode_mask(mask: np.ndarray) -> dict:
    """COCO compressed RLE ``{"size": [H, W], "counts": str}`` of an (H, W) mask (bool or numeric; nonzero is
    foreground). ``str`` counts (pycocotools gives ``bytes``) so that the dict goes into json as it is."""
    # nonzero -> 1 first: pycocotools starts a new run at every change of value, so 1 -> 255 would be a run
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask) != 0, dtype=np.uint8))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def rle_counts(rle: dict) -> np.ndarray:
    """Run counts (uint32) of a pycocotools RLE dict (compressed string or uncompressed list)."""
    c = rle["counts"]
    if isinstance(c, (bytes, str)):
        return counts_from_string(c)
    return np.asarray(c, dtype=np.uint32)


def decode_counts(counts: np.ndarray, h: int, w: int) -> np.ndarray:
    """(h, w) bool mask of run counts; raises ``ValueError`` when the runs do not cover exactly h*w pixels."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() != h * w:
        raise ValueError(f"RLE runs cover {int(counts.sum())} pixels, the mask has {h * w}")
    values = (np.arange(len(counts)) % 2).astype(bool)
    return np.repeat(values, counts).reshape(w, h).T


def pack_counts(rles: list[dict]) -> np.ndarray:
    """Several RLEs as one uint32 array ``[n, len_0..len_{n-1}, counts...]``."""
    parts = [rle_counts(r) for r in rles]
    head = np.asarray([len(parts)] + [len(p) for p in parts], dtype=np.uint32)
    return np.concatenate([head] + parts) if parts else head


def unpack_counts(packed: np.ndarray) -> list[np.ndarray]:
    """Inverse of ``pack_counts``."""
    n = int(packed[0])
    lens = packed[1:1 + n].astype(np.int64)
    starts = 1 + n + np.concatenate([[0], np.cumsum(lens)[:-1]]) if n else []
    return [packed[s:s + ln] for s, ln in zip(starts, lens)]


def decode_packed(packed: np.ndarray, h: int, w: int, only: list[int] | None = None) -> np.ndarray:
    """(n, h, w) bool masks of ``pack_counts`` output; with ``only``, masks not listed stay empty (not decoded)."""
    parts = unpack_counts(packed)
    out = np.zeros((len(parts), h, w), dtype=bool)
    for i, c in enumerate(parts):
        if only is None or i in only:
            out[i] = decode_counts(c, h, w)
    return out
