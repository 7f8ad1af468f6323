"""The OC&P stage of the DALI graph: one definition, run by any backend (``ocp_dali.backends``).

One call handles a batch (DALI's batch-mode ``python_function``), in these steps:
    1. unpack the worker records (``ocp_dali.wire``): plans, LSJ parameters, sample keys, annotation records;
    2. gather the sources each plan pastes from (``gather_sources``, shared with ``augment``);
    3. decode every mask of the batch through ``backend.decode_masks`` (destination instances and crowd regions,
       and only the pasted instances of the sources) and build the samples with one constructor
       (``sample_from_record``);
    4. the apply step, ``backend.apply_batch``;
    5. the samples' geometry, the whole batch at once (``lsj.apply_lsj_batch``: the NumPy backend per sample by the
       compiled CPU loops, the kernel backends by ``kernels/lsj.cu``, three launches per batch): on the
       destinations before step 4 in the seed's placement, on the results after it in the ``paste_first`` one
       (``lsj.Geometry.placement``); then the outputs in ``wire.OUTPUT_NAMES`` order.
Every step makes only the requested targets (``ocp_dali.targets``): the destinations are built carrying them, the
sources carrying none but keypoints (a paste reads a source's pixels, visible masks and keypoints), and the apply
step and the geometry are given them; an unrequested output is an empty array (``stage_outputs``).
The NumPy backend is the CPU graph; the CuPy backend the GPU graph; the emulated backend runs the GPU graph's
kernels on the CPU, so the CPU and GPU stages are tested equal without a GPU.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ocp_dali.backends import MaskRequest, get_backend
from ocp_dali.data.base import sample_from_record
from ocp_dali.lsj import Geometry, apply_lsj_batch
from ocp_dali.plan import PastePlan
from ocp_dali.sample import Sample
from ocp_dali.targets import Targets
from ocp_dali.wire import OUTPUT_NAMES, InfoRow, SampleKey, WorkerBatch, unpack_annotation, unpack_lsj, unpack_plan
from ocp_dali.xp import to_numpy

T = TypeVar("T")


def gather_sources(plan: PastePlan, fetch: Callable[[int, list[int]], T]) -> list[T | None]:
    """One entry per ``plan.basket`` position: ``fetch(b, rows)`` for the positions the plan pastes from (``rows``:
    the instances it pastes, sorted), None for the others (never loaded)."""
    out: list[T | None] = [None] * len(plan.basket)
    for b in plan.used_sources:
        out[b] = fetch(b, sorted({op.instance for op in plan.pastes if op.source == b}))
    return out


@dataclass(frozen=True)
class SourceRef:
    """A paste source before its masks are decoded: pixels, annotation record, the instance rows to decode."""

    image: Any
    ann: dict[str, Any]
    rows: list[int]


@dataclass(frozen=True)
class StageBatch:
    """One batch's inputs, unpacked: per sample its plan, geometry parameters (None without geometry), key,
    destination pixels and annotation record, and the sources its plan pastes from (``SourceRef`` per basket
    position, None where unused)."""

    plans: list[PastePlan]
    lsjs: list[Any]
    keys: list[SampleKey]
    images: list[Any]
    anns: list[dict[str, Any]]
    sources: list[list[SourceRef | None]]

    @classmethod
    def unpack(cls, backend: Any, inputs: Sequence[Any], slots: int) -> "StageBatch":
        """The stage's DALI inputs (``WorkerBatch`` layout, images decoded) with pixels on ``backend``."""
        wb = WorkerBatch.unpack(inputs, slots)
        plans = [unpack_plan(to_numpy(p)) for p in wb.plans]
        keys = [SampleKey.unpack(to_numpy(k)) for k in wb.keys]
        anns = [unpack_annotation(to_numpy(a)) for a in wb.dest_anns]
        images = [backend.asarray(x) for x in wb.dest_images]
        batch_pos = {k.index: i for i, k in enumerate(keys)}

        def fetch(i: int, plan: PastePlan) -> Callable[[int, list[int]], SourceRef]:
            def source(b: int, rows: list[int]) -> SourceRef:
                if slots:
                    return SourceRef(backend.asarray(wb.source_images[b][i]),
                                     unpack_annotation(to_numpy(wb.source_anns[b][i])), rows)
                j = batch_pos[plan.basket[b]]  # source="batch": the basket is the batch itself
                return SourceRef(images[j], anns[j], rows)
            return source

        sources = [gather_sources(plan, fetch(i, plan)) for i, plan in enumerate(plans)]
        lsjs = [unpack_lsj(to_numpy(x)) if x.shape[0] else None for x in wb.lsjs]
        return cls(plans, lsjs, keys, images, anns, sources)


def build_samples(backend: Any, batch: StageBatch,
                  targets: Targets | None = None) -> tuple[list[Sample], list[list[Sample | None]]]:
    """Destination and source ``Sample``s of a batch; all masks decoded by one ``backend.decode_masks`` call
    (sources: only the pasted instances; their crowd regions are not needed). Destinations carry ``targets``
    (default all), sources only keypoints when requested (nothing else of theirs is read)."""
    targets = Targets.all() if targets is None else targets
    source_targets = Targets(targets.names & {"keypoints"})
    requests: list[MaskRequest] = []
    for ann in batch.anns:
        h, w = int(ann["height"]), int(ann["width"])
        requests += [MaskRequest(ann["counts"], h, w), MaskRequest(ann["crowd_counts"], h, w)]
    refs = [(i, b, ref) for i, row in enumerate(batch.sources) for b, ref in enumerate(row) if ref is not None]
    for _, _, ref in refs:
        requests.append(MaskRequest(ref.ann["counts"], int(ref.ann["height"]), int(ref.ann["width"]),
                                    tuple(ref.rows)))
    masks = backend.decode_masks(requests)
    dsts = [sample_from_record(img, ann, masks[2 * i], masks[2 * i + 1], targets)
            for i, (img, ann) in enumerate(zip(batch.images, batch.anns))]
    sources: list[list[Sample | None]] = [[None] * len(row) for row in batch.sources]
    xp = backend.xp
    for k, (i, b, ref) in enumerate(refs):
        h, w = int(ref.ann["height"]), int(ref.ann["width"])
        sources[i][b] = sample_from_record(ref.image, ref.ann, masks[2 * len(batch.anns) + k],
                                           xp.zeros((0, h, w), dtype=bool), source_targets)
    return dsts, sources


def stage_outputs(s: Sample, plan: PastePlan, key: SampleKey, skipped_annotations: int, xp: Any) -> list[Any]:
    """The stage outputs of one sample (made by ``plan``), in ``wire.OUTPUT_NAMES`` order, as contiguous ``xp``
    arrays; the targets the sample does not carry are its empty arrays (``targets.absent``; the loaders leave them
    out), keypoints (0, 0, 3) float32 (requested but the dataset has none: (N, 0, 3))."""
    n = len(s) if "keypoints" in s.targets.names else 0
    kp = s.keypoints if s.keypoints is not None else xp.zeros((n, 0, 3), dtype=xp.float32)
    info = s.info  # every Sample carries all of sample.COUNTS
    row = InfoRow(key.index, key.epoch, s.image_id, info["pasted"], info["skipped"],
                  info["dropped_existing"] + info["dropped_pasted"], info["dropped_by_crop"],
                  skipped_annotations, key.stand_in_for, key.dropped_sources, info["dropped_existing"],
                  int(not plan.skipped_by_prob), plan.num_candidates)
    outs = dict(image=s.image, masks=s.masks, amodal_masks=s.amodal_masks, occluder_masks=s.occluder_masks,
                boxes=s.boxes, labels=s.labels, occlusion_rate=s.occlusion_rate, order=s.order, keypoints=kp,
                pasted=s.pasted, ann_ids=s.ann_ids, info=xp.asarray(row.pack()))
    return [xp.ascontiguousarray(outs[name]) for name in OUTPUT_NAMES]


def ocp_stage(backend: Any, slots: int, geometry: Geometry | None, flip_index: tuple[int, ...] | None,
              targets: Targets | None = None) -> Callable[..., tuple[list[Any], ...]]:
    """The batch-mode ``python_function`` of the graph (inputs: ``WorkerBatch`` layout with decoded images).

    Args:
        backend: a name of ``ocp_dali.backends.get_backend`` or a backend object (resolved at the first call, in
            the thread DALI runs the function in).
        slots: source slots per sample (0 with ``source="batch"``).
        geometry: the samples' geometry (its parameters come per sample from the workers): before the paste in
            the seed's placement, after it in the ``paste_first`` one; None: outputs at the image's own size.
        flip_index: the dataset's keypoint flip permutation (used where a plan carries none).
        targets: the optional outputs wanted (``ocp_dali.targets``; default all); the others are empty arrays.
    Returns:
        ``stage(*inputs)`` -> one list per output name, one array per sample.
    """
    resolved: list[Any] = []

    def stage(*inputs: Any) -> tuple[list[Any], ...]:
        if not resolved:
            resolved.append(get_backend(backend))
        be = resolved[0]
        batch = StageBatch.unpack(be, inputs, slots)
        dsts, sources = build_samples(be, batch, targets)
        flips = [plan.flip_index or flip_index for plan in batch.plans]
        arrays = getattr(be, "arrays", None)  # the kernels' array backend (None: NumPy, per sample)
        if geometry is not None and geometry.seed_order:
            dsts = apply_lsj_batch(dsts, batch.lsjs, flips, backend=arrays)
        outs = be.apply_batch(batch.plans, dsts, sources)
        if geometry is not None and not geometry.seed_order:
            outs = apply_lsj_batch(outs, batch.lsjs, flips, backend=arrays)
        cols: list[list[Any]] = [[] for _ in OUTPUT_NAMES]
        for i, out in enumerate(outs):
            for k, v in enumerate(stage_outputs(out, batch.plans[i], batch.keys[i], len(batch.anns[i]["skipped"]),
                                                be.xp)):
                cols[k].append(v)
        return tuple(cols)

    return stage
