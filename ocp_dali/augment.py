"""The augmentation's entry points: ``apply`` (one plan, any backend), ``augment`` (one dataset sample),
``augment_batch``, and ``reference_sample`` (what the DALI pipeline produces for a sample, by the reference)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ocp_dali.backends import get_backend
from ocp_dali.config import OCPConfig
from ocp_dali.data.base import InstanceDataset, draw_batch_basket
from ocp_dali.data.usable import UsableImages
from ocp_dali.lsj import Geometry, apply_lsj, as_geometry
from ocp_dali.placement import PlacedPlan, plan_sample
from ocp_dali.plan import PastePlan, sample_rng
from ocp_dali.sample import Sample
from ocp_dali.stage import gather_sources
from ocp_dali.targets import Targets


def apply(plan: PastePlan, destination: Sample, sources: Sequence[Sample | None], *,
          backend: str | Any = "numpy", targets: Targets | None = None) -> Sample:
    """Apply ``plan`` to ``destination`` with paste ``sources`` (one per ``plan.basket`` position).

    ``backend``: ``"numpy"`` (the reference), ``"cupy"`` (CUDA kernels; a CUDA GPU is needed) or ``"emulated"``
    (the kernels on the CPU), see ``ocp_dali.backends``. ``targets``: the optional outputs wanted
    (``ocp_dali.targets``; None: the destination's). Pure: the inputs are never modified; an empty plan returns
    ``destination`` itself (restricted to ``targets``).
    """
    return get_backend(backend).apply_batch([plan], [destination], [sources], targets)[0]


def draw_placed(dataset: InstanceDataset, key: tuple[int, int, int, int], cfg: OCPConfig,
                geometry: Geometry | None, batch: Sequence[int] | None = None,
                pos: int = 0) -> tuple[PlacedPlan, list[int]]:
    """The basket and then the plan and geometry of one sample, all from its stream ``key = (seed, epoch, index,
    rank)`` (``placement.plan_sample``; no pixels read): the one draw the reference and the DALI workers share.
    ``cfg.source == "batch"``: the basket comes from ``batch`` (the sample at ``pos``), else from the dataset."""
    seed, epoch, index, rank = key
    rng = sample_rng(seed, epoch, index, rank)
    if cfg.source == "batch":
        if batch is None:
            raise ValueError("cfg.source='batch' draws sources from a batch: pass batch= (see augment_batch)")
        basket = draw_batch_basket(rng, batch, pos, cfg.basket_size)
    else:
        basket = dataset.basket_indices(rng, index, cfg.basket_size)  # type: ignore[attr-defined]
    placed = plan_sample(rng, key, dataset.meta(index), [dataset.meta(i) for i in basket], cfg, geometry)
    return placed, list(basket)


def placed_plan_for(dataset: InstanceDataset, index: int, *, epoch: int = 0, seed: int = 0, cfg: OCPConfig,
                    rank: int = 0, basket: Sequence[int] | None = None,
                    geometry: Geometry | None = None) -> PlacedPlan:
    """The plan and geometry of sample ``index`` (``draw_placed``). ``basket`` overrides the drawn basket (the plan
    then comes from the start of the sample's stream)."""
    key = (seed, epoch, index, rank)
    if basket is None:
        return draw_placed(dataset, key, cfg, geometry)[0]
    return plan_sample(sample_rng(*key), key, dataset.meta(index), [dataset.meta(i) for i in basket], cfg, geometry)


def plan_for(dataset: InstanceDataset, index: int, *, epoch: int = 0, seed: int = 0, cfg: OCPConfig,
             rank: int = 0, basket: Sequence[int] | None = None) -> PastePlan:
    """The plan of sample ``index`` on its raw image (``placed_plan_for`` without geometry)."""
    return placed_plan_for(dataset, index, epoch=epoch, seed=seed, cfg=cfg, rank=rank, basket=basket).plan


def usable_sources(dataset: InstanceDataset, plan: PastePlan) -> tuple[PastePlan, int]:
    """``plan`` less the pastes from basket images that cannot be used (``ocp_dali.data.usable``: ``dataset.probe``
    fails), each logged, and how many sources were dropped. The DALI workers apply the same policy, so both paths
    paste the same instances."""
    plan, bad = UsableImages.of(dataset).without_unusable_sources(plan)
    return plan, len(bad)


def apply_placed(placed: PlacedPlan, destination: Sample, sources: Sequence[Sample | None], *,
                 flip_index: tuple[int, ...] | None = None, backend: str | Any = "numpy",
                 targets: Targets | None = None) -> Sample:
    """Apply a ``PlacedPlan``: the destination's geometry, then the paste (the seed's order), or the paste, then
    the geometry (``paste_first``); ``flip_index``: the keypoint permutation of a flip (where the plan has none);
    ``targets``: the optional outputs wanted (None: the destination's), the destination restricted to them first
    so no step makes the others."""
    flip_index = placed.plan.flip_index or flip_index
    destination = destination.restrict(targets)
    if placed.geometry is not None and placed.geometry_first:
        destination = apply_lsj(destination, placed.geometry, flip_index)
    out = apply(placed.plan, destination, sources, backend=backend)
    if placed.geometry is not None and not placed.geometry_first:
        out = apply_lsj(out, placed.geometry, flip_index)
    return out


def augment(dataset: InstanceDataset, index: int, *, epoch: int = 0, seed: int = 0,
            cfg: OCPConfig | None = None, backend: str = "numpy", rank: int = 0,
            geometry: Geometry | None = None, targets: Targets | None = None) -> Sample:
    """Load sample ``index`` and augment it (in ``geometry``, see ``lsj.Geometry``; None: on the raw image); the
    same ``(seed, epoch, index, rank)`` gives the same result. ``targets``: the optional outputs wanted
    (``ocp_dali.targets``; default all).

    Only the basket images the plan pastes from are decoded; pastes from a basket image that cannot be used are
    left out (``usable_sources``; counted in ``info["dropped_sources"]``). A destination that cannot be used raises
    ``DataError`` naming its file.
    """
    cfg = cfg or OCPConfig.ocp()
    placed = placed_plan_for(dataset, index, epoch=epoch, seed=seed, cfg=cfg, rank=rank, geometry=geometry)
    destination = dataset.load(index)
    plan, dropped = usable_sources(dataset, placed.plan)
    sources = gather_sources(plan, lambda b, rows: dataset.load(plan.basket[b]))
    out = apply_placed(replace(placed, plan=plan), destination, sources,
                       flip_index=dataset.meta(index).flip_index, backend=backend, targets=targets)
    return replace(out, info={**out.info, "dropped_sources": dropped}) if dropped else out


def augment_batch(dataset: InstanceDataset, indices: Sequence[int], *, epoch: int = 0, seed: int = 0,
                  cfg: OCPConfig | None = None, backend: str = "numpy", rank: int = 0,
                  geometry: Geometry | None = None, targets: Targets | None = None) -> list[Sample]:
    """Augment a batch. With ``cfg.source="batch"`` each sample's basket is drawn from the batch's other images
    (no extra decoding); otherwise each sample is ``augment(dataset, index, ...)``. ``targets``: as ``augment``."""
    cfg = cfg or OCPConfig.ocp()
    if cfg.source != "batch":
        return [augment(dataset, i, epoch=epoch, seed=seed, cfg=cfg, backend=backend, rank=rank, geometry=geometry,
                        targets=targets) for i in indices]
    loaded = {i: dataset.load(i) for i in dict.fromkeys(indices)}
    out = []
    for pos, index in enumerate(indices):
        placed, basket = draw_placed(dataset, (seed, epoch, index, rank), cfg, geometry, indices, pos)
        out.append(apply_placed(placed, loaded[index], [loaded[i] for i in basket],
                                flip_index=dataset.meta(index).flip_index, backend=backend, targets=targets))
    return out


def reference_sample(dataset: InstanceDataset, index: int, *, epoch: int, seed: int, cfg: OCPConfig,
                     geometry: Geometry | bool = True, output_size: int | tuple[int, int] = 1024, lsj: bool = True,
                     batch: list[int] | None = None, targets: Targets | None = None) -> Sample:
    """What the DALI pipeline produces for one sample, by the NumPy reference alone: ``augment`` (or
    ``augment_batch`` for ``cfg.source == "batch"``; ``batch``: the sample's batch) in the sample's geometry
    (``lsj.as_geometry(geometry, output_size, lsj)``; False: none). ``OCPDataset`` serves these; tests compare the
    pipeline with them. ``targets``: the optional outputs wanted (``ocp_dali.targets``; default all)."""
    geo = as_geometry(geometry, output_size, lsj)
    if cfg.source == "batch":
        if batch is None:
            raise ValueError("source='batch' needs the sample's batch")
        return augment_batch(dataset, batch, epoch=epoch, seed=seed, cfg=cfg, geometry=geo,
                             targets=targets)[batch.index(index)]
    return augment(dataset, index, epoch=epoch, seed=seed, cfg=cfg, geometry=geo, targets=targets)
