"""Randomness of OC&P, drawn once into a ``PastePlan`` of numbers (spec §4.1).

``sample_plan`` is the only place that draws random numbers; ``apply`` (any backend) is a pure function of the
plan and the pixels. Plans need no pixels: candidate sizes come from the instances' tight mask boxes and targeted
placement uses the amodal boxes of the plan's own earlier pastes.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ocp_dali.config import OCPConfig
from ocp_dali.geometry import PasteGeometry, paste_geometry
from ocp_dali.sample import Sample

# Seed ranges of the image jitter, in tenths, hi exclusive (colour, brightness, contrast, sharpness).
JITTER_RANGES: tuple[tuple[int, int], ...] = ((8, 12), (5, 20), (5, 20), (0, 15))
SCALE_RANGE = (0.8, 1.2)
ANGLE_RANGE = (-10, 10)  # integer degrees, hi exclusive: [-10, 9]


def sample_rng(seed: int, epoch: int, index: int, rank: int = 0, stream: int = 0) -> np.random.Generator:
    """The generator for one sample, derived from ``(seed, epoch, index, rank)`` only.

    Independent of the worker process, the backend and the order in which samples are drawn. ``stream`` selects an
    independent generator for another random step of the same sample (1: the LSJ geometry).
    """
    for name, v in (("seed", seed), ("epoch", epoch), ("index", index), ("rank", rank), ("stream", stream)):
        if int(v) < 0:
            raise ValueError(f"sample_rng: {name} must be >= 0, got {v}")
    key = [int(seed), int(epoch), int(index), int(rank)] + ([int(stream)] if stream else [])
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(key)))


@dataclass(frozen=True)
class ImageMeta:
    """What planning needs to know of an image, without its pixels.

    Attributes:
        height, width: image size.
        boxes: (N, 4) int64 tight mask boxes ``[x0, y0, x1+1, y1+1]`` of the non-crowd instances, in the order of
            the loaded ``Sample.masks`` rows.
        labels: (N,) int64 category ids.
        index: dataset index (-1 when not from a dataset).
        flip_index: keypoint permutation for a horizontal flip (left <-> right), or None without keypoints.
    """

    height: int
    width: int
    boxes: np.ndarray
    labels: np.ndarray
    index: int = -1
    flip_index: tuple[int, ...] | None = None

    @classmethod
    def of_sample(cls, sample, index: int = -1, flip_index: tuple[int, ...] | None = None) -> "ImageMeta":
        """Metadata of a loaded ``Sample`` (boxes are its tight mask boxes)."""
        return cls(sample.height, sample.width, np.asarray(sample.boxes, dtype=np.int64), sample.labels, index,
                   flip_index)


@dataclass(frozen=True)
class PasteOp:
    """One paste: which instance, how it is transformed, where it goes.

    Attributes:
        source: position of the source image in ``PastePlan.basket``.
        instance: row of the instance in that source sample's ``masks``.
        label: the instance's category id.
        src_box: its tight box ``(x0, y0, x1, y1)`` in the source image (exclusive end): the crop.
        jitter: image jitter factors in tenths ``(colour, brightness, contrast, sharpness)``, or None.
        flip, scale, angle: geometric jitter (identity when disabled).
        geometry: the resulting canvas size and fixed-point mapping (see ``ocp_dali.geometry``).
        targeted: placement was occlusion-aware; ``target`` is the index of the instance aimed at, among the
            destination's instances followed by the earlier pastes (-1 when not targeted).
        center: ``(cx, cy)`` integer paste centre in the destination.
        offset: ``(ox, oy)`` top-left of the canvas in the destination.
    """

    source: int
    instance: int
    label: int
    src_box: tuple[int, int, int, int]
    jitter: tuple[int, int, int, int] | None
    flip: bool
    scale: float
    angle: int
    geometry: PasteGeometry
    targeted: bool
    target: int
    center: tuple[int, int]
    offset: tuple[int, int]


@dataclass(frozen=True)
class PastePlan:
    """Every random decision for one destination sample, plus the parameters ``apply`` needs.

    An empty ``pastes`` means the sample is returned unchanged.
    """

    height: int
    width: int
    basket: tuple[int, ...] = ()
    pastes: tuple[PasteOp, ...] = ()
    mode: str = "ocp"
    min_size_occ: float = 0.01
    bbox_occluded_thr: float = 10.0
    mask_occluded_thr: int = 300
    blend_sigma: float = 0.0
    flip_index: tuple[int, ...] | None = None
    skipped_by_prob: bool = False
    num_candidates: int = 0

    @property
    def used_sources(self) -> list[int]:
        """Basket positions whose images the pastes read (the only sources that need loading)."""
        return sorted({op.source for op in self.pastes})

    def check(self, destination: Sample, sources: Sequence[Sample | None]) -> None:
        """Raise ``ValueError`` unless this plan can be applied to ``destination`` with ``sources`` (one per
        basket position): the plan's size is the destination's, and every paste reads a given source, one of its
        instances, and a crop inside its image. Every backend calls it before pasting, so all raise alike.

        Plans crop tight mask boxes, so the crop test only fails for a source that is not the one planned for.
        """
        H, W = destination.height, destination.width
        if (self.height, self.width) != (H, W):
            raise ValueError(
                f"{destination.file_name or 'destination'}: plan made for {self.width}x{self.height}, image is {W}x{H}"
            )
        for t, op in enumerate(self.pastes):
            src = sources[op.source] if op.source < len(sources) else None
            if src is None:
                raise ValueError(f"plan paste {t} reads basket position {op.source}, but no source sample was given")
            if not 0 <= op.instance < len(src):
                raise ValueError(f"{src.file_name or 'source'}: plan names instance {op.instance}, it has {len(src)}")
            x0, y0, x1, y1 = op.src_box
            if not (0 <= x0 < x1 <= src.width and 0 <= y0 < y1 <= src.height):
                raise ValueError(f"{src.file_name or 'source'}: paste {t} crops {op.src_box}, outside the "
                                 f"{src.width}x{src.height} image")

    def without_sources(self, positions: set[int]) -> "PastePlan":
        """This plan less the pastes from basket ``positions`` (sources whose image cannot be read)."""
        if not positions:
            return self
        return replace(self, pastes=tuple(op for op in self.pastes if op.source not in positions))


def _canvas_box(op_offset: tuple[int, int], geom: PasteGeometry, w: int, h: int) -> tuple[float, float, float, float]:
    ox, oy = op_offset
    return (max(0, ox), max(0, oy), min(w, ox + geom.out_w), min(h, oy + geom.out_h))


def _inclusive_range(lo: float, hi_exclusive: float, size: int, buffer: float) -> tuple[int, int]:
    """Integer centre range ``[lo, hi]`` of a box widened by ``buffer`` of its size, clipped to ``[0, size-1]``."""
    ext = hi_exclusive - lo
    a = int(math.floor(lo - buffer * ext))
    b = int(math.ceil(hi_exclusive + buffer * ext)) - 1
    a = min(max(a, 0), size - 1)
    b = min(max(b, 0), size - 1)
    return a, max(a, b)


def _pick(u: float, lo: int, hi: int) -> int:
    """Map ``u`` in [0, 1) to an integer in the inclusive range ``[lo, hi]`` uniformly."""
    return min(hi, lo + int(u * (hi - lo + 1)))


def sample_plan(
    rng: np.random.Generator,
    destination_meta: ImageMeta,
    basket_metas: list[ImageMeta],
    cfg: OCPConfig,
) -> PastePlan:
    """Draw every random number of one OC&P application (spec §2 and §4.1).

    Draw order (fixed so plans are reproducible): the ``prob`` coin; ``k``; the chosen candidates; then per paste,
    always 12 numbers (jitter coin, 4 jitter factors, flip coin, scale, angle, target coin, target pick, centre x,
    centre y), used or not, so switching one option does not shift the others.
    """
    h, w = destination_meta.height, destination_meta.width
    base = dict(
        height=h,
        width=w,
        basket=tuple(int(m.index) for m in basket_metas),
        mode=cfg.mode,
        min_size_occ=cfg.min_size_occ,
        bbox_occluded_thr=cfg.bbox_occluded_thr,
        mask_occluded_thr=cfg.mask_occluded_thr,
        blend_sigma=cfg.blend_sigma,
        flip_index=destination_meta.flip_index,
    )
    if not rng.random() < cfg.prob:
        return PastePlan(**base, skipped_by_prob=True)

    candidates = paste_candidates(basket_metas, cfg.min_size_paste * math.sqrt(h * w))
    n = len(candidates)
    chosen = _choose(rng, n, cfg)
    # Targets: destination instances, then each paste's canvas box (its amodal box from geometry alone).
    targets: list[tuple[float, float, float, float]] = [tuple(map(float, b)) for b in destination_meta.boxes]
    pastes: list[PasteOp] = []
    for c in chosen:
        b, i = candidates[int(c)]
        op = _draw_paste(rng.random(12), b, i, basket_metas[b], targets, w, h, cfg)
        pastes.append(op)
        if cfg.mode != "simple":
            targets.append(_canvas_box(op.offset, op.geometry, w, h))
    return PastePlan(**base, pastes=tuple(pastes), num_candidates=n)


def paste_candidates(basket_metas: list[ImageMeta], thr: float) -> list[tuple[int, int]]:
    """``(basket position, instance row)`` of every basket instance whose tight box is wider and taller than
    ``thr`` pixels (the seed's ``min_size_paste`` rule), in basket order."""
    candidates: list[tuple[int, int]] = []
    for b, meta in enumerate(basket_metas):
        bw = meta.boxes[:, 2] - meta.boxes[:, 0]
        bh = meta.boxes[:, 3] - meta.boxes[:, 1]
        ok = (bw > thr) & (bh > thr) & (bw > 0) & (bh > 0)
        candidates.extend((b, int(i)) for i in np.flatnonzero(ok))
    return candidates


def _choose(rng: np.random.Generator, n: int, cfg: OCPConfig) -> np.ndarray:
    """Which of ``n`` candidates are pasted, in paste order: ``k`` drawn as the seed does (OC&P: ``randint`` of
    ``paste_num``, hi exclusive; Simple: mmdet's ``max_num_pasted`` rule), then ``k`` distinct candidates."""
    if cfg.mode == "simple":
        k = int(rng.integers(0, min(n + 1, cfg.max_num_pasted))) if cfg.selected else min(n, cfg.max_num_pasted)
    else:
        k = min(n, int(rng.integers(cfg.paste_num[0], cfg.paste_num[1])))
    chosen = rng.choice(n, size=k, replace=False) if k > 0 else np.zeros(0, dtype=np.int64)
    return np.sort(chosen) if cfg.mode == "simple" and not cfg.selected else chosen


def _draw_paste(u: np.ndarray, b: int, i: int, meta: ImageMeta, targets: list[tuple[float, float, float, float]],
                w: int, h: int, cfg: OCPConfig) -> PasteOp:
    """One paste of instance ``i`` of basket image ``b`` from its 12 uniform numbers ``u`` (see ``sample_plan``);
    ``targets``: the boxes occlusion-aware placement may aim at."""
    x0, y0, x1, y1 = (int(v) for v in meta.boxes[i])
    box, label = (x0, y0, x1, y1), int(meta.labels[i])
    if cfg.mode == "simple":  # same place, no jitter
        return PasteOp(b, i, label, box, None, False, 1.0, 0, paste_geometry(x1 - x0, y1 - y0), False, -1,
                       ((x0 + x1) // 2, (y0 + y1) // 2), (x0, y0))
    factors = tuple(rng_int(u_i, lo, hi) for u_i, (lo, hi) in zip(u[1:5], JITTER_RANGES))
    jitter = factors if (cfg.aug_paste_img_jitter and u[0] < 0.5) else None
    if cfg.aug_paste_geom_jitter:
        flip = bool(u[5] < 0.5)
        scale = SCALE_RANGE[0] + (SCALE_RANGE[1] - SCALE_RANGE[0]) * float(u[6])
        angle = rng_int(u[7], *ANGLE_RANGE)
    else:
        flip, scale, angle = False, 1.0, 0
    geom = paste_geometry(x1 - x0, y1 - y0, flip, scale, angle)
    targeted = bool(u[8] < cfg.targeted_paste_prob) and len(targets) > 0
    if targeted:
        target = _pick(float(u[9]), 0, len(targets) - 1)
        tx0, ty0, tx1, ty1 = targets[target]
        xr = _inclusive_range(tx0, tx1, w, cfg.targeted_paste_buffer)
        yr = _inclusive_range(ty0, ty1, h, cfg.targeted_paste_buffer)
    else:
        target = -1
        xr, yr = (0, w - 1), (0, h - 1)
    cx, cy = _pick(float(u[10]), *xr), _pick(float(u[11]), *yr)
    offset = (cx - geom.out_w // 2, cy - geom.out_h // 2)
    return PasteOp(b, i, label, box, jitter, flip, scale, angle, geom, targeted, target, (cx, cy), offset)


def rng_int(u: float, lo: int, hi_exclusive: int) -> int:
    """Map ``u`` in [0, 1) to an integer in ``[lo, hi_exclusive)`` uniformly."""
    return _pick(float(u), lo, hi_exclusive - 1)
