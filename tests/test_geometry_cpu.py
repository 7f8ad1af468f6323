"""The compiled CPU loops (``kernels/geometry_cpu``) equal the NumPy reference bit for bit: the paste warp
(``warp_crop`` vs ``warp_crop_numpy``) and the LSJ (``resample_compiled`` vs ``resample_arrays``, ``sample_affine``
vs ``sample_affine_arrays``), on random scenes and on real images; and the NumPy fallback when they cannot be used.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import data_path
from scenes import random_mask, random_sample
from ocp_dali import CocoInstances, OCPConfig
from ocp_dali import reference as ref
from ocp_dali.augment import reference_sample
from ocp_dali.geometry import paste_geometry
from ocp_dali.kernels import geometry_cpu
from ocp_dali.lsj import (
    LSJParams, apply_lsj, resample_arrays, resample_compiled, sample_affine, sample_affine_arrays, sample_lsj)
from ocp_dali.sample import Sample

needs_loops = pytest.mark.skipif(geometry_cpu.loops() is None, reason="no C++ compiler: the NumPy path is used")
pytestmark = needs_loops


def assert_samples_equal(a: Sample, b: Sample) -> None:
    for name in ("image", "masks", "amodal_masks", "occluder_masks", "boxes", "labels", "occlusion_rate", "order",
                 "pasted", "ann_ids", "crowd_masks"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), name
    assert (a.keypoints is None) == (b.keypoints is None)
    if a.keypoints is not None:
        assert np.array_equal(a.keypoints, b.keypoints)
    assert a.info == b.info


# ---------------------------------------------------------------- paste warp


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), flip=st.booleans(), scale=st.floats(0.2, 3.0),
       angle=st.integers(-90, 90), strided=st.booleans())
def test_warp_crop_equals_numpy(seed, flip, scale, angle, strided):
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(1, 48, 2))
    big_img = rng.integers(0, 256, (h + 7, w + 5, 3), dtype=np.uint8)
    big_mask = np.zeros((3, h + 7, w + 5), dtype=bool)
    big_mask[1] = random_mask(rng, h + 7, w + 5)
    if strided:  # the crop of a source image and mask stack, as jitter_crop hands it over (views)
        img, mask = big_img[3:3 + h, 2:2 + w], big_mask[1, 3:3 + h, 2:2 + w]
    else:
        img, mask = np.ascontiguousarray(big_img[:h, :w]), np.ascontiguousarray(big_mask[1, :h, :w])
    geom = paste_geometry(w, h, flip, scale, angle)
    if geom.identity:
        return
    # windows inside the canvas, cut by the image border, and reaching beyond the canvas
    x0, y0 = (int(v) for v in rng.integers(-8, 8, 2))
    ww, wh = int(rng.integers(0, geom.out_w + 12)), int(rng.integers(0, geom.out_h + 12))
    m_fast, p_fast = ref.warp_crop(img, mask, geom, x0, y0, ww, wh)
    m_np, p_np = ref.warp_crop_numpy(img, mask, geom, x0, y0, ww, wh)
    assert m_fast.dtype == m_np.dtype and p_fast.dtype == p_np.dtype
    assert np.array_equal(m_fast, m_np) and np.array_equal(p_fast, p_np)


def test_warp_crop_is_compiled_when_available(monkeypatch):
    calls = []
    monkeypatch.setattr(geometry_cpu, "warp_crop", lambda *a: calls.append(a) or (None, None))
    geom = paste_geometry(4, 4, True)
    ref.warp_crop(np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), bool), geom, 0, 0, 4, 4)
    assert len(calls) == 1


# ---------------------------------------------------------------- LSJ


def lsj_sample(rng: np.random.Generator, h: int, w: int, n: int, alias_amodal: bool) -> Sample:
    """A random sample with every target an LSJ moves: amodal masks (their own, or the visible ones), occluders,
    crowd regions, keypoints."""
    s = random_sample(rng, h, w, n, keypoints=True, tag=1)
    if alias_amodal:
        return s
    amodal = s.masks | np.stack([random_mask(rng, h, w) for _ in range(n)]) if n else s.masks.copy()
    occl = amodal & ~s.masks
    info = dict(s.info or {})
    return Sample(image=s.image, masks=s.masks, amodal_masks=amodal, boxes=s.boxes, labels=s.labels,
                  occlusion_rate=s.occlusion_rate, occluder_masks=occl, order=s.order, keypoints=s.keypoints,
                  pasted=s.pasted, ann_ids=s.ann_ids, crowd_masks=s.crowd_masks, image_id=s.image_id,
                  file_name=s.file_name, info=info)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), lsj=st.booleans(), alias=st.booleans(), n=st.integers(0, 5),
       out_h=st.integers(1, 90), out_w=st.integers(1, 90))
def test_lsj_compiled_equals_arrays(seed, lsj, alias, n, out_h, out_w):
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(1, 64, 2))
    s = lsj_sample(rng, h, w, n, alias)
    p = sample_lsj(rng, h, w, (out_h, out_w), lsj=lsj, ratio_range=(0.1, 4.0))  # crops, flips, padding
    fast, slow = resample_compiled(geometry_cpu, s, p), resample_arrays(s, p)
    for name, a, b in zip(fast._fields, fast, slow):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), name


def test_apply_lsj_equals_the_array_path_and_keeps_aliases(monkeypatch):
    rng = np.random.default_rng(3)
    for alias in (True, False):
        s = lsj_sample(rng, 37, 53, 4, alias)
        p = sample_lsj(rng, 37, 53, (64, 48), ratio_range=(0.5, 3.0))
        fast = apply_lsj(s, p, (0, 2, 1, 4, 3))
        with monkeypatch.context() as m:
            m.setattr(ref, "cpu_loops", lambda: None)
            slow = apply_lsj(s, p, (0, 2, 1, 4, 3))
        assert_samples_equal(fast, slow)
        assert (fast.amodal_masks is fast.masks) == alias


def manual_lsj(h: int, w: int, ax: float, cx: float, ay: float, cy: float, out: tuple[int, int],
               valid: tuple[int, int], flip: bool) -> LSJParams:
    """An axis-aligned map written by hand: sampling beyond the image on every side (clamped), any padding."""
    q = tuple(int(round(v * 65536)) for v in (ax, 0.0, cx, 0.0, ay, cy))
    return LSJParams(out[0], out[1], 1.0, 1.0, 0, 0, valid[0], valid[1], flip, q)  # type: ignore[arg-type]


@pytest.mark.parametrize("ax, cx, ay, cy", [
    (1.0, 0.5, 1.0, 0.5),  # identity
    (-1.0, 30.5, 1.0, 0.5),  # flip
    (0.37, -9.0, 0.61, -4.2),  # upscale, starts above / left of the image
    (2.9, -20.0, 3.3, 7.1),  # downscale, runs beyond the right / bottom
    (-0.45, 60.0, 0.5, -30.0),  # flipped upscale beyond every side
])
def test_lsj_maps_beyond_the_image(ax, cx, ay, cy):
    rng = np.random.default_rng(7)
    s = lsj_sample(rng, 24, 31, 5, False)
    for valid in ((40, 50), (17, 9), (1, 1)):
        p = manual_lsj(24, 31, ax, cx, ay, cy, (50, 40), valid, ax < 0)
        fast, slow = resample_compiled(geometry_cpu, s, p), resample_arrays(s, p)
        for name, a, b in zip(fast._fields, fast, slow):
            assert np.array_equal(a, b), name


def test_sample_affine_dispatch():
    rng = np.random.default_rng(11)
    s = lsj_sample(rng, 20, 26, 3, False)
    stacks = [s.masks, s.amodal_masks, np.zeros((0, 20, 26), bool)]
    axis = (45000, 0, -70000, 0, 52000, 9000)
    skew = (45000, 3000, -70000, -2000, 52000, 9000)  # not axis-aligned: the array code answers
    for inv in (axis, skew):
        fast = sample_affine(s.image, stacks, inv, 33, 35, 30, 28)
        slow = sample_affine_arrays(s.image, stacks, inv, 33, 35, 30, 28)
        assert np.array_equal(fast[0], slow[0])
        assert all(np.array_equal(a, b) for a, b in zip(fast[1], slow[1]))


# ---------------------------------------------------------------- real images, the whole CPU sample


@pytest.mark.parametrize("seed", [0, 1])
def test_real_images_compiled_equals_numpy(monkeypatch, seed):
    ds = CocoInstances(data_path("coco_mini", "annotations", "person_keypoints_val2017.json"),
                       data_path("coco_mini", "val2017"), classes=["person"])
    cfg = OCPConfig.ocp(prob=1.0)  # both jitters: scaled, rotated, flipped pastes
    for index in range(0, len(ds), 9):
        for size in (1024, (480, 800)):
            fast = reference_sample(ds, index, epoch=seed, seed=seed, cfg=cfg, output_size=size)
            with monkeypatch.context() as m:
                m.setattr(ref, "cpu_loops", lambda: None)
                slow = reference_sample(ds, index, epoch=seed, seed=seed, cfg=cfg, output_size=size)
            assert_samples_equal(fast, slow)


# ---------------------------------------------------------------- fallback


def test_numpy_fallback_without_the_loops(monkeypatch, tmp_path):
    geom = paste_geometry(9, 7, True, 1.3, 12)
    img = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    mask = np.ones((7, 9), bool)
    want = ref.warp_crop_numpy(img, mask, geom, 0, 0, geom.out_w, geom.out_h)
    try:
        monkeypatch.setenv(geometry_cpu.SWITCH, "0")
        geometry_cpu.loops.cache_clear()
        assert geometry_cpu.loops() is None and ref.cpu_loops() is None
        monkeypatch.delenv(geometry_cpu.SWITCH)
        monkeypatch.setenv("CXX", "false")  # a "compiler" that fails: a warning, then NumPy
        monkeypatch.setenv("OCP_CPU_CACHE", str(tmp_path))
        geometry_cpu.loops.cache_clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert geometry_cpu.loops() is None
        assert any("using NumPy" in str(w.message) for w in caught)
        got = ref.warp_crop(img, mask, geom, 0, 0, geom.out_w, geom.out_h)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
        monkeypatch.delenv("CXX", raising=False)
        (tmp_path / "file").write_text("")
        monkeypatch.setenv("OCP_CPU_CACHE", str(tmp_path / "file" / "cache"))  # a cache that cannot be made
        geometry_cpu.loops.cache_clear()
        with pytest.warns(RuntimeWarning, match="using NumPy"):
            assert geometry_cpu.loops() is None
    finally:
        monkeypatch.undo()
        geometry_cpu.loops.cache_clear()
    assert geometry_cpu.loops() is not None
