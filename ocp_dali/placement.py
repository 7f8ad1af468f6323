"""Where the paste happens in a sample's geometry (``lsj.Geometry.placement``): the plan of one sample in either
order, drawn once for every path (the reference, ``OCPDataset``, the DALI workers).

The seed's order (``placement="seed"``) puts the destination through its geometry first and pastes on the result.
The plan is then drawn on the destination's *canvas*: its instances' boxes come from ``boxes_on_canvas`` (numbers
only, no masks decoded: the DALI workers draw plans without pixels). With LSJ, each source gets its own LSJ draw
(``source_geometry``, its own stream) as the seed's Mask2Former pipeline does; that resample is never run: it is
folded into the paste's warp (``fold_paste``), so a paste still costs one warp of the source's raw crop and the plan
stays numbers only, evaluated bit for bit alike by every backend. Without LSJ (``fit``, ``resize``) the sources are
pasted raw, as the seed's Mask R-CNN pipeline does.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ocp_dali.config import OCPConfig
from ocp_dali.geometry import Q_BITS, Q_ONE, PasteGeometry
from ocp_dali.lsj import Geometry, LSJParams, lsj_for_sample
from ocp_dali.plan import ImageMeta, PasteOp, PastePlan, sample_plan, sample_rng

SOURCE_STREAM = 2  # sample_rng stream of basket position b's own LSJ draw: SOURCE_STREAM + b


@dataclass(frozen=True)
class PlacedPlan:
    """One sample's random decisions in its geometry.

    Attributes:
        plan: the paste plan; in the seed's order its size is the destination's canvas and every paste from a
            source with its own LSJ is folded (``fold_paste``).
        geometry: the destination's geometry parameters, or None without geometry.
        geometry_first: ``geometry`` is applied to the destination before the paste (the seed's order); else
            after it, to the pasted result.
    """

    plan: PastePlan
    geometry: LSJParams | None
    geometry_first: bool


def sampled_rows(a: int, c: int, valid: int, size: int) -> np.ndarray:
    """(valid,) int64 input row (or column) each output row of an axis-aligned Q16 map ``a * X + c`` samples:
    ``lsj.sample_affine``'s nearest rule, clamped to ``[0, size)``."""
    return np.clip((a * np.arange(valid, dtype=np.int64) + c) >> Q_BITS, 0, size - 1)


def _span(sampled: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
    """``[first, last + 1)`` of the output positions whose sampled input lies in ``[lo, hi)``; ``(0, 0)`` if none."""
    hit = np.flatnonzero((sampled >= lo) & (sampled < hi))
    return (int(hit[0]), int(hit[-1]) + 1) if hit.size else (0, 0)


def boxes_on_canvas(boxes: np.ndarray, p: LSJParams, h: int, w: int) -> np.ndarray:
    """(N, 4) int64 boxes on ``p``'s canvas of (N, 4) xyxy (exclusive end) boxes of an ``h x w`` image: the output
    pixels whose nearest input pixel lies in the box (the box of the resampled box, so the resampled mask's tight
    box up to gaps in the mask); ``(0, 0, 0, 0)`` for a box that leaves the canvas."""
    a, _, c, _, e, f = (int(v) for v in p.inv_q16)
    cols, rows = sampled_rows(a, c, p.valid_w, w), sampled_rows(e, f, p.valid_h, h)
    out = np.zeros((len(boxes), 4), dtype=np.int64)
    for k, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, dtype=np.int64)):
        X0, X1 = _span(cols, x0, x1)
        Y0, Y1 = _span(rows, y0, y1)
        if X1 > X0 and Y1 > Y0:
            out[k] = (X0, Y0, X1, Y1)
    return out


def meta_on_canvas(meta: ImageMeta, p: LSJParams, *, keep_rows: bool) -> ImageMeta:
    """``meta`` on ``p``'s canvas (``boxes_on_canvas``). ``keep_rows``: every instance row stays (a source: plans
    name its raw rows; rows off the canvas get empty boxes, never candidates); else only the rows left on the canvas
    (a destination: its rows after ``apply_lsj``)."""
    boxes = boxes_on_canvas(meta.boxes, p, meta.height, meta.width)
    labels = meta.labels
    if not keep_rows:
        on = boxes[:, 2] > boxes[:, 0]
        boxes, labels = boxes[on], labels[on]
    return replace(meta, height=p.out_h, width=p.out_w, boxes=boxes, labels=labels)


def source_geometry(seed: int, epoch: int, index: int, rank: int, position: int, meta: ImageMeta,
                    geometry: Geometry) -> LSJParams:
    """The own LSJ draw of basket position ``position`` of sample ``index`` (the seed runs LSJ on every image it
    loads, sources included), from the stream ``SOURCE_STREAM + position`` of ``(seed, epoch, index, rank)``."""
    return geometry.draw(sample_rng(seed, epoch, index, rank, stream=SOURCE_STREAM + position), meta.height,
                         meta.width)


def fold_paste(op: PasteOp, p: LSJParams, h: int, w: int) -> PasteOp:
    """``op``, planned on a source's LSJ canvas ``p`` (``src_box`` and ``geometry`` in canvas pixels), as a paste
    from the ``h x w`` raw source: one warp of the raw crop instead of an LSJ resample and then a warp.

    The crop becomes the raw pixels the canvas box samples (so the LSJ crop's clipping holds: nothing outside it is
    read); the warp's map is the paste map followed by the LSJ map, rounded to Q16 once here, so every backend
    evaluates the same integers; ``flip`` is the parity of both flips (the keypoint permutation); the forward map
    (keypoints) is the inverse composition."""
    a, _, c, _, e, f = (int(v) for v in p.inv_q16)
    X0, Y0, X1, Y1 = op.src_box
    cols = sampled_rows(a, c, p.valid_w, w)[X0:X1]
    rows = sampled_rows(e, f, p.valid_h, h)[Y0:Y1]
    raw = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
    # canvas continuous x' -> raw continuous (a (x' - 1/2) + c) / Q, relative to the raw crop
    lsj = np.array([[a / Q_ONE, 0.0, (c - a * 0.5) / Q_ONE + a * X0 / Q_ONE - raw[0]],
                    [0.0, e / Q_ONE, (f - e * 0.5) / Q_ONE + e * Y0 / Q_ONE - raw[1]],
                    [0.0, 0.0, 1.0]])
    g = op.geometry
    inv = np.vstack([np.reshape(g.inv_q16, (2, 3)) / Q_ONE, [0.0, 0.0, 1.0]])  # canvas pixel -> crop continuous
    fwd = np.vstack([np.reshape(g.fwd, (2, 3)), [0.0, 0.0, 1.0]])  # crop continuous -> paste canvas continuous
    inv_q = tuple(int(round(v * Q_ONE)) for v in (lsj @ inv)[:2].ravel())
    fwd_t = tuple(float(v) for v in (fwd @ np.linalg.inv(lsj))[:2].ravel())
    geom = PasteGeometry(g.out_w, g.out_h, inv_q, fwd_t, False)  # type: ignore[arg-type]
    return replace(op, src_box=raw, geometry=geom, flip=op.flip != p.flip)


def plan_sample(rng: np.random.Generator, key: tuple[int, int, int, int], destination: ImageMeta,
                basket: Sequence[ImageMeta], cfg: OCPConfig, geometry: Geometry | None) -> PlacedPlan:
    """The plan of one sample in ``geometry``'s placement (None: no geometry, the plan of the raw images).

    ``rng``: the sample's plan stream (after its basket draw); ``key``: ``(seed, epoch, index, rank)`` for the
    geometry streams; ``destination`` / ``basket``: raw metadata of the destination and of each basket image.
    """
    seed, epoch, index, rank = key
    if geometry is None:
        return PlacedPlan(sample_plan(rng, destination, list(basket), cfg), None, False)
    p = lsj_for_sample(seed, epoch, index, destination.height, destination.width, geometry)
    if not geometry.seed_order:
        return PlacedPlan(sample_plan(rng, destination, list(basket), cfg), p, False)
    own = [source_geometry(seed, epoch, index, rank, b, m, geometry) if geometry.kind == "lsj" else None
           for b, m in enumerate(basket)]
    metas = [m if q is None else meta_on_canvas(m, q, keep_rows=True) for m, q in zip(basket, own)]
    plan = sample_plan(rng, meta_on_canvas(destination, p, keep_rows=False), metas, cfg)
    pastes = tuple(op if own[op.source] is None
                   else fold_paste(op, own[op.source], basket[op.source].height, basket[op.source].width)
                   for op in plan.pastes)
    return PlacedPlan(replace(plan, pastes=pastes), p, True)
