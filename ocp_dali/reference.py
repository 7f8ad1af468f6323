"""NumPy reference of ``apply``: the oracle every other backend is compared with, and the CPU path.

Pure and deterministic: ``apply_numpy(plan, destination, sources)`` reads its inputs and never writes them. It works
on crops and paste windows, never on full-size copies of the sources. Integer arithmetic throughout the pixel path
(fixed-point sampling, integer bilinear weights, integer Gaussian alpha) so that the CUDA kernels can match it
exactly.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ocp_dali.geometry import Q_BITS, Q_HALF, PasteGeometry, transform_points
from ocp_dali.masks import tight_box, tight_boxes
from ocp_dali.photometric import jitter_image
from ocp_dali.plan import PastePlan
from ocp_dali.sample import Sample
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


def warp_crop(
    crop_img: np.ndarray, crop_mask: np.ndarray, geom: PasteGeometry, x0: int, y0: int, ww: int, wh: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sample the canvas rectangle ``[x0, x0+ww) x [y0, y0+wh)`` of a transformed crop.

    ``crop_img`` (h, w, 3) uint8, ``crop_mask`` (h, w) bool. Returns ``(mask (wh, ww) bool, pixels (wh, ww, 3)
    uint8)``: masks nearest (outside the crop: False), pixels integer bilinear with clamped edges; pixels are only
    defined where the mask is set. The identity geometry returns views of the crop.
    """
    if geom.identity:
        return crop_mask[y0:y0 + wh, x0:x0 + ww], crop_img[y0:y0 + wh, x0:x0 + ww]
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


def _transform_keypoints(kp: np.ndarray, op, flip_index, h: int, w: int) -> np.ndarray:
    """Keypoints (K, 3) of a source instance carried through crop, flip (with left/right swap), affine and
    placement. Labelled points that leave the canvas become ``(0, 0, 0)`` (COCO: not labelled)."""
    out = np.zeros_like(kp, dtype=np.float32)
    pts = kp.astype(np.float64)
    if op.flip:
        if flip_index is None:
            raise ValueError("a flipped paste carries keypoints but the plan has no keypoint flip_index")
        pts = pts[list(flip_index)]
    x0, y0 = op.src_box[:2]
    xy = transform_points(op.geometry.fwd, pts[:, :2] - (x0, y0)) + op.offset
    labelled = pts[:, 2] > 0
    inside = (xy[:, 0] >= 0) & (xy[:, 0] <= w) & (xy[:, 1] >= 0) & (xy[:, 1] <= h)
    keep = labelled & inside
    out[keep, :2] = xy[keep]
    out[keep, 2] = pts[keep, 2]
    return out


def _occlude_keypoints(kp: np.ndarray, window: tuple[int, int, int, int], mask: np.ndarray, h: int, w: int) -> None:
    """Visible points (v=2) of one instance under a paste's window mask become v=1 (in place on ``kp`` (K, 3))."""
    vis = kp[:, 2] == 2
    if not vis.any():
        return
    wy0, wy1, wx0, wx1 = window
    # A point exactly on the right or bottom edge (x == W) lies on the last pixel: clamp, never IndexError.
    px = np.clip(np.floor(kp[:, 0]).astype(np.int64), 0, w - 1)
    py = np.clip(np.floor(kp[:, 1]).astype(np.int64), 0, h - 1)
    idx = np.flatnonzero(vis & (px >= wx0) & (px < wx1) & (py >= wy0) & (py < wy1))
    if idx.size:
        under = mask[py[idx] - wy0, px[idx] - wx0]
        kp[idx[under], 2] = 1


def apply_numpy(plan: PastePlan, destination: Sample, sources: Sequence[Sample | None]) -> Sample:
    """Apply a plan to a destination sample (spec §2, §4.2, §4.3), NumPy reference.

    Args:
        plan: from ``sample_plan``; ``plan.height/width`` must match the destination.
        destination: the sample pasted onto (not modified). Its ``boxes`` must be the tight boxes of its
            ``masks``, as for every ``Sample`` made by ``Sample.from_instances`` or by ``apply``.
        sources: one entry per ``plan.basket`` position (entries the plan does not use may be None).

    Returns:
        A new ``Sample`` (or ``destination`` itself when the plan pastes nothing): existing instances that survive,
        in their order, then the pasted ones in paste order, with all occlusion targets.
    """
    if not plan.pastes:
        return destination
    H, W = destination.height, destination.width
    if (plan.height, plan.width) != (H, W):
        raise ValueError(
            f"{destination.file_name or 'destination'}: plan made for {plan.width}x{plan.height}, image is {W}x{H}"
        )
    n0, k = len(destination), len(plan.pastes)
    total = n0 + k
    img = destination.image.copy()
    vis = np.zeros((total, H, W), dtype=bool)
    vis[:n0] = destination.masks
    amodal = np.zeros((total, H, W), dtype=bool)
    amodal[:n0] = destination.amodal_masks
    # current boxes only ever shrink; a stale box is a safe superset for the "does the paste touch it" test
    boxes_cur = np.zeros((total, 4), dtype=np.int64)
    boxes_cur[:n0] = np.asarray(destination.boxes, dtype=np.int64)
    labels = np.zeros(total, dtype=np.int64)
    labels[:n0] = destination.labels
    ann_ids = np.full(total, -1, dtype=np.int64)
    ann_ids[:n0] = destination.ann_ids
    time = np.full(total, -1, dtype=np.int64)
    touched = np.zeros(total, dtype=bool)
    crowd = destination.crowd_masks.copy()
    kps = None
    if destination.keypoints is not None:
        kps = np.zeros((total,) + destination.keypoints.shape[1:], dtype=np.float32)
        kps[:n0] = destination.keypoints
    placed: list[tuple[int, tuple[int, int, int, int], np.ndarray]] = []
    skipped = 0
    row = n0
    for t, op in enumerate(plan.pastes):
        src = sources[op.source] if op.source < len(sources) else None
        if src is None:
            raise ValueError(f"plan paste {t} reads basket position {op.source}, but no source sample was given")
        if not 0 <= op.instance < len(src):
            raise ValueError(f"{src.file_name or 'source'}: plan names instance {op.instance}, it has {len(src)}")
        x0, y0, x1, y1 = op.src_box
        crop_img = src.image[y0:y1, x0:x1]
        crop_mask = src.masks[op.instance, y0:y1, x0:x1]
        if op.jitter is not None:
            crop_img = jitter_image(crop_img, op.jitter)
        g = op.geometry
        ox, oy = op.offset
        wx0, wy0 = max(ox, 0), max(oy, 0)
        wx1, wy1 = min(ox + g.out_w, W), min(oy + g.out_h, H)
        if wx1 <= wx0 or wy1 <= wy0:
            skipped += 1
            continue
        m, pix = warp_crop(crop_img, crop_mask, g, wx0 - ox, wy0 - oy, wx1 - wx0, wy1 - wy0)
        if not m.any():
            skipped += 1
            continue
        win = (slice(wy0, wy1), slice(wx0, wx1))
        region = img[win]
        if plan.blend_sigma > 0:
            alpha = feather_alpha(m, plan.blend_sigma, (wy0 == 0, wy1 == H, wx0 == 0, wx1 == W))[..., None]
            mixed = (pix.astype(np.int32) * alpha + region.astype(np.int32) * (ALPHA_ONE - alpha) + ALPHA_ONE // 2)
            region[m] = (mixed >> ALPHA_BITS).astype(np.uint8)[m]
        else:
            np.copyto(region, pix, where=m[..., None])
        window = (wy0, wy1, wx0, wx1)
        not_m = ~m
        for j in range(row):
            if kps is not None:  # keypoints may lie outside their instance's box: test them all
                _occlude_keypoints(kps[j], window, m, H, W)
            bx0, by0, bx1, by1 = boxes_cur[j]
            if bx1 <= wx0 or bx0 >= wx1 or by1 <= wy0 or by0 >= wy1:
                continue
            vj = vis[j, wy0:wy1, wx0:wx1]
            before = np.count_nonzero(vj)
            vj &= not_m
            if np.count_nonzero(vj) != before:
                touched[j] = True
        if len(crowd):
            crowd[:, wy0:wy1, wx0:wx1] &= ~m
        vis[row, wy0:wy1, wx0:wx1] = m
        amodal[row, wy0:wy1, wx0:wx1] = m
        boxes_cur[row] = tight_box(m) + (wx0, wy0, wx0, wy0)
        labels[row] = op.label
        ann_ids[row] = src.ann_ids[op.instance]
        time[row] = t
        if kps is not None:
            if src.keypoints is not None:
                if src.keypoints.shape[1:] != kps.shape[1:]:
                    raise ValueError(
                        f"{src.file_name}: source keypoints {src.keypoints.shape[1:]} do not match the "
                        f"destination's {kps.shape[1:]}"
                    )
                kps[row] = _transform_keypoints(src.keypoints[op.instance], op, plan.flip_index, H, W)
        placed.append((row, window, m))
        row += 1

    keep = _keep_rule(plan, destination, vis[:row], amodal[:row], touched[:row], H, W)
    rows = np.flatnonzero(keep)
    n_pasted_rows = row - n0
    dropped_existing = int(n0 - keep[:n0].sum())
    dropped_pasted = int(n_pasted_rows - keep[n0:row].sum())

    # Everything below is confined to boxes and paste windows: full-image passes over N masks dominate the cost
    # at 1024^2 otherwise. A mask only loses pixels, so its previous box bounds where its new box can be.
    all_kept = len(rows) == row
    vis_o = vis[:row] if all_kept else vis[rows]
    amodal_o = amodal[:row] if all_kept else amodal[rows]
    time_o = time[rows]
    n = len(rows)
    if destination.amodal_masks is destination.masks:
        amodal_boxes_in = np.asarray(destination.boxes, dtype=np.int64)
    else:
        amodal_boxes_in = tight_boxes(destination.amodal_masks)
    amodal_boxes_all = np.concatenate([amodal_boxes_in, boxes_cur[n0:row]]) if row > n0 else amodal_boxes_in
    amodal_boxes = amodal_boxes_all[rows]
    boxes = np.zeros((n, 4), dtype=np.int64)
    vis_area = np.zeros(n, dtype=np.int64)
    amodal_area = np.zeros(n, dtype=np.int64)
    for i, r in enumerate(rows):
        boxes[i] = _tight_box_in(vis_o[i], boxes_cur[r]) if touched[r] else boxes_cur[r]
        bx0, by0, bx1, by1 = boxes[i]
        vis_area[i] = np.count_nonzero(vis_o[i, by0:by1, bx0:bx1])
        ax0, ay0, ax1, ay1 = amodal_boxes[i]
        amodal_area[i] = np.count_nonzero(amodal_o[i, ay0:ay1, ax0:ax1])
    occlusion_rate = (1.0 - vis_area / np.maximum(amodal_area, 1)).astype(np.float32)

    occluder = np.zeros((n, H, W), dtype=bool)
    order = np.zeros((n, n), dtype=bool)
    is_existing = rows < n0
    ex_rows = rows[is_existing]
    # a sample with nothing pasted and no occlusion has no occluders: skip reading N empty masks
    if ex_rows.size and (destination.pasted.any() or destination.occlusion_rate.any()):
        occluder[is_existing] = destination.occluder_masks[ex_rows]
        order[np.ix_(is_existing, is_existing)] = destination.order[np.ix_(ex_rows, ex_rows)]
    for i in range(n):
        bx0, by0, bx1, by1 = amodal_boxes[i]
        for r, (wy0, wy1, wx0, wx1), m in placed:
            if time[r] <= time_o[i]:
                continue
            ix0, iy0, ix1, iy1 = max(bx0, wx0), max(by0, wy0), min(bx1, wx1), min(by1, wy1)
            if ix1 > ix0 and iy1 > iy0:
                occluder[i, iy0:iy1, ix0:ix1] |= m[iy0 - wy0:iy1 - wy0, ix0 - wx0:ix1 - wx0]
    for a in range(n):
        if time_o[a] < 0:
            continue
        ax0, ay0, ax1, ay1 = amodal_boxes[a]  # a pasted instance's amodal mask lies inside this box
        for b in range(n):
            if time_o[b] >= time_o[a]:
                continue
            bx0, by0, bx1, by1 = amodal_boxes[b]
            ix0, iy0, ix1, iy1 = max(ax0, bx0), max(ay0, by0), min(ax1, bx1), min(ay1, by1)
            if ix1 > ix0 and iy1 > iy0:
                order[a, b] = bool((amodal_o[a, iy0:iy1, ix0:ix1] & amodal_o[b, iy0:iy1, ix0:ix1]).any())

    crowd_keep = crowd.reshape(len(crowd), H * W).any(axis=1) if len(crowd) else np.zeros(0, dtype=bool)
    info = dict(
        pasted=n_pasted_rows,
        skipped=skipped,
        dropped_existing=dropped_existing,
        dropped_pasted=dropped_pasted,
        dropped_crowd=int(len(crowd) - crowd_keep.sum()),
    )
    return Sample(
        image=img,
        masks=vis_o,
        amodal_masks=amodal_o,
        boxes=boxes.astype(np.float32),
        labels=labels[rows],
        occlusion_rate=occlusion_rate,
        occluder_masks=occluder,
        order=order,
        keypoints=None if kps is None else kps[rows],
        pasted=time_o >= 0,
        ann_ids=ann_ids[rows],
        crowd_masks=crowd[crowd_keep],
        image_id=destination.image_id,
        file_name=destination.file_name,
        info=info,
    )


def _tight_box_in(mask: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Tight box of ``mask`` searched only inside ``box`` (which must contain all its pixels)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    b = tight_box(mask[y0:y1, x0:x1])
    return b + (x0, y0, x0, y0) if b[2] > b[0] else b


def _keep_rule(
    plan: PastePlan,
    destination: Sample,
    vis: np.ndarray,
    amodal: np.ndarray,
    touched: np.ndarray,
    H: int,
    W: int,
) -> np.ndarray:
    """Which instances survive (bool per row).

    OC&P: an instance a paste touched is dropped iff its remaining tight box width or height is
    ``<= min_size_occ * sqrt(H*W)``. Evaluating it once at the end is the same as after every paste, because a
    mask only loses pixels, so its box only shrinks. Simple mode (mmdet ``CopyPaste``): kept iff the box moved by
    at most ``bbox_occluded_thr`` on every side or more than ``mask_occluded_thr`` pixels remain. Either way an
    instance with an empty visible mask is dropped.
    """
    n0 = len(destination)
    keep = np.ones(len(vis), dtype=bool)
    thr = plan.min_size_occ * math.sqrt(H * W)
    for j in np.flatnonzero(touched):
        b = tight_box(vis[j])  # (touched instances only: a few per sample)
        bw, bh = b[2] - b[0], b[3] - b[1]
        if bw <= 0 or bh <= 0:
            keep[j] = False
        elif plan.mode == "simple":
            before = np.asarray(destination.boxes[j], dtype=np.float64) if j < n0 else tight_box(amodal[j])
            moved_little = bool(np.all(np.abs(b - before) <= plan.bbox_occluded_thr))
            keep[j] = moved_little or int(vis[j].sum()) > plan.mask_occluded_thr
        else:
            keep[j] = not (bw <= thr or bh <= thr)
    return keep
