"""The GPU ``python_function`` of the DALI graph: masks from RLE, OC&P apply and LSJ for a whole batch on the device.

Mirrors ``ocp_dali.pipeline.ocp_stage_numpy`` (the CPU stage) input for input and output for output: the same plans,
the same integer arithmetic, so the GPU graph's masks equal the CPU graph's and pixels match. All RLEs of a batch
(destination instances, crowd regions, pasted source instances) are decoded by one launch; the apply step is
``apply_cupy_batch`` (one launch per stage); the LSJ resampling runs the reference's fixed-point code on CuPy arrays.
``backend`` defaults to CuPy; the kernels' CPU emulator (``kernels.emulate.EmulatedBackend``) runs the same stage in
tests without a GPU.
"""
from __future__ import annotations

from typing import Any

from ocp_dali.data.rle import unpack_counts
from ocp_dali.kernels.apply import apply_cupy_batch
from ocp_dali.kernels.rle import decode_rles
from ocp_dali.lsj import apply_lsj
from ocp_dali.masks import tight_boxes
from ocp_dali.pipeline import OUTPUT_NAMES, _unpack_ann, sample_arrays, unpack_lsj
from ocp_dali.plan import unpack_plan
from ocp_dali.sample import Sample
from ocp_dali.xp import to_numpy


def _sample(xp, image, masks, crowd, ann: dict[str, Any]) -> Sample:
    """A destination / source ``Sample`` of device arrays (nothing pasted yet: amodal = visible)."""
    h, w = image.shape[:2]
    n = len(ann["labels"])
    kp = ann["keypoints"]
    return Sample(
        image=image, masks=masks, amodal_masks=masks, boxes=tight_boxes(masks).astype(xp.float32),
        labels=xp.asarray(ann["labels"], dtype=xp.int64), occlusion_rate=xp.zeros(n, dtype=xp.float32),
        occluder_masks=xp.zeros((n, h, w), dtype=bool), order=xp.zeros((n, n), dtype=bool),
        keypoints=None if kp is None else xp.asarray(kp, dtype=xp.float32), pasted=xp.zeros(n, dtype=bool),
        ann_ids=xp.asarray(ann["ann_ids"], dtype=xp.int64), crowd_masks=crowd, image_id=int(ann["image_id"]),
        file_name=ann["file_name"])


def ocp_stage_cupy(slots: int, geometry: bool, flip_index, *, backend=None):
    """The batch-mode ``python_function`` for ``device="gpu"`` (see ``ocp_dali.pipeline``)."""

    def stage(dest_imgs, dest_anns, *rest):
        be = backend
        if be is None:
            from ocp_dali.kernels.loader import CupyBackend

            be = CupyBackend()
        xp = be.xp
        src = rest[:2 * slots]
        plans_in, lsjs, keys = rest[2 * slots:]
        n = len(dest_imgs)
        plans = [unpack_plan(to_numpy(p)) for p in plans_in]
        keys_h = [to_numpy(k) for k in keys]
        anns = [_unpack_ann(to_numpy(a)) for a in dest_anns]
        images = [xp.asarray(x) for x in dest_imgs]
        # the sources each sample pastes from: (image, annotation, instance rows to decode) per basket position
        wanted: list[list[tuple | None]] = []
        for i, plan in enumerate(plans):
            row: list[tuple | None] = [None] * len(plan.basket)
            for b in plan.used_sources:
                rows = sorted({op.instance for op in plan.pastes if op.source == b})
                if slots:
                    row[b] = (xp.asarray(src[2 * b][i]), _unpack_ann(to_numpy(src[2 * b + 1][i])), rows)
                else:  # source="batch": the basket is the batch itself
                    j = [int(k[0]) for k in keys_h].index(plan.basket[b])
                    row[b] = (images[j], anns[j], rows)
            wanted.append(row)
        # one decode launch for every mask of the batch
        rles, where = [], []
        for i, ann in enumerate(anns):
            h, w = int(ann["height"]), int(ann["width"])
            for r, counts in enumerate(unpack_counts(ann["counts"])):
                rles.append(dict(size=[h, w], counts=counts)), where.append(("dst", i, r))
            for r, counts in enumerate(unpack_counts(ann["crowd_counts"])):
                rles.append(dict(size=[h, w], counts=counts)), where.append(("crowd", i, r))
        for i, row in enumerate(wanted):
            for b, item in enumerate(row):
                if item is None:
                    continue
                _, ann, rows = item
                parts = unpack_counts(ann["counts"])
                for r in rows:
                    rles.append(dict(size=[int(ann["height"]), int(ann["width"])], counts=parts[r]))
                    where.append(("src", (i, b), r))
        decoded = decode_rles(rles, backend=be)
        dst_masks = [xp.zeros((len(a["labels"]), int(a["height"]), int(a["width"])), dtype=bool) for a in anns]
        crowd = [xp.zeros((int(a["crowd_counts"][0]), int(a["height"]), int(a["width"])), dtype=bool) for a in anns]
        src_masks: dict[tuple[int, int], Any] = {}
        for (kind, key, r), m in zip(where, decoded):
            if kind == "dst":
                dst_masks[key][r] = m
            elif kind == "crowd":
                crowd[key][r] = m
            else:
                i, b = key
                _, ann, _ = wanted[i][b]
                if key not in src_masks:
                    src_masks[key] = xp.zeros((len(ann["labels"]), int(ann["height"]), int(ann["width"])),
                                              dtype=bool)
                src_masks[key][r] = m
        dsts = [_sample(xp, images[i], dst_masks[i], crowd[i], anns[i]) for i in range(n)]
        sources = [[None if item is None else
                    _sample(xp, item[0], src_masks[(i, b)], xp.zeros((0,) + item[0].shape[:2], dtype=bool), item[1])
                    for b, item in enumerate(row)] for i, row in enumerate(wanted)]
        outs = apply_cupy_batch(plans, dsts, sources, backend=be)
        cols: list[list] = [[] for _ in OUTPUT_NAMES]
        for i, out in enumerate(outs):
            if geometry:
                out = apply_lsj(out, unpack_lsj(to_numpy(lsjs[i])), plans[i].flip_index or flip_index)
            for k, v in enumerate(sample_arrays(out, keys_h[i], len(anns[i]["skipped"]), xp)):
                cols[k].append(v)
        return tuple(cols)

    return stage
