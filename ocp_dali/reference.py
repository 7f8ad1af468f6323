"""NumPy reference of ``apply``: the oracle every other backend is compared with, and the CPU path.

Pure and deterministic: ``apply_numpy(plan, destination, sources)`` reads its inputs and never writes them. It works
on crops and paste windows, never on full-size copies of the sources. Integer arithmetic throughout the pixel path
(fixed-point sampling, integer bilinear weights, integer Gaussian alpha) so that the CUDA kernels can match it
exactly. The paste warp, the one per-pixel resample here, and the composite run as compiled CPU loops when a C++
compiler is there (``cpu_loops``: ``kernels/geometry_cpu``, the CUDA kernels' own per-pixel functions, the same
bits); ``warp_crop_numpy`` and ``composite_numpy`` stay their oracles and the fallback (the image jitter's loop:
``photometric.jitter_image``).

Stages, named as the kernels' (``kernels/apply.py``), so parity can be checked one stage at a time:
    per paste, in paste order: ``paste_window`` (where it lands), ``jitter_crop`` (image jitter of the crop),
    ``warp_crop`` (mask and pixels of the window; ``warp_paste`` does both), ``paste_alpha`` (feathered alpha),
    ``composite`` (pixels), ``occlude`` (earlier instances, crowd regions and keypoints lose what the paste
    covers), ``place`` (its row);
    then ``keep_rule``, and the outputs: ``occlusion_stats`` (boxes, occlusion rates), ``occluder_masks``,
    ``order_matrix``, gathered by ``emit``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

from ocp_dali import hostloops
from ocp_dali.geometry import Q_BITS, Q_HALF, PasteGeometry
from ocp_dali.keypoints import check_keypoint_shape, map_paste_keypoints, paste_order
from ocp_dali.masks import tight_box, tight_boxes
from ocp_dali.photometric import jitter_image
from ocp_dali.plan import PasteOp, PastePlan
from ocp_dali.sample import Sample
from ocp_dali.targets import Targets, absent
from ocp_dali.xp import array_module

ALPHA_BITS = 12
ALPHA_ONE = 1 << ALPHA_BITS


def gaussian_weights_q12(sigma: float) -> np.ndarray:
    """Integer 1-D Gaussian taps (int32, length ``2r+1``, ``r = ceil(3 sigma)``) that sum to exactly 4096."""
    r = max(1, int(math.ceil(3.0 * sigma)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    q = np.round(g / g.sum() * ALPHA_ONE).astype(np.int32)
    q[r] += ALPHA_ONE - int(q.sum())
    return q


def feather_alpha(mask: np.ndarray, sigma: float, replicate: tuple[bool, bool, bool, bool]) -> np.ndarray:
    """Feathered alpha (H, W) int32 in [0, 4096] of a window's (H, W) bool paste mask.

    Alpha is the Gaussian blur of the mask, kept inside the mask only (pixels the paste does not own stay the
    destination's). ``replicate`` = (top, bottom, left, right): sides where the window meets the image border are
    padded by replication so the image edge is not feathered; other sides are padded with zeros (outside the
    paste canvas there is no mask).
    """
    w = gaussian_weights_q12(sigma)
    r = (len(w) - 1) // 2
    m = mask.astype(np.int32)
    p = np.pad(m, r)
    top, bottom, left, right = replicate
    hh, ww = m.shape
    if top:
        p[:r, r:r + ww] = m[:1]
    if bottom:
        p[r + hh:, r:r + ww] = m[-1:]
    if left:
        p[:, :r] = p[:, r:r + 1]
    if right:
        p[:, r + ww:] = p[:, r + ww - 1:r + ww]
    horiz = np.zeros((hh + 2 * r, ww), dtype=np.int32)
    for i, wi in enumerate(w):
        horiz += wi * p[:, i:i + ww]
    vert = np.zeros((hh, ww), dtype=np.int64)
    for j, wj in enumerate(w):
        vert += int(wj) * horiz[j:j + hh].astype(np.int64)
    alpha = ((vert + (ALPHA_ONE // 2)) >> ALPHA_BITS).astype(np.int32)
    return alpha * m


def nearest_q16(u, v, h: int, w: int):
    """Pixel indices (clamped to the image) of Q16 coordinates: ``floor(u / 2**16)`` (NumPy or CuPy)."""
    xp = array_module(u)
    return xp.clip(u >> Q_BITS, 0, w - 1), xp.clip(v >> Q_BITS, 0, h - 1)


def bilinear_q16(img, u, v):
    """Integer bilinear samples (same shape as ``u``, plus 3 channels; uint8) of an (h, w, 3) uint8 image at Q16
    coordinates (pixel ``i`` covers ``[i, i+1)``): 8-bit weights, clamped edges, round half up. NumPy or CuPy."""
    xp = array_module(img)
    h, w = img.shape[:2]
    ub, vb = u - Q_HALF, v - Q_HALF
    u0, v0 = ub >> Q_BITS, vb >> Q_BITS
    fu = ((ub & 0xFFFF) >> 8)[..., None]
    fv = ((vb & 0xFFFF) >> 8)[..., None]
    u0c, u1c = xp.clip(u0, 0, w - 1), xp.clip(u0 + 1, 0, w - 1)
    v0c, v1c = xp.clip(v0, 0, h - 1), xp.clip(v0 + 1, 0, h - 1)
    src = img.astype(xp.int64)
    top = src[v0c, u0c] * (256 - fu) + src[v0c, u1c] * fu
    bot = src[v1c, u0c] * (256 - fu) + src[v1c, u1c] * fu
    return ((top * (256 - fv) + bot * fv + 32768) >> 16).astype(xp.uint8)


def cpu_loops() -> ModuleType | None:
    """``ocp_dali.kernels.geometry_cpu`` when its compiled loops can be used (a C++ compiler is there and
    ``OCP_CPU_LOOPS`` is not 0), else None: the NumPy code below is then the CPU path (and always the oracle).
    The geometry's switch (warp, LSJ); ``hostloops.cpu_loops``, which it asks, also switches the image jitter."""
    return hostloops.cpu_loops()


def warp_crop(
    crop_img: np.ndarray, crop_mask: np.ndarray, geom: PasteGeometry, x0: int, y0: int, ww: int, wh: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sample the canvas rectangle ``[x0, x0+ww) x [y0, y0+wh)`` of a transformed crop.

    ``crop_img`` (h, w, 3) uint8, ``crop_mask`` (h, w) bool. Returns ``(mask (wh, ww) bool, pixels (wh, ww, 3)
    uint8)``: masks nearest (outside the crop: False), pixels integer bilinear with clamped edges; pixels are zero
    where the mask is not set. The identity geometry returns views of the crop. Evaluated by the compiled CPU loops
    when they are available (``cpu_loops``; the same bits), else by ``warp_crop_numpy``.
    """
    if geom.identity:
        return crop_mask[y0:y0 + wh, x0:x0 + ww], crop_img[y0:y0 + wh, x0:x0 + ww]
    fast = cpu_loops()
    if fast is not None:
        return fast.warp_crop(crop_img, crop_mask, geom.inv_q16, x0, y0, ww, wh)
    return warp_crop_numpy(crop_img, crop_mask, geom, x0, y0, ww, wh)


def warp_crop_numpy(
    crop_img: np.ndarray, crop_mask: np.ndarray, geom: PasteGeometry, x0: int, y0: int, ww: int, wh: int
) -> tuple[np.ndarray, np.ndarray]:
    """``warp_crop`` of a non-identity ``geom`` in NumPy: the oracle of the compiled loops (same arguments and
    results: (wh, ww) bool mask, (wh, ww, 3) uint8 pixels, zero where the mask is not set)."""
    h, w = crop_mask.shape
    a, b, c, d, e, f = (np.int64(v) for v in geom.inv_q16)
    xs = np.arange(x0, x0 + ww, dtype=np.int64)[None, :]
    ys = np.arange(y0, y0 + wh, dtype=np.int64)[:, None]
    u = a * xs + b * ys + c
    v = d * xs + e * ys + f
    iu, iv = u >> Q_BITS, v >> Q_BITS
    inside = (iu >= 0) & (iu < w) & (iv >= 0) & (iv < h)
    mask = np.zeros((wh, ww), dtype=bool)
    mask[inside] = crop_mask[iv[inside], iu[inside]]
    pix = np.zeros((wh, ww, 3), dtype=np.uint8)
    sel = np.nonzero(mask)
    if sel[0].size:
        pix[sel] = bilinear_q16(crop_img, u[sel], v[sel])
    return mask, pix


@dataclass
class PasteLayers:
    """What the pastes change, as they are applied in paste order: the image and one row per instance.

    Rows ``[0, n0)`` are the destination's instances, then one row per *placed* paste (``row`` rows in use); the
    arrays are sized for every paste of the plan, ``T = n0 + len(plan.pastes)`` rows (H x W: the destination's
    size, K keypoints, C crowd regions).

    Attributes:
        image: (H, W, 3) uint8, a copy of the destination's pixels, the pastes composited so far.
        vis: (T, H, W) bool visible masks; amodal: (T, H, W) bool whole masks, None when no requested target
            needs the stack (``Targets.amodal_stack``: the rate reads areas, the occluders boxes).
        dest_amodal: (n0, H, W) bool, the destination's amodal masks (its visible ones when it carries none;
            ``Sample.amodal_or_visible``), read in place.
        targets: the requested ``Targets``.
        boxes: (T, 4) int64 xyxy boxes: the destination's, then each paste's window-clipped box when placed. They
            are never updated: a mask only loses pixels, so a stale box is a safe superset for "does the paste touch
            it" and bounds where the final tight box can be.
        labels, ann_ids: (T,) int64; time: (T,) int64 paste index of a row, -1 for the destination's.
        touched: (T,) bool: a later paste cleared some of the row's visible pixels.
        crowd: (C, H, W) bool crowd regions (a copy: pastes cover them).
        keypoints: (T, K, 3) float32, or None when the destination has none.
        placed: ``(row, window, mask)`` of every placed paste, window ``(wx0, wy0, wx1, wy1)``, mask (wh, ww) bool.
        n0: the destination's instances; row: rows in use; skipped: pastes that left nothing on the image.
    """

    image: np.ndarray
    vis: np.ndarray
    amodal: np.ndarray | None
    dest_amodal: np.ndarray
    targets: Targets
    boxes: np.ndarray
    labels: np.ndarray
    ann_ids: np.ndarray
    time: np.ndarray
    touched: np.ndarray
    crowd: np.ndarray
    keypoints: np.ndarray | None
    n0: int
    row: int
    skipped: int = 0
    placed: list[tuple[int, tuple[int, int, int, int], np.ndarray]] = field(default_factory=list)

    @classmethod
    def start(cls, destination: Sample, num_pastes: int, targets: Targets) -> "PasteLayers":
        """The destination's instances in rows ``[0, n0)``, room for ``num_pastes`` more (the inputs are copied);
        only the stacks ``targets`` needs are allocated."""
        H, W = destination.height, destination.width
        n0 = len(destination)
        total = n0 + num_pastes
        vis = np.zeros((total, H, W), dtype=bool)
        vis[:n0] = destination.masks
        need = targets.amodal_stack or targets.amodal_boxes
        dest_amodal = destination.amodal_or_visible() if need else destination.masks
        amodal = None
        if targets.amodal_stack:
            amodal = np.zeros((total, H, W), dtype=bool)
            amodal[:n0] = dest_amodal
        boxes = np.zeros((total, 4), dtype=np.int64)
        boxes[:n0] = np.asarray(destination.boxes, dtype=np.int64)
        labels = np.zeros(total, dtype=np.int64)
        labels[:n0] = destination.labels
        ann_ids = np.full(total, -1, dtype=np.int64)
        ann_ids[:n0] = destination.ann_ids
        kps = None
        if destination.keypoints is not None and "keypoints" in targets.names:
            kps = np.zeros((total,) + destination.keypoints.shape[1:], dtype=np.float32)
            kps[:n0] = destination.keypoints
        return cls(image=destination.image.copy(), vis=vis, amodal=amodal, dest_amodal=dest_amodal, targets=targets,
                   boxes=boxes, labels=labels, ann_ids=ann_ids, time=np.full(total, -1, dtype=np.int64),
                   touched=np.zeros(total, dtype=bool), crowd=destination.crowd_masks.copy(), keypoints=kps, n0=n0,
                   row=n0)


def paste_window(op: PasteOp, height: int, width: int) -> tuple[int, int, int, int]:
    """Where a paste lands: its canvas ``offset + [0, out_w) x [0, out_h)`` clipped to the ``width x height``
    image, as ``(wx0, wy0, wx1, wy1)`` (exclusive end). Empty (``wx1 <= wx0 or wy1 <= wy0``) when the canvas lies
    outside the image: the paste is skipped."""
    g = op.geometry
    ox, oy = op.offset
    return max(ox, 0), max(oy, 0), min(ox + g.out_w, width), min(oy + g.out_h, height)


def jitter_crop(src: Sample, op: PasteOp) -> tuple[np.ndarray, np.ndarray]:
    """Stage "jitter": the paste's crop ``src_box`` of the source, image jitter applied (views when there is none).

    Returns ``(pixels (h, w, 3) uint8, mask (h, w) bool)`` of the source instance ``op.instance``.
    """
    x0, y0, x1, y1 = op.src_box
    crop_img = src.image[y0:y1, x0:x1]
    crop_mask = src.masks[op.instance, y0:y1, x0:x1]
    if op.jitter is not None:
        crop_img = jitter_image(crop_img, op.jitter)
    return crop_img, crop_mask


def warp_paste(src: Sample, op: PasteOp, window: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Stages "jitter" then "warp" of one paste: its (wh, ww) bool mask and (wh, ww, 3) uint8 pixels on the
    non-empty destination ``window`` (pixels only defined where the mask is set)."""
    crop_img, crop_mask = jitter_crop(src, op)
    wx0, wy0, wx1, wy1 = window
    ox, oy = op.offset
    return warp_crop(crop_img, crop_mask, op.geometry, wx0 - ox, wy0 - oy, wx1 - wx0, wy1 - wy0)


def paste_alpha(mask: np.ndarray, sigma: float, window: tuple[int, int, int, int], height: int,
                width: int) -> np.ndarray:
    """Stage "feather": (wh, ww) int32 alpha in [0, 4096] of a paste's window mask, replicated (not feathered) on
    the sides where the window meets the ``width x height`` image's border (``feather_alpha``)."""
    wx0, wy0, wx1, wy1 = window
    return feather_alpha(mask, sigma, (wy0 == 0, wy1 == height, wx0 == 0, wx1 == width))


def composite(image: np.ndarray, window: tuple[int, int, int, int], mask: np.ndarray, pix: np.ndarray,
              alpha: np.ndarray | None) -> None:
    """Stage "composite", in place on the (H, W, 3) uint8 ``image``: inside ``window``, where ``mask`` (wh, ww)
    bool is set, ``pix`` (wh, ww, 3) uint8 replaces the image (``alpha`` None) or is mixed with it by ``alpha``
    (wh, ww) int32 in Q12, rounded half up. Evaluated by the compiled CPU loop when it is available
    (``cpu_loops``; the same bits), else by ``composite_numpy``."""
    fast = cpu_loops()
    if fast is None or not fast.composite(image, window, mask, pix, alpha):
        composite_numpy(image, window, mask, pix, alpha)


def composite_numpy(image: np.ndarray, window: tuple[int, int, int, int], mask: np.ndarray, pix: np.ndarray,
                    alpha: np.ndarray | None) -> None:
    """``composite`` in NumPy: the oracle of the compiled loop and its fallback (same arguments, in place)."""
    wx0, wy0, wx1, wy1 = window
    region = image[wy0:wy1, wx0:wx1]
    if alpha is None:
        np.copyto(region, pix, where=mask[..., None])
        return
    a = alpha[..., None]
    mixed = pix.astype(np.int32) * a + region.astype(np.int32) * (ALPHA_ONE - a) + ALPHA_ONE // 2
    region[mask] = (mixed >> ALPHA_BITS).astype(np.uint8)[mask]


def occlude_keypoints(kp: np.ndarray, window: tuple[int, int, int, int], mask: np.ndarray, height: int,
                      width: int) -> None:
    """Visible points (v=2) of one instance's (K, 3) float32 keypoints under a paste's window ``mask`` become
    v=1 (hidden but labelled), in place."""
    vis = kp[:, 2] == 2
    if not vis.any():
        return
    wx0, wy0, wx1, wy1 = window
    # A point exactly on the right or bottom edge (x == W) lies on the last pixel: clamp, never IndexError.
    px = np.clip(np.floor(kp[:, 0]).astype(np.int64), 0, width - 1)
    py = np.clip(np.floor(kp[:, 1]).astype(np.int64), 0, height - 1)
    idx = np.flatnonzero(vis & (px >= wx0) & (px < wx1) & (py >= wy0) & (py < wy1))
    if idx.size:
        under = mask[py[idx] - wy0, px[idx] - wx0]
        kp[idx[under], 2] = 1


def occlude(layers: PasteLayers, window: tuple[int, int, int, int], mask: np.ndarray) -> None:
    """Stage "occlusion", in place: every row so far and every crowd region loses the pixels a paste's (wh, ww)
    bool ``mask`` covers in ``window``; rows that lose some are ``touched``; visible keypoints under it are hidden.
    """
    H, W = layers.image.shape[:2]
    wx0, wy0, wx1, wy1 = window
    not_m = ~mask
    for j in range(layers.row):
        if layers.keypoints is not None:  # keypoints may lie outside their instance's box: test them all
            occlude_keypoints(layers.keypoints[j], window, mask, H, W)
        bx0, by0, bx1, by1 = layers.boxes[j]
        if bx1 <= wx0 or bx0 >= wx1 or by1 <= wy0 or by0 >= wy1:
            continue
        vj = layers.vis[j, wy0:wy1, wx0:wx1]
        before = np.count_nonzero(vj)
        vj &= not_m
        if np.count_nonzero(vj) != before:
            layers.touched[j] = True
    if len(layers.crowd):
        layers.crowd[:, wy0:wy1, wx0:wx1] &= not_m


def paste_keypoints(kp: np.ndarray, op: PasteOp, flip_index: tuple[int, ...] | None, height: int,
                    width: int) -> np.ndarray:
    """Keypoints (K, 3) float32 of the instance ``op`` pastes, from its source keypoints ``kp`` (K, 3): through
    crop, flip (left/right swap by ``flip_index``), affine and placement; labelled points that leave the
    ``width x height`` destination become ``(0, 0, 0)`` (``keypoints.map_paste_keypoints`` with one paste)."""
    order = paste_order(op.flip, flip_index, kp.shape[0])
    return map_paste_keypoints(kp[None], np.array([op.geometry.fwd], dtype=np.float64),
                               np.array([op.src_box[:2]], dtype=np.int64), np.array([op.offset], dtype=np.int64),
                               order[None], np.array([[width, height]], dtype=np.int64))[0]


def place(layers: PasteLayers, plan: PastePlan, t: int, src: Sample, window: tuple[int, int, int, int],
          mask: np.ndarray) -> None:
    """The next row of ``layers`` becomes the instance paste ``t`` placed in ``window`` with (wh, ww) bool
    ``mask``: its masks, box, label, ann_id, paste time and keypoints."""
    op = plan.pastes[t]
    wx0, wy0, wx1, wy1 = window
    r = layers.row
    layers.vis[r, wy0:wy1, wx0:wx1] = mask
    if layers.amodal is not None:
        layers.amodal[r, wy0:wy1, wx0:wx1] = mask
    layers.boxes[r] = tight_box(mask) + (wx0, wy0, wx0, wy0)
    layers.labels[r] = op.label
    layers.ann_ids[r] = src.ann_ids[op.instance]
    layers.time[r] = t
    kps = layers.keypoints
    if kps is not None and src.keypoints is not None:
        check_keypoint_shape(src.file_name, src.keypoints.shape[1:], kps.shape[1:])
        H, W = layers.image.shape[:2]
        kps[r] = paste_keypoints(src.keypoints[op.instance], op, plan.flip_index, H, W)
    layers.placed.append((r, window, mask))
    layers.row += 1


def apply_numpy(plan: PastePlan, destination: Sample, sources: Sequence[Sample | None],
                targets: Targets | None = None) -> Sample:
    """Apply a plan to a destination sample (spec §2, §4.2, §4.3), NumPy reference.

    Args:
        plan: from ``sample_plan``; ``plan.height/width`` must match the destination.
        destination: the sample pasted onto (not modified). Its ``boxes`` must be the tight boxes of its
            ``masks``, as for every ``Sample`` made by ``Sample.from_instances`` or by ``apply``.
        sources: one entry per ``plan.basket`` position (entries the plan does not use may be None); their
            image, visible masks, ann_ids (and keypoints, when requested) are read.
        targets: the optional outputs wanted (``ocp_dali.targets``), at most those the destination carries;
            None: the destination's (all, for a loaded sample). The others are neither computed nor allocated.

    Returns:
        A new ``Sample`` (or ``destination`` itself when the plan pastes nothing and ``targets`` are its own):
        existing instances that survive, in their order, then the pasted ones in paste order, with the requested
        occlusion targets (``Sample.targets``).
    """
    targets = destination.targets if targets is None else targets
    if not plan.pastes:
        return destination.restrict(targets)
    if not targets.names <= destination.targets.names:
        destination.restrict(targets)  # raises: names what is missing
    plan.check(destination, sources)
    H, W = destination.height, destination.width
    layers = PasteLayers.start(destination, len(plan.pastes), targets)
    for t, op in enumerate(plan.pastes):
        src = sources[op.source]
        window = paste_window(op, H, W)
        wx0, wy0, wx1, wy1 = window
        if wx1 <= wx0 or wy1 <= wy0:
            layers.skipped += 1
            continue
        mask, pix = warp_paste(src, op, window)
        if not mask.any():
            layers.skipped += 1
            continue
        alpha = paste_alpha(mask, plan.blend_sigma, window, H, W) if plan.blend_sigma > 0 else None
        composite(layers.image, window, mask, pix, alpha)
        occlude(layers, window, mask)
        place(layers, plan, t, src, window, mask)
    return emit(destination, layers, keep_rule(plan, destination, layers))


def _tight_box_in(mask: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Tight box of ``mask`` searched only inside ``box`` (which must contain all its pixels)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    b = tight_box(mask[y0:y1, x0:x1])
    return b + (x0, y0, x0, y0) if b[2] > b[0] else b


def _pasted_amodal_box(layers: PasteLayers, j: int) -> np.ndarray:
    """Tight (4,) int64 box of pasted row ``j``'s amodal mask: that of its placed mask, which is its row box."""
    return tight_box(layers.amodal[j]) if layers.amodal is not None else layers.boxes[j].copy()


def keep_rule(plan: PastePlan, destination: Sample, layers: PasteLayers) -> np.ndarray:
    """Stage "keep": which of the ``layers.row`` rows survive, (row,) bool.

    OC&P: an instance a paste touched is dropped iff its remaining tight box width or height is
    ``<= min_size_occ * sqrt(H*W)``. Evaluating it once at the end is the same as after every paste, because a
    mask only loses pixels, so its box only shrinks. Simple mode (mmdet ``CopyPaste``): kept iff the box moved by
    at most ``bbox_occluded_thr`` on every side or more than ``mask_occluded_thr`` pixels remain. Either way an
    instance with an empty visible mask is dropped.
    """
    n0, H, W = layers.n0, destination.height, destination.width
    keep = np.ones(layers.row, dtype=bool)
    thr = plan.min_size_occ * math.sqrt(H * W)
    for j in np.flatnonzero(layers.touched[:layers.row]):
        b = tight_box(layers.vis[j])  # (touched instances only: a few per sample)
        bw, bh = b[2] - b[0], b[3] - b[1]
        if bw <= 0 or bh <= 0:
            keep[j] = False
        elif plan.mode == "simple":
            before = np.asarray(destination.boxes[j], dtype=np.float64) if j < n0 else _pasted_amodal_box(layers, j)
            moved_little = bool(np.all(np.abs(b - before) <= plan.bbox_occluded_thr))
            keep[j] = moved_little or int(layers.vis[j].sum()) > plan.mask_occluded_thr
        else:
            keep[j] = not (bw <= thr or bh <= thr)
    return keep


def amodal_boxes(destination: Sample, layers: PasteLayers) -> np.ndarray:
    """(row, 4) int64 xyxy boxes that hold each row's amodal mask: the destination's tight amodal boxes, then each
    placed paste's box (a pasted amodal mask is its placed mask)."""
    if layers.dest_amodal is destination.masks:
        boxes_in = np.asarray(destination.boxes, dtype=np.int64)
    else:
        boxes_in = tight_boxes(layers.dest_amodal)
    if layers.row > layers.n0:
        return np.concatenate([boxes_in, layers.boxes[layers.n0:layers.row]])
    return boxes_in


def occlusion_stats(layers: PasteLayers, rows: np.ndarray, vis: np.ndarray, amodal: np.ndarray | None,
                    amodal_box: np.ndarray | None, rate: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Stage "occlusion stats" of the kept ``rows`` (n,): ``(boxes (n, 4) int64 tight xyxy of the visible masks,
    occlusion_rate (n,) float32 = 1 - visible / amodal area)``.

    ``vis``, ``amodal``: (n, H, W) bool masks of those rows (``amodal`` None without the stack: the areas are read
    from ``layers.dest_amodal`` and the placed masks, the same pixels); ``amodal_box``: (n, 4) int64 boxes holding
    the amodal masks. ``rate`` False: boxes only (the rates are zeros; ``amodal_box`` may be None). Confined to
    boxes: full-image passes over N masks dominate the cost at 1024^2 otherwise; a mask only loses pixels, so its
    previous box bounds where its new box can be.
    """
    n = len(rows)
    boxes = np.zeros((n, 4), dtype=np.int64)
    vis_area = np.zeros(n, dtype=np.int64)
    amodal_area = np.zeros(n, dtype=np.int64)
    placed = {r: m for r, _, m in layers.placed} if amodal is None else {}
    for i, r in enumerate(rows):
        boxes[i] = _tight_box_in(vis[i], layers.boxes[r]) if layers.touched[r] else layers.boxes[r]
        if not rate:
            continue
        bx0, by0, bx1, by1 = boxes[i]
        vis_area[i] = np.count_nonzero(vis[i, by0:by1, bx0:bx1])
        ax0, ay0, ax1, ay1 = amodal_box[i]
        if amodal is not None:
            amodal_area[i] = np.count_nonzero(amodal[i, ay0:ay1, ax0:ax1])
        elif r in placed:  # a pasted amodal mask is its placed mask
            amodal_area[i] = np.count_nonzero(placed[r])
        else:
            amodal_area[i] = np.count_nonzero(layers.dest_amodal[r, ay0:ay1, ax0:ax1])
    return boxes, (1.0 - vis_area / np.maximum(amodal_area, 1)).astype(np.float32)


def carries_targets(pasted: np.ndarray, occlusion_rate: np.ndarray) -> bool:
    """Whether a destination's occluder masks and order matrix mean anything: only a sample with something pasted
    or occluded has occluders (the others' are ignored, and never read)."""
    return bool(np.any(pasted) or np.any(occlusion_rate))


def occluder_masks(destination: Sample, layers: PasteLayers, rows: np.ndarray,
                   amodal_box: np.ndarray) -> np.ndarray:
    """(n, H, W) bool occluder masks of the kept ``rows`` (n,): what later pastes put over each instance inside
    its amodal box ``amodal_box`` (n, 4), on top of the destination's own occluders."""
    n = len(rows)
    H, W = destination.height, destination.width
    occluder = np.zeros((n, H, W), dtype=bool)
    is_existing = rows < layers.n0
    ex_rows = rows[is_existing]
    if ex_rows.size and carries_targets(destination.pasted, destination.occlusion_rate):
        occluder[is_existing] = destination.occluder_masks[ex_rows]
    time_o = layers.time[rows]
    for i in range(n):
        bx0, by0, bx1, by1 = amodal_box[i]
        for r, (wx0, wy0, wx1, wy1), m in layers.placed:
            if layers.time[r] <= time_o[i]:
                continue
            ix0, iy0, ix1, iy1 = max(bx0, wx0), max(by0, wy0), min(bx1, wx1), min(by1, wy1)
            if ix1 > ix0 and iy1 > iy0:
                occluder[i, iy0:iy1, ix0:ix1] |= m[iy0 - wy0:iy1 - wy0, ix0 - wx0:ix1 - wx0]
    return occluder


def order_matrix(destination: Sample, layers: PasteLayers, rows: np.ndarray, amodal: np.ndarray,
                 amodal_box: np.ndarray) -> np.ndarray:
    """(n, n) bool ``order[a, b]``: kept row ``a`` was pasted after ``b`` and their amodal masks ``amodal``
    (n, H, W) bool overlap (inside the boxes ``amodal_box`` (n, 4)); the destination's own order carried over."""
    n = len(rows)
    order = np.zeros((n, n), dtype=bool)
    is_existing = rows < layers.n0
    ex_rows = rows[is_existing]
    if ex_rows.size and carries_targets(destination.pasted, destination.occlusion_rate):
        order[np.ix_(is_existing, is_existing)] = destination.order[np.ix_(ex_rows, ex_rows)]
    time_o = layers.time[rows]
    for a in range(n):
        if time_o[a] < 0:
            continue
        ax0, ay0, ax1, ay1 = amodal_box[a]  # a pasted instance's amodal mask lies inside this box
        for b in range(n):
            if time_o[b] >= time_o[a]:
                continue
            bx0, by0, bx1, by1 = amodal_box[b]
            ix0, iy0, ix1, iy1 = max(ax0, bx0), max(ay0, by0), min(ax1, bx1), min(ay1, by1)
            if ix1 > ix0 and iy1 > iy0:
                order[a, b] = bool((amodal[a, iy0:iy1, ix0:ix1] & amodal[b, iy0:iy1, ix0:ix1]).any())
    return order


def emit(destination: Sample, layers: PasteLayers, keep: np.ndarray) -> Sample:
    """Stage "emit": the output ``Sample`` of the kept rows (``keep`` (row,) bool) with the requested targets
    (``layers.targets``; the others ``targets.absent``) and the counts in ``info``."""
    rows = np.flatnonzero(keep)
    n0, row, want = layers.n0, layers.row, layers.targets.names
    all_kept = len(rows) == row
    vis = layers.vis[:row] if all_kept else layers.vis[rows]
    amodal = None
    if layers.amodal is not None:
        amodal = layers.amodal[:row] if all_kept else layers.amodal[rows]
    amodal_box = amodal_boxes(destination, layers)[rows] if layers.targets.amodal_boxes else None
    boxes, occlusion_rate = occlusion_stats(layers, rows, vis, amodal, amodal_box, "occlusion_rate" in want)
    crowd = layers.crowd
    crowd_keep = crowd.reshape(len(crowd), -1).any(axis=1) if len(crowd) else np.zeros(0, dtype=bool)
    info = dict(  # on top of the destination's own counts (a crop before the paste: ``dropped_by_crop``)
        destination.info,
        pasted=row - n0,
        skipped=layers.skipped,
        dropped_existing=int(n0 - keep[:n0].sum()),
        dropped_pasted=int(row - n0 - keep[n0:row].sum()),
        dropped_crowd=int(len(crowd) - crowd_keep.sum()),
    )
    made = dict(  # each built only when requested
        amodal_masks=lambda: amodal,
        occlusion_rate=lambda: occlusion_rate,
        occluder_masks=lambda: occluder_masks(destination, layers, rows, amodal_box),
        order=lambda: order_matrix(destination, layers, rows, amodal, amodal_box),
        keypoints=lambda: None if layers.keypoints is None else layers.keypoints[rows],
    )
    H, W = destination.height, destination.width
    return Sample(
        image=layers.image,
        masks=vis,
        boxes=boxes.astype(np.float32),
        labels=layers.labels[rows],
        pasted=layers.time[rows] >= 0,
        ann_ids=layers.ann_ids[rows],
        crowd_masks=crowd[crowd_keep],
        image_id=destination.image_id,
        file_name=destination.file_name,
        info=info,
        targets=layers.targets,
        **{k: make() if k in want else absent(k, np, H, W) for k, make in made.items()},
    )
