"""Spec §5 invariants (and the consistency of the §4.2 targets), checked on one output of ``apply``.

Independent of the implementation: everything here is recomputed from the output arrays, the input sample, the
sources and the plan's numbers.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from ocp_dali.plan import PastePlan
from ocp_dali.sample import Sample


def tight(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def fingerprint(sample: Sample) -> str:
    """Hash of every array of a sample (to prove inputs are not mutated and outputs are reproducible)."""
    h = hashlib.sha256()
    for k, v in sample.arrays().items():
        h.update(k.encode())
        if v is not None:
            a = np.ascontiguousarray(v)
            h.update(str(a.shape).encode() + str(a.dtype).encode())
            h.update(a.tobytes())
    return h.hexdigest()


def check_invariants(out: Sample, dst: Sample, plan: PastePlan, sources: Sequence[Sample | None]) -> dict[str, int]:
    """Assert every invariant; return a few counts for the caller's statistics."""
    H, W = dst.height, dst.width
    n = len(out)
    # shapes, dtypes, lengths
    assert out.image.shape == dst.image.shape and out.image.dtype == np.uint8
    for name, arr in (("masks", out.masks), ("amodal_masks", out.amodal_masks), ("occluder_masks", out.occluder_masks)):
        assert arr.shape == (n, H, W) and arr.dtype == bool, (name, arr.shape, arr.dtype)
    assert out.boxes.shape == (n, 4) and out.boxes.dtype == np.float32
    assert out.labels.shape == (n,) and out.labels.dtype == np.int64
    assert out.occlusion_rate.shape == (n,) and out.pasted.shape == (n,) and out.ann_ids.shape == (n,)
    assert out.order.shape == (n, n) and out.order.dtype == bool
    if dst.keypoints is None:
        assert out.keypoints is None
    else:
        assert out.keypoints is not None and out.keypoints.shape == (n,) + dst.keypoints.shape[1:]

    if not plan.pastes:
        assert out is dst, "an empty plan must return the input itself"
        return {"pasted": 0, "exact_pixel_check": 1}

    # every instance: non-empty visible mask, box == tight box of that mask
    for i in range(n):
        assert out.masks[i].any(), f"instance {i} has an empty visible mask"
        assert out.boxes[i].tolist() == tight(out.masks[i]), (i, out.boxes[i], tight(out.masks[i]))
        assert not (out.masks[i] & ~out.amodal_masks[i]).any(), "visible must lie inside amodal"

    # existing instances first (a subsequence of the input, unchanged amodal), then pasted ones in paste order
    pasted = out.pasted
    n_ex = int((~pasted).sum())
    assert not pasted[:n_ex].any() and pasted[n_ex:].all(), "existing instances must precede pasted ones"
    in_ids = list(dst.ann_ids)
    pos = [in_ids.index(a) for a in out.ann_ids[:n_ex]] if n_ex else []
    assert pos == sorted(pos) and len(set(pos)) == len(pos)
    for i, p in enumerate(pos):
        assert out.labels[i] == dst.labels[p]
        assert np.array_equal(out.amodal_masks[i], dst.amodal_masks[p])
        assert not (out.masks[i] & ~dst.masks[p]).any(), "an existing instance cannot gain pixels"
    # pasted labels come from their source instances, in plan order
    src_labels = [int(sources[op.source].labels[op.instance]) for op in plan.pastes]
    src_ids = [int(sources[op.source].ann_ids[op.instance]) for op in plan.pastes]
    out_pairs = list(zip(out.labels[n_ex:].tolist(), out.ann_ids[n_ex:].tolist()))
    it = iter(zip(src_labels, src_ids))
    assert all(pair in it for pair in out_pairs), "pasted instances must come from the plan, in order"
    assert len(out_pairs) == out.info["pasted"] - out.info["dropped_pasted"]
    assert n_ex == len(dst) - out.info["dropped_existing"]

    # a pasted instance is not overlapped by anything pasted after it, and nothing visible of an earlier instance
    # lies under a later paste's amodal mask (input annotations may overlap each other: that is not checked)
    for i in range(n):
        for j in range(max(i + 1, n_ex), n):
            assert not (out.masks[i] & out.amodal_masks[j]).any(), f"instance {i} visible under later paste {j}"

    # pixels: outside the visible pasted masks nothing changes (exact whenever no pasted instance was dropped:
    # the remnant of a dropped paste keeps its pixels but loses its label)
    changed = (out.image != dst.image).any(axis=2)
    pasted_vis = out.masks[n_ex:].any(axis=0) if n > n_ex else np.zeros((H, W), dtype=bool)
    exact = out.info["dropped_pasted"] == 0
    if exact:
        assert not (changed & ~pasted_vis).any(), "pixels changed outside the visible pasted masks"
    existing_vis = out.masks[:n_ex].any(axis=0) if n_ex else np.zeros((H, W), dtype=bool)
    assert not (changed & existing_vis).any(), "an existing instance's visible pixels changed"

    # occlusion targets
    vis_area = out.masks.reshape(n, H * W).sum(1)
    am_area = out.amodal_masks.reshape(n, H * W).sum(1)
    np.testing.assert_allclose(out.occlusion_rate, 1 - vis_area / np.maximum(am_area, 1), atol=1e-6)
    assert ((out.occlusion_rate >= 0) & (out.occlusion_rate <= 1)).all()
    for i in range(n):
        bx0, by0, bx1, by1 = tight(out.amodal_masks[i])
        occ = out.occluder_masks[i]
        inside = np.zeros((H, W), dtype=bool)
        inside[by0:by1, bx0:bx1] = True
        assert not (occ & ~inside).any(), "occluder mask outside the instance's amodal box"
        hidden = out.amodal_masks[i] & ~out.masks[i]
        if i >= n_ex or not dst.occluder_masks.size:
            assert not (hidden & ~occ).any(), "every hidden pixel must be covered by an occluder"
        if i >= n_ex:
            assert not (occ & out.masks[i]).any(), "a pasted instance's occluders cannot cover its visible part"
    order = out.order
    assert not (order & order.T).any(), "occlusion order must be antisymmetric"
    assert not order[:n_ex, :].any() or dst.order.any(), "existing instances are behind every paste"
    for i in range(n_ex, n):
        for j in range(n):
            later = j < i
            overlap = bool((out.amodal_masks[i] & out.amodal_masks[j]).any())
            assert order[i, j] == (later and overlap), f"order[{i},{j}] wrong"

    # keypoints: labelled points inside the image; a visible point is not under a later kept paste
    if out.keypoints is not None:
        kp = out.keypoints
        assert set(np.unique(kp[..., 2]).tolist()) <= {0.0, 1.0, 2.0}
        lab = kp[..., 2] > 0
        assert (kp[..., 0][lab] >= 0).all() and (kp[..., 0][lab] <= W).all()
        assert (kp[..., 1][lab] >= 0).all() and (kp[..., 1][lab] <= H).all()
        assert (kp[..., :2][~lab] == 0).all(), "unlabelled points are (0, 0, 0)"
        for i in range(n):
            for kx, ky, v in kp[i]:
                if v != 2:
                    continue
                px, py = min(int(kx), W - 1), min(int(ky), H - 1)
                for j in range(max(i + 1, n_ex), n):
                    assert not out.amodal_masks[j][py, px], f"visible keypoint of {i} under later paste {j}"
    # crowd regions: never pasted, covered by pastes
    for c in out.crowd_masks:
        assert not (c & pasted_vis).any(), "a crowd region lies under a visible paste"
    return {"pasted": int(pasted.sum()), "exact_pixel_check": int(exact)}
