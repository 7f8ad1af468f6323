"""GPU backend of ``apply``: the whole batch packed into descriptor tables, each stage one kernel launch.

``apply_cupy(plan, destination, sources)`` equals ``reference.apply_numpy`` exactly (masks, boxes, labels, order,
keypoints, pixels, ``info``) and returns a ``Sample`` of CuPy arrays (NumPy inputs are uploaded).
``apply_cupy_batch`` does a batch in one pass: one launch per stage for all samples, pastes and instances.

Stages (kernel source in parentheses), launches per batch:
    1-3. image jitter of the jittered crops: colour + brightness with per-crop luma sums, contrast, sharpness
         (jitter.cu; only when a paste is jittered)
    4.   warp: every paste's mask (nearest) and pixels (integer bilinear) into its destination window, and the
         tight box of each warped mask (warp.cu)
    5-6. feathered alpha, horizontal then vertical pass (warp.cu; only when a sample blends)
    7.   composite in paste order + cover map (bit t at a pixel: paste t wrote it) (composite.cu)
    8.   occlusion: visible area, tight boxes, touched flag of every slot (targets.cu)
    9.   amodal overlap of each paste with every earlier instance, for the order matrix (targets.cu)
    10.  keep rule (targets.cu); 11. cupy.cumsum of the keep flags; 12. compaction index (targets.cu)
         -> the only host synchronisation: the keep / valid flags (bytes) come back to size the outputs
    13.  output planes: visible, amodal, occluder masks, crowd regions (targets.cu)
    14.  per-row outputs: boxes, labels, ann_ids, pasted, occlusion rate, keypoint visibility (targets.cu)
    15.  order matrices (targets.cu)

The host side only does what needs no pixels: windows of the pastes (from the plan's geometry), the reference's
box test of existing instances against each window (as bit masks of the pastes allowed to clear each instance),
keypoint coordinates of pasted instances (float64 ``geometry.fwd``; ``transform_keypoints_batch`` is the
reference's ``_transform_keypoints`` vectorised operation for operation, checked bit-identical by a test) and the
Gaussian taps. Inputs are read in place through device pointers stored in the descriptor tables (NumPy inputs are
uploaded once per array); outputs are views into one buffer per field for the whole batch.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ocp_dali.plan import PastePlan
from ocp_dali.reference import _transform_keypoints, gaussian_weights_q12
from ocp_dali.sample import Sample

BLOCK = 256  # threads per block (kernels need a power of two <= OCP_BLOCK)
INT_BIG = 0x7FFFFFFF
ITEMS_PER_THREAD = 16  # pixels per thread that size the x grid of the per-pixel kernels

# Field order of the structs in ocp_common.cuh (checked by tests/test_kernels_compile.py).
SAMPLE_FIELDS = (
    "height", "width", "paste_begin", "num_pastes", "slot_begin", "num_slots", "num_existing", "crowd_begin",
    "num_crowd", "cover_off", "cover_words", "img_in", "img_out_off", "order_in", "overlap_off", "blend",
    "mode_simple", "thr_bits", "bbox_thr_bits", "mask_thr_bits", "num_kp", "num_out", "row_base", "plane_base",
    "crowd_row_base", "crowd_plane_base", "order_out_off", "kp_out_off",
)
PASTE_FIELDS = (
    "sample", "time", "slot", "src_img", "src_pitch", "src_mask", "mask_pitch", "crop_h", "crop_w", "jitter",
    "j_colour", "j_bright", "j_contrast", "j_sharp", "jit_off", "inv_a", "inv_b", "inv_c", "inv_d", "inv_e",
    "inv_f", "off_x", "off_y", "win_x", "win_y", "win_w", "win_h", "win_off", "taps_off", "radius", "rep_top",
    "rep_bottom", "rep_left", "rep_right",
)
SLOT_FIELDS = (
    "sample", "kind", "local", "time", "paste", "vis_in", "amodal_in", "occ_in", "region_x", "region_y",
    "region_w", "region_h", "label", "ann_id", "kp_off",
)
EXISTING, PASTED, CROWD = 0, 1, 2

# Every kernel the Python side launches, and its source file (checked against the sources by the tests).
KERNELS = {
    "ocp_jitter_colour_brightness": "jitter.cu",
    "ocp_jitter_contrast": "jitter.cu",
    "ocp_jitter_sharpness": "jitter.cu",
    "ocp_warp": "warp.cu",
    "ocp_alpha_horizontal": "warp.cu",
    "ocp_alpha_vertical": "warp.cu",
    "ocp_composite": "composite.cu",
    "ocp_occlusion_stats": "targets.cu",
    "ocp_overlap": "targets.cu",
    "ocp_keep": "targets.cu",
    "ocp_compact": "targets.cu",
    "ocp_emit_planes": "targets.cu",
    "ocp_emit_rows": "targets.cu",
    "ocp_emit_order": "targets.cu",
}


def _i64(v) -> np.int64:
    return np.int64(int(v))


def _double_bits(v: float) -> int:
    return int(np.float64(v).view(np.int64))


def _table(rows: list[dict], fields: tuple[str, ...]) -> np.ndarray:
    """(len(rows), len(fields)) int64: one struct per row (missing fields are 0)."""
    known = set(fields)
    for row in rows:
        if not known.issuperset(row):
            raise KeyError(f"unknown struct fields {sorted(set(row) - known)}")
    if not rows:
        return np.zeros((1, len(fields)), dtype=np.int64)
    return np.array([[int(row.get(f, 0)) for f in fields] for row in rows], dtype=np.int64)


def _pack_bits(bits: np.ndarray, words: int) -> np.ndarray:
    """(n, k) bool -> (n, words) uint32 with bit t of word t // 32 set where ``bits[:, t]``."""
    n, k = bits.shape
    padded = np.zeros((n, words * 32), dtype=np.uint64)
    padded[:, :k] = bits
    weights = np.uint64(1) << np.arange(32, dtype=np.uint64)
    return (padded.reshape(n, words, 32) * weights).sum(axis=2).astype(np.uint32)


def transform_keypoints_batch(kps: np.ndarray, fwd: np.ndarray, origin: np.ndarray, offset: np.ndarray,
                              perm: np.ndarray, size: np.ndarray) -> np.ndarray:
    """``reference._transform_keypoints`` for P pastes at once, operation for operation (so bit-identical).

    Args:
        kps: (P, K, 3) source keypoints; fwd: (P, 6) float64 ``geometry.fwd``; origin: (P, 2) int crop top-left
        (``src_box[:2]``); offset: (P, 2) int canvas offset; perm: (P, K) keypoint order (``flip_index`` for a
        flipped paste, identity otherwise); size: (P, 2) destination (W, H).

    Returns:
        (P, K, 3) float32: labelled points that stay on the canvas carried through, the others ``(0, 0, 0)``.
    """
    pts = np.take_along_axis(np.asarray(kps).astype(np.float64), perm[..., None], axis=1)
    x = pts[..., 0] - origin[:, 0:1]
    y = pts[..., 1] - origin[:, 1:2]
    a, b, c, d, e, f = (fwd[:, i:i + 1] for i in range(6))
    X = a * x + b * y + c + offset[:, 0:1]  # ((a x + b y) + c) + ox, as transform_points(...) + offset
    Y = d * x + e * y + f + offset[:, 1:2]
    keep = (pts[..., 2] > 0) & (X >= 0) & (X <= size[:, 0:1]) & (Y >= 0) & (Y <= size[:, 1:2])
    out = np.zeros(pts.shape, dtype=np.float32)
    out[..., 0] = np.where(keep, X, 0.0)
    out[..., 1] = np.where(keep, Y, 0.0)
    out[..., 2] = np.where(keep, pts[..., 2], 0.0)
    return out


def _check_shape(sample: Sample, name: str, arr, shape: tuple[int, ...]) -> None:
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{sample.file_name or 'sample'}: {name} has shape {tuple(arr.shape)}, expected {shape}")


def _grid_x(items: int, per_thread: int = ITEMS_PER_THREAD, cap: int = 4096) -> int:
    return int(min(max(1, -(-int(items) // (BLOCK * per_thread))), cap))


def _default_backend():
    from ocp_dali.kernels.loader import CupyBackend

    return CupyBackend()


def apply_cupy(plan: PastePlan, destination: Sample, sources: Sequence[Sample | None], *, backend=None) -> Sample:
    """``apply`` on the GPU for one sample (a batch of one); same contract as ``reference.apply_numpy``."""
    return apply_cupy_batch([plan], [destination], [sources], backend=backend)[0]


def apply_cupy_batch(plans: Sequence[PastePlan], destinations: Sequence[Sample],
                     sources_per_sample: Sequence[Sequence[Sample | None]], *, backend=None) -> list[Sample]:
    """``apply`` for a batch: ``[apply_numpy(p, d, s) for ...]`` computed with one launch per stage.

    Args:
        plans, destinations, sources_per_sample: one entry per sample (sources: one per basket position).
        backend: array backend (default: CuPy on the current device; ``kernels.emulate.EmulatedBackend`` runs
            the same kernels on the CPU).

    Returns:
        One ``Sample`` per input; samples whose plan pastes nothing are the destination objects themselves.
        Others hold backend arrays (views into per-batch buffers).
    """
    if not len(plans) == len(destinations) == len(sources_per_sample):
        raise ValueError(f"batch lengths differ: {len(plans)} plans, {len(destinations)} destinations, "
                         f"{len(sources_per_sample)} source lists")
    be = backend if backend is not None else _default_backend()
    results: list[Sample | None] = [None] * len(plans)
    active = []
    for i, plan in enumerate(plans):
        if plan.pastes:
            active.append(i)
        else:
            results[i] = destinations[i]
    if active:
        for i, out in zip(active, _Batch(be, [plans[i] for i in active], [destinations[i] for i in active],
                                         [sources_per_sample[i] for i in active]).run()):
            results[i] = out
    return results  # type: ignore[return-value]


class _Batch:
    """Packing of one batch (every plan non-empty), the launches, and the unpacking into Samples."""

    def __init__(self, be, plans, destinations, sources_per_sample):
        self.be = be
        self.plans = plans
        self.dsts = destinations
        self.srcs = sources_per_sample
        self._dev_cache: dict[tuple, object] = {}
        self._host_cache: dict[int, np.ndarray] = {}
        self._keep_alive: list = []  # inputs whose device pointers sit in the tables

    # ---- helpers ----
    def dev(self, a, dtype):
        """Device copy (or the array itself) of ``a``, cached per input object, kept alive for the batch."""
        key = (id(a), np.dtype(dtype).str)
        if key not in self._dev_cache:
            arr = self.be.asarray(a, dtype)
            self._dev_cache[key] = arr
            self._keep_alive.append((a, arr))
        return self._dev_cache[key]

    def host(self, a) -> np.ndarray:
        """NumPy view of a small input array (downloaded once per input object)."""
        if isinstance(a, np.ndarray):
            return a
        if id(a) not in self._host_cache:
            self._host_cache[id(a)] = self.be.to_host(a)
            self._keep_alive.append(a)
        return self._host_cache[id(a)]

    def launch(self, name: str, grid: tuple[int, int], *args) -> None:
        self.be.launch(KERNELS[name], name, grid, BLOCK, args)

    # ---- packing ----
    def pack(self) -> None:
        be = self.be
        self.words = max(-(-len(p.pastes) // 32) for p in self.plans)
        samples, pastes, inst_slots, crowd_slots = [], [], [], []
        allowed, later, before, crowd_allowed = [], [], [], []
        self._kp_parts: list[np.ndarray] = []  # slot keypoints, flattened, in slot order
        self._kp_jobs: list[tuple] = []  # pasted instances whose keypoints are transformed in one batch
        taps_parts: list[np.ndarray] = []
        self.deferred: dict[int, Exception] = {}  # paste -> error the reference raises only if it is placed
        self.meta = []
        jit_total = win_total = cover_total = overlap_total = img_total = kp_total = taps_total = 0

        for si, (plan, dst, srcs) in enumerate(zip(self.plans, self.dsts, self.srcs)):
            H, W = dst.height, dst.width
            if (plan.height, plan.width) != (H, W):
                raise ValueError(f"{dst.file_name or 'destination'}: plan made for {plan.width}x{plan.height}, "
                                 f"image is {W}x{H}")
            n0, k, hw = len(dst), len(plan.pastes), H * W
            for t, op in enumerate(plan.pastes):
                src = srcs[op.source] if op.source < len(srcs) else None
                if src is None:
                    raise ValueError(f"plan paste {t} reads basket position {op.source}, but no source sample "
                                     "was given")
                if not 0 <= op.instance < len(src):
                    raise ValueError(f"{src.file_name or 'source'}: plan names instance {op.instance}, it has "
                                     f"{len(src)}")
            img = self.dev(dst.image, np.uint8)
            masks = self.dev(dst.masks, np.bool_)
            amodal = self.dev(dst.amodal_masks, np.bool_)
            occ = self.dev(dst.occluder_masks, np.bool_)
            crowd = self.dev(dst.crowd_masks, np.bool_)
            order = self.dev(dst.order, np.bool_)
            n_crowd = int(crowd.shape[0]) if crowd.ndim == 3 else -1
            # as the reference: a destination with nothing pasted and no occlusion carries no occluders or order
            # (null pointers: the kernels read zeros)
            carries_targets = bool(np.any(self.host(dst.pasted)) or np.any(self.host(dst.occlusion_rate)))
            # the kernels read these through raw pointers: wrong shapes must fail here, not read out of bounds
            _check_shape(dst, "image", img, (H, W, 3))
            for name, arr in (("masks", masks), ("amodal_masks", amodal), ("occluder_masks", occ)):
                _check_shape(dst, name, arr, (n0, H, W))
            _check_shape(dst, "crowd_masks", crowd, (n_crowd, H, W))
            _check_shape(dst, "order", order, (n0, n0))
            boxes_i = np.asarray(self.host(dst.boxes), dtype=np.int64).reshape(n0, 4)
            boxes_f = np.asarray(self.host(dst.boxes), dtype=np.float64).reshape(n0, 4)
            labels = self.host(dst.labels)
            ann_ids = self.host(dst.ann_ids)
            has_kp = dst.keypoints is not None
            kp_dst = np.asarray(self.host(dst.keypoints), dtype=np.float32) if has_kp else None
            K = int(kp_dst.shape[1]) if has_kp else 0
            kshape = kp_dst.shape[1:] if has_kp else None

            blend = plan.blend_sigma > 0
            radius = taps_off = 0
            if blend:
                taps = gaussian_weights_q12(plan.blend_sigma)
                radius, taps_off = (len(taps) - 1) // 2, taps_total
                taps_parts.append(taps.astype(np.int32))
                taps_total += len(taps)

            slot_begin = len(inst_slots)
            paste_begin = len(pastes)
            windows = np.zeros((k, 4), dtype=np.int64)  # wx0, wy0, wx1, wy1 (empty when wx1 <= wx0 or wy1 <= wy0)
            for t, op in enumerate(plan.pastes):
                src = srcs[op.source]
                g = op.geometry
                ox, oy = op.offset
                wx0, wy0 = max(ox, 0), max(oy, 0)
                wx1, wy1 = min(ox + g.out_w, W), min(oy + g.out_h, H)
                empty = wx1 <= wx0 or wy1 <= wy0
                ww, wh = (0, 0) if empty else (wx1 - wx0, wy1 - wy0)
                windows[t] = (wx0, wy0, wx1, wy1)
                sh, sw = src.height, src.width
                x0, y0, x1, y1 = op.src_box
                if not (0 <= x0 < x1 <= sw and 0 <= y0 < y1 <= sh):  # plans crop tight mask boxes: always inside
                    raise ValueError(f"{src.file_name or 'source'}: paste {t} crops {op.src_box}, outside the "
                                     f"{sw}x{sh} image")
                simg = self.dev(src.image, np.uint8)
                smask = self.dev(src.masks, np.bool_)
                _check_shape(src, "image", simg, (sh, sw, 3))
                _check_shape(src, "masks", smask, (len(src), sh, sw))
                row = dict(
                    sample=si, time=t, slot=slot_begin + n0 + t,
                    src_img=be.ptr(simg) + (y0 * sw + x0) * 3, src_pitch=sw,
                    src_mask=be.ptr(smask) + op.instance * sh * sw + y0 * sw + x0, mask_pitch=sw,
                    crop_h=y1 - y0, crop_w=x1 - x0,
                    off_x=ox, off_y=oy, win_x=wx0, win_y=wy0, win_w=ww, win_h=wh, win_off=win_total,
                    taps_off=taps_off, radius=radius,
                    rep_top=wy0 == 0, rep_bottom=wy1 == H, rep_left=wx0 == 0, rep_right=wx1 == W,
                )
                row.update(zip(("inv_a", "inv_b", "inv_c", "inv_d", "inv_e", "inv_f"), g.inv_q16))
                if op.jitter is not None:
                    row.update(jitter=1, jit_off=jit_total)
                    row.update(zip(("j_colour", "j_bright", "j_contrast", "j_sharp"), op.jitter))
                    jit_total += row["crop_h"] * row["crop_w"] * 3
                win_total += ww * wh
                pastes.append(row)

            # existing instances: the reference's box test decides which pastes may clear their pixels
            bx0, by0, bx1, by1 = (boxes_i[:, c:c + 1] for c in range(4))
            wx0, wy0, wx1, wy1 = (windows[None, :, c] for c in range(4))
            gate = ~((bx1 <= wx0) | (bx0 >= wx1) | (by1 <= wy0) | (by0 >= wy1))
            all_bits = np.ones((1, k), dtype=bool)
            t_idx = np.arange(k)
            for j in range(n0):
                inst_slots.append(dict(
                    sample=si, kind=EXISTING, local=j, time=-1, paste=-1,
                    vis_in=be.ptr(masks) + j * hw, amodal_in=be.ptr(amodal) + j * hw,
                    occ_in=be.ptr(occ) + j * hw if carries_targets else 0,
                    region_x=0, region_y=0, region_w=W, region_h=H,
                    label=int(labels[j]), ann_id=int(ann_ids[j]), kp_off=kp_total,
                ))
                if has_kp:
                    self._kp_parts.append(kp_dst[j].reshape(-1))
                    kp_total += K * 3
            if n0:
                allowed.append(_pack_bits(gate, self.words))
                later.append(_pack_bits(np.repeat(all_bits, n0, axis=0), self.words))
                before.append(boxes_f)
            # one slot per paste (a skipped paste keeps its slot: it is never kept)
            for t, op in enumerate(plan.pastes):
                src = srcs[op.source]
                q = paste_begin + t
                p = pastes[q]
                inst_slots.append(dict(
                    sample=si, kind=PASTED, local=t, time=t, paste=q,
                    region_x=p["win_x"], region_y=p["win_y"], region_w=p["win_w"], region_h=p["win_h"],
                    label=int(op.label), ann_id=int(self.host(src.ann_ids)[op.instance]), kp_off=kp_total,
                ))
                if has_kp:
                    self._paste_keypoints(q, op, src, plan, kshape, H, W)
                    kp_total += K * 3
            after = t_idx[None, :] > t_idx[:, None]  # [t, t']: paste t' comes after paste t
            allowed.append(_pack_bits(after, self.words))
            later.append(_pack_bits(after, self.words))
            before.append(np.zeros((k, 4), dtype=np.float64))
            crowd_first = len(crowd_slots)
            for c in range(n_crowd):
                crowd_slots.append(dict(sample=si, kind=CROWD, local=c, time=-1, paste=-1,
                                        vis_in=be.ptr(crowd) + c * hw, region_x=0, region_y=0, region_w=W,
                                        region_h=H))
            if n_crowd:
                crowd_allowed.append(_pack_bits(np.repeat(all_bits, n_crowd, axis=0), self.words))

            nslots = n0 + k
            words_s = -(-k // 32)
            samples.append(dict(
                height=H, width=W, paste_begin=paste_begin, num_pastes=k, slot_begin=slot_begin, num_slots=nslots,
                num_existing=n0, crowd_begin=crowd_first, num_crowd=n_crowd,
                cover_off=cover_total, cover_words=words_s, img_in=be.ptr(img), img_out_off=img_total,
                order_in=be.ptr(order) if carries_targets else 0, overlap_off=overlap_total, blend=int(blend),
                mode_simple=int(plan.mode == "simple"),
                thr_bits=_double_bits(plan.min_size_occ * math.sqrt(H * W)),
                bbox_thr_bits=_double_bits(float(plan.bbox_occluded_thr)),
                mask_thr_bits=_double_bits(float(plan.mask_occluded_thr)),
                num_kp=K,
            ))
            self.meta.append(dict(has_kp=has_kp, K=K, n0=n0, k=k, n_crowd=n_crowd, H=H, W=W))
            cover_total += words_s * hw
            overlap_total += k * nslots
            img_total += hw * 3

        n_inst = len(inst_slots)
        for s in samples:  # crowd slots follow every instance slot of the batch
            s["crowd_begin"] += n_inst
        self.n_inst_slots, self.n_slots = n_inst, n_inst + len(crowd_slots)
        self.samples_np = _table(samples, SAMPLE_FIELDS)
        self.slots_np = _table(inst_slots + crowd_slots, SLOT_FIELDS)
        self.pastes_np = _table(pastes, PASTE_FIELDS)
        self.num_samples, self.num_pastes = len(samples), len(pastes)
        words = self.words
        bits = lambda parts: np.concatenate(parts) if parts else np.zeros((0, words), np.uint32)  # noqa: E731
        allowed_np = np.concatenate([bits(allowed), bits(crowd_allowed)])
        later_np = np.concatenate([bits(later), bits(crowd_allowed)])
        before_np = np.concatenate(before + [np.zeros((len(crowd_slots), 4))]).astype(np.float64)
        self.samples = be.asarray(self.samples_np)
        self.slots = be.asarray(self.slots_np)
        self.pastes = be.asarray(self.pastes_np)
        self.allowed = be.asarray(allowed_np.reshape(-1) if allowed_np.size else np.zeros(1, np.uint32))
        self.later = be.asarray(later_np.reshape(-1) if later_np.size else np.zeros(1, np.uint32))
        self.before = be.asarray(before_np.reshape(-1) if before_np.size else np.zeros(1))
        self._transform_jobs()
        kp_parts = self._kp_parts
        self.kp_in = be.asarray(np.concatenate(kp_parts).astype(np.float32) if kp_parts else np.zeros(1, np.float32))
        self.taps = be.asarray(np.concatenate(taps_parts) if taps_parts else np.zeros(1, np.int32))
        self.totals = dict(jit=jit_total, win=win_total, cover=cover_total, overlap=overlap_total, img=img_total)
        self.any_jitter = jit_total > 0
        self.any_blend = bool(taps_parts)
        self.max_crop = max((p["crop_h"] * p["crop_w"] for p in pastes if p.get("jitter")), default=0)
        self.max_win = max((p["win_w"] * p["win_h"] for p in pastes), default=0)
        self.max_hw = max(s["height"] * s["width"] for s in samples)
        self.max_slots = max(s["num_slots"] for s in samples)

    def _paste_keypoints(self, q, op, src, plan, kshape, H, W) -> None:
        """Queues the (K, 3) keypoints of the instance paste q creates (zeros when the source has none); errors
        are deferred until the paste is known to be placed (the reference raises them only then)."""
        self._kp_parts.append(np.zeros(int(np.prod(kshape)), dtype=np.float32))
        if src.keypoints is None:
            return
        skp = self.host(src.keypoints)
        if skp.shape[1:] != kshape:
            self.deferred[q] = ValueError(f"{src.file_name}: source keypoints {skp.shape[1:]} do not match the "
                                          f"destination's {kshape}")
            return
        kp = np.asarray(skp[op.instance])
        K = kshape[0]
        if op.flip and (plan.flip_index is None or len(plan.flip_index) != K):
            try:  # the reference's own error (or result) for a flip it cannot carry out
                self._kp_parts[-1] = _transform_keypoints(kp, op, plan.flip_index, H, W).astype(np.float32).ravel()
            except (ValueError, IndexError) as e:
                self.deferred[q] = e
            return
        perm = np.asarray(plan.flip_index, dtype=np.int64) if op.flip else np.arange(K)
        self._kp_jobs.append((len(self._kp_parts) - 1, kp, op, perm, (W, H)))

    def _transform_jobs(self) -> None:
        """Keypoints of every pasted instance, computed together (``transform_keypoints_batch``)."""
        by_k: dict[int, list] = {}
        for job in self._kp_jobs:
            by_k.setdefault(job[1].shape[0], []).append(job)
        for jobs in by_k.values():
            out = transform_keypoints_batch(
                np.stack([j[1] for j in jobs]),
                np.array([j[2].geometry.fwd for j in jobs], dtype=np.float64),
                np.array([j[2].src_box[:2] for j in jobs], dtype=np.int64),
                np.array([j[2].offset for j in jobs], dtype=np.int64),
                np.stack([j[3] for j in jobs]),
                np.array([j[4] for j in jobs], dtype=np.int64),
            )
            for (part, *_), kp in zip(jobs, out):
                self._kp_parts[part] = kp.reshape(-1)

    # ---- launches ----
    def run(self) -> list[Sample]:
        self.pack()
        be, xp = self.be, self.be.xp
        P, nslots, S = self.num_pastes, self.n_slots, self.num_samples
        tot = self.totals
        box_init = lambda n: xp.asarray(np.tile(np.array([INT_BIG, INT_BIG, -1, -1], np.int32), max(n, 1)))  # noqa
        jit_a = xp.empty(max(tot["jit"], 1), dtype=xp.uint8)
        jit_b = xp.empty(max(tot["jit"], 1), dtype=xp.uint8)
        luma_sum = xp.zeros(max(P, 1), dtype=xp.uint64)
        win_mask = xp.empty(max(tot["win"], 1), dtype=xp.uint8)
        win_pix = xp.empty(max(tot["win"] * 3, 1), dtype=xp.uint8)
        hbuf = xp.empty(max(tot["win"] if self.any_blend else 1, 1), dtype=xp.int32)
        alpha = xp.empty(max(tot["win"] if self.any_blend else 1, 1), dtype=xp.int32)
        paste_box = box_init(P)
        img_out = xp.empty(max(tot["img"], 1), dtype=xp.uint8)
        cover = xp.empty(max(tot["cover"], 1), dtype=xp.uint32)
        vis_area = xp.zeros(max(nslots, 1), dtype=xp.uint64)
        am_area = xp.zeros(max(nslots, 1), dtype=xp.uint64)
        vis_box, am_box = box_init(nslots), box_init(nslots)
        touched = xp.zeros(max(nslots, 1), dtype=xp.uint32)
        overlap = xp.zeros(max(tot["overlap"], 1), dtype=xp.uint8)
        keep = xp.zeros(max(nslots, 1), dtype=xp.uint8)
        flags = xp.zeros(max(nslots, 1), dtype=xp.uint8)
        out_slot = xp.zeros(max(nslots, 1), dtype=xp.int64)
        nP, nS, nK, W = _i64(P), _i64(S), _i64(nslots), _i64(self.words)

        if self.any_jitter:
            g = (_grid_x(self.max_crop), P)
            self.launch("ocp_jitter_colour_brightness", g, self.pastes, nP, jit_a, luma_sum)
            self.launch("ocp_jitter_contrast", g, self.pastes, nP, jit_a, luma_sum)
            self.launch("ocp_jitter_sharpness", g, self.pastes, nP, jit_a, jit_b)
        if self.max_win > 0:
            self.launch("ocp_warp", (_grid_x(self.max_win), P), self.pastes, nP, jit_b, win_mask, win_pix, paste_box)
            if self.any_blend:
                g = (_grid_x(self.max_win), P)
                self.launch("ocp_alpha_horizontal", g, self.pastes, nP, self.taps, win_mask, hbuf)
                self.launch("ocp_alpha_vertical", g, self.pastes, nP, self.taps, win_mask, hbuf, alpha)
        self.launch("ocp_composite", (_grid_x(self.max_hw), S), self.samples, nS, self.pastes, win_mask, win_pix,
                    alpha, img_out, cover)
        if nslots:
            self.launch("ocp_occlusion_stats", (_grid_x(self.max_hw), nslots), self.samples, self.slots, nK, cover,
                        self.allowed, W, vis_area, am_area, vis_box, am_box, touched)
            self.launch("ocp_overlap", (self.max_slots, P), self.samples, self.pastes, nP, self.slots, cover, am_box,
                        paste_box, overlap)
            self.launch("ocp_keep", (_grid_x(nslots, 1), 1), self.samples, self.slots, nK, paste_box, self.before,
                        vis_area, vis_box, am_box, touched, keep, flags)
            pos = be.cumsum(keep[:nslots])
            self.launch("ocp_compact", (_grid_x(nslots, 1), 1), keep, pos, nK, out_slot)
        flags_h = np.asarray(self.host(flags))[:nslots]  # the one synchronisation: sizes of the outputs

        # ---- output layout ----
        layout = self.samples_np.copy()
        col = {f: i for i, f in enumerate(SAMPLE_FIELDS)}
        infos, rows, crowd_rows = [], 0, 0
        plane_total = crowd_plane_total = order_total = kp_total = 0
        for si, m in enumerate(self.meta):
            s0 = int(layout[si, col["slot_begin"]])
            f_ex = flags_h[s0:s0 + m["n0"]]
            f_pa = flags_h[s0 + m["n0"]:s0 + m["n0"] + m["k"]]
            c0 = int(layout[si, col["crowd_begin"]])
            f_cr = flags_h[c0:c0 + m["n_crowd"]]
            valid = (f_pa & 2) != 0
            p0 = int(layout[si, col["paste_begin"]])
            for t in np.flatnonzero(valid):
                if p0 + int(t) in self.deferred:
                    raise self.deferred[p0 + int(t)]
            kept_ex, kept_pa, kept_cr = int((f_ex & 1).sum()), int((f_pa & 1).sum()), int((f_cr & 1).sum())
            n_out = kept_ex + kept_pa
            hw = m["H"] * m["W"]
            layout[si, col["num_out"]] = n_out
            layout[si, col["row_base"]] = rows
            layout[si, col["plane_base"]] = plane_total
            layout[si, col["crowd_row_base"]] = crowd_rows
            layout[si, col["crowd_plane_base"]] = crowd_plane_total
            layout[si, col["order_out_off"]] = order_total
            layout[si, col["kp_out_off"]] = kp_total
            m.update(n_out=n_out, kept_cr=kept_cr, rows=rows, plane=plane_total, crowd_rows=crowd_rows,
                     crowd_plane=crowd_plane_total, order=order_total, kp=kp_total)
            infos.append(dict(pasted=int(valid.sum()), skipped=int(m["k"] - valid.sum()),
                              dropped_existing=m["n0"] - kept_ex, dropped_pasted=int(valid.sum()) - kept_pa,
                              dropped_crowd=m["n_crowd"] - kept_cr))
            rows += n_out
            crowd_rows += kept_cr
            plane_total += n_out * hw
            crowd_plane_total += kept_cr * hw
            order_total += n_out * n_out
            kp_total += n_out * m["K"] * 3
        samples_out = be.asarray(layout)

        vis_out = xp.empty(max(plane_total, 1), dtype=xp.bool_)
        am_out = xp.empty(max(plane_total, 1), dtype=xp.bool_)
        occ_out = xp.empty(max(plane_total, 1), dtype=xp.bool_)
        crowd_out = xp.empty(max(crowd_plane_total, 1), dtype=xp.bool_)
        boxes_out = xp.empty((max(rows, 1), 4), dtype=xp.float32)
        labels_out = xp.empty(max(rows, 1), dtype=xp.int64)
        ann_out = xp.empty(max(rows, 1), dtype=xp.int64)
        pasted_out = xp.empty(max(rows, 1), dtype=xp.bool_)
        rate_out = xp.empty(max(rows, 1), dtype=xp.float32)
        kp_out = xp.empty(max(kp_total, 1), dtype=xp.float32)
        order_out = xp.empty(max(order_total, 1), dtype=xp.bool_)
        n_rows = rows + crowd_rows
        if n_rows:
            self.launch("ocp_emit_planes", (_grid_x(self.max_hw), n_rows), samples_out, self.slots, out_slot,
                        _i64(rows), _i64(n_rows), cover, self.allowed, self.later, W, am_box, vis_out, am_out,
                        occ_out, crowd_out)
        if rows:
            self.launch("ocp_emit_rows", (_grid_x(rows, 1), 1), samples_out, self.slots, out_slot, _i64(rows), cover,
                        self.later, W, vis_area, am_area, vis_box, self.kp_in, boxes_out, labels_out, ann_out,
                        pasted_out, rate_out, kp_out)
        if order_total:
            max_n2 = max(m["n_out"] ** 2 for m in self.meta)
            self.launch("ocp_emit_order", (_grid_x(max_n2, 1), S), samples_out, nS, self.slots, out_slot, overlap,
                        order_out)

        out = []
        for si, (m, dst, info) in enumerate(zip(self.meta, self.dsts, infos)):
            H, W_, n, c = m["H"], m["W"], m["n_out"], m["kept_cr"]
            hw, r0 = H * W_, m["rows"]
            planes = lambda buf, base, cnt: buf[base:base + cnt * hw].reshape(cnt, H, W_)  # noqa: E731
            img_off = int(self.samples_np[si, col["img_out_off"]])
            kps = None
            if m["has_kp"]:
                kps = kp_out[m["kp"]:m["kp"] + n * m["K"] * 3].reshape(n, m["K"], 3)
            out.append(Sample(
                image=img_out[img_off:img_off + hw * 3].reshape(H, W_, 3),
                masks=planes(vis_out, m["plane"], n),
                amodal_masks=planes(am_out, m["plane"], n),
                boxes=boxes_out[r0:r0 + n],
                labels=labels_out[r0:r0 + n],
                occlusion_rate=rate_out[r0:r0 + n],
                occluder_masks=planes(occ_out, m["plane"], n),
                order=order_out[m["order"]:m["order"] + n * n].reshape(n, n),
                keypoints=kps,
                pasted=pasted_out[r0:r0 + n],
                ann_ids=ann_out[r0:r0 + n],
                crowd_masks=planes(crowd_out, m["crowd_plane"], c),
                image_id=dst.image_id,
                file_name=dst.file_name,
                info=info,
            ))
        return out
