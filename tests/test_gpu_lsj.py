"""The batch geometry kernels (``kernels/lsj.cu`` through ``kernels/lsj.py``) equal the NumPy oracle
(``lsj.resample_arrays``) exactly: image bytes, every requested mask kind, keep flags, tight boxes, kept crowd
regions, and through ``apply_lsj_batch`` whole samples (``dropped_by_crop``, keypoints, rows), on hypothesis batches
and on real coco_mini images. Run by the host emulator here; the GPU class at the bottom runs the same checks on
CuPy and skips without a CUDA device."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import data_path
from scenes import FLIP, random_mask, random_sample
from ocp_dali import CocoInstances, Sample
from ocp_dali.lsj import Geometry, apply_lsj, apply_lsj_batch, resample_arrays
from ocp_dali.targets import Targets

emulate = pytest.importorskip("ocp_dali.kernels.emulate")
if emulate.compiler() is None:
    pytest.skip("no C++ compiler for the kernel emulator", allow_module_level=True)

from ocp_dali.kernels import lsj as klsj  # noqa: E402

KDIR = Path(__file__).resolve().parents[1] / "kernels"
MASK_TARGETS = [Targets.visible(), Targets(["amodal_masks"]), Targets(["occluder_masks"]),
                Targets(["amodal_masks", "occluder_masks"]), Targets.all()]


def emulated():
    return emulate.EmulatedBackend(block=32, max_grid=(3, 2))


def to_host(a):
    return a if a is None or isinstance(a, np.ndarray) else a.get()


def assert_resampled_equal(ref, got, where=""):
    for f in ref._fields:
        a, b = to_host(getattr(ref, f)), to_host(getattr(got, f))
        assert (a is None) == (b is None), (where, f)
        if a is not None:
            assert a.dtype == b.dtype and a.shape == b.shape, (where, f, a.dtype, b.dtype, a.shape, b.shape)
            assert np.array_equal(a, b), (where, f)


def assert_samples_equal(ref: Sample, got: Sample, where=""):
    assert ref.info == got.info and ref.targets == got.targets, where
    for k, a in ref.arrays().items():
        a, b = to_host(a), to_host(getattr(got, k))
        assert (a is None) == (b is None), (where, k)
        if a is not None:
            assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), (where, k)


def with_extra_masks(s: Sample, rng: np.random.Generator, alias: bool) -> Sample:
    """``s`` with its own amodal (or amodal = visible, aliased) and occluder masks."""
    n, h, w = s.masks.shape
    occ = np.stack([random_mask(rng, h, w) for _ in range(n)]) if n else np.zeros((0, h, w), bool)
    amodal = s.masks if alias else (s.masks | occ)
    return dataclasses.replace(s, amodal_masks=amodal, occluder_masks=occ)


GEOMETRIES = st.sampled_from([
    Geometry.lsj((24, 32), ratio_range=(0.1, 2.0)), Geometry.lsj(16, ratio_range=(0.5, 3.0)),
    Geometry.fit((30, 20)), Geometry.resize(((40, 8), (48, 20))),
    Geometry("lsj", (12, 40), ratio_range=(0.2, 2.5), flip_prob=1.0), Geometry("fit", 33, flip_prob=0.0),
])


@st.composite
def batches(draw):
    """(samples, params, targets): 1-4 samples of random sizes 4..40 (0-5 instances, some crowd regions,
    keypoints, amodal aliasing the visible masks or not) with geometries drawn by ``Geometry.draw``."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    samples, params = [], []
    for tag in range(draw(st.integers(1, 4))):
        h, w = draw(st.integers(4, 40)), draw(st.integers(4, 40))
        s = random_sample(rng, h, w, draw(st.integers(0, 5)), draw(st.booleans()), tag)
        samples.append(with_extra_masks(s, rng, alias=draw(st.booleans())))
        params.append(draw(GEOMETRIES).draw(rng, h, w))
    return samples, params, draw(st.sampled_from(MASK_TARGETS))


def test_descriptor_structs_match_the_python_tables():
    text = re.sub(r"//[^\n]*", "", (KDIR / "lsj.cu").read_text())
    for struct, fields in [("OcpLsjSample", klsj.LSJ_SAMPLE_FIELDS), ("OcpLsjPlane", klsj.LSJ_PLANE_FIELDS),
                           ("OcpLsjRow", klsj.LSJ_ROW_FIELDS)]:
        body = re.search(r"struct\s+" + struct + r"\s*\{(.*?)\};", text, re.S)
        assert body, struct
        found = []
        for decl in filter(None, (d.strip() for d in body.group(1).split(";"))):
            assert decl.startswith("long long "), (struct, decl)
            found += [f.strip() for f in decl[len("long long "):].split(",")]
        assert tuple(found) == fields, struct


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_batch_kernels_equal_the_numpy_oracle(batch):
    samples, params, targets = batch
    samples = [s.restrict(targets) if not s.targets == targets else s for s in samples]
    be = emulated()
    got = klsj.resample_batch(be, samples, params)
    assert be.launches.count("ocp_lsj_image") == 1 and len(be.launches) <= 3
    for i, (s, p, r) in enumerate(zip(samples, params, got)):
        ref = resample_arrays(s, p, targets)
        assert_resampled_equal(ref, type(ref)(*r[:7]), f"sample {i}")
        assert np.array_equal(r.keep_host, to_host(ref.keep))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_apply_lsj_batch_equals_apply_lsj(batch):
    """Whole samples: rows, keypoints (on the host, with the flip permutation), ``dropped_by_crop``."""
    samples, params, targets = batch
    flips = [FLIP if s.keypoints is not None else None for s in samples]
    got = apply_lsj_batch(samples, params, flips, targets, backend=emulated())
    for i, (s, p, fl, g) in enumerate(zip(samples, params, flips, got)):
        assert_samples_equal(apply_lsj(s, p, fl, targets), g, f"sample {i}")


def test_empty_batch_and_samples_without_instances():
    rng = np.random.default_rng(1)
    assert apply_lsj_batch([], [], backend=emulated()) == []
    samples = [random_sample(rng, 9, 13, 0, False, t) for t in range(3)]
    params = [Geometry.lsj(16).draw(rng, 9, 13) for _ in samples]
    for s, p, g in zip(samples, params, apply_lsj_batch(samples, params, backend=emulated())):
        assert_samples_equal(apply_lsj(s, p), g)
        assert g.masks.shape == (0, 16, 16)


def test_aliased_amodal_masks_are_the_visible_output():
    rng = np.random.default_rng(2)
    s = random_sample(rng, 20, 30, 4, False, 0)
    assert s.amodal_masks is s.masks
    p = Geometry.lsj(24).draw(rng, 20, 30)
    r = klsj.resample_batch(emulated(), [s], [p])[0]
    assert r.amodal_masks is r.masks
    assert_resampled_equal(resample_arrays(s, p), type(resample_arrays(s, p))(*r[:7]))


def test_a_non_axis_aligned_map_is_refused():
    rng = np.random.default_rng(3)
    s = random_sample(rng, 8, 8, 1, False, 0)
    p = dataclasses.replace(Geometry.lsj(8).draw(rng, 8, 8), inv_q16=(65536, 5, 0, 0, 65536, 0))
    with pytest.raises(ValueError, match="axis-aligned"):
        klsj.resample_batch(emulated(), [s], [p])


@pytest.fixture(scope="module")
def coco_val():
    return CocoInstances(data_path("coco_mini", "annotations", "person_keypoints_val2017.json"),
                         data_path("coco_mini", "val2017"), classes=["person"])


@pytest.mark.parametrize("geometry", [Geometry.lsj(256), Geometry.lsj((512, 384), ratio_range=(0.5, 1.5)),
                                      Geometry.fit(320), Geometry.resize(((400, 256), (512, 300)))],
                         ids=["lsj-256", "lsj-512x384", "fit-320", "resize"])
def test_real_images_equal_the_numpy_oracle(coco_val, geometry):
    rng = np.random.default_rng(7)
    idx = [i for i in range(len(coco_val)) if len(coco_val.load(i))][:3]
    samples = [coco_val.load(i) for i in idx]
    params = [geometry.draw(rng, s.height, s.width) for s in samples]
    be = emulate.EmulatedBackend(block=64, max_grid=(64, 8))
    for t in (Targets.all(), Targets.visible()):
        got = apply_lsj_batch(samples, params, [coco_val.flip_index] * len(samples), t, backend=be)
        for i, (s, p, g) in enumerate(zip(samples, params, got)):
            assert_samples_equal(apply_lsj(s, p, coco_val.flip_index, t), g, f"{s.file_name} {t}")
    assert "ocp_lsj_masks" in be.launches


@pytest.mark.parametrize("placement", ["seed", "paste_first"])
@pytest.mark.parametrize("targets", [Targets.visible(), Targets(["amodal_masks", "occluder_masks"])],
                         ids=["visible", "amodal+occluder"])
def test_emulated_stage_runs_the_kernels_and_equals_the_cpu_stage(placement, targets):
    """The stage's geometry goes through the batch kernels on the kernel backends (three launches per batch),
    with the requested targets only, and still equals the NumPy stage."""
    from test_gpu_stage_emulated import stage_inputs
    from ocp_dali import OCPConfig, SyntheticScenes
    from ocp_dali.backends import KernelBackend
    from ocp_dali.source import EpochSource
    from ocp_dali.stage import ocp_stage

    ds = SyntheticScenes(8, seed=5, image_size=(72, 96))
    geometry = Geometry.lsj((64, 80), ratio_range=(0.5, 2.0), placement=placement)
    src = EpochSource(ds, OCPConfig.ocp(prob=1.0, basket_size=2), seed=2, batch_size=4, geometry=geometry)
    be = KernelBackend(emulated())
    inputs = stage_inputs(src, 0)
    cpu = ocp_stage("numpy", src.slots, geometry, None, targets)(*inputs)
    gpu = ocp_stage(be, src.slots, geometry, None, targets)(*inputs)
    assert be.arrays.launches.count("ocp_lsj_image") == 1
    for a, b in zip(cpu, gpu):
        for x, y in zip(a, b):
            assert np.array_equal(np.asarray(x), np.asarray(y))


# ---------------------------------------------------------------- on a GPU (CuPy), skipped elsewhere

def _gpu_unusable() -> str | None:
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA GPU: the CuPy run of the LSJ kernels needs one (make test-gpu)"
        int(cupy.arange(4).sum())
    except Exception as e:  # no CuPy, no driver, no device
        return f"no CUDA GPU: the CuPy run of the LSJ kernels needs one (make test-gpu) [{type(e).__name__}: {e}]"
    return None


@pytest.mark.skipif(_gpu_unusable() is not None, reason=_gpu_unusable() or "")
class TestOnGpu:
    def upload(self, s: Sample) -> Sample:
        import cupy

        return s.map_arrays(cupy.asarray)

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])
    @given(batches())
    def test_cupy_batch_equals_the_numpy_oracle(self, batch):
        samples, params, targets = batch
        flips = [FLIP if s.keypoints is not None else None for s in samples]
        got = apply_lsj_batch([self.upload(s) for s in samples], params, flips, targets)
        for i, (s, p, fl, g) in enumerate(zip(samples, params, flips, got)):
            assert_samples_equal(apply_lsj(s, p, fl, targets), g, f"sample {i}")

    def test_cupy_real_images(self, coco_val):
        rng = np.random.default_rng(11)
        samples = [coco_val.load(i) for i in range(min(8, len(coco_val)))]
        params = [Geometry.lsj(512).draw(rng, s.height, s.width) for s in samples]
        got = apply_lsj_batch([self.upload(s) for s in samples], params, [coco_val.flip_index] * len(samples))
        for s, p, g in zip(samples, params, got):
            assert_samples_equal(apply_lsj(s, p, coco_val.flip_index), g, s.file_name)


def test_the_geometry_kernel_timing_hook_skips_without_a_gpu():
    """``benchmarks/gpu_apply_timing.py --lsj`` times the geometry kernels alone on a GPU; here it says skipped."""
    import importlib.util

    from ocp_dali.backends import cuda_device_count

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_apply_timing.py"
    spec = importlib.util.spec_from_file_location("gpu_apply_timing", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rng = np.random.default_rng(0)
    dsts = [random_sample(rng, 24, 32, 2, False, t) for t in range(2)]
    got = mod.time_lsj_gpu(dsts, 32, warmup=0, repeats=1)
    if cuda_device_count() == 0:
        assert got is None
    else:
        assert got["images_per_s"] > 0
