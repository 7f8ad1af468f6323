"""The CUDA kernels on a machine without a GPU: they compile, they keep their naming contract with the Python side,
and their logic matches the NumPy reference when run by the host emulator (``kernels/emulate.py``).

The GPU itself is exercised by ``tests/test_gpu_parity.py`` (``make test-gpu``); here nothing touches a device.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from scenes import random_sample, scenes
from ocp_dali import OCPConfig, Sample, apply, sample_plan
from ocp_dali.plan import ImageMeta

ROOT = Path(__file__).resolve().parents[1]
KDIR = ROOT / "kernels"
CU_FILES = sorted(KDIR.glob("*.cu"))
CUDA_TEXT = {p.name: p.read_text() for p in sorted(KDIR.glob("*.cu")) + sorted(KDIR.glob("*.cuh"))}
NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not on PATH: CUDA sources cannot be compiled here")
EMU_EXAMPLES = int(os.environ.get("OCP_EMU_EXAMPLES", "300"))


def nvcc_ptx(src: Path, out: Path) -> subprocess.CompletedProcess:
    cmd = [NVCC, "-arch=sm_90", "-std=c++17", "-I", str(KDIR), "--ptx", "-Werror", "all-warnings", "-o", str(out),
           str(src)]
    return subprocess.run(cmd, capture_output=True, text=True)


# ---------------------------------------------------------------- compilation


def test_there_are_kernel_sources():
    assert {p.name for p in CU_FILES} >= {"rle.cu", "jitter.cu", "warp.cu", "composite.cu", "targets.cu"}


@needs_nvcc
@pytest.mark.parametrize("cu", CU_FILES, ids=lambda p: p.name)
def test_kernel_source_compiles_for_sm90_without_warnings(cu, tmp_path):
    proc = nvcc_ptx(cu, tmp_path / (cu.stem + ".ptx"))
    assert proc.returncode == 0, f"nvcc failed on {cu.name}:\n{proc.stdout}\n{proc.stderr}"
    assert (tmp_path / (cu.stem + ".ptx")).stat().st_size > 0


@needs_nvcc
@pytest.mark.parametrize("snippet", [
    'extern "C" __global__ void ocp_broken(int* o) { o[0] = ; }\n',  # syntax error
    'extern "C" __global__ void ocp_warns(int* o) { int unused; o[0] = 1; }\n',  # a warning is an error
], ids=["syntax-error", "warning"])
def test_the_compile_check_can_fail(snippet, tmp_path):
    src = tmp_path / "broken.cu"
    src.write_text(snippet)
    proc = nvcc_ptx(src, tmp_path / "broken.ptx")
    assert proc.returncode != 0, "nvcc accepted a broken kernel: the compile test would prove nothing"


# ---------------------------------------------------------------- naming contract between CUDA and Python


def cuda_kernels() -> dict[str, str]:
    """{kernel name: file} of every __global__ function in kernels/*.cu and *.cuh."""
    found = {}
    for name, text in CUDA_TEXT.items():
        code = re.sub(r"//[^\n]*", "", text)  # comments may mention __global__
        for m in re.finditer(r"__global__", code):
            head = code[max(0, m.start() - 40):m.start()]
            tail = code[m.end():m.end() + 200]
            assert re.search(r'extern\s+"C"\s*$', head), f"{name}: a __global__ is not extern \"C\": {tail[:60]!r}"
            km = re.match(r"\s+void\s+(\w+)\s*\(", tail)
            assert km, f"{name}: cannot read the kernel name after __global__: {tail[:60]!r}"
            assert km.group(1).startswith("ocp_"), f"{name}: kernel {km.group(1)} must be named ocp_*"
            assert km.group(1) not in found, f"kernel {km.group(1)} defined twice"
            found[km.group(1)] = name
    return found


def test_every_kernel_is_extern_c_and_prefixed():
    kernels = cuda_kernels()
    assert len(kernels) >= 15


def test_every_kernel_named_in_python_exists_in_the_sources():
    kernels = cuda_kernels()
    referenced = set()
    for py in sorted(KDIR.glob("*.py")):
        for name in re.findall(r"[\"'](ocp_(?!dali\b)\w+)[\"']", py.read_text()):
            referenced.add(name)
            assert name in kernels, f"{py.name} names kernel {name}, which no kernels/*.cu defines"
    from ocp_dali.kernels.apply import KERNELS
    from ocp_dali.kernels.rle import RLE_KERNEL

    for name, cu in list(KERNELS.items()) + [RLE_KERNEL[::-1]]:
        assert kernels.get(name) == cu, f"{name} is launched from {cu} but defined in {kernels.get(name)}"
    unused = set(kernels) - referenced
    assert not unused, f"kernels never launched from Python: {sorted(unused)}"


@pytest.mark.parametrize("struct, attr", [("OcpSample", "SAMPLE_FIELDS"), ("OcpPaste", "PASTE_FIELDS"),
                                          ("OcpSlot", "SLOT_FIELDS")])
def test_descriptor_structs_match_the_python_tables(struct, attr):
    from ocp_dali.kernels import apply as kapply

    text = re.sub(r"//[^\n]*", "", CUDA_TEXT["ocp_common.cuh"])
    body = re.search(r"struct\s+" + struct + r"\s*\{(.*?)\};", text, re.S)
    assert body, f"struct {struct} not found in ocp_common.cuh"
    fields = []
    for decl in body.group(1).split(";"):
        decl = decl.strip()
        if not decl:
            continue
        assert decl.startswith("long long "), f"{struct}: every field must be long long (int64): {decl!r}"
        fields += [f.strip() for f in decl[len("long long "):].split(",")]
    assert tuple(fields) == getattr(kapply, attr)


def test_kernel_modules_import_without_a_gpu():
    code = "import ocp_dali.kernels.apply, ocp_dali.kernels.loader, ocp_dali.kernels.rle; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr


# ---------------------------------------------------------------- kernel logic, emulated on the CPU

needs_cxx = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                               reason="no C++ compiler (g++ / $CXX): the kernel emulator cannot be built")


def emulated():
    from ocp_dali.kernels.emulate import EmulatedBackend

    return EmulatedBackend()


def assert_same_sample(ref: Sample, out: Sample, where: str = "") -> None:
    """Every array identical (dtype, shape, values), same info and ids. ``out`` holds NumPy arrays."""
    for k, v in ref.arrays().items():
        w = getattr(out, k)
        if v is None or w is None:
            assert v is None and w is None, f"{where}{k}: {type(v)} vs {type(w)}"
            continue
        w = np.asarray(w)
        assert w.dtype == v.dtype and w.shape == v.shape, f"{where}{k}: {w.dtype}{w.shape} vs {v.dtype}{v.shape}"
        if not np.array_equal(v, w):
            bad = np.argwhere(v != w)
            raise AssertionError(f"{where}{k}: {len(bad)} elements differ, first at {bad[:3].tolist()}")
    assert out.info == ref.info, f"{where}info {out.info} vs {ref.info}"
    assert (out.image_id, out.file_name) == (ref.image_id, ref.file_name)


def plan_of_scene(scene):
    dmeta, smetas = scene.metas()
    return sample_plan(np.random.default_rng(scene.seed), dmeta, smetas, scene.cfg)


def many_paste_scene(seed: int = 0, n_src: int = 3, per_src: int = 14, blend: float = 1.5, keypoints=True):
    """More than 32 pastes (two cover words), every jitter on: (plan, dst, sources)."""
    rng = np.random.default_rng(seed)
    dst = random_sample(rng, 37, 45, 5, keypoints, 0)
    sources = [random_sample(rng, 30 + 3 * t, 41 - 2 * t, per_src, keypoints, t + 1) for t in range(n_src)]
    flip = (0, 2, 1, 4, 3) if keypoints else None
    cfg = OCPConfig.ocp(prob=1.0, basket_size=n_src, paste_num=(35, 42), min_size_paste=0.0, min_size_occ=0.05,
                        blend_sigma=blend)
    plan = sample_plan(rng, ImageMeta.of_sample(dst, 0, flip),
                       [ImageMeta.of_sample(s, i + 1, flip) for i, s in enumerate(sources)], cfg)
    return plan, dst, sources


def chained_scene(seed: int = 0, stale_targets: bool = False):
    """A destination that is itself an output of ``apply`` (pasted rows, occluders, order, amodal != visible).

    ``stale_targets``: occluders and order set on a sample that reports nothing pasted and no occlusion, which
    the reference ignores (it reads them only from samples with something pasted or occluded).
    """
    rng = np.random.default_rng(seed)
    flip = (0, 2, 1, 4, 3)
    dst = random_sample(rng, 34, 39, 4, True, 0)
    srcs = [random_sample(rng, 30, 30, 5, True, t + 1) for t in range(2)]
    cfg = OCPConfig.ocp(prob=1.0, basket_size=2, paste_num=(3, 6), min_size_paste=0.0, min_size_occ=0.02)
    metas = [ImageMeta.of_sample(s, i + 1, flip) for i, s in enumerate(srcs)]
    if stale_targets:
        import dataclasses

        n = len(dst)
        dst = dataclasses.replace(dst, occluder_masks=rng.random((n, dst.height, dst.width)) < 0.3,
                                  order=rng.random((n, n)) < 0.5)
    else:
        plan1 = sample_plan(rng, ImageMeta.of_sample(dst, 0, flip), metas, cfg)
        dst = apply(plan1, dst, srcs)
    plan = sample_plan(rng, ImageMeta.of_sample(dst, 0, flip), metas, cfg.replace(blend_sigma=1.0))
    return plan, dst, srcs


@needs_cxx
@settings(max_examples=EMU_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenes())
def test_emulated_kernels_match_the_reference_on_random_scenes(scene):
    from ocp_dali.kernels.apply import apply_cupy

    plan = plan_of_scene(scene)
    ref = apply(plan, scene.dst, scene.sources)
    out = apply_cupy(plan, scene.dst, scene.sources, backend=emulated())
    if ref is scene.dst:
        assert out is scene.dst
        return
    assert_same_sample(ref, out)


@needs_cxx
@pytest.mark.parametrize("seed", range(4))
def test_emulated_kernels_with_more_than_32_pastes(seed):
    from ocp_dali.kernels.apply import apply_cupy

    plan, dst, sources = many_paste_scene(seed, blend=[0.0, 1.5][seed % 2], keypoints=seed < 2)
    assert len(plan.pastes) > 32
    ref = apply(plan, dst, sources)
    assert_same_sample(ref, apply_cupy(plan, dst, sources, backend=emulated()))


@needs_cxx
@pytest.mark.parametrize("stale_targets", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_emulated_kernels_on_outputs_of_apply(seed, stale_targets):
    from ocp_dali.kernels.apply import apply_cupy

    plan, dst, sources = chained_scene(seed, stale_targets)
    assert_same_sample(apply(plan, dst, sources), apply_cupy(plan, dst, sources, backend=emulated()))


@needs_cxx
def test_emulated_batch_equals_loop_of_singles():
    from ocp_dali.kernels.apply import apply_cupy, apply_cupy_batch

    rng = np.random.default_rng(7)
    items = [many_paste_scene(1, keypoints=False), chained_scene(2), chained_scene(3, stale_targets=True)]
    for seed in range(12):  # ordinary scenes of mixed sizes, including empty plans (prob 0)
        dst = random_sample(rng, 8 + 3 * seed, 40 - 2 * seed, seed % 5, False, 0)
        src = random_sample(rng, 20, 25, 4, False, 1)
        cfg = OCPConfig.ocp(prob=0.0 if seed % 4 == 3 else 1.0, min_size_paste=0.0, blend_sigma=[0, 2.0][seed % 2])
        plan = sample_plan(rng, ImageMeta.of_sample(dst), [ImageMeta.of_sample(src, 1)], cfg)
        items.append((plan, dst, [src]))
    be = emulated()
    batch = apply_cupy_batch([p for p, _, _ in items], [d for _, d, _ in items], [s for _, _, s in items], backend=be)
    assert len(batch) == len(items)
    for i, ((plan, dst, srcs), got) in enumerate(zip(items, batch)):
        single = apply_cupy(plan, dst, srcs, backend=be)
        if not plan.pastes:
            assert got is dst and single is dst
            continue
        assert_same_sample(single, got, f"sample {i}: ")
        assert_same_sample(apply(plan, dst, srcs), got, f"sample {i} vs reference: ")


@needs_cxx
def test_emulated_launch_count_is_per_batch_not_per_instance():
    from ocp_dali.kernels.apply import apply_cupy_batch

    items = [many_paste_scene(s, blend=1.0) for s in range(3)]
    be = emulated()
    apply_cupy_batch([p for p, _, _ in items], [d for _, d, _ in items], [s for _, _, s in items], backend=be)
    counts = {n: be.launches.count(n) for n in set(be.launches)}
    assert counts and max(counts.values()) == 1, counts  # ~110 pastes, 3 samples: still one launch per stage


@needs_cxx
def test_emulated_rle_decode_matches_pycocotools():
    from pycocotools import mask as mask_utils

    from ocp_dali.data.rle import encode_mask
    from ocp_dali.kernels.rle import decode_rles

    rng = np.random.default_rng(3)
    masks = [rng.random((h, w)) < p for h, w, p in [(1, 1, 1.0), (5, 7, 0.5), (13, 4, 0.0), (20, 31, 0.9),
                                                  (31, 20, 0.1), (2, 64, 0.5)]]
    rles = [encode_mask(m) for m in masks]
    rles.append({"size": [3, 4], "counts": [0, 5, 2, 5]})  # uncompressed, starting with a 1-run
    masks.append(np.array([[1, 1, 0, 1], [1, 1, 1, 1], [1, 0, 1, 1]], dtype=bool))
    got = decode_rles(rles, backend=emulated())
    for m, g, r in zip(masks, got, rles):
        assert g.dtype == bool and np.array_equal(g, m)
        if isinstance(r["counts"], str):
            assert np.array_equal(g, mask_utils.decode(r).astype(bool))


# ---------------------------------------------------------------- host-side helpers of the GPU backend


def test_batched_keypoint_transform_is_bit_identical_to_the_reference():
    from ocp_dali.geometry import paste_geometry
    from ocp_dali.keypoints import map_paste_keypoints as transform_keypoints_batch
    from ocp_dali.plan import PasteOp
    from ocp_dali.reference import paste_keypoints as _transform_keypoints

    rng = np.random.default_rng(0)
    flip_index = (0, 2, 1, 4, 3)
    ops, kps = [], []
    for i in range(300):
        w, h = int(rng.integers(1, 60)), int(rng.integers(1, 60))
        x0, y0 = int(rng.integers(0, 30)), int(rng.integers(0, 30))
        flip = bool(rng.random() < 0.5)
        g = paste_geometry(w, h, flip, float(rng.uniform(0.8, 1.2)), int(rng.integers(-10, 10)))
        off = (int(rng.integers(-40, 80)), int(rng.integers(-40, 80)))
        ops.append(PasteOp(0, 0, 1, (x0, y0, x0 + w, y0 + h), None, flip, 1.0, 0, g, False, -1, (0, 0), off))
        kp = np.zeros((5, 3), np.float32)
        kp[:, 0] = rng.uniform(x0 - 2, x0 + w + 2, 5)
        kp[:, 1] = rng.uniform(y0 - 2, y0 + h + 2, 5)
        kp[:, 2] = rng.integers(0, 3, 5)
        kp[rng.random(5) < 0.2, 0] = x0 + w  # on the crop's edge
        kps.append(kp)
    W, H = 70, 65
    got = transform_keypoints_batch(
        np.stack(kps), np.array([o.geometry.fwd for o in ops]), np.array([o.src_box[:2] for o in ops]),
        np.array([o.offset for o in ops]),
        np.stack([np.array(flip_index) if o.flip else np.arange(5) for o in ops]), np.tile([W, H], (len(ops), 1)))
    for o, kp, g in zip(ops, kps, got):
        ref = _transform_keypoints(kp, o, flip_index, H, W)
        assert g.dtype == ref.dtype and np.array_equal(g, ref)


@needs_cxx
def test_emulated_backend_raises_the_reference_error_of_a_flip_without_flip_index():
    from ocp_dali.kernels.apply import apply_cupy

    rng = np.random.default_rng(5)
    raised = 0
    for seed in range(12):
        dst = random_sample(rng, 30, 30, 2, True, 0)
        src = random_sample(rng, 30, 30, 4, True, 1)
        cfg = OCPConfig.ocp(prob=1.0, paste_num=(3, 5), min_size_paste=0.0)  # flips, but no flip_index
        plan = sample_plan(rng, ImageMeta.of_sample(dst), [ImageMeta.of_sample(src, 1)], cfg)
        try:
            ref = apply(plan, dst, [src])
        except ValueError as e:
            raised += 1
            with pytest.raises(ValueError, match=str(e)):
                apply_cupy(plan, dst, [src], backend=emulated())
            continue
        assert_same_sample(ref, apply_cupy(plan, dst, [src], backend=emulated()))
    assert raised > 0
