"""Fidelity statistics: what OC&P does to real data, measured as the seed's figures are (``docs: seed-statistics``).

Each augmented sample becomes a small ``SampleRecord`` (``record_of`` from output arrays, ``record_from_sample``
from a ``Sample``); ``aggregate`` turns records into a ``Table`` of rows ``name -> Stat(value, se, n)``;
``SEED`` holds the seed's figures of sections A, B and C as transcribed from the doc; ``compare`` gives, per row,
the difference between ours and the seed's in combined standard errors.

Definitions (the doc's, per sample unless said otherwise):

- ``ran``: share of samples where the transform ran (the ``prob`` coin did not skip);
- ``no candidate``: share of the samples that ran whose basket had no instance passing ``min_size_paste``;
- ``pastes``: pasted instances present in the output (mean per sample); ``P(k)``: share of samples with ``k``;
- ``overlap any`` / ``overlap GT``: share of the pastes present in the output whose mask met an instance visible at
  the time it was pasted (any instance / a ground-truth one), see ``paste_overlaps``;
- ``area mean``, ``area q10/q50/q90``: visible pasted area / image area, per paste present in the output;
- ``dropped``: ground-truth instances removed by the ``min_size_occ`` rule (``Sample.info["dropped_existing"]``);
- ``occ > 0.15``: share of the surviving ground-truth instances whose occlusion rate exceeds 0.15, over the
  samples where the transform ran. The doc does not say which samples; this is the reading its figures support:
  over all samples (row ``occ > 0.15 all``, also reported) ocp_dali's A-reference gives 0.140 / 0.117 / 0.120
  (seeds 0 / 1 / 2) against the seed's 0.158 for OC&P and 0.156 / 0.171 / 0.161 against 0.194 for Basic C&P,
  over the samples that ran 0.179 / 0.156 / 0.158 and 0.192 / 0.209 / 0.210 (``dropped``, by contrast, fits the
  seed's figure over all samples: 0.295 / 0.255 / 0.269 against 0.254, over those that ran 0.37 / 0.33 / 0.34).

Standard errors: per-sample means ``std / sqrt(n)``; shares binomial ``sqrt(p (1 - p) / n)`` over their
denominator (samples, samples that ran, pastes or ground-truth instances); quantiles distribution-free, from the
order statistics at ranks ``n q -+ sqrt(n q (1 - q))`` (half their distance).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ocp_dali.sample import Sample

OCC_THRESHOLD = 0.15
QUANTILES = (0.1, 0.5, 0.9)
# Rows in table order, each with the kind of estimate it is (which fixes its SE and its seed-side fallback SE):
# share of samples | share of samples that ran | mean per sample | share of pastes | mean per paste | quantile of
# paste areas | share of surviving ground-truth instances.
ROWS: dict[str, str] = {
    "ran": "samples", "no candidate": "ran", "pastes": "mean_samples",
    "P(0)": "samples", "P(1)": "samples", "P(2)": "samples",
    "overlap any": "pastes", "overlap GT": "pastes",
    "area mean": "mean_pastes", "area q10": "quantile", "area q50": "quantile", "area q90": "quantile",
    "dropped": "mean_samples", "occ > 0.15": "gt", "occ > 0.15 all": "gt",
}


@dataclass(frozen=True)
class SampleRecord:
    """What one augmented sample contributes to the statistics.

    Attributes:
        ran: the transform ran (not skipped by the ``prob`` coin).
        num_candidates: basket instances that passed ``min_size_paste`` (0 when it did not run).
        overlap_any, overlap_gt: (P,) bool per pasted instance present in the output, in paste order: its mask met
            an instance visible when it was pasted (any / a ground-truth one).
        paste_area: (P,) float64 visible area / image area of each of those pastes.
        dropped: ground-truth instances removed by the ``min_size_occ`` rule.
        gt_occlusion: (G,) float32 occlusion rates of the surviving ground-truth instances.
    """

    ran: bool
    num_candidates: int
    overlap_any: np.ndarray
    overlap_gt: np.ndarray
    paste_area: np.ndarray
    dropped: int
    gt_occlusion: np.ndarray

    @property
    def pastes(self) -> int:
        """Pasted instances present in the output."""
        return int(len(self.paste_area))


def paste_overlaps(amodal: np.ndarray, pasted: np.ndarray, gt_in: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Whether each pasted instance met an instance visible at the time it was pasted: (P,) bool any, (P,) bool GT.

    ``amodal`` (N, H, W) bool output amodal masks, ``pasted`` (N,) bool; pasted rows are in paste order (as
    ``apply`` emits them). ``gt_in`` (G0, H, W) bool: the ground-truth masks before the pastes, dropped instances
    included (default: the surviving ground-truth rows' amodal masks, which are those masks, so instances the
    ``min_size_occ`` rule dropped are then missed).

    How: a 3-state owner map (nothing / ground truth / a paste) of the visible pixels, updated paste by paste. A
    paste's amodal mask is its whole placed mask, so a paste meets ground truth iff it covers a pixel still owned by
    ground truth, and meets anything iff it covers an owned pixel. Not visible in the output, so left out: pastes
    that were placed and later dropped (rare: a later paste must cover them almost entirely), and, without
    ``gt_in``, dropped ground-truth instances.
    """
    h, w = amodal.shape[1:]
    gt = gt_in if gt_in is not None else amodal[~pasted]
    owner = np.zeros((h, w), dtype=np.uint8)  # 0 nothing, 1 ground truth, 2 a paste
    if len(gt):
        owner[np.any(gt, axis=0)] = 1
    rows = np.flatnonzero(pasted)
    any_, gt_ = np.zeros(len(rows), bool), np.zeros(len(rows), bool)
    for k, r in enumerate(rows):
        under = owner[amodal[r]]
        gt_[k] = bool((under == 1).any())
        any_[k] = bool(under.any())
        owner[amodal[r]] = 2
    return any_, gt_


def record_of(masks: np.ndarray, amodal: np.ndarray, pasted: np.ndarray, occlusion_rate: np.ndarray, *, ran: bool,
              num_candidates: int, dropped: int, gt_in: np.ndarray | None = None) -> SampleRecord:
    """The record of one augmented sample from its output arrays (ignore / crowd rows already left out).

    ``masks``, ``amodal`` (N, H, W) bool visible and amodal masks; ``pasted`` (N,) bool; ``occlusion_rate`` (N,)
    float; ``dropped``: ground-truth instances the ``min_size_occ`` rule removed; ``gt_in``: see
    ``paste_overlaps``. The image area is ``H * W`` of the masks (the padded canvas where there is one).
    """
    pasted = np.asarray(pasted, dtype=bool)
    h, w = masks.shape[1:]
    rows = np.flatnonzero(pasted)
    area = np.array([np.count_nonzero(masks[r]) for r in rows], dtype=np.float64) / float(h * w)
    any_, gt_ = paste_overlaps(amodal, pasted, gt_in)
    return SampleRecord(ran=bool(ran), num_candidates=int(num_candidates), overlap_any=any_, overlap_gt=gt_,
                        paste_area=area, dropped=int(dropped),
                        gt_occlusion=np.asarray(occlusion_rate, dtype=np.float32)[~pasted])


def record_from_sample(out: Sample, *, ran: bool, num_candidates: int, gt_in: np.ndarray | None = None
                       ) -> SampleRecord:
    """The record of an augmented ``Sample`` (NumPy arrays) and its plan's facts (``ran = not
    plan.skipped_by_prob``, ``plan.num_candidates``); ``gt_in`` (G0, H, W) bool the destination's masks as loaded.
    ``dropped`` is ``out.info["dropped_existing"]``."""
    return record_of(out.masks, out.amodal_masks, out.pasted, out.occlusion_rate, ran=ran,
                     num_candidates=num_candidates, dropped=out.info["dropped_existing"], gt_in=gt_in)


@dataclass(frozen=True)
class Stat:
    """One row: ``value``, its standard error ``se`` (None where there is none) and ``n``, the size of the
    denominator it was estimated over (samples, samples that ran, pastes or ground-truth instances)."""

    value: float
    se: float | None
    n: int


def binomial_se(p: float, n: int) -> float:
    """SE of a share ``p`` over ``n`` independent trials (nan when ``n == 0``)."""
    return math.sqrt(p * (1.0 - p) / n) if n > 0 else math.nan


def _share(flags: np.ndarray) -> Stat:
    n = int(len(flags))
    p = float(np.mean(flags)) if n else math.nan
    return Stat(p, binomial_se(p, n), n)


def _mean(values: np.ndarray) -> Stat:
    n = int(len(values))
    if n == 0:
        return Stat(math.nan, math.nan, 0)
    se = float(np.std(values, ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return Stat(float(np.mean(values)), se, n)


def quantile_stat(values: np.ndarray, q: float) -> Stat:
    """Quantile ``q`` of ``values`` (1-D) with a distribution-free SE: half the distance between the order
    statistics at ranks ``n q -+ sqrt(n q (1 - q))`` (a binomial 68 % interval for the quantile)."""
    n = int(len(values))
    if n == 0:
        return Stat(math.nan, math.nan, 0)
    s = np.sort(values)
    half = math.sqrt(n * q * (1.0 - q))
    lo, hi = (int(np.clip(round(n * q + d), 0, n - 1)) for d in (-half, half))
    return Stat(float(np.quantile(values, q)), float(s[hi] - s[lo]) / 2.0, n)


def aggregate(records: Sequence[SampleRecord]) -> dict[str, Stat]:
    """The table of ``records``: every row of ``ROWS`` as a ``Stat``, plus ``samples`` (value = count)."""
    ran = np.array([r.ran for r in records], dtype=bool)
    no_cand = np.array([r.num_candidates == 0 for r in records if r.ran], dtype=bool)
    pastes = np.array([r.pastes for r in records], dtype=np.float64)
    cat = (lambda name, dt: np.concatenate([getattr(r, name) for r in records]).astype(dt) if records
           else np.zeros(0, dt))
    area = cat("paste_area", np.float64)
    table = {"samples": Stat(float(len(records)), None, len(records)), "ran": _share(ran),
             "no candidate": _share(no_cand), "pastes": _mean(pastes)}
    for k in range(3):
        table[f"P({k})"] = _share(pastes == k)
    table["overlap any"] = _share(cat("overlap_any", bool))
    table["overlap GT"] = _share(cat("overlap_gt", bool))
    table["area mean"] = _mean(area)
    for q in QUANTILES:
        table[f"area q{round(q * 100)}"] = quantile_stat(area, q)
    table["dropped"] = _mean(np.array([r.dropped for r in records], dtype=np.float64))
    ran_gt = [r.gt_occlusion for r in records if r.ran]
    table["occ > 0.15"] = _share(np.concatenate(ran_gt) > OCC_THRESHOLD if ran_gt else np.zeros(0, bool))
    table["occ > 0.15 all"] = _share(cat("gt_occlusion", np.float32) > OCC_THRESHOLD)
    return table


@dataclass(frozen=True)
class SeedFigures:
    """The seed's figures of one section and preset (``docs: seed-statistics``): ``rows`` name -> ``(value, se)``
    with ``se`` None where the doc gives none; ``samples`` the doc's sample count."""

    section: str
    preset: str
    samples: int
    rows: Mapping[str, tuple[float, float | None]]


def _seed_rows(ran, no_cand, pastes, p012, overlap_any, overlap_gt, area, quantiles, dropped, occ):
    """The doc's table columns as ``SeedFigures.rows`` (``(value, se)`` pairs, plain values without an SE)."""
    rows = {"ran": (ran, None), "no candidate": (no_cand, None), "pastes": pastes, "overlap any": overlap_any,
            "overlap GT": overlap_gt, "area mean": area, "dropped": dropped, "occ > 0.15": (occ, None)}
    rows.update({f"P({k})": (p, None) for k, p in enumerate(p012 or ())})
    rows.update({f"area q{round(q * 100)}": (v, None) for q, v in zip(QUANTILES, quantiles)})
    return rows


# Transcribed from seed-statistics.md, sections A (the transform on raw inputs), B (the seed's Mask R-CNN
# placement) and C (its Mask2Former placement: only three rows given, the last on the final 1024x1024 sample).
SEED: dict[tuple[str, str], SeedFigures] = {
    ("A", "ocp"): SeedFigures("A", "ocp", 1014, _seed_rows(
        0.780, 0.279, (0.667, 0.021), (0.44, 0.46, 0.10), (0.808, 0.015), (0.777, 0.016), (0.092, 0.004),
        (0.011, 0.053, 0.239), (0.254, 0.026), 0.158)),
    ("A", "basic"): SeedFigures("A", "basic", 507, _seed_rows(
        0.805, 0.000, (4.00, 0.13), None, (0.440, 0.011), (0.310, 0.010), (0.038, 0.002),
        (0.0006, 0.005, 0.135), (0.227, 0.036), 0.194)),
    ("B", "ocp"): SeedFigures("B", "ocp", 390, _seed_rows(
        0.800, 0.420, (0.533, 0.032), (0.54, 0.40, 0.07), (0.726, 0.031), (0.716, 0.031), (0.044, 0.003),
        (0.009, 0.029, 0.098), (0.103, 0.026), 0.112)),
    ("B", "basic"): SeedFigures("B", "basic", 234, _seed_rows(
        0.838, 0.000, (3.94, 0.19), None, (0.354, 0.016), (0.277, 0.015), (0.017, 0.001),
        (0.0002, 0.002, 0.063), (0.068, 0.032), 0.112)),
    ("C", "ocp"): SeedFigures("C", "ocp", 312, {"no candidate": (0.43, None), "pastes": (0.50, None),
                                                "occ > 0.15": (0.11, None)}),
}


def _seed_binomial_se(p: float, n: float) -> float:
    """Binomial SE of a seed share over ``n`` trials; a share of exactly 0 or 1 is taken as ``(x + 0.5) / (n + 1)``
    so that it still has an SE (the doc rounds, and 0 of 507 is not a certainty)."""
    if p <= 0.0 or p >= 1.0:
        p = (p * n + 0.5) / (n + 1.0)
    return binomial_se(p, max(int(round(n)), 1))


def seed_stat(fig: SeedFigures, row: str, ours: Mapping[str, Stat]) -> Stat | None:
    """The seed's row as a ``Stat`` (None when the doc does not give it), with an SE where the doc gives none:
    binomial over the seed's denominator (samples; samples that ran, ``ran x samples``; ground-truth instances,
    ``samples x`` our surviving ground-truth instances per sample, the same images), Poisson ``sqrt(mean / n)`` for
    a mean count, and for a quantile our SE scaled by ``sqrt(our pastes / the seed's pastes)``."""
    if row not in fig.rows:
        return None
    value, se = fig.rows[row]
    kind, n = ROWS[row], float(fig.samples)
    ran = fig.rows.get("ran", (ours["ran"].value, None))[0]  # section C gives no "ran": take ours
    pastes = fig.rows.get("pastes", (ours["pastes"].value, None))[0]
    if kind == "ran":
        n = ran * fig.samples
    elif kind in ("pastes", "mean_pastes", "quantile"):
        n = pastes * fig.samples
    elif kind == "gt":
        n = fig.samples * ours[row].n / max(ours["samples"].n, 1)
    if se is None:
        if kind == "mean_samples":
            se = math.sqrt(max(value, 0.0) / fig.samples)
        elif kind == "quantile":
            se = ours[row].se * math.sqrt(ours[row].n / max(n, 1.0)) if ours[row].n else math.nan
        else:
            se = _seed_binomial_se(value, n)
    return Stat(float(value), float(se), int(round(n)))


@dataclass(frozen=True)
class Comparison:
    """One row of ``compare``: ours, the seed's, and ``z = (ours - seed) / sqrt(se_ours^2 + se_seed^2)``."""

    ours: Stat
    seed: Stat
    z: float


def compare(ours: Mapping[str, Stat], seed: SeedFigures) -> dict[str, Comparison]:
    """Per row the seed gives: our ``Stat``, the seed's (``seed_stat``) and the difference in combined SEs
    (nan when an SE is missing, e.g. a mean over fewer than 2 values)."""
    out = {}
    for row in ROWS:
        s = seed_stat(seed, row, ours)
        if s is None or row not in ours:
            continue
        o = ours[row]
        se = math.sqrt((o.se if o.se is not None else math.nan) ** 2 + s.se ** 2)
        z = (o.value - s.value) / se if se > 0 else (0.0 if o.value == s.value else math.nan)
        out[row] = Comparison(o, s, float(z))
    return out


def stats_json(rows: Mapping[str, Stat] | Iterable[tuple[str, Stat]]) -> dict[str, dict]:
    """A table (or its items) as plain JSON: row -> {value, se, n} (nan -> None)."""
    clean = (lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else v)
    items = rows.items() if isinstance(rows, Mapping) else rows
    return {k: dict(value=clean(s.value), se=clean(s.se), n=s.n) for k, s in items}
