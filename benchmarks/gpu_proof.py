"""GPU proof: parity, pipeline throughput and training iterations of ocp_dali on one GPU, in one short visit.

    python benchmarks/gpu_proof.py --out DIR [--data COCO_MINI_DIR] [--steps a,b,c,d,e] [--deadline EPOCH]
    python benchmarks/gpu_proof.py --dry-run --out DIR     # CPU machine: tiny sizes, CPU graph, kernel emulator

Steps, in this order, each in its own process with its own time cap (a failure or a timeout in one step never
loses the others; each step records its numbers as it goes):

a. parity smoke: the CuPy kernels (``apply_cupy_batch``) against the NumPy reference on real images and on 200
   hypothesis scenes (every array identical); the DALI GPU graph against the CPU graph on two batches (masks, boxes,
   labels identical; pixels within one level).
b. pipeline throughput at 1024², batch 16: the DALI GPU graph with OC&P and with prob=0 for 4, 8 and 14 Python
   workers (Mask2Former geometry: LSJ; and the Mask R-CNN geometry), peak GPU memory (NVML), the GPU ms the kernels
   take per image (CUDA events); beside it the DALI CPU graph and the mmdet pipeline with mmdet's ``CopyPaste`` and
   with ``OcclusionCopyPaste``, 14 worker processes each.
c. Mask R-CNN R50-FPN training (random init, AMP, batch 8, 30 timed iterations after a warm-up): ``--dali`` against
   the CPU loader with ``OcclusionCopyPaste`` (14 workers), mmdet ``CopyPaste`` and no copy-paste: s/iter, data
   time, GPU utilisation (NVML), peak GPU memory, and the share of the step the OC&P kernels take on the GPU.
d. the same for Mask2Former Swin-S.
e. the fault corpus (``tests/faults.py``) through the GPU graph, and an 8192² image with 300 people (a clear error
   or a recorded skip on CUDA out-of-memory).

Results: ``DIR/gpu_proof_<device>.json`` (rewritten after every step; an existing file is extended, so the steps can
run over several calls) and ``DIR/gpu_proof_<device>.png``; step logs in ``DIR/gpu_proof.log``. The dry run names
its files ``gpu_proof_dryrun.*`` and trains one CPU iteration of the tiny Mask R-CNN config only.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

STEPS = ("a", "b", "c", "d", "e")
CAPS = {"a": 75, "b": 110, "c": 160, "d": 140, "e": 55}  # seconds per step on the GPU (sum: the 9-minute stage)
DRY_CAPS = {s: 120 for s in STEPS}
MRCNN_BASE = ROOT / "configs/mask_rcnn/mask-rcnn_r50_fpn_ocp_bench-gpu.py"
MRCNN_TINY = ROOT / "configs/mask_rcnn/mask-rcnn_r18_fpn_ocp_tiny-cpu.py"
M2F_BASE = ROOT / "configs/mask2former/mask2former_swin-s_ocp_coco-person.py"


# -- settings --------------------------------------------------------------------------------------------------
def settings(dry: bool) -> dict[str, Any]:
    """Sizes of every measurement: the GPU visit's, or tiny ones for the CPU dry run."""
    if dry:
        return dict(device="cpu", size=128, batch=2, workers=[1], mmdet_workers=1, hyp_examples=5, real_images=2,
                    loader_batches=2, loader_size=128, min_seconds=0.5, synth_n=8, train_batch=2,
                    geometries=["m2f"], graph_workers=1, mmdet_repeats=1, train_workers=0, warmup=0, timed_iters=1,
                    big_side=256, big_people=20)
    return dict(device="gpu", size=1024, batch=16, workers=[4, 8, 14], mmdet_workers=14, hyp_examples=200,
                real_images=80, loader_batches=2, loader_size=512, min_seconds=2.0, synth_n=64, train_batch=8,
                geometries=["m2f", "mrcnn"], graph_workers=2, mmdet_repeats=2, train_workers=14, warmup=5,
                timed_iters=30, big_side=8192, big_people=300)


def backend(dry: bool):
    """The kernels' array backend: CuPy on the GPU (None: ``apply_cupy_batch``'s default), the emulator otherwise."""
    if not dry:
        return None
    from ocp_dali.kernels.emulate import EmulatedBackend

    return EmulatedBackend(block=64, max_grid=(64, 64))


class Recorder:
    """A step's results, written to its JSON file after every ``put`` (a killed step keeps what it measured)."""

    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}

    def put(self, key: str, value: Any) -> Any:
        self.data[key] = value
        self.path.write_text(json.dumps(self.data, indent=1, default=str))
        print(f"  {key}: {json.dumps(value, default=str)[:300]}", flush=True)
        return value


def guarded(rec: Recorder, key: str, fn: Callable[[], Any]) -> Any:
    """``rec.put(key, fn())``, or the error as ``{"error": ...}`` (the step goes on with its next measurement)."""
    try:
        return rec.put(key, fn())
    except Exception as e:  # noqa: BLE001  (one measurement's failure is a result, not the end of the step)
        return rec.put(key, dict(error=f"{type(e).__name__}: {e}"[:2000]))


def quartiles(xs: list[float]) -> dict[str, float] | None:
    """Median and quartiles (None for no data)."""
    if not xs:
        return None
    a = np.asarray(xs, dtype=np.float64)
    return dict(median=float(np.median(a)), p25=float(np.percentile(a, 25)), p75=float(np.percentile(a, 75)),
                n=int(a.size))


class GpuMonitor:
    """NVML samples of utilisation and used memory on device 0 (no-ops without a GPU or nvidia-ml-py)."""

    def __init__(self):
        self.samples: list[tuple[float, int, float]] = []  # (time, utilisation %, used MiB)
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # noqa: BLE001  (CPU machine: nothing to sample)
            self.nvml = self.handle = None

    def sample(self) -> None:
        if self.handle is None:
            return
        u = self.nvml.nvmlDeviceGetUtilizationRates(self.handle)
        m = self.nvml.nvmlDeviceGetMemoryInfo(self.handle)
        self.samples.append((time.time(), int(u.gpu), m.used / 2**20))

    def summary(self, since: float = 0.0) -> dict[str, Any]:
        s = [x for x in self.samples if x[0] >= since]
        if not s:
            return dict(gpu_util_mean=None, gpu_mem_peak_mib=None, samples=0)
        return dict(gpu_util_mean=float(np.mean([x[1] for x in s])), gpu_mem_peak_mib=max(x[2] for x in s),
                    samples=len(s))


# -- data ------------------------------------------------------------------------------------------------------
def coco_files(args, size: int, people: int = 8) -> tuple[Path, Path, str]:
    """(annotation json, image folder, description): coco_mini val2017 when ``--data`` holds it (not in the dry
    run), else synthetic JPEG scenes written under the work folder."""
    d = Path(args.data) if args.data else None
    if d and not args.dry_run and (d / "val2017").is_dir():
        return d / "annotations/person_keypoints_val2017.json", d / "val2017", "coco_mini val2017 (real)"
    from aug_throughput import write_synthetic_coco

    n = settings(args.dry_run)["synth_n"]
    ann, imgs = write_synthetic_coco(Path(args.work) / "synthetic", (size, size), people, n)
    return ann, imgs, f"synthetic JPEG scenes {size}² ({n} images, up to {people} people)"


def real_dataset(args):
    """The real images of the parity check (coco_mini val2017), or None."""
    from ocp_dali import CocoInstances

    d = Path(args.data) if args.data else Path(os.environ.get("OCP_DATA", ROOT.parent / "shared/data")) / "coco_mini"
    ann = d / "annotations/person_keypoints_val2017.json"
    return CocoInstances(ann, d / "val2017", classes=["person"]) if ann.exists() else None


# -- step a: parity ----------------------------------------------------------------------------------------------
def to_host(x):
    """A backend array (CuPy or NumPy) as NumPy."""
    return None if x is None else np.asarray(x.get() if hasattr(x, "get") else x)


def differences(ref, out) -> list[str]:
    """Arrays of two Samples that differ (dtype, shape or values); empty when identical."""
    bad = []
    for k, v in ref.arrays().items():
        w = to_host(getattr(out, k))
        if v is None or w is None:
            if not (v is None and w is None):
                bad.append(f"{k}: one is None")
        elif w.dtype != v.dtype or w.shape != v.shape or not np.array_equal(v, w):
            bad.append(f"{k}: {w.dtype}{w.shape} vs {v.dtype}{v.shape}, values differ")
    return bad


def parity_real(args, be) -> dict[str, Any]:
    """The kernels in batches of 16 against the reference, image by image, on the real images (or scenes)."""
    from ocp_dali import OCPConfig, SyntheticScenes, apply, plan_for
    from ocp_dali.kernels.apply import apply_cupy_batch

    s = settings(args.dry_run)
    ds = real_dataset(args) or SyntheticScenes(8, image_size=(96, 96), max_people=4)
    n = min(len(ds), s["real_images"])
    checked, augmented, bad = 0, 0, []
    for cfg_name, cfg in (("ocp", OCPConfig.ocp(prob=1.0)), ("simple", OCPConfig.simple())):
        for lo in range(0, n, 16):
            idx = list(range(lo, min(n, lo + 16)))
            plans = [plan_for(ds, i, seed=i, cfg=cfg) for i in idx]
            dsts = [ds.load(i) for i in idx]
            srcs = [[ds.load(b) if k in p.used_sources else None for k, b in enumerate(p.basket)] for p in plans]
            outs = apply_cupy_batch(plans, dsts, srcs, backend=be)
            for i, p, d, sr, o in zip(idx, plans, dsts, srcs, outs):
                ref = apply(p, d, sr, backend="numpy")
                checked += 1
                augmented += ref is not d
                diff = differences(ref, o)
                if diff:
                    bad.append(f"{cfg_name} #{i}: {diff[:3]}")
    return dict(dataset=type(ds).__name__, images=n, checked=checked, augmented=augmented, mismatches=len(bad),
                first=bad[:5], ok=not bad)


def parity_scenes(args, be) -> dict[str, Any]:
    """The kernels against the reference on hypothesis scenes (``tests/scenes.py``)."""
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hsettings
    from scenes import scenes

    from ocp_dali import apply, sample_plan
    from ocp_dali.kernels.apply import apply_cupy_batch

    n = settings(args.dry_run)["hyp_examples"]
    seen = {"examples": 0, "augmented": 0}

    @hsettings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(scenes())
    def check(scene):
        dmeta, smetas = scene.metas()
        plan = sample_plan(np.random.default_rng(scene.seed), dmeta, smetas, scene.cfg)
        seen["examples"] += 1
        ref = apply(plan, scene.dst, scene.sources, backend="numpy")
        if ref is scene.dst:
            return
        seen["augmented"] += 1
        diff = differences(ref, apply_cupy_batch([plan], [scene.dst], [scene.sources], backend=be)[0])
        assert not diff, diff

    try:
        check()
        return dict(max_examples=n, **seen, ok=True)
    except AssertionError as e:
        return dict(max_examples=n, **seen, ok=False, failure=str(e)[:1500])


def graph_batches(ds, cfg, device: str, s: dict) -> list[dict]:
    """The first ``loader_batches`` batches of the DALI graph on ``device``, on the host (uint8 images)."""
    from ocp_dali.torch import OCPLoader

    out = []
    with OCPLoader(ds, cfg, device=device, batch_size=4, output_size=s["loader_size"], seed=7,
                   py_num_workers=s["graph_workers"], normalize=False) as loader:
        for b in loader:
            out.append({k: ([t.cpu().numpy() for t in v] if isinstance(v, list) and v and hasattr(v[0], "cpu")
                            else (v.cpu().numpy() if hasattr(v, "cpu") else v)) for k, v in b.items()})
            if len(out) == s["loader_batches"]:
                break
    return out


def parity_graphs(args) -> dict[str, Any]:
    """The DALI graph on the GPU against the same graph on CPU operators (dry run: the CPU graph twice)."""
    from ocp_dali import OCPConfig

    s = settings(args.dry_run)
    ann, imgs, what = coco_files(args, s["size"])
    from ocp_dali import CocoInstances

    ds = CocoInstances(ann, imgs, classes=["person"])
    cfg = OCPConfig.ocp(prob=1.0, basket_size=2)
    gpu, cpu = graph_batches(ds, cfg, s["device"], s), graph_batches(ds, cfg, "cpu", s)
    exact, worst = [], 0
    for g, c in zip(gpu, cpu):
        if list(g["indices"]) != list(c["indices"]):
            exact.append("indices")
        for k in ("masks", "amodal_masks", "occluder_masks", "boxes", "labels"):
            if any(not np.array_equal(x, y) for x, y in zip(g[k], c[k])):
                exact.append(k)
        worst = max(worst, int(np.abs(g["images"].astype(np.int32) - c["images"].astype(np.int32)).max()))
    return dict(data=what, batches=len(gpu), compared=f"{s['device']} graph vs cpu graph", differing=exact,
                max_pixel_diff=worst, ok=len(gpu) == len(cpu) == s["loader_batches"] and not exact and worst <= 1)


def step_a(args, rec: Recorder) -> None:
    be = backend(args.dry_run)
    guarded(rec, "kernels_vs_reference_real", lambda: parity_real(args, be))
    guarded(rec, "kernels_vs_reference_hypothesis", lambda: parity_scenes(args, be))
    guarded(rec, "gpu_graph_vs_cpu_graph", lambda: parity_graphs(args))


# -- step b: throughput ------------------------------------------------------------------------------------------
def loader_rate(ds, cfg, device: str, batch: int, size: int, workers: int, lsj: bool, min_s: float) -> dict:
    """img/s of ``OCPLoader`` over whole epochs after a warm-up epoch, with the NVML peak memory during it."""
    from ocp_dali.torch import OCPLoader

    mon = GpuMonitor()
    rates = []
    with OCPLoader(ds, cfg, device=device, batch_size=batch, output_size=size, py_num_workers=workers,
                   num_threads=4, lsj=lsj) as loader:
        start = time.perf_counter()
        for epoch in range(100):
            t0, count = time.perf_counter(), 0
            for b in loader:
                count += len(b["indices"])
                mon.sample()
            if device == "gpu":
                import torch

                torch.cuda.synchronize()
            if epoch:
                rates.append(count / (time.perf_counter() - t0))
            if epoch and time.perf_counter() - start > min_s:
                break
    return dict(img_per_s=quartiles(rates), epochs=len(rates), **mon.summary())


def kernel_ms(ds, be, batch: int, dry: bool) -> dict:
    """GPU ms per image of ``apply_cupy_batch`` on a batch of device-resident images (CUDA events; median of 10)."""
    from ocp_dali import OCPConfig, plan_for
    from ocp_dali.kernels.apply import apply_cupy_batch

    cfg = OCPConfig.ocp(prob=1.0)
    idx = [i % len(ds) for i in range(batch)]
    plans = [plan_for(ds, i, seed=k, cfg=cfg) for k, i in enumerate(idx)]
    dsts = [ds.load(i) for i in idx]
    srcs = [[ds.load(b) if k in p.used_sources else None for k, b in enumerate(p.basket)] for p in plans]
    times = []
    for rep in range(2 if dry else 13):
        if dry:
            t0 = time.perf_counter()
            apply_cupy_batch(plans, dsts, srcs, backend=be)
            times.append((time.perf_counter() - t0) * 1e3)
            continue
        import cupy

        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        apply_cupy_batch(plans, dsts, srcs, backend=be)
        end.record()
        end.synchronize()
        if rep >= 3:
            times.append(cupy.cuda.get_elapsed_time(start, end))
    med = float(np.median(times))
    return dict(batch=batch, batch_ms=quartiles(times), ms_per_image=med / batch,
                timing="host clock, emulator" if dry else "CUDA events (host packing included)")


def mmdet_rate(path: str, ann: Path, imgs: Path, size: int, workers: int, n: int, repeats: int) -> dict:
    """img/s of the mmdet pipeline (LSJ at ``size``) with one copy-paste transform, ``workers`` processes, batch 2,
    over ``repeats`` epochs of ``n`` images after a warm-up epoch."""
    from aug_throughput import with_workers

    return with_workers(path, str(ann), str(imgs), (size, size), workers, 2, n, repeats)


def step_b(args, rec: Recorder) -> None:
    from ocp_dali import CocoInstances, OCPConfig

    s = settings(args.dry_run)
    ann, imgs, what = coco_files(args, s["size"])
    rec.put("data", what)
    ds = CocoInstances(ann, imgs, classes=["person"])
    ocp, off = OCPConfig.ocp(), OCPConfig.ocp(prob=0.0)
    dev, big = s["device"], s["workers"][-1]
    n = min(len(ds), 80)
    for path in ("mmdet_copypaste", "ocp_ocp"):  # first: their DataLoader forks before CUDA starts here
        guarded(rec, f"mmdet_{path}_w{s['mmdet_workers']}",
                lambda: mmdet_rate(path, ann, imgs, s["size"], s["mmdet_workers"], n, s["mmdet_repeats"]))
    guarded(rec, "kernels_gpu_ms", lambda: kernel_ms(ds, backend(args.dry_run), s["batch"], args.dry_run))
    for w in s["workers"]:
        guarded(rec, f"dali_{dev}_m2f_ocp_w{w}",
                lambda: loader_rate(ds, ocp, dev, s["batch"], s["size"], w, True, s["min_seconds"]))
    guarded(rec, f"dali_{dev}_m2f_prob0_w{big}",
            lambda: loader_rate(ds, off, dev, s["batch"], s["size"], big, True, s["min_seconds"]))
    for name, cfg in (("ocp", ocp), ("prob0", off)) if "mrcnn" in s["geometries"] else ():
        guarded(rec, f"dali_{dev}_mrcnn_{name}_w{big}",
                lambda: loader_rate(ds, cfg, dev, s["batch"], s["size"], big, False, s["min_seconds"]))
    if dev == "gpu":
        guarded(rec, f"dali_cpu_m2f_ocp_w{big}",
                lambda: loader_rate(ds, ocp, "cpu", s["batch"], s["size"], big, True, s["min_seconds"]))
    rec.put("ocp_added_ms_per_image", added_ms(rec.data, dev, big))


def added_ms(data: dict, dev: str, workers: int) -> dict[str, float | None]:
    """Wall ms per image that OC&P adds to the DALI graph (prob=0 against OC&P, same geometry and workers)."""
    out: dict[str, float | None] = {}
    for geo in ("m2f", "mrcnn"):
        a = (data.get(f"dali_{dev}_{geo}_ocp_w{workers}") or {}).get("img_per_s") or {}
        b = (data.get(f"dali_{dev}_{geo}_prob0_w{workers}") or {}).get("img_per_s") or {}
        out[geo] = (1e3 / a["median"] - 1e3 / b["median"]) if a.get("median") and b.get("median") else None
    return out


# -- steps c, d: training ----------------------------------------------------------------------------------------
def data_override(args) -> tuple[str, str, str]:
    """(data_root, ann_file, img prefix) for the training configs (absolute paths): coco_mini val2017 or synthetic
    scenes."""
    ann, imgs, _ = coco_files(args, settings(args.dry_run)["size"])
    return str(ann.parent) + "/", str(ann), str(imgs) + "/"


def lsj_load(size: int, to_float: bool) -> list[dict]:
    """mmdet's LSJ load pipeline to a fixed ``size`` (what its ``CopyPaste`` needs: equal image shapes)."""
    return [dict(type="LoadImageFromFile", to_float32=to_float),
            dict(type="LoadAnnotations", with_bbox=True, with_mask=True, poly2mask=True),
            dict(type="RandomFlip", prob=0.5),
            dict(type="RandomResize", scale=(size, size), ratio_range=(0.1, 2.0), keep_ratio=True),
            dict(type="RandomCrop", crop_size=(size, size), crop_type="absolute", recompute_bbox=True,
                 allow_negative_crop=True),
            dict(type="FilterAnnotations", min_gt_bbox_wh=(1e-5, 1e-5), by_mask=True),
            dict(type="Pad", size=(size, size), pad_val=dict(img=0))]


def train_config(args, base: Path, variant: str, model: str, out: Path) -> Path:
    """A config file for one training row: ``base`` with the data, batch, workers, AMP and iteration overrides.

    Variants: ``dali`` and ``cpu_ocp`` (the base's OcclusionCopyPaste), ``cpu_mmdet_copypaste`` (mmdet's
    MultiImageMixDataset + CopyPaste after LSJ), ``cpu_none`` (OcclusionCopyPaste with prob=0).
    """
    s = settings(args.dry_run)
    root, ann, img = data_override(args)
    w, iters, size = s["train_workers"], s["warmup"] + s["timed_iters"], s["size"]
    inner = dict(data_root=root, ann_file=ann, data_prefix=dict(img=img))
    tail = [dict(type="RandomFlip", prob=0.5)] if model == "mrcnn" else []
    lines = [f"_base_ = [{str(base)!r}]",
             f"train_cfg = dict(type='IterBasedTrainLoop', max_iters={iters}, val_interval=10**9)",
             "val_cfg = None", "val_dataloader = None", "val_evaluator = None",
             "test_cfg = None", "test_dataloader = None", "test_evaluator = None", "param_scheduler = []",
             "default_hooks = dict(logger=dict(interval=1), checkpoint=dict(by_epoch=False, interval=10**9))",
             "log_processor = dict(by_epoch=False, window_size=1)",  # each row its own iteration's times
             f"ocp_dali = dict(output_size={size}, py_num_workers={max(1, w)}, num_threads=4)"]
    if not args.dry_run:
        lines += ["optim_wrapper = dict(type='AmpOptimWrapper')", "model = dict(backbone=dict(init_cfg=None))"]
    loader = dict(batch_size=s["train_batch"], num_workers=w, persistent_workers=w > 0, timeout=0 if w == 0 else 600)
    if variant == "cpu_mmdet_copypaste":
        dataset = dict(_delete_=True, type="MultiImageMixDataset",
                       dataset=dict(type="CocoDataset", metainfo=dict(classes=("person",)),
                                    filter_cfg=dict(filter_empty_gt=True, min_size=32),
                                    pipeline=lsj_load(size, model == "m2f"), **inner),
                       pipeline=[dict(type="CopyPaste", max_num_pasted=100), dict(type="PackDetInputs")])
        loader.update(collate_fn=dict(type="pseudo_collate"), batch_sampler=None, dataset=dataset)
    else:
        loader["dataset"] = dict(dataset=inner)
        if variant == "cpu_none":
            loader["dataset"]["pipeline"] = [dict(type="OcclusionCopyPaste", preset="ocp", prob=0.0, seed=0),
                                             *tail, dict(type="PackDetInputs")]
    lines.append(f"train_dataloader = {loader!r}")
    path = out / f"{model}_{variant}.py"
    path.write_text("\n".join(lines) + "\n")
    return path


def scalars(work: Path) -> list[dict]:
    """The per-iteration rows of MMEngine's ``vis_data/scalars.json`` under ``work``."""
    logs = sorted(work.glob("*/vis_data/scalars.json"))
    if not logs:
        return []
    return [json.loads(x) for x in logs[-1].read_text().splitlines() if '"data_time"' in x]


def train_row(config: Path, dali: bool, work: Path, warmup: int, cap: float) -> dict:
    """Run ``trainers/train_mmdet.py`` on ``config`` (``--dali`` or not) within ``cap`` seconds, sampling NVML;
    s/iter and data time over the iterations after ``warmup``, utilisation over the same window."""
    cmd = [sys.executable, str(ROOT / "trainers/train_mmdet.py"), "--config", str(config), "--work-dir", str(work)]
    cmd += ["--dali"] if dali else []
    mon, log = GpuMonitor(), open(work.with_suffix(".log"), "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    t0, since = time.time(), None
    while proc.poll() is None and time.time() - t0 < cap:
        time.sleep(0.25)
        mon.sample()
        if since is None and len(scalars(work)) > warmup:
            since = time.time()
    timed_out = proc.poll() is None
    if timed_out:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log.close()
    rows = scalars(work)[warmup:]
    out = dict(iters_timed=len(rows), rc=proc.returncode, timed_out=timed_out, wall_s=round(time.time() - t0, 1),
               iter_s=quartiles([r["time"] for r in rows]), data_s=quartiles([r["data_time"] for r in rows]),
               peak_mem_mib_torch=max((r.get("memory", 0) for r in rows), default=None),
               **mon.summary(since or time.time()))
    if proc.returncode and not rows:
        out["error"] = work.with_suffix(".log").read_text()[-1500:]
    return out


def train_step(args, rec: Recorder, model: str, base: Path, cap: float) -> None:
    """The four training rows of one model (dry run: configs checked, one CPU iteration of the tiny config)."""
    from mmengine.config import Config

    s = settings(args.dry_run)
    cfg_dir = Path(args.work) / f"configs_{model}"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    variants = ("dali", "cpu_ocp", "cpu_mmdet_copypaste", "cpu_none")
    configs = {v: train_config(args, base, v, model, cfg_dir) for v in variants}
    guarded(rec, "configs", lambda: {v: Config.fromfile(str(p)).train_dataloader.dataset.type
                                     for v, p in configs.items()})
    if args.dry_run and model == "m2f":
        rec.put("skipped", "dry run: Mask2Former configs checked, no training")
        return
    todo = ["cpu_ocp"] if args.dry_run else list(variants)
    end = time.time() + cap
    for k, v in enumerate(todo):  # each row gets an equal share of what is left (a quick failure passes it on)
        per = (end - time.time()) / (len(todo) - k)
        guarded(rec, v, lambda: train_row(configs[v], v == "dali", Path(args.work) / f"work_{model}_{v}",
                                          s["warmup"], per))
    kern = json.loads((Path(args.work) / "step_b.json").read_text()).get("kernels_gpu_ms", {}) \
        if (Path(args.work) / "step_b.json").exists() else {}
    dali = (rec.data.get("dali") or {}).get("iter_s") or {}
    if kern.get("ms_per_image") and dali.get("median"):
        rec.put("ocp_share_of_step", kern["ms_per_image"] * s["train_batch"] / (dali["median"] * 1e3))


def step_c(args, rec: Recorder) -> None:
    train_step(args, rec, "mrcnn", MRCNN_TINY if args.dry_run else MRCNN_BASE, args.cap - 10)


def step_d(args, rec: Recorder) -> None:
    train_step(args, rec, "m2f", M2F_BASE, args.cap - 10)


# -- step e: faults ----------------------------------------------------------------------------------------------
def epoch_report(ds, device: str, size: int, batch: int, workers: int) -> dict:
    """One epoch of the DALI graph over ``ds``: samples, skips and stats, or the error it raised."""
    from ocp_dali import OCPConfig
    from ocp_dali.torch import OCPLoader

    t0 = time.perf_counter()
    try:
        with OCPLoader(ds, OCPConfig.ocp(), device=device, batch_size=batch, output_size=size, py_num_workers=workers,
                       timeout=120) as loader:
            seen = [i for b in loader for i in b["indices"]]
            return dict(samples=len(seen), images=len(ds), skips=[str(s) for s in loader.skips][:20],
                        stats=dict(loader.stats), seconds=round(time.perf_counter() - t0, 1))
    except Exception as e:  # noqa: BLE001  (the error, clear or not, is the result)
        oom = "out of memory" in str(e).lower() or "OutOfMemory" in type(e).__name__
        return dict(error=f"{type(e).__name__}: {e}"[:1500], cuda_oom=oom, skipped="CUDA OOM" if oom else None,
                    seconds=round(time.perf_counter() - t0, 1))


def step_e(args, rec: Recorder) -> None:
    from aug_throughput import write_synthetic_coco
    from faults import write_fault_corpus

    from ocp_dali import CocoInstances

    s = settings(args.dry_run)
    corpus = write_fault_corpus(Path(args.work) / "faults")
    ds = CocoInstances(corpus.ann_file, corpus.img_dir)
    if args.dry_run:  # its 8192² image and bad-file rebuilds take a minute on 2 cores: the epoch runs on the GPU
        rec.put("fault_corpus", dict(bad_images=len(corpus.bad_images), good_images=len(corpus.good),
                                     images=len(ds), skipped="dry run: corpus written, no epoch"))
    else:
        guarded(rec, "fault_corpus", lambda: dict(bad_images=len(corpus.bad_images), good_images=len(corpus.good),
                                                  **epoch_report(ds, s["device"], s["loader_size"], 2, 2)))
    side, people = s["big_side"], s["big_people"]
    big = guarded(rec, "big_scene_written", lambda: [str(p) for p in write_synthetic_coco(
        Path(args.work) / "big", (side, side), people, 1)])
    if isinstance(big, list):
        ds = CocoInstances(big[0], big[1], classes=["person"])
        guarded(rec, f"big_{side}_{people}_people",
                lambda: epoch_report(ds, s["device"], s["size"], 1, s["graph_workers"]))


# -- driver ------------------------------------------------------------------------------------------------------
STEP_FUNCS = {"a": step_a, "b": step_b, "c": step_c, "d": step_d, "e": step_e}
TITLES = {"a": "parity smoke", "b": "pipeline throughput", "c": "Mask R-CNN training", "d": "Mask2Former training",
          "e": "fault corpus and 8192² scene"}


def device_name(dry: bool) -> str:
    """The GPU's name (``nvidia-h200``-like slug), or ``dryrun``."""
    if dry:
        return "dryrun"
    try:
        import torch

        return torch.cuda.get_device_name(0).lower().replace(" ", "-")
    except Exception as e:  # noqa: BLE001
        return f"unknown-gpu-{type(e).__name__}"


def versions() -> dict[str, str]:
    """Versions of the stack (``unavailable`` for what does not import)."""
    out = {"python": platform.python_version()}
    for mod in ("numpy", "torch", "cupy", "nvidia.dali", "mmcv", "mmengine", "mmdet", "pycocotools"):
        try:
            m = __import__(mod, fromlist=["__version__"])
            out[mod] = str(getattr(m, "__version__", "?"))
        except Exception as e:  # noqa: BLE001
            out[mod] = f"unavailable ({type(e).__name__})"
    return out


def run_step(args, step: str, cap: float) -> dict[str, Any]:
    """Run one step in its own process session within ``cap`` seconds; its (possibly partial) results."""
    out = Path(args.work) / f"step_{step}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--step", step, "--work", args.work, "--cap", str(cap), "--out", args.out]
    cmd += (["--data", args.data] if args.data else []) + (["--dry-run"] if args.dry_run else [])
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)
    try:
        rc = proc.wait(timeout=cap)
        status = "ok" if rc == 0 else f"failed (exit {rc})"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        status = f"timed out after {cap:.0f} s"
    result = json.loads(out.read_text()) if out.exists() else {}
    return dict(title=TITLES[step], status=status, cap_s=round(cap), seconds=round(time.time() - t0, 1),
                result=result)


def results_path(args) -> Path:
    return Path(args.out) / f"gpu_proof_{device_name(args.dry_run)}.json"


def drive(args) -> dict[str, Any]:
    """Run the chosen steps in order, rewriting the results JSON and plot after each one."""
    from tqdm import tqdm

    path = results_path(args)
    report = json.loads(path.read_text()) if path.exists() else dict(steps={})
    report.update(device=device_name(args.dry_run), dry_run=args.dry_run, versions=versions(),
                  machine=dict(cpu_count=os.cpu_count(), platform=platform.platform()),
                  settings=settings(args.dry_run), command=" ".join(sys.argv))
    caps = DRY_CAPS if args.dry_run else CAPS
    steps = [s for s in args.steps.split(",") if s]
    for step in tqdm(steps, desc="gpu_proof", disable=None):
        left = (args.deadline - time.time()) if args.deadline else caps[step]
        cap = min(caps[step], left)
        if cap < 15:
            report["steps"][step] = dict(title=TITLES[step], status=f"not run: {max(0, left):.0f} s left",
                                         result={})
        else:
            report["steps"][step] = run_step(args, step, cap)
        path.write_text(json.dumps(report, indent=1, default=str))
        plot(report, path.with_suffix(".png"))
    print_table(report)
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return report


def print_table(report: dict) -> None:
    """One line per step: status, seconds, and its headline numbers."""
    print(f"\n{'step':<5}{'what':<32}{'status':<26}{'s':>7}  headline")
    for k, st in sorted(report["steps"].items()):
        print(f"{k:<5}{st['title']:<32}{st['status']:<26}{st.get('seconds', 0):>7}  {headline(k, st['result'])}")


def headline(step: str, r: dict) -> str:
    """A few numbers of a step's result, for the table."""
    def med(x):
        return ((x or {}).get("img_per_s") or (x or {}).get("iter_s") or {}).get("median") if isinstance(x, dict) \
            else None

    if step == "a":
        return " ".join(f"{k}={'ok' if (v or {}).get('ok') else 'FAIL'}" for k, v in r.items())
    if step == "b":
        kms = (r.get("kernels_gpu_ms") or {}).get("ms_per_image")
        return " ".join(f"{k}={med(v):.0f}" for k, v in r.items() if med(v)) + \
            (f" kernels={kms:.2f}ms/img" if kms else "")
    if step in "cd":
        return " ".join(f"{k}={med(v):.3f}s/it" for k, v in r.items() if med(v)) or str(r.get("skipped", ""))
    return " ".join(f"{k}:{'error' if (v or {}).get('error') else 'ok'}" for k, v in r.items()
                    if isinstance(v, dict))


def plot(report: dict, path: Path) -> None:
    """Throughput against workers (step b) and s/iter per training row (steps c, d)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    series: dict[str, list[tuple[int, float]]] = {}  # "dali_gpu_m2f_ocp" -> [(workers, img/s)]
    for k, v in report["steps"].get("b", {}).get("result", {}).items():
        rate = ((v.get("img_per_s") or {}).get("median")) if isinstance(v, dict) else None
        if rate and "_w" in k:
            name, w = k.rsplit("_w", 1)
            series.setdefault(name, []).append((int(w), rate))
    for name, pts in sorted(series.items()):
        a.plot(*zip(*sorted(pts)), marker="o" if name.startswith("dali_gpu") else "s", label=name)
    a.set(xlabel="Python worker processes", ylabel="img/s", title="pipeline throughput (step b)")
    labels, vals = [], []
    for step in "cd":
        for k, v in report["steps"].get(step, {}).get("result", {}).items():
            if isinstance(v, dict) and (v.get("iter_s") or {}).get("median"):
                labels.append(f"{'MRCNN' if step == 'c' else 'M2F'} {k}")
                vals.append(v["iter_s"]["median"])
    b.barh(labels, vals)
    b.set(xlabel="s / iteration (median)", title="training iterations (steps c, d)")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    if a.lines or a.collections:
        a.legend(fontsize=7)
    fig.suptitle(f"ocp_dali GPU proof: {report['device']}" + (" (DRY RUN, no GPU figures)" if report["dry_run"]
                                                             else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "out/gpu_proof"), help="results folder ($OUT on the GPU machine)")
    ap.add_argument("--data", default=None, help="a coco_mini folder (val2017/ and annotations/)")
    ap.add_argument("--steps", default=",".join(STEPS))
    ap.add_argument("--deadline", type=float, default=None, help="epoch seconds by which every step must end")
    ap.add_argument("--dry-run", action="store_true", help="CPU machine: tiny sizes, CPU graph, kernel emulator")
    ap.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)  # a step's own process
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cap", type=float, default=60.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.step:
        print(f"== step {args.step}: {TITLES[args.step]} (cap {args.cap:.0f} s)", flush=True)
        STEP_FUNCS[args.step](args, Recorder(Path(args.work) / f"step_{args.step}.json"))
        return 0
    own = args.work is None
    args.work = args.work or tempfile.mkdtemp(prefix="gpu_proof_")
    try:
        drive(args)
    finally:
        if own:
            shutil.rmtree(args.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
