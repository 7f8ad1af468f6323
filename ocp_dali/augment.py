"""The augmentation's entry points: ``apply`` (dispatch to a backend) and ``augment`` (one dataset sample)."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from ocp_dali.config import OCPConfig
from ocp_dali.data.base import InstanceDataset
from ocp_dali.errors import DataError
from ocp_dali.plan import PastePlan, sample_plan, sample_rng
from ocp_dali.reference import apply_numpy
from ocp_dali.sample import Sample

BACKENDS = ("numpy", "cupy")
log = logging.getLogger(__name__)


def apply(plan: PastePlan, destination: Sample, sources: Sequence[Sample | None], *, backend: str = "numpy") -> Sample:
    """Apply ``plan`` to ``destination`` with paste ``sources`` (one per ``plan.basket`` position).

    Pure: the inputs are never modified; an empty plan returns ``destination`` itself.
    """
    if backend == "numpy":
        return apply_numpy(plan, destination, sources)
    if backend == "cupy":
        try:
            from ocp_dali.kernels.apply import apply_cupy  # type: ignore[import-not-found]
        except ImportError as e:
            raise RuntimeError(f"backend='cupy' is not available: {e}") from e
        return apply_cupy(plan, destination, sources)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def plan_for(dataset: InstanceDataset, index: int, *, epoch: int = 0, seed: int = 0, cfg: OCPConfig,
             rank: int = 0, basket: Sequence[int] | None = None) -> PastePlan:
    """The plan of sample ``index`` (no pixels read): basket drawn from ``(seed, epoch, index, rank)``.

    ``basket`` overrides the drawn basket (``source="batch"``: the other images of the batch).
    """
    rng = sample_rng(seed, epoch, index, rank)
    if basket is None:
        if cfg.source == "batch":
            raise ValueError("cfg.source='batch' draws sources from a batch: pass basket= (see augment_batch)")
        basket = dataset.basket_indices(rng, index, cfg.basket_size)  # type: ignore[attr-defined]
    return sample_plan(rng, dataset.meta(index), [dataset.meta(i) for i in basket], cfg)


def usable_sources(dataset: InstanceDataset, plan: PastePlan) -> tuple[PastePlan, int]:
    """``plan`` less the pastes from basket images that cannot be used (``dataset.probe`` fails: missing, bad
    header, truncated, wrong size), each logged, and how many sources were dropped. The DALI workers apply the same
    rule, so both paths paste the same instances."""
    probe = getattr(dataset, "probe", None)
    if probe is None:
        return plan, 0
    bad = set()
    for b in plan.used_sources:
        try:
            probe(plan.basket[b])
        except DataError as e:
            log.warning("paste source %s dropped: %s", plan.basket[b], e)
            bad.add(b)
    return plan.without_sources(bad), len(bad)


def augment(dataset: InstanceDataset, index: int, *, epoch: int = 0, seed: int = 0,
            cfg: OCPConfig | None = None, backend: str = "numpy", rank: int = 0) -> Sample:
    """Load sample ``index`` and augment it; the same ``(seed, epoch, index, rank)`` gives the same result.

    Only the basket images the plan pastes from are decoded; pastes from a basket image that cannot be used are
    left out (``usable_sources``; counted in ``info["dropped_sources"]``). A destination that cannot be used raises
    ``DataError`` naming its file.
    """
    cfg = cfg or OCPConfig.ocp()
    plan = plan_for(dataset, index, epoch=epoch, seed=seed, cfg=cfg, rank=rank)
    destination = dataset.load(index)
    plan, dropped = usable_sources(dataset, plan)
    sources: list[Sample | None] = [None] * len(plan.basket)
    for b in plan.used_sources:
        sources[b] = dataset.load(plan.basket[b])
    out = apply(plan, destination, sources, backend=backend)
    return replace(out, info={**(out.info or {}), "dropped_sources": dropped}) if dropped else out


def augment_batch(dataset: InstanceDataset, indices: Sequence[int], *, epoch: int = 0, seed: int = 0,
                  cfg: OCPConfig | None = None, backend: str = "numpy", rank: int = 0) -> list[Sample]:
    """Augment a batch. With ``cfg.source="batch"`` each sample's basket is drawn from the batch's other images
    (no extra decoding); otherwise each sample is ``augment(dataset, index, ...)``."""
    cfg = cfg or OCPConfig.ocp()
    if cfg.source != "batch":
        return [augment(dataset, i, epoch=epoch, seed=seed, cfg=cfg, backend=backend, rank=rank) for i in indices]
    loaded = {i: dataset.load(i) for i in dict.fromkeys(indices)}
    out = []
    for pos, index in enumerate(indices):
        rng = sample_rng(seed, epoch, index, rank)
        others = [p for p in range(len(indices)) if p != pos]
        pick = rng.choice(len(others), size=min(cfg.basket_size, len(others)), replace=False) if others else []
        basket = [indices[others[int(p)]] for p in pick]
        plan = sample_plan(rng, dataset.meta(index), [dataset.meta(i) for i in basket], cfg)
        out.append(apply(plan, loaded[index], [loaded[i] for i in basket], backend=backend))
    return out
