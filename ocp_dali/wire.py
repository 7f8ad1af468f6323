"""What travels between the worker processes, the DALI graph and the stage: named records with ``pack``/``unpack``.

DALI carries arrays only, so every record crosses as one flat array: an annotation record as npz bytes, a plan and
the LSJ parameters as float64 (every value is an integer below 2**53 or a float64, so the round trip is exact), a
sample key and an info row as int64. Positions in these arrays, and in the tuples of the graph's inputs and outputs,
are defined here and nowhere else.
"""
from __future__ import annotations

import io
from dataclasses import astuple, dataclass, fields
from typing import Any, Sequence

import numpy as np

from ocp_dali.geometry import PasteGeometry
from ocp_dali.lsj import LSJParams
from ocp_dali.plan import PasteOp, PastePlan

# The stage's outputs, in order (see ``ocp_dali.stage``).
OUTPUT_NAMES = ("image", "masks", "amodal_masks", "occluder_masks", "boxes", "labels", "occlusion_rate", "order",
                "keypoints", "pasted", "ann_ids", "info")


# ---- annotation record -----------------------------------------------------------------------------------------
def pack_annotation(ann: dict[str, Any]) -> np.ndarray:
    """An ``annotation(i)`` record (see ``ocp_dali.data.base.sample_from_annotation``) as uint8 npz bytes; the
    ``skipped`` list travels as its annotation ids only."""
    buf = io.BytesIO()
    kp = ann["keypoints"]
    np.savez(buf, height=ann["height"], width=ann["width"], counts=ann["counts"], crowd_counts=ann["crowd_counts"],
             labels=ann["labels"], ann_ids=ann["ann_ids"],
             keypoints=np.zeros((0, 0, 3), np.float32) if kp is None else kp, has_kp=kp is not None,
             image_id=ann["image_id"], file_name=ann["file_name"],
             skipped=np.asarray([a for a, _ in ann.get("skipped", [])], dtype=np.int64))
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def unpack_annotation(blob: np.ndarray) -> dict[str, Any]:
    """Inverse of ``pack_annotation`` (``skipped``: (S,) int64 annotation ids)."""
    z = np.load(io.BytesIO(np.asarray(blob).tobytes()), allow_pickle=False)
    ann = {k: z[k] for k in z.files}
    ann["keypoints"] = ann["keypoints"] if bool(ann.pop("has_kp")) else None
    ann["file_name"] = str(ann["file_name"])
    ann["image_id"] = int(ann["image_id"])
    return ann


# ---- plan ------------------------------------------------------------------------------------------------------
MODES = ("ocp", "simple")
PLAN_HEAD = ("height", "width", "mode", "min_size_occ", "bbox_occluded_thr", "mask_occluded_thr", "blend_sigma",
             "skipped_by_prob", "num_candidates", "basket_len", "flip_len", "num_pastes")
INV_FIELDS = ("inv_a", "inv_b", "inv_c", "inv_d", "inv_e", "inv_f")  # PasteGeometry.inv_q16
FWD_FIELDS = ("fwd_a", "fwd_b", "fwd_c", "fwd_d", "fwd_e", "fwd_f")  # PasteGeometry.fwd
PASTE_FIELDS = ("source", "instance", "label", "x0", "y0", "x1", "y1", "has_jitter", "j_colour", "j_bright",
                "j_contrast", "j_sharp", "flip", "scale", "angle", "targeted", "target", "cx", "cy", "ox", "oy",
                "out_w", "out_h", "identity") + INV_FIELDS + FWD_FIELDS


def _paste_row(op: PasteOp) -> list[float]:
    return [op.source, op.instance, op.label, *op.src_box, op.jitter is not None, *(op.jitter or (0, 0, 0, 0)),
            op.flip, op.scale, op.angle, op.targeted, op.target, *op.center, *op.offset,
            op.geometry.out_w, op.geometry.out_h, op.geometry.identity, *op.geometry.inv_q16, *op.geometry.fwd]


def _paste_op(row: np.ndarray) -> PasteOp:
    f = dict(zip(PASTE_FIELDS, row))
    box = (int(f["x0"]), int(f["y0"]), int(f["x1"]), int(f["y1"]))
    flip, scale, angle = bool(f["flip"]), float(f["scale"]), int(f["angle"])
    jitter = (tuple(int(f[k]) for k in ("j_colour", "j_bright", "j_contrast", "j_sharp"))
              if f["has_jitter"] else None)
    # the geometry travels as it is: a folded paste (``ocp_dali.placement``) is not paste_geometry(flip, scale, angle)
    inv = tuple(int(f[k]) for k in INV_FIELDS)
    fwd = tuple(float(f[k]) for k in FWD_FIELDS)
    geom = PasteGeometry(int(f["out_w"]), int(f["out_h"]), inv, fwd, bool(f["identity"]))  # type: ignore[arg-type]
    return PasteOp(int(f["source"]), int(f["instance"]), int(f["label"]), box, jitter, flip, scale, angle, geom,
                   bool(f["targeted"]), int(f["target"]), (int(f["cx"]), int(f["cy"])), (int(f["ox"]), int(f["oy"])))


def pack_plan(plan: PastePlan) -> np.ndarray:
    """A plan as one float64 array: ``PLAN_HEAD``, the basket, the keypoint flip index, then one ``PASTE_FIELDS``
    row per paste. ``unpack_plan`` inverts it exactly."""
    flip = plan.flip_index or ()
    head = dict(height=plan.height, width=plan.width, mode=MODES.index(plan.mode), min_size_occ=plan.min_size_occ,
                bbox_occluded_thr=plan.bbox_occluded_thr, mask_occluded_thr=plan.mask_occluded_thr,
                blend_sigma=plan.blend_sigma, skipped_by_prob=int(plan.skipped_by_prob),
                num_candidates=plan.num_candidates, basket_len=len(plan.basket),
                flip_len=len(flip) if plan.flip_index is not None else -1, num_pastes=len(plan.pastes))
    ops = [v for op in plan.pastes for v in _paste_row(op)]
    return np.asarray([head[k] for k in PLAN_HEAD] + list(plan.basket) + list(flip) + ops, dtype=np.float64)


def unpack_plan(arr: np.ndarray) -> PastePlan:
    """Inverse of ``pack_plan``."""
    a = np.asarray(arr, dtype=np.float64)
    h = dict(zip(PLAN_HEAD, a[:len(PLAN_HEAD)]))
    p = len(PLAN_HEAD)
    basket = tuple(int(v) for v in a[p:p + int(h["basket_len"])])
    p += int(h["basket_len"])
    flip_index = tuple(int(v) for v in a[p:p + int(h["flip_len"])]) if h["flip_len"] >= 0 else None
    p += max(int(h["flip_len"]), 0)
    rows = a[p:p + int(h["num_pastes"]) * len(PASTE_FIELDS)].reshape(-1, len(PASTE_FIELDS))
    return PastePlan(int(h["height"]), int(h["width"]), basket, tuple(_paste_op(r) for r in rows),
                     MODES[int(h["mode"])], float(h["min_size_occ"]), float(h["bbox_occluded_thr"]),
                     int(h["mask_occluded_thr"]), float(h["blend_sigma"]), flip_index, bool(h["skipped_by_prob"]),
                     int(h["num_candidates"]))


# ---- LSJ parameters --------------------------------------------------------------------------------------------
LSJ_FIELDS = tuple(f.name for f in fields(LSJParams))  # inv_q16 (6 values) last


def pack_lsj(p: LSJParams) -> np.ndarray:
    """``LSJParams`` as float64 (len(LSJ_FIELDS) - 1 + 6 values)."""
    return np.asarray([*astuple(p)[:-1], *p.inv_q16], dtype=np.float64)


def unpack_lsj(a: np.ndarray) -> LSJParams:
    """Inverse of ``pack_lsj``."""
    a = np.asarray(a, dtype=np.float64)
    v = dict(zip(LSJ_FIELDS[:-1], a))
    return LSJParams(int(v["out_h"]), int(v["out_w"]), float(v["scale_x"]), float(v["scale_y"]), int(v["crop_x"]),
                     int(v["crop_y"]), int(v["valid_w"]), int(v["valid_h"]), bool(v["flip"]),
                     tuple(int(x) for x in a[len(LSJ_FIELDS) - 1:]))  # type: ignore[arg-type]


# ---- int64 rows ------------------------------------------------------------------------------------------------
class _IntRow:
    """A dataclass of ints that crosses DALI as one int64 array in field order."""

    def pack(self) -> np.ndarray:
        return np.asarray(astuple(self), dtype=np.int64)  # type: ignore[arg-type]

    @classmethod
    def unpack(cls, a: Any):
        return cls(*(int(v) for v in np.asarray(a).reshape(-1)))


@dataclass(frozen=True)
class SampleKey(_IntRow):
    """Which sample a worker handed over: the dataset index it is (``index``), its epoch, the index of the unusable
    image whose slot it fills (-1: none) and how many paste sources were left out as unusable."""

    index: int
    epoch: int
    stand_in_for: int = -1
    dropped_sources: int = 0


@dataclass(frozen=True)
class InfoRow(_IntRow):
    """The ``info`` output of one sample: its key, image id and the augmentation's counts (``dropped`` = dropped
    existing + dropped pasted instances, ``dropped_existing`` the destination's own; ``skipped_annotations``:
    annotations the dataset could not use) and its plan's facts (``ran``: the ``prob`` coin let it run,
    ``candidates``: source instances that passed ``min_size_paste``)."""

    index: int
    epoch: int
    image_id: int
    pasted: int
    skipped: int
    dropped: int
    dropped_by_crop: int
    skipped_annotations: int
    stand_in_for: int
    dropped_sources: int
    dropped_existing: int
    ran: int
    candidates: int


INFO_FIELDS = tuple(f.name for f in fields(InfoRow))


# ---- the graph's input tuple -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerBatch:
    """The external source's outputs (and, with the images decoded, the stage's inputs), by name.

    Per sample: the destination's image (encoded bytes, or decoded pixels inside the graph) and packed annotation;
    ``slots`` source images and annotations (``source="dataset"``; unused slots hold a placeholder image and an
    empty annotation); the packed plan, LSJ parameters and ``SampleKey``. Each field is a per-sample list.
    """

    dest_images: Sequence[Any]
    dest_anns: Sequence[Any]
    source_images: tuple[Sequence[Any], ...]
    source_anns: tuple[Sequence[Any], ...]
    plans: Sequence[Any]
    lsjs: Sequence[Any]
    keys: Sequence[Any]

    @staticmethod
    def width(slots: int) -> int:
        """How many DALI inputs/outputs a batch with ``slots`` source slots has."""
        return 2 + 2 * slots + 3

    def pack(self) -> tuple:
        """The flat tuple, in the graph's order: dest image, dest ann, (source image, source ann) per slot, plan,
        lsj, key."""
        srcs = [x for pair in zip(self.source_images, self.source_anns) for x in pair]
        return (self.dest_images, self.dest_anns, *srcs, self.plans, self.lsjs, self.keys)

    @classmethod
    def unpack(cls, flat: Sequence[Any], slots: int) -> "WorkerBatch":
        if len(flat) != cls.width(slots):
            raise ValueError(f"a batch with {slots} source slots has {cls.width(slots)} parts, got {len(flat)}")
        srcs = flat[2:2 + 2 * slots]
        return cls(flat[0], flat[1], tuple(srcs[0::2]), tuple(srcs[1::2]), *flat[2 + 2 * slots:])
