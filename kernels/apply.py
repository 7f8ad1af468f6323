"""GPU backend of ``apply``: the whole batch packed into descriptor tables, each stage one kernel launch.

``apply_cupy(plan, destination, sources)`` equals ``reference.apply_numpy`` exactly (masks, boxes, labels, order,
keypoints, pixels, ``info``) and returns a ``Sample`` of CuPy arrays (NumPy inputs are uploaded).
``apply_cupy_batch`` does a batch in one pass: one launch per stage for all samples, pastes and instances.

Stages (kernel source in parentheses), launches per batch:
    1-3. image jitter of the jittered crops: colour + brightness with per-crop grey sums, contrast, sharpness
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

``ApplyBatch`` runs them, one method per stage: ``pack`` (``pack_pastes``, ``pack_existing_slots``,
``pack_paste_slots``, ``pack_crowd_slots``, ``pack_sample``, ``upload_tables``), ``allocate``, ``jitter``,
``warp``, ``feather``, ``composite``, ``occlusion_stats``, ``keep``, ``layout_outputs``, ``emit``, ``unpack``;
the stages of ``reference.apply_numpy`` carry the same names, so parity can be checked one stage at a time.

The host side only does what needs no pixels: windows of the pastes (``reference.paste_window``), the
reference's box test of existing instances against each window (as bit masks of the pastes allowed to clear each
instance), keypoint coordinates of pasted instances (``keypoints.map_paste_keypoints``, the reference's own mapper,
all pastes at once) and the Gaussian taps. Inputs are read in place through device pointers stored in the
descriptor tables (NumPy inputs are uploaded once per array); outputs are views into one buffer per field for the
whole batch.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ocp_dali.kernels.launch import BLOCK, grid_x, struct_table
from ocp_dali.keypoints import check_keypoint_shape, map_paste_keypoints, paste_order
from ocp_dali.plan import PasteOp, PastePlan
from ocp_dali.reference import carries_targets, gaussian_weights_q12, paste_window
from ocp_dali.sample import Sample
from ocp_dali.targets import Targets, absent

INT_BIG = 0x7FFFFFFF

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
WANT_AMODAL, WANT_OCCLUDER = 1, 2  # bits of ocp_emit_planes' ``want`` (targets.cu)

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


def _pack_bits(bits: np.ndarray, words: int) -> np.ndarray:
    """(n, k) bool -> (n, words) uint32 with bit t of word t // 32 set where ``bits[:, t]``."""
    n, k = bits.shape
    padded = np.zeros((n, words * 32), dtype=np.uint64)
    padded[:, :k] = bits
    weights = np.uint64(1) << np.arange(32, dtype=np.uint64)
    return (padded.reshape(n, words, 32) * weights).sum(axis=2).astype(np.uint32)


def _check_shape(sample: Sample, name: str, arr, shape: tuple[int, ...]) -> None:
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{sample.file_name or 'sample'}: {name} has shape {tuple(arr.shape)}, expected {shape}")


def _default_backend():
    from ocp_dali.kernels.loader import CupyBackend

    return CupyBackend()


def apply_cupy(plan: PastePlan, destination: Sample, sources: Sequence[Sample | None], *, backend=None,
               targets: Targets | None = None) -> Sample:
    """``apply`` on the GPU for one sample (a batch of one); same contract as ``reference.apply_numpy``."""
    return apply_cupy_batch([plan], [destination], [sources], backend=backend, targets=targets)[0]


def batch_targets(destinations: Sequence[Sample], targets: Targets | None) -> Targets:
    """The targets of a batch: ``targets``, or (None) the one set every destination carries; each destination must
    carry them (``ValueError`` otherwise, as ``reference.apply_numpy``)."""
    if targets is None:
        kinds = {d.targets for d in destinations}
        if len(kinds) > 1:
            raise ValueError(f"the destinations carry different targets {sorted(map(repr, kinds))}: pass targets=")
        targets = kinds.pop() if kinds else Targets.all()
    for d in destinations:
        if not targets.names <= d.targets.names:
            d.restrict(targets)  # raises: names what is missing
    return targets


def apply_cupy_batch(plans: Sequence[PastePlan], destinations: Sequence[Sample],
                     sources_per_sample: Sequence[Sequence[Sample | None]], *, backend=None,
                     targets: Targets | None = None) -> list[Sample]:
    """``apply`` for a batch: ``[apply_numpy(p, d, s, targets) for ...]`` computed with one launch per stage.

    Args:
        plans, destinations, sources_per_sample: one entry per sample (sources: one per basket position).
        backend: array backend (default: CuPy on the current device; ``kernels.emulate.EmulatedBackend`` runs
            the same kernels on the CPU).
        targets: the optional outputs wanted (``ocp_dali.targets``; ``batch_targets``): unrequested planes are
            neither allocated nor written, the order matrix's launches are skipped without ``order``.

    Returns:
        One ``Sample`` per input; samples whose plan pastes nothing are the destination objects themselves
        (restricted to ``targets``). Others hold backend arrays (views into per-batch buffers).
    """
    if not len(plans) == len(destinations) == len(sources_per_sample):
        raise ValueError(f"batch lengths differ: {len(plans)} plans, {len(destinations)} destinations, "
                         f"{len(sources_per_sample)} source lists")
    be = backend if backend is not None else _default_backend()
    targets = batch_targets(destinations, targets)
    results: list[Sample | None] = [None] * len(plans)
    active = []
    for i, plan in enumerate(plans):
        if plan.pastes:
            active.append(i)
        else:
            results[i] = destinations[i].restrict(targets)
    if active:
        for i, out in zip(active, ApplyBatch(be, [plans[i] for i in active], [destinations[i] for i in active],
                                         [sources_per_sample[i] for i in active], targets).run()):
            results[i] = out
    return results  # type: ignore[return-value]


@dataclass
class Offsets:
    """Running sizes (elements) of the per-batch input buffers while a batch is packed: each paste's or sample's
    part starts at the total so far."""

    jit: int = 0  # jittered crops, uint8, crop_h * crop_w * 3 per jittered paste
    win: int = 0  # window pixels (masks, alpha), win_w * win_h per paste
    cover: int = 0  # cover words, uint32, words * H * W per sample
    overlap: int = 0  # paste x slot overlap flags, uint8, k * (n0 + k) per sample
    img: int = 0  # output images, uint8, H * W * 3 per sample
    kp: int = 0  # slot keypoints, float32, K * 3 per slot
    taps: int = 0  # Gaussian taps, int32, 2r + 1 per blending sample


@dataclass
class Destination:
    """One destination as the kernels read it: device arrays (their pointers go into the tables; shapes checked,
    since the kernels read through raw pointers) and small host copies (N = n0 instances, C crowd regions).

    Attributes:
        image (H, W, 3) uint8, masks / amodal / occluders (N, H, W) bool, crowd (C, H, W) bool, order (N, N)
        bool: device arrays. amodal: the visible masks when no requested target reads it (or the destination
        carries none: ``Sample.amodal_or_visible``); occluders / order: None when not requested (never read).
        carries_targets: its occluders and order mean anything (``reference.carries_targets``).
        boxes_i (N, 4) int64, boxes_f (N, 4) float64, labels (N,), ann_ids (N,), keypoints (N, K, 3) float32 or
        None (also when not requested): host arrays.
    """

    height: int
    width: int
    n0: int
    image: object
    masks: object
    amodal: object
    occluders: object | None
    crowd: object
    order: object | None
    n_crowd: int
    carries_targets: bool
    boxes_i: np.ndarray
    boxes_f: np.ndarray
    labels: np.ndarray
    ann_ids: np.ndarray
    keypoints: np.ndarray | None

    @property
    def num_kp(self) -> int:
        """K, keypoints per instance (0 without keypoints)."""
        return int(self.keypoints.shape[1]) if self.keypoints is not None else 0


@dataclass
class StageBuffers:
    """The kernels' working buffers for one batch (flat, backend arrays; P pastes, S slots; at least 1 element).

    Attributes:
        jit_a, jit_b: uint8 jittered crops (``Offsets.jit``); grey_sum: (P,) uint64 per-crop grey sums.
        win_mask: uint8, win_pix: uint8 (x3) window masks and pixels (``Offsets.win``); hbuf, alpha: int32
            horizontal pass and feathered alpha of each window (when a sample blends).
        paste_box: (P, 4) int32 tight box of each warped mask; img_out: uint8 output images; cover: uint32 cover
            words (bit t: paste t wrote the pixel).
        vis_area, am_area: (S,) uint64; vis_box, am_box: (S, 4) int32; touched: (S,) uint32 (occlusion stats).
        overlap: uint8 paste x slot amodal overlaps; keep, flags: (S,) uint8; out_slot: (S,) int64 output row.
    """

    jit_a: object
    jit_b: object
    grey_sum: object
    win_mask: object
    win_pix: object
    hbuf: object
    alpha: object
    paste_box: object
    img_out: object
    cover: object
    vis_area: object
    am_area: object
    vis_box: object
    am_box: object
    touched: object
    overlap: object
    keep: object
    flags: object
    out_slot: object


@dataclass
class OutputBuffers:
    """One buffer per output field for the whole batch (R output rows, backend arrays, at least 1 element); each
    ``Sample`` holds views into them.

    Attributes:
        vis, amodal, occluders: bool planes (R * H * W); crowd: bool planes of the kept crowd regions.
        boxes: (R, 4) float32; labels, ann_ids: (R,) int64; pasted: (R,) bool; rate: (R,) float32 occlusion
        rate; keypoints: float32 (R * K * 3); order: bool (sum of n_out ** 2 over the samples).
    """

    vis: object
    amodal: object
    occluders: object
    crowd: object
    boxes: object
    labels: object
    ann_ids: object
    pasted: object
    rate: object
    keypoints: object
    order: object


class ApplyBatch:
    """One batch (every plan non-empty): packing into descriptor tables, one method per kernel stage, and the
    unpacking into Samples. ``run`` does them all in order; a parity test may stop after any stage and read its
    buffers (``buf``, ``window``)."""

    def __init__(self, be, plans: Sequence[PastePlan], destinations: Sequence[Sample],
                 sources_per_sample: Sequence[Sequence[Sample | None]], targets: Targets | None = None):
        self.be = be
        self.targets = batch_targets(destinations, targets)
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

    # ---- packing (host) ----
    def pack(self) -> None:
        """Stages "pack samples / pastes / slots": every plan checked, the descriptor tables of the whole batch
        built and uploaded."""
        self.words = max(-(-len(p.pastes) // 32) for p in self.plans)
        self.totals = Offsets()
        self._samples: list[dict] = []
        self._pastes: list[dict] = []
        self._inst_slots: list[dict] = []
        self._crowd_slots: list[dict] = []
        # per-slot bit masks of pastes: allowed to clear it, later than it; boxes before the pastes
        self._allowed: list[np.ndarray] = []
        self._later: list[np.ndarray] = []
        self._before: list[np.ndarray] = []
        self._crowd_allowed: list[np.ndarray] = []
        self._taps_parts: list[np.ndarray] = []
        self._kp_parts: list[np.ndarray] = []  # slot keypoints, flattened, in slot order
        self._kp_jobs: list[tuple] = []  # pasted instances whose keypoints are mapped in one batch
        self.deferred: dict[int, Exception] = {}  # paste -> error the reference raises only if it is placed
        self.meta: list[dict] = []
        for si, (plan, dst, srcs) in enumerate(zip(self.plans, self.dsts, self.srcs)):
            plan.check(dst, srcs)
            d = self.destination(dst)
            slot_begin, paste_begin = len(self._inst_slots), len(self._pastes)
            windows = self.pack_pastes(si, plan, srcs, d, slot_begin)
            self.pack_existing_slots(si, d, windows)
            self.pack_paste_slots(si, plan, srcs, d, paste_begin)
            crowd_begin = self.pack_crowd_slots(si, d, len(plan.pastes))
            self.pack_sample(si, plan, d, slot_begin, paste_begin, crowd_begin)
        self.upload_tables()

    def destination(self, dst: Sample) -> Destination:
        """``dst`` on the device (cached per array), its shapes checked, and the host copies packing needs."""
        H, W, n0, want = dst.height, dst.width, len(dst), self.targets.names
        img = self.dev(dst.image, np.uint8)
        masks = self.dev(dst.masks, np.bool_)
        # the amodal planes feed the rate, occluder boxes, order and amodal outputs only; else they are not read
        need_amodal = self.targets.amodal_stack or self.targets.amodal_boxes
        amodal = self.dev(dst.amodal_or_visible() if need_amodal else dst.masks, np.bool_)
        occ = self.dev(dst.occluder_masks, np.bool_) if "occluder_masks" in want else None
        crowd = self.dev(dst.crowd_masks, np.bool_)
        order = self.dev(dst.order, np.bool_) if "order" in want else None
        n_crowd = int(crowd.shape[0]) if crowd.ndim == 3 else -1
        # the kernels read these through raw pointers: wrong shapes must fail here, not read out of bounds
        _check_shape(dst, "image", img, (H, W, 3))
        for name, arr in (("masks", masks), ("amodal_masks", amodal), ("occluder_masks", occ)):
            if arr is not None:
                _check_shape(dst, name, arr, (n0, H, W))
        _check_shape(dst, "crowd_masks", crowd, (n_crowd, H, W))
        if order is not None:
            _check_shape(dst, "order", order, (n0, n0))
        kp = None
        if dst.keypoints is not None and "keypoints" in want:
            kp = np.asarray(self.host(dst.keypoints), dtype=np.float32)
        return Destination(
            height=H, width=W, n0=n0, image=img, masks=masks, amodal=amodal, occluders=occ, crowd=crowd,
            order=order, n_crowd=n_crowd,
            carries_targets=carries_targets(self.host(dst.pasted), self.host(dst.occlusion_rate)),
            boxes_i=np.asarray(self.host(dst.boxes), dtype=np.int64).reshape(n0, 4),
            boxes_f=np.asarray(self.host(dst.boxes), dtype=np.float64).reshape(n0, 4),
            labels=self.host(dst.labels), ann_ids=self.host(dst.ann_ids), keypoints=kp,
        )

    def pack_taps(self, plan: PastePlan) -> tuple[int, int]:
        """The plan's Gaussian taps queued (when it blends); ``(radius, offset of the taps)``, zeros otherwise."""
        if plan.blend_sigma <= 0:
            return 0, 0
        taps = gaussian_weights_q12(plan.blend_sigma)
        offset = self.totals.taps
        self._taps_parts.append(taps.astype(np.int32))
        self.totals.taps += len(taps)
        return (len(taps) - 1) // 2, offset

    def pack_pastes(self, si: int, plan: PastePlan, srcs: Sequence[Sample | None], d: Destination,
                    slot_begin: int) -> np.ndarray:
        """Stage "pack pastes": one ``PASTE_FIELDS`` row per paste of sample ``si`` (crop pointers, inverse map,
        window, jitter, taps). Returns the (k, 4) int64 windows ``(wx0, wy0, wx1, wy1)`` (some may be empty)."""
        be, tot = self.be, self.totals
        H, W = d.height, d.width
        radius, taps_off = self.pack_taps(plan)
        windows = np.zeros((len(plan.pastes), 4), dtype=np.int64)
        for t, op in enumerate(plan.pastes):
            src = srcs[op.source]
            window = paste_window(op, H, W)
            windows[t] = window
            wx0, wy0, wx1, wy1 = window
            ww, wh = (0, 0) if (wx1 <= wx0 or wy1 <= wy0) else (wx1 - wx0, wy1 - wy0)
            sh, sw = src.height, src.width
            x0, y0, x1, y1 = op.src_box
            simg = self.dev(src.image, np.uint8)
            smask = self.dev(src.masks, np.bool_)
            _check_shape(src, "image", simg, (sh, sw, 3))
            _check_shape(src, "masks", smask, (len(src), sh, sw))
            ox, oy = op.offset
            row = dict(
                sample=si, time=t, slot=slot_begin + d.n0 + t,
                src_img=be.ptr(simg) + (y0 * sw + x0) * 3, src_pitch=sw,
                src_mask=be.ptr(smask) + op.instance * sh * sw + y0 * sw + x0, mask_pitch=sw,
                crop_h=y1 - y0, crop_w=x1 - x0,
                off_x=ox, off_y=oy, win_x=wx0, win_y=wy0, win_w=ww, win_h=wh, win_off=tot.win,
                taps_off=taps_off, radius=radius,
                rep_top=wy0 == 0, rep_bottom=wy1 == H, rep_left=wx0 == 0, rep_right=wx1 == W,
            )
            row.update(zip(("inv_a", "inv_b", "inv_c", "inv_d", "inv_e", "inv_f"), op.geometry.inv_q16))
            if op.jitter is not None:
                row.update(jitter=1, jit_off=tot.jit)
                row.update(zip(("j_colour", "j_bright", "j_contrast", "j_sharp"), op.jitter))
                tot.jit += row["crop_h"] * row["crop_w"] * 3
            tot.win += ww * wh
            self._pastes.append(row)
        return windows

    def pack_existing_slots(self, si: int, d: Destination, windows: np.ndarray) -> None:
        """Stage "pack slots", the destination's instances: one ``SLOT_FIELDS`` row each, with the reference's
        box test against every window as the bits of the pastes allowed to clear the instance."""
        be, tot, n0, hw, k = self.be, self.totals, d.n0, d.height * d.width, len(windows)
        for j in range(n0):
            self._inst_slots.append(dict(
                sample=si, kind=EXISTING, local=j, time=-1, paste=-1,
                vis_in=be.ptr(d.masks) + j * hw, amodal_in=be.ptr(d.amodal) + j * hw,
                occ_in=be.ptr(d.occluders) + j * hw if d.carries_targets and d.occluders is not None else 0,
                region_x=0, region_y=0, region_w=d.width, region_h=d.height,
                label=int(d.labels[j]), ann_id=int(d.ann_ids[j]), kp_off=tot.kp,
            ))
            if d.keypoints is not None:
                self._kp_parts.append(d.keypoints[j].reshape(-1))
                tot.kp += d.num_kp * 3
        if n0:
            bx0, by0, bx1, by1 = (d.boxes_i[:, c:c + 1] for c in range(4))
            wx0, wy0, wx1, wy1 = (windows[None, :, c] for c in range(4))
            gate = ~((bx1 <= wx0) | (bx0 >= wx1) | (by1 <= wy0) | (by0 >= wy1))
            self._allowed.append(_pack_bits(gate, self.words))
            self._later.append(_pack_bits(np.ones((n0, k), dtype=bool), self.words))
            self._before.append(d.boxes_f)

    def pack_paste_slots(self, si: int, plan: PastePlan, srcs: Sequence[Sample | None], d: Destination,
                         paste_begin: int) -> None:
        """Stage "pack slots", the pastes: one ``SLOT_FIELDS`` row per paste (a skipped paste keeps its slot: it
        is never kept), its keypoints queued; a paste may clear (and is later than) the earlier pastes only."""
        tot, k = self.totals, len(plan.pastes)
        for t, op in enumerate(plan.pastes):
            src = srcs[op.source]
            q = paste_begin + t
            p = self._pastes[q]
            self._inst_slots.append(dict(
                sample=si, kind=PASTED, local=t, time=t, paste=q,
                region_x=p["win_x"], region_y=p["win_y"], region_w=p["win_w"], region_h=p["win_h"],
                label=int(op.label), ann_id=int(self.host(src.ann_ids)[op.instance]), kp_off=tot.kp,
            ))
            if d.keypoints is not None:
                self.queue_paste_keypoints(q, op, src, plan, d)
                tot.kp += d.num_kp * 3
        t_idx = np.arange(k)
        after = t_idx[None, :] > t_idx[:, None]  # [t, t']: paste t' comes after paste t
        self._allowed.append(_pack_bits(after, self.words))
        self._later.append(_pack_bits(after, self.words))
        self._before.append(np.zeros((k, 4), dtype=np.float64))

    def pack_crowd_slots(self, si: int, d: Destination, k: int) -> int:
        """Stage "pack slots", the crowd regions (every paste may cover them); returns the first one's index among
        the batch's crowd slots."""
        first, hw = len(self._crowd_slots), d.height * d.width
        for c in range(d.n_crowd):
            self._crowd_slots.append(dict(sample=si, kind=CROWD, local=c, time=-1, paste=-1,
                                          vis_in=self.be.ptr(d.crowd) + c * hw, region_x=0, region_y=0,
                                          region_w=d.width, region_h=d.height))
        if d.n_crowd:
            self._crowd_allowed.append(_pack_bits(np.ones((d.n_crowd, k), dtype=bool), self.words))
        return first

    def pack_sample(self, si: int, plan: PastePlan, d: Destination, slot_begin: int, paste_begin: int,
                    crowd_begin: int) -> None:
        """Stage "pack samples": the ``SAMPLE_FIELDS`` row of sample ``si`` (where its slots, pastes and buffers
        begin, the keep rule's parameters) and its host-side ``meta``."""
        tot, H, W = self.totals, d.height, d.width
        k, hw = len(plan.pastes), H * W
        nslots, words_s = d.n0 + k, -(-k // 32)
        self._samples.append(dict(
            height=H, width=W, paste_begin=paste_begin, num_pastes=k, slot_begin=slot_begin, num_slots=nslots,
            num_existing=d.n0, crowd_begin=crowd_begin, num_crowd=d.n_crowd,
            cover_off=tot.cover, cover_words=words_s, img_in=self.be.ptr(d.image), img_out_off=tot.img,
            # as the reference: a destination with nothing pasted and no occlusion carries no occluders or order
            # (null pointers: the kernels read zeros)
            order_in=self.be.ptr(d.order) if d.carries_targets and d.order is not None else 0,
            overlap_off=tot.overlap,
            blend=int(plan.blend_sigma > 0), mode_simple=int(plan.mode == "simple"),
            thr_bits=_double_bits(plan.min_size_occ * math.sqrt(H * W)),
            bbox_thr_bits=_double_bits(float(plan.bbox_occluded_thr)),
            mask_thr_bits=_double_bits(float(plan.mask_occluded_thr)),
            num_kp=d.num_kp,
        ))
        self.meta.append(dict(has_kp=d.keypoints is not None, K=d.num_kp, n0=d.n0, k=k, n_crowd=d.n_crowd, H=H,
                              W=W))
        tot.cover += words_s * hw
        tot.overlap += k * nslots
        tot.img += hw * 3

    def upload_tables(self) -> None:
        """The packed rows as int64 tables, bit masks, keypoints and taps on the device; launch sizes."""
        be, words = self.be, self.words
        n_inst = len(self._inst_slots)
        for s in self._samples:  # crowd slots follow every instance slot of the batch
            s["crowd_begin"] += n_inst
        self.n_inst_slots, self.n_slots = n_inst, n_inst + len(self._crowd_slots)
        self.samples_np = struct_table(self._samples, SAMPLE_FIELDS)
        self.slots_np = struct_table(self._inst_slots + self._crowd_slots, SLOT_FIELDS)
        self.pastes_np = struct_table(self._pastes, PASTE_FIELDS)
        self.num_samples, self.num_pastes = len(self._samples), len(self._pastes)
        bits = lambda parts: np.concatenate(parts) if parts else np.zeros((0, words), np.uint32)  # noqa: E731
        allowed_np = np.concatenate([bits(self._allowed), bits(self._crowd_allowed)])
        later_np = np.concatenate([bits(self._later), bits(self._crowd_allowed)])
        before_np = np.concatenate(self._before + [np.zeros((len(self._crowd_slots), 4))]).astype(np.float64)
        self.samples = be.asarray(self.samples_np)
        self.slots = be.asarray(self.slots_np)
        self.pastes = be.asarray(self.pastes_np)
        self.allowed = be.asarray(allowed_np.reshape(-1) if allowed_np.size else np.zeros(1, np.uint32))
        self.later = be.asarray(later_np.reshape(-1) if later_np.size else np.zeros(1, np.uint32))
        self.before = be.asarray(before_np.reshape(-1) if before_np.size else np.zeros(1))
        self.map_keypoints()
        kp_parts = self._kp_parts
        self.kp_in = be.asarray(np.concatenate(kp_parts).astype(np.float32) if kp_parts else np.zeros(1, np.float32))
        self.taps = be.asarray(np.concatenate(self._taps_parts) if self._taps_parts else np.zeros(1, np.int32))
        self.any_jitter = self.totals.jit > 0
        self.any_blend = bool(self._taps_parts)
        self.max_crop = max((p["crop_h"] * p["crop_w"] for p in self._pastes if p.get("jitter")), default=0)
        self.max_win = max((p["win_w"] * p["win_h"] for p in self._pastes), default=0)
        self.max_hw = max(s["height"] * s["width"] for s in self._samples)
        self.max_slots = max(s["num_slots"] for s in self._samples)

    def queue_paste_keypoints(self, q: int, op: PasteOp, src: Sample, plan: PastePlan, d: Destination) -> None:
        """Queues the (K, 3) keypoints of the instance paste q creates (zeros when the source has none); errors
        are deferred until the paste is known to be placed (the reference raises them only then)."""
        K = d.num_kp
        self._kp_parts.append(np.zeros(K * 3, dtype=np.float32))
        if src.keypoints is None:
            return
        skp = self.host(src.keypoints)
        try:
            check_keypoint_shape(src.file_name, skp.shape[1:], d.keypoints.shape[1:])
            order = paste_order(op.flip, plan.flip_index, K)
        except (ValueError, IndexError) as e:
            self.deferred[q] = e
            return
        self._kp_jobs.append((len(self._kp_parts) - 1, np.asarray(skp[op.instance]), op, order,
                              (d.width, d.height)))

    def map_keypoints(self) -> None:
        """Keypoints of every pasted instance, mapped together (``map_paste_keypoints``, one call per K)."""
        by_k: dict[int, list] = {}
        for job in self._kp_jobs:
            by_k.setdefault(job[1].shape[0], []).append(job)
        for jobs in by_k.values():
            out = map_paste_keypoints(
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
    def allocate(self) -> None:
        """The kernels' working buffers (``StageBuffers``) for the packed batch."""
        xp, P, nslots, tot = self.be.xp, self.num_pastes, self.n_slots, self.totals
        box_init = lambda n: xp.asarray(np.tile(np.array([INT_BIG, INT_BIG, -1, -1], np.int32), max(n, 1)))  # noqa
        n_alpha = max(tot.win if self.any_blend else 1, 1)
        self.buf = StageBuffers(
            jit_a=xp.empty(max(tot.jit, 1), dtype=xp.uint8),
            jit_b=xp.empty(max(tot.jit, 1), dtype=xp.uint8),
            grey_sum=xp.zeros(max(P, 1), dtype=xp.uint64),
            win_mask=xp.empty(max(tot.win, 1), dtype=xp.uint8),
            win_pix=xp.empty(max(tot.win * 3, 1), dtype=xp.uint8),
            hbuf=xp.empty(n_alpha, dtype=xp.int32),
            alpha=xp.empty(n_alpha, dtype=xp.int32),
            paste_box=box_init(P),
            img_out=xp.empty(max(tot.img, 1), dtype=xp.uint8),
            cover=xp.empty(max(tot.cover, 1), dtype=xp.uint32),
            vis_area=xp.zeros(max(nslots, 1), dtype=xp.uint64),
            am_area=xp.zeros(max(nslots, 1), dtype=xp.uint64),
            vis_box=box_init(nslots),
            am_box=box_init(nslots),
            touched=xp.zeros(max(nslots, 1), dtype=xp.uint32),
            overlap=xp.zeros(max(tot.overlap, 1), dtype=xp.uint8),
            keep=xp.zeros(max(nslots, 1), dtype=xp.uint8),
            flags=xp.zeros(max(nslots, 1), dtype=xp.uint8),
            out_slot=xp.zeros(max(nslots, 1), dtype=xp.int64),
        )

    def jitter(self) -> None:
        """Stage "jitter" (launches 1-3): colour + brightness, contrast, sharpness of every jittered crop."""
        if not self.any_jitter:
            return
        b, nP = self.buf, _i64(self.num_pastes)
        g = (grid_x(self.max_crop), self.num_pastes)
        self.launch("ocp_jitter_colour_brightness", g, self.pastes, nP, b.jit_a, b.grey_sum)
        self.launch("ocp_jitter_contrast", g, self.pastes, nP, b.jit_a, b.grey_sum)
        self.launch("ocp_jitter_sharpness", g, self.pastes, nP, b.jit_a, b.jit_b)

    def warp(self) -> None:
        """Stage "warp" (launch 4): every paste's window mask and pixels, and the tight box of each mask."""
        if self.max_win <= 0:
            return
        b = self.buf
        self.launch("ocp_warp", (grid_x(self.max_win), self.num_pastes), self.pastes, _i64(self.num_pastes),
                    b.jit_b, b.win_mask, b.win_pix, b.paste_box)

    def feather(self) -> None:
        """Stage "feather" (launches 5-6): alpha of every window of a blending sample, two separable passes."""
        if self.max_win <= 0 or not self.any_blend:
            return
        b, nP = self.buf, _i64(self.num_pastes)
        g = (grid_x(self.max_win), self.num_pastes)
        self.launch("ocp_alpha_horizontal", g, self.pastes, nP, self.taps, b.win_mask, b.hbuf)
        self.launch("ocp_alpha_vertical", g, self.pastes, nP, self.taps, b.win_mask, b.hbuf, b.alpha)

    def composite(self) -> None:
        """Stage "composite" (launch 7): output images in paste order, and the cover map."""
        b = self.buf
        self.launch("ocp_composite", (grid_x(self.max_hw), self.num_samples), self.samples,
                    _i64(self.num_samples), self.pastes, b.win_mask, b.win_pix, b.alpha, b.img_out, b.cover)

    def occlusion_stats(self) -> None:
        """Stage "occlusion stats" (launches 8-9): visible / amodal areas and boxes, touched flags of every slot;
        amodal overlaps of each paste with every earlier instance (only when ``order`` is requested)."""
        if not self.n_slots:
            return
        b, nK = self.buf, _i64(self.n_slots)
        self.launch("ocp_occlusion_stats", (grid_x(self.max_hw), self.n_slots), self.samples, self.slots, nK,
                    b.cover, self.allowed, _i64(self.words), b.vis_area, b.am_area, b.vis_box, b.am_box, b.touched)
        if "order" not in self.targets.names:  # the overlaps only feed the order matrices
            return
        self.launch("ocp_overlap", (self.max_slots, self.num_pastes), self.samples, self.pastes,
                    _i64(self.num_pastes), self.slots, b.cover, b.am_box, b.paste_box, b.overlap)

    def keep(self) -> None:
        """Stage "keep" (launches 10-12): the keep rule, then the output row of every kept slot."""
        if not self.n_slots:
            return
        b, nK, g = self.buf, _i64(self.n_slots), (grid_x(self.n_slots, 1), 1)
        self.launch("ocp_keep", g, self.samples, self.slots, nK, b.paste_box, self.before, b.vis_area, b.vis_box,
                    b.am_box, b.touched, b.keep, b.flags)
        pos = self.be.cumsum(b.keep[:self.n_slots])
        self.launch("ocp_compact", g, b.keep, pos, nK, b.out_slot)

    def window(self, q: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Host copies of paste ``q``'s window after "warp" / "feather": ``(mask (wh, ww) bool, pixels (wh, ww, 3)
        uint8, alpha (wh, ww) int32 or None)`` (pixels only defined where the mask is set)."""
        col = {f: i for i, f in enumerate(PASTE_FIELDS)}
        off, ww, wh = (int(self.pastes_np[q, col[f]]) for f in ("win_off", "win_w", "win_h"))
        n = ww * wh
        b = self.buf
        mask = np.asarray(self.be.to_host(b.win_mask))[off:off + n].reshape(wh, ww).astype(bool)
        pix = np.asarray(self.be.to_host(b.win_pix))[off * 3:(off + n) * 3].reshape(wh, ww, 3)
        blends = self.plans[int(self.pastes_np[q, col["sample"]])].blend_sigma > 0
        alpha = np.asarray(self.be.to_host(b.alpha))[off:off + n].reshape(wh, ww) if blends else None
        return mask, pix, alpha

    # ---- outputs ----
    def run(self) -> list[Sample]:
        """Every stage in order: pack, the launches, layout of the outputs, emit, unpack into Samples."""
        self.pack()
        self.allocate()
        self.jitter()
        self.warp()
        self.feather()
        self.composite()
        self.occlusion_stats()
        self.keep()
        flags = np.asarray(self.host(self.buf.flags))[:self.n_slots]  # the one synchronisation: output sizes
        infos = self.layout_outputs(flags)
        self.emit()
        return self.unpack(infos)

    def layout_outputs(self, flags: np.ndarray) -> list[dict[str, int]]:
        """Stage "layout of outputs": from the keep / valid flags (S,) uint8 (bit 0 kept, bit 1 placed), where
        each sample's rows, planes, order matrix and keypoints go (``samples_out``, ``meta``); raises the error a
        placed paste deferred. Returns each sample's ``info`` counts."""
        layout = self.samples_np.copy()
        col = {f: i for i, f in enumerate(SAMPLE_FIELDS)}
        infos = []
        out = dict(rows=0, crowd_rows=0, plane=0, crowd_plane=0, order=0, kp=0)
        for si, m in enumerate(self.meta):
            s0, c0, p0 = (int(layout[si, col[f]]) for f in ("slot_begin", "crowd_begin", "paste_begin"))
            f_ex = flags[s0:s0 + m["n0"]]
            f_pa = flags[s0 + m["n0"]:s0 + m["n0"] + m["k"]]
            f_cr = flags[c0:c0 + m["n_crowd"]]
            valid = (f_pa & 2) != 0
            for t in np.flatnonzero(valid):
                if p0 + int(t) in self.deferred:
                    raise self.deferred[p0 + int(t)]
            kept_ex, kept_pa, kept_cr = int((f_ex & 1).sum()), int((f_pa & 1).sum()), int((f_cr & 1).sum())
            n_out = kept_ex + kept_pa
            for f, key in (("row_base", "rows"), ("plane_base", "plane"), ("crowd_row_base", "crowd_rows"),
                           ("crowd_plane_base", "crowd_plane"), ("order_out_off", "order"), ("kp_out_off", "kp")):
                layout[si, col[f]] = out[key]
            layout[si, col["num_out"]] = n_out
            m.update(n_out=n_out, kept_cr=kept_cr, rows=out["rows"], plane=out["plane"],
                     crowd_rows=out["crowd_rows"], crowd_plane=out["crowd_plane"], order=out["order"], kp=out["kp"])
            infos.append(dict(pasted=int(valid.sum()), skipped=int(m["k"] - valid.sum()),
                              dropped_existing=m["n0"] - kept_ex, dropped_pasted=int(valid.sum()) - kept_pa,
                              dropped_crowd=m["n_crowd"] - kept_cr))
            hw = m["H"] * m["W"]
            out["rows"] += n_out
            out["crowd_rows"] += kept_cr
            out["plane"] += n_out * hw
            out["crowd_plane"] += kept_cr * hw
            out["order"] += n_out * n_out
            out["kp"] += n_out * m["K"] * 3
        self.samples_out = self.be.asarray(layout)
        self.out_totals = out
        return infos

    def emit(self) -> None:
        """Stage "emit" (launches 13-15): the output buffers (``OutputBuffers``) filled: planes, per-row fields,
        order matrices; unrequested planes and order matrices are one-element placeholders, never written (the
        per-row rates, R floats, are written anyway)."""
        xp, b, tot, want = self.be.xp, self.buf, self.out_totals, self.targets.names
        rows, n_rows, W = tot["rows"], tot["rows"] + tot["crowd_rows"], _i64(self.words)
        planes = lambda n: xp.empty(max(n, 1), dtype=xp.bool_)  # noqa: E731
        wanted = lambda name, n: planes(n if name in want else 1)  # noqa: E731  (a placeholder: never written)
        o = self.outputs = OutputBuffers(
            vis=planes(tot["plane"]), amodal=wanted("amodal_masks", tot["plane"]),
            occluders=wanted("occluder_masks", tot["plane"]), crowd=planes(tot["crowd_plane"]),
            boxes=xp.empty((max(rows, 1), 4), dtype=xp.float32),
            labels=xp.empty(max(rows, 1), dtype=xp.int64),
            ann_ids=xp.empty(max(rows, 1), dtype=xp.int64),
            pasted=xp.empty(max(rows, 1), dtype=xp.bool_),
            rate=xp.empty(max(rows, 1), dtype=xp.float32),
            keypoints=xp.empty(max(tot["kp"], 1), dtype=xp.float32),
            order=planes(tot["order"] if "order" in want else 1),
        )
        bits = (WANT_AMODAL if "amodal_masks" in want else 0) | (WANT_OCCLUDER if "occluder_masks" in want else 0)
        if n_rows:
            self.launch("ocp_emit_planes", (grid_x(self.max_hw), n_rows), self.samples_out, self.slots,
                        b.out_slot, _i64(rows), _i64(n_rows), b.cover, self.allowed, self.later, W, b.am_box,
                        _i64(bits), o.vis, o.amodal, o.occluders, o.crowd)
        if rows:
            self.launch("ocp_emit_rows", (grid_x(rows, 1), 1), self.samples_out, self.slots, b.out_slot, _i64(rows),
                        b.cover, self.later, W, b.vis_area, b.am_area, b.vis_box, self.kp_in, o.boxes, o.labels,
                        o.ann_ids, o.pasted, o.rate, o.keypoints)
        if tot["order"] and "order" in want:
            max_n2 = max(m["n_out"] ** 2 for m in self.meta)
            self.launch("ocp_emit_order", (grid_x(max_n2, 1), self.num_samples), self.samples_out,
                        _i64(self.num_samples), self.slots, b.out_slot, b.overlap, o.order)

    def unpack(self, infos: list[dict[str, int]]) -> list[Sample]:
        """Stage "unpack into Samples": one ``Sample`` per destination, views into the output buffers."""
        o, img_col = self.outputs, SAMPLE_FIELDS.index("img_out_off")
        out = []
        for si, (m, dst, info) in enumerate(zip(self.meta, self.dsts, infos)):
            H, W, n, c = m["H"], m["W"], m["n_out"], m["kept_cr"]
            hw, r0 = H * W, m["rows"]
            planes = lambda buf, base, cnt: buf[base:base + cnt * hw].reshape(cnt, H, W)  # noqa: E731
            img_off = int(self.samples_np[si, img_col])
            made = dict(
                amodal_masks=lambda: planes(o.amodal, m["plane"], n),
                occlusion_rate=lambda: o.rate[r0:r0 + n],
                occluder_masks=lambda: planes(o.occluders, m["plane"], n),
                order=lambda: o.order[m["order"]:m["order"] + n * n].reshape(n, n),
                keypoints=lambda: (o.keypoints[m["kp"]:m["kp"] + n * m["K"] * 3].reshape(n, m["K"], 3)
                                   if m["has_kp"] else None),
            )
            out.append(Sample(
                image=self.buf.img_out[img_off:img_off + hw * 3].reshape(H, W, 3),
                masks=planes(o.vis, m["plane"], n),
                boxes=o.boxes[r0:r0 + n],
                labels=o.labels[r0:r0 + n],
                pasted=o.pasted[r0:r0 + n],
                ann_ids=o.ann_ids[r0:r0 + n],
                crowd_masks=planes(o.crowd, m["crowd_plane"], c),
                image_id=dst.image_id,
                file_name=dst.file_name,
                info={**dst.info, **info},  # the destination's own counts (a crop before the paste) carry on
                targets=self.targets,
                **{k: make() if k in self.targets.names else absent(k, self.be.xp, H, W) for k, make in made.items()},
            ))
        return out
