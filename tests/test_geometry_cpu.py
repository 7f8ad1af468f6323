"""The compiled CPU loops (``kernels/geometry_cpu``) equal the NumPy reference bit for bit: the paste warp
(``warp_crop`` vs ``warp_crop_numpy``), the LSJ (``resample_compiled`` vs ``resample_arrays``, ``sample_affine``
vs ``sample_affine_arrays``), the image jitter (``jitter`` vs ``photometric.jitter_image_numpy``: every factor
combination of the seed's ranges) and the composite (``composite`` vs ``composite_numpy``), on random scenes and on
real images; and the NumPy fallback when they cannot be used.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import data_path
from scenes import random_mask, random_sample
from ocp_dali import CocoInstances, OCPConfig, hostloops
from ocp_dali import photometric as ph
from ocp_dali import reference as ref
from ocp_dali.augment import reference_sample
from ocp_dali.geometry import paste_geometry
from ocp_dali.kernels import geometry_cpu
from ocp_dali.lsj import (
    LSJParams, apply_lsj, resample_arrays, resample_compiled, sample_affine, sample_affine_arrays, sample_lsj)
from ocp_dali.plan import JITTER_RANGES
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
        if name == "keep_host":  # set by the GPU batch kernels only
            assert a is None and b is None
            continue
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
            assert (a is None and b is None) if name == "keep_host" else np.array_equal(a, b), name


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


# ---------------------------------------------------------------- image jitter


def numpy_contrast_mean(img: np.ndarray, factors: tuple[int, int, int, int]) -> int:
    """The contrast step's mean grey as jitter_image_numpy computes it (after colour and brightness)."""
    out = ph.blend_round_even(ph.grey(img)[..., None], img, factors[0])
    return ph.contrast_mean(ph.blend_floor(np.zeros(1, dtype=np.int64), out, factors[1]))


def assert_jitter_equal(img: np.ndarray, factors: tuple[int, int, int, int]) -> None:
    got, mean = geometry_cpu.jitter(img, factors)
    want = ph.jitter_image_numpy(img, factors)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got, want), f"{img.shape[:2]} factors {factors}"
    assert mean == numpy_contrast_mean(img, factors)


factor_draws = st.tuples(*(st.integers(lo, hi - 1) for lo, hi in JITTER_RANGES))


@settings(max_examples=400, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), h=st.integers(1, 40), w=st.integers(1, 40), factors=factor_draws,
       strided=st.booleans(), levels=st.sampled_from([256, 2, 16]))
def test_jitter_equals_numpy(seed, h, w, factors, strided, levels):
    rng = np.random.default_rng(seed)
    # levels 2: only 0 and 255 (the blends' extreme numerators, clipped); 16: flat areas, mean ties
    big = (rng.integers(0, levels, (h + 4, w + 6, 3)) * (255 // (levels - 1))).astype(np.uint8)
    img = big[2:2 + h, 3:3 + w] if strided else np.ascontiguousarray(big[:h, :w])
    assert_jitter_equal(img, factors)


def test_jitter_every_factor_combination():
    """All 4 x 15 x 15 x 15 factor combinations of the seed's ranges, on crops of every shape kind (1x1, 1xN,
    Nx1, 2x2, larger) with the extreme values 0 and 255 in them."""
    rng = np.random.default_rng(5)
    shapes = [(1, 1), (1, 7), (6, 1), (2, 2), (3, 5), (9, 4)]
    crops = []
    for h, w in shapes:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        img.reshape(-1)[:2] = (0, 255)
        crops.append(img)
    grid = np.stack(np.meshgrid(*(np.arange(lo, hi) for lo, hi in JITTER_RANGES), indexing="ij"), -1).reshape(-1, 4)
    for k, factors in enumerate(grid):
        assert_jitter_equal(crops[k % len(crops)], tuple(int(v) for v in factors))


def test_jitter_real_crops():
    ds = CocoInstances(data_path("coco_mini", "annotations", "person_keypoints_val2017.json"),
                       data_path("coco_mini", "val2017"), classes=["person"])
    rng = np.random.default_rng(0)
    compared = 0
    for index in range(0, len(ds), 4):
        s = ds.load(index)
        for box in s.boxes[:3]:
            x0, y0 = (int(v) for v in np.floor(box[:2]))
            x1, y1 = (int(v) for v in np.ceil(box[2:]))
            crop = s.image[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]  # a view of the image, as jitter_crop cuts it
            factors = tuple(int(rng.integers(lo, hi)) for lo, hi in JITTER_RANGES)
            assert_jitter_equal(crop, factors)
            compared += 1
    assert compared >= 10


def test_jitter_image_dispatch(monkeypatch):
    img = np.random.default_rng(1).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    calls = []
    monkeypatch.setattr(geometry_cpu, "jitter", lambda *a: calls.append(a) or (None, 0))
    ph.jitter_image(img, (9, 12, 7, 3))
    assert len(calls) == 1
    monkeypatch.setattr(hostloops, "cpu_loops", lambda: None)  # off: NumPy, the same bits
    assert np.array_equal(ph.jitter_image(img, (9, 12, 7, 3)), ph.jitter_image_numpy(img, (9, 12, 7, 3)))
    assert len(calls) == 1


# ---------------------------------------------------------------- composite


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), blend=st.booleans(), strided=st.booleans())
def test_composite_equals_numpy(seed, blend, strided):
    rng = np.random.default_rng(seed)
    H, W = (int(v) for v in rng.integers(1, 40, 2))
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    wx0, wx1 = sorted(int(v) for v in rng.integers(0, W + 1, 2))
    wy0, wy1 = sorted(int(v) for v in rng.integers(0, H + 1, 2))
    wh, ww = wy1 - wy0, wx1 - wx0
    big_mask = rng.random((wh + 3, ww + 2)) < rng.random()
    big_pix = rng.integers(0, 256, (wh + 3, ww + 2, 3), dtype=np.uint8)
    if strided:  # views, as an identity warp hands over its crop
        mask, pix = big_mask[1:1 + wh, 2:2 + ww], big_pix[1:1 + wh, 2:2 + ww]
    else:
        mask, pix = np.ascontiguousarray(big_mask[:wh, :ww]), np.ascontiguousarray(big_pix[:wh, :ww])
    alpha = rng.integers(0, ref.ALPHA_ONE + 1, (wh, ww)).astype(np.int32) if blend else None
    got, want = image.copy(), image.copy()
    ref.composite(got, (wx0, wy0, wx1, wy1), mask, pix, alpha)
    ref.composite_numpy(want, (wx0, wy0, wx1, wy1), mask, pix, alpha)
    assert np.array_equal(got, want)


def test_composite_dispatch_and_layouts(monkeypatch):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    mask, pix = rng.random((4, 5)) < 0.5, rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    want = image.copy()
    ref.composite_numpy(want, (3, 2, 8, 6), mask, pix, None)
    calls = []
    real = geometry_cpu.composite
    monkeypatch.setattr(geometry_cpu, "composite", lambda *a: calls.append(a) or real(*a))
    got = image.copy()
    ref.composite(got, (3, 2, 8, 6), mask, pix, None)
    assert len(calls) == 1 and np.array_equal(got, want)
    planar = np.moveaxis(np.ascontiguousarray(np.moveaxis(image, 2, 0)), 0, 2)  # channel planes: NumPy answers
    assert not real(planar, (3, 2, 8, 6), mask, pix, None)
    ref.composite(planar, (3, 2, 8, 6), mask, pix, None)
    assert np.array_equal(planar, want)
    with pytest.raises(ValueError):
        real(image.copy(), (3, 2, 8, 7), mask, pix, None)


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
                m.setattr(hostloops, "cpu_loops", lambda: None)  # every loop off: warp, LSJ, jitter, composite
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
