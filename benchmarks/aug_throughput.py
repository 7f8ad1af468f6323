"""Copy-paste throughput, side by side in one run: mmdet 3.3 ``CopyPaste`` (the CPU anchor) against ocp_dali's
CPU path in the same mmdet pipeline (Simple mode for a like-for-like race, and OC&P), per core and with a pool of
worker processes; ocp_dali's own whole pipelines raced against those (the DALI CPU graph and ``OCPDataset``); plus
ocp_dali on the GPU where one is present.

    python benchmarks/aug_throughput.py              # embedded default: synthetic COCO-like scenes, full sweep
    python benchmarks/aug_throughput.py --quick      # CI smoke test (one resolution, 4 images, one repeat)
    python benchmarks/aug_throughput.py --ann A.json --images DIR
    python benchmarks/aug_throughput.py --publish    # write into benchmarks/results/ (the published figures)
    python benchmarks/aug_throughput.py --race-only --resolutions 1024 --ann A.json --images DIR  # the race alone

Each mmdet path runs the same mmdet load pipeline (decode, masks, LSJ: RandomResize(0.1-2.0) -> RandomCrop -> Flip ->
Pad) and differs only in its copy-paste transform. Measured: the copy-paste step alone on identical prepared inputs
(the same destination and source images for every path: "step"), the whole pipeline per core ("pipeline"), and img/s
of a torch DataLoader with 1..N workers ("workers").
Medians and quartiles over repeats after a warm-up. Per-core runs happen in a fresh process each, whose peak RSS is
reported.

The whole-pipeline race ("pipelines" in the JSON; ``race_pipelines``) at 1024² LSJ: the mmdet pipeline with
``CopyPaste`` and with ``OcclusionCopyPaste(preset="ocp")``, ``OCPLoader(device="cpu")`` (the DALI CPU graph,
``OCPConfig.ocp()``) and ``OCPDataset`` behind a DataLoader (``collate_fn=list``), each of ocp_dali's with only the
visible masks requested (``Targets.visible()``) and with all targets, all over ``CocoInstances(classes=["person"],
filter_empty_gt=True)``. One process per path, all alive, run in turn in chunks of whole epochs (the order rotates
each round) after a warm-up epoch (the DALI workers' start-up falls in it), so load from elsewhere falls on every path
alike. Per core: every process pinned to one core (``--race-core``) before it starts workers, which inherit it
(the DALI graph: one worker process, one thread; the others in-process); then the pools (1..N workers, every core).
Reported per path: img/s, img per CPU-second (process and workers), peak RSS (process; workers summed), the load
average before/after each phase, and the ratios against the mmdet pipeline with ``CopyPaste`` (pooled and paired
per round) with the bar of issue #14 (per core: the DALI CPU graph >= 2x with visible masks, >= 1x with all targets).

Writes JSON and a PNG plot to ``--out`` (default ``out/benchmarks/``; ``--publish``: ``benchmarks/results/``) and
prints the tables and the summary line. ``benchmarks/dali_cpu_profile.py`` splits the DALI CPU graph's batch time.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import copy
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PATHS = {
    # equal work: both Simple paths paste every object of the source (selected=False), so they draw no numbers
    "mmdet_copypaste": dict(wrapper="MultiImageMixDataset",
                            transform=dict(type="CopyPaste", max_num_pasted=100, selected=False)),
    "ocp_simple": dict(wrapper="OCPMixDataset",
                       transform=dict(type="OcclusionCopyPaste", preset="simple", selected=False)),
    "ocp_ocp": dict(wrapper="OCPMixDataset", transform=dict(type="OcclusionCopyPaste", preset="ocp", prob=1.0)),
}


# -- data ------------------------------------------------------------------------------------------------------
def write_synthetic_coco(root: Path, size: tuple[int, int], people: int, n: int, seed: int = 0) -> tuple[Path, Path]:
    """Synthetic scenes as a COCO folder (JPEG q95 + json with RLE masks) so every path decodes real files."""
    from PIL import Image
    from pycocotools import mask as mask_utils

    from ocp_dali import SyntheticScenes
    from ocp_dali.data.rle import encode_mask

    d = root / f"synthetic_{size[0]}x{size[1]}_p{people}_n{n}"
    ann = d / "ann.json"
    if ann.exists():
        return ann, d / "images"
    (d / "images").mkdir(parents=True, exist_ok=True)
    ds = SyntheticScenes(n, seed=seed, image_size=size, max_people=people)
    images, anns = [], []
    for i in range(n):
        s = ds.load(i)
        name = f"{i:06d}.jpg"
        Image.fromarray(s.image).save(d / "images" / name, quality=95)
        images.append(dict(id=i + 1, file_name=name, height=size[0], width=size[1]))
        for m, lab in zip(s.masks, s.labels):
            rle = encode_mask(m)
            x, y, w, h = mask_utils.toBbox(rle).tolist()
            anns.append(dict(id=len(anns) + 1, image_id=i + 1, category_id=int(lab), iscrowd=0, segmentation=rle,
                             bbox=[x, y, w, h], area=float(m.sum())))
    ann.write_text(json.dumps(dict(images=images, annotations=anns, categories=[dict(id=1, name="person")])))
    return ann, d / "images"


def build_dataset(path: str, ann: str, img_dir: str, size: tuple[int, int], overrides: dict | None = None):
    """The path's mmdet dataset: CocoDataset with the load pipeline, wrapped with its copy-paste transform."""
    import ocp_dali.mmdet  # noqa: F401  (registers OcclusionCopyPaste, OCPMixDataset)
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules

    register_all_modules()
    h, w = size
    load = [dict(type="LoadImageFromFile"),
            dict(type="LoadAnnotations", with_bbox=True, with_mask=True, poly2mask=True),
            dict(type="RandomResize", scale=(w, h), ratio_range=(0.1, 2.0), keep_ratio=True),
            dict(type="RandomCrop", crop_type="absolute", crop_size=(w, h), recompute_bbox=True,
                 allow_negative_crop=True),
            dict(type="FilterAnnotations", min_gt_bbox_wh=(1e-2, 1e-2)),
            dict(type="RandomFlip", prob=0.5),
            dict(type="Pad", size=(w, h), pad_val=dict(img=(114, 114, 114)))]
    base = dict(type="CocoDataset", data_root=str(Path(ann).parent), ann_file=str(ann),
                data_prefix=dict(img=str(img_dir) + "/"), metainfo=dict(classes=("person",)),
                filter_cfg=dict(filter_empty_gt=True), pipeline=load)
    spec = PATHS[path]
    transform = dict(spec["transform"], **(overrides or {}))
    return DATASETS.build(dict(type=spec["wrapper"], dataset=base, pipeline=[transform, dict(type="PackDetInputs")]))


# -- measurements (each per-core run in a fresh process) --------------------------------------------------------
def _quartiles(xs: list[float]) -> dict:
    a = np.asarray(xs, dtype=np.float64)
    return dict(median=float(np.median(a)), p25=float(np.percentile(a, 25)), p75=float(np.percentile(a, 75)),
                n=int(a.size))


def per_core(path: str, ann: str, img_dir: str, size: tuple[int, int], n: int, repeats: int,
             overrides: dict | None = None) -> dict:
    """Step and pipeline timings of one path in this (fresh) process, and its peak RSS."""
    import torch

    torch.set_num_threads(1)  # "per core"
    ds = build_dataset(path, ann, img_dir, size, overrides)
    transform = ds.pipeline[0]
    inner = ds.dataset
    # prepared inputs, identical for every path: the load pipeline's output of image i, pasted from image i+1
    # (and i+2, ... for larger baskets)
    # (mmdet's LSJ transforms draw from the global generators: seed them the same way in every path's process)
    import random

    random.seed(0)
    np.random.seed(0)
    prepared = []
    for i in range(n):
        if hasattr(transform, "set_sample"):
            transform.set_sample(i, 0)
            transform.get_indexes(inner)  # (sets the basket length the transform replays)
        r = copy.deepcopy(inner[i])
        basket = int((overrides or {}).get("basket_size", 1))
        r["mix_results"] = [copy.deepcopy(inner[(i + k) % n]) for k in range(1, basket + 1)]
        prepared.append(r)
    step, pipe = [], []
    for rep in range(repeats + 1):  # the first round warms up
        inputs = [copy.deepcopy(r) for r in prepared]
        t0 = time.perf_counter()
        for i, r in enumerate(inputs):
            if hasattr(transform, "set_sample"):
                transform.set_sample(i, rep)
            transform(r)
        t_step = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        for i in range(n):
            ds[i]
        t_pipe = (time.perf_counter() - t0) / n
        if rep:
            step.append(t_step * 1e3)
            pipe.append(t_pipe * 1e3)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(step_ms=_quartiles(step), pipeline_ms=_quartiles(pipe), peak_rss_mb=rss_mb)


def with_workers(path: str, ann: str, img_dir: str, size: tuple[int, int], workers: int, batch_size: int,
                 n: int, repeats: int) -> dict:
    """img/s of a torch DataLoader over the path's dataset with ``workers`` persistent processes (the first epoch,
    which starts them, is the warm-up)."""
    import torch
    from mmengine.dataset import pseudo_collate

    ds = build_dataset(path, ann, img_dir, size)
    subset = torch.utils.data.Subset(ds, list(range(n)))
    dl = torch.utils.data.DataLoader(subset, batch_size=batch_size, num_workers=workers,
                                     collate_fn=pseudo_collate, persistent_workers=True)
    rates = []
    for rep in range(repeats + 1):
        t0 = time.perf_counter()
        count = sum(len(b["inputs"]) for b in dl)
        if rep:
            rates.append(count / (time.perf_counter() - t0))
    del dl
    return dict(img_per_s=_quartiles(rates))


def run_path(path: str, ann: str, img_dir: str, size: tuple[int, int], n: int, repeats: int,
             workers: list[int], batch_sizes: list[int]) -> list[dict]:
    """All measurements of one path, in one fresh process: per core first (its peak RSS is the per-worker
    figure), then the worker pools."""
    rows = [dict(workers=0, batch_size=1, **per_core(path, ann, img_dir, size, n, repeats))]
    for bs in batch_sizes:
        for w in workers:
            rows.append(dict(workers=w, batch_size=bs, **with_workers(path, ann, img_dir, size, w, bs, n, repeats)))
    return rows


def gpu_unusable() -> str | None:
    """Why there is no usable CUDA GPU here, or None."""
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no CUDA device")
        cupy.zeros(1)
    except Exception as e:  # noqa: BLE001  (any failure means: no usable GPU here)
        return f"no usable GPU: {type(e).__name__}: {e}"
    return None


def gpu_rows(ann: Path, img_dir: Path, size: tuple[int, int], batch_size: int, repeats: int) -> dict:
    """ocp_dali on the GPU: the OC&P kernels and the geometry kernels alone on a pre-decoded batch, and the whole
    DALI pipeline, on JPEG files like the CPU rows' (synthetic scenes rendered in the workers would time the
    renderer, not the pipeline); the geometry kernels' share of one pipeline batch."""
    import cupy

    from ocp_dali import CocoInstances, OCPConfig, plan_for
    from ocp_dali.kernels.apply import apply_cupy_batch
    from ocp_dali.torch import OCPLoader

    name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    name = name.decode() if isinstance(name, bytes) else str(name)
    ds = CocoInstances(ann, img_dir, classes=["person"])
    cfg = OCPConfig.ocp(prob=1.0)
    idx = list(range(batch_size))
    plans = [plan_for(ds, i, cfg=cfg) for i in idx]
    dsts = [ds.load(i) for i in idx]
    srcs = [[ds.load(b) if k in p.used_sources else None for k, b in enumerate(p.basket)] for p in plans]
    times = []
    for rep in range(repeats + 2):
        cupy.cuda.Device().synchronize()
        t0 = time.perf_counter()
        apply_cupy_batch(plans, dsts, srcs)
        cupy.cuda.Device().synchronize()
        if rep >= 2:
            times.append((time.perf_counter() - t0) * 1e3)
    def pipeline_rate(c: OCPConfig) -> dict:
        rates = []
        with OCPLoader(ds, c, device="gpu", batch_size=batch_size, output_size=size[0],
                       py_num_workers=max(1, (os.cpu_count() or 2) - 2)) as loader:
            for rep in range(repeats + 1):
                t0 = time.perf_counter()
                count = sum(len(b["indices"]) for b in loader)
                if rep:
                    rates.append(count / (time.perf_counter() - t0))
        return _quartiles(rates)

    with_ocp, without = pipeline_rate(cfg), pipeline_rate(cfg.replace(prob=0.0))
    # the geometry kernels alone on the same destinations (the timing make test-gpu publishes), and their share of
    # one batch of the whole GPU pipeline
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_apply_timing import time_lsj_gpu

    geometry = time_lsj_gpu(dsts, size[0], warmup=2, repeats=max(3, repeats))
    if geometry is None:  # CuPy sees a device that ocp_dali.backends does not: say so rather than guess
        raise RuntimeError("gpu_rows: CuPy has a GPU but ocp_dali.backends.cuda_device_count() found none")
    pipeline_batch_ms = 1e3 * batch_size / with_ocp["median"]
    return dict(available=True, device=name, kernels_batch_ms=_quartiles(times), pipeline_img_per_s=with_ocp,
                pipeline_without_ocp_img_per_s=without,
                ocp_overhead=without["median"] / with_ocp["median"] - 1.0,
                geometry_batch_ms=geometry["median_ms"], geometry_ms=geometry["ms"],
                geometry_share_of_pipeline_batch=geometry["median_ms"] / pipeline_batch_ms,
                peak_gpu_mem_mb=cupy.get_default_memory_pool().total_bytes() / 2**20)


def train_rows(config: str, iters: int, options: list[str] | None = None) -> dict:
    """Mask R-CNN iteration and data time with the CPU loader and with the DALI loader (``trainers/train_mmdet.py``;
    the DALI graph runs on CPU operators where there is no GPU)."""
    import subprocess

    out = {}
    for name, flag in (("cpu_loader", []), ("dali_loader", ["--dali"])):
        with tempfile.TemporaryDirectory() as wd:
            cmd = [sys.executable, str(ROOT / "trainers" / "train_mmdet.py"), "--config", config, "--work-dir", wd,
                   *flag, "--cfg-options", f"train_cfg.max_iters={iters}", "default_hooks.checkpoint.interval=100000",
                   *(options or [])]
            r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600)
            if r.returncode != 0:
                out[name] = dict(error=r.stderr[-1500:])
                continue
            log = sorted(Path(wd).glob("*/vis_data/scalars.json"))[-1]
            rows = [json.loads(x) for x in log.read_text().splitlines() if '"time"' in x][2:]  # after warm-up
            out[name] = dict(iter_s=_quartiles([x["time"] for x in rows]),
                             data_s=_quartiles([x["data_time"] for x in rows]), iters=len(rows))
    return dict(config=config, **out)


# -- whole pipelines raced: ocp_dali's own (DALI CPU graph, OCPDataset) against the mmdet ones -------------------
RACE_PATHS = ("mmdet_copypaste", "ocp_ocp", "dali_cpu_visible", "dali_cpu_all", "ocp_dataset_visible",
              "ocp_dataset_all")
RACE_BAR = {"dali_cpu_visible": 2.0, "dali_cpu_all": 1.0}  # per core, x the mmdet pipeline + CopyPaste


def open_pipeline(path: str, ann: str, img_dir: str, size: tuple[int, int], batch_size: int,
                  workers: int) -> tuple[Callable[[], int], Callable[[], None]]:
    """``(run_epoch, close)`` of one whole pipeline; ``run_epoch()`` iterates one epoch and returns its image count.

    ``workers=0`` is the per-core form: the mmdet pipelines and ``OCPDataset`` run in this process (as
    ``DataLoader(num_workers=0)``), the DALI CPU graph with one worker process and one thread (its worker counts
    against the core the caller is pinned to); else a pool of ``workers`` processes (DALI: as many threads)."""
    import torch

    if path in PATHS:  # the mmdet pipeline with the path's copy-paste transform
        ds = build_dataset(path, ann, img_dir, size)
        if not workers:
            return (lambda: sum(1 for i in range(len(ds)) if ds[i] is not None)), (lambda: None)
        from mmengine.dataset import pseudo_collate

        dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers,
                                         collate_fn=pseudo_collate, persistent_workers=True)
        return (lambda: sum(len(b["inputs"]) for b in dl)), (lambda: setattr(dl, "_iterator", None))
    from ocp_dali import OCPConfig, Targets
    from ocp_dali.data.coco import CocoInstances
    from ocp_dali.torch import OCPDataset, OCPLoader

    data = CocoInstances(ann, img_dir, classes=["person"], filter_empty_gt=True)
    cfg = OCPConfig.ocp()
    targets = Targets.visible() if path.endswith("_visible") else Targets.all()
    if path.startswith("dali_cpu"):
        loader = OCPLoader(data, cfg, device="cpu", batch_size=batch_size, output_size=size,
                           py_num_workers=max(1, workers), num_threads=max(1, workers), targets=targets)
        return (lambda: sum(len(b["indices"]) for b in loader)), loader.close
    ods = OCPDataset(data, cfg, output_size=size, targets=targets)
    dl = torch.utils.data.DataLoader(ods, batch_size=batch_size, num_workers=workers, collate_fn=list,
                                     persistent_workers=workers > 0)
    epochs = iter(range(10**9))

    def run_epoch() -> int:
        ods.set_epoch(next(epochs))  # (reaches the workers only with workers=0: persistent pools keep epoch 0)
        return sum(len(b) for b in dl)

    return run_epoch, (lambda: setattr(dl, "_iterator", None))


def descendants(root: int) -> list[int]:
    """All live descendants of ``root`` (from the parent links in ``/proc/*/stat``)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return sorted(out)


def tree_usage() -> dict:
    """CPU seconds (user + system) of this process and its live descendants (DALI or DataLoader workers), and their
    peak RSS in MB (VmHWM: this process, and summed over the descendants: shared pages count in each)."""
    tick = os.sysconf("SC_CLK_TCK")
    cpu, rss_self, rss_kids = 0.0, 0.0, 0.0
    for pid in [os.getpid(), *descendants(os.getpid())]:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            hwm = next(int(x.split()[1]) for x in Path(f"/proc/{pid}/status").read_text().splitlines()
                       if x.startswith("VmHWM"))
        except (OSError, StopIteration, IndexError, ValueError):
            continue  # (a process that ended meanwhile)
        cpu += (int(stat[11]) + int(stat[12])) / tick
        if pid == os.getpid():
            rss_self = hwm / 1024
        else:
            rss_kids += hwm / 1024
    return dict(cpu_s=cpu, peak_rss_mb=rss_self, peak_rss_workers_mb=rss_kids)


def _race_child(conn, path: str, ann: str, img_dir: str, size: tuple[int, int], batch_size: int,
                core: int) -> None:
    """One path's process in the race, pinned to ``core`` before anything starts (worker processes inherit it);
    serves ``("open", workers)`` (build, one warm-up epoch: the DALI loader's worker start-up and first batches
    fall in it; the pools widen the affinity to every core), ``("run", epochs)`` and ``("stop", None)``."""
    import traceback

    everywhere = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    import torch

    torch.set_num_threads(1)
    run = close = None
    try:
        while True:
            cmd, arg = conn.recv()
            if cmd == "stop":
                break
            if cmd == "open":
                if close:
                    close()
                os.sched_setaffinity(0, everywhere if arg else {core})
                run, close = open_pipeline(path, ann, img_dir, size, batch_size, arg)
                run()  # warm-up epoch
                conn.send(tree_usage())
            elif cmd == "run":
                u0, t0 = tree_usage(), time.perf_counter()
                n = sum(run() for _ in range(arg))
                dt, u1 = time.perf_counter() - t0, tree_usage()
                conn.send(dict(images=n, seconds=dt, cpu_s=u1["cpu_s"] - u0["cpu_s"]))
    except Exception:  # noqa: BLE001  (the parent raises it, with the child's traceback)
        conn.send(dict(error=traceback.format_exc()))
    finally:
        if close:
            close()


def _ask(conn, msg: tuple) -> dict:
    conn.send(msg)
    got = conn.recv()
    if "error" in got:
        raise RuntimeError(f"race child failed on {msg}:\n{got['error']}")
    return got


def _race_row(path: str, workers: int, chunks: list[dict], usage: dict, load: tuple) -> dict:
    images, secs, cpu = (sum(c[k] for c in chunks) for k in ("images", "seconds", "cpu_s"))
    row = dict(path=path, workers=workers, images=images, images_per_chunk=chunks[0]["images"], seconds=secs,
               img_per_s=images / secs,
               chunk_img_per_s=[c["images"] / c["seconds"] for c in chunks],
               img_per_cpu_s=images / cpu if cpu else None, cpu_share=cpu / secs,
               loadavg_before=load[0], loadavg_after=load[1])
    if workers == 0:
        row.update(peak_rss_mb=usage["peak_rss_mb"], peak_rss_workers_mb=usage["peak_rss_workers_mb"])
    return row


def race_pipelines(ann: str, img_dir: str, size: tuple[int, int], batch_size: int, workers: list[int],
                   rounds: int, epochs: int, core: int, paths: tuple[str, ...] = RACE_PATHS) -> dict:
    """Race whole pipelines: one spawned process per path, all alive at once and run in turn, ``rounds`` chunks of
    ``epochs`` epochs each (the order rotates every round), so load from elsewhere falls on all alike. Phase 0:
    per core (every process pinned to core ``core``, worker processes included); then one phase per pool size."""
    from tqdm import tqdm

    ctx = mp.get_context("spawn")
    kids = {}
    for p in paths:
        here, there = ctx.Pipe()
        proc = ctx.Process(target=_race_child, args=(there, p, ann, img_dir, size, batch_size, core), daemon=False)
        proc.start()
        kids[p] = (here, proc)
    rows: list[dict] = []
    bar = tqdm(total=len([0, *workers]) * len(paths) * (rounds + 1), desc="pipeline race")
    try:
        for w in [0, *workers]:
            load0 = os.getloadavg()[0]
            usage = {}
            for p in paths:
                usage[p] = _ask(kids[p][0], ("open", w))
                bar.update()
            chunks: dict[str, list[dict]] = {p: [] for p in paths}
            for r in range(rounds):
                for p in paths[r % len(paths):] + paths[:r % len(paths)]:
                    chunks[p].append(_ask(kids[p][0], ("run", epochs)))
                    bar.update()
            load = (load0, os.getloadavg()[0])
            rows += [_race_row(p, w, chunks[p], usage[p], load) for p in paths]
    finally:
        bar.close()
        for conn, proc in kids.values():
            conn.send(("stop", None))
            proc.join(60)
    return dict(settings=dict(batch_size=batch_size, workers=workers, rounds=rounds, epochs_per_chunk=epochs,
                              warmup_epochs=1, core=core, paths=list(paths)),
                rows=rows, **race_summary(rows, paths))


def race_summary(rows: list[dict], paths: tuple[str, ...], base: str = "mmdet_copypaste") -> dict:
    """Ratios against ``base`` per core (pooled img/s; the median and lowest of the per-round paired ratios; and
    by CPU time, which load from elsewhere inflates less), the bar of issue #14, and a short table."""
    per_core = {r["path"]: r for r in rows if r["workers"] == 0}
    pools = {(r["path"], r["workers"]): r["img_per_s"] for r in rows if r["workers"] > 0}
    b = per_core.get(base)
    ratios, table = {}, []
    for p in paths:
        r = per_core[p]
        paired = [x / y for x, y in zip(r["chunk_img_per_s"], b["chunk_img_per_s"])] if b else []
        ratios[p] = dict(img_per_s=r["img_per_s"] / b["img_per_s"] if b else None,
                         paired_median=float(np.median(paired)) if paired else None,
                         paired_min=min(paired) if paired else None,
                         img_per_cpu_s=(r["img_per_cpu_s"] / b["img_per_cpu_s"]
                                        if b and r["img_per_cpu_s"] and b["img_per_cpu_s"] else None))
        table.append(dict(path=p, per_core_img_per_s=round(r["img_per_s"], 2),
                          per_core_img_per_cpu_s=round(r["img_per_cpu_s"] or 0, 2),
                          vs_mmdet=round(ratios[p]["img_per_s"], 2) if b else None,
                          **{f"workers_{w}_img_per_s": round(v, 2) for (q, w), v in sorted(pools.items()) if q == p},
                          peak_rss_mb=round(r["peak_rss_mb"]), peak_rss_workers_mb=round(r["peak_rss_workers_mb"])))
    bar = {p: dict(want=x, got=ratios[p]["img_per_s"], met=bool(ratios[p]["img_per_s"] >= x))
           for p, x in RACE_BAR.items() if p in ratios and b}
    return dict(ratios_vs_mmdet_per_core=ratios, bar=bar, table=table)


def print_race(race: dict) -> None:
    """The race's short table and the bar."""
    table = race["table"]
    pools = sorted({k for t in table for k in t if k.startswith("workers_")})
    head = f"{'pipeline':<22}{'img/s/core':>11}{'img/CPU-s':>10}{'x mmdet':>8}" + "".join(
        f"{k.split('_')[1] + ' wrk':>8}" for k in pools) + f"{'RSS MB':>8}{'+wrk MB':>8}"
    print("\nwhole pipelines raced (" + ", ".join(f"{k}={v}" for k, v in race["settings"].items()
                                                  if k != "paths") + ")")
    print(head)
    for t in table:
        vs = f"{t['vs_mmdet']:.2f}" if t["vs_mmdet"] is not None else ""
        print(f"{t['path']:<22}{t['per_core_img_per_s']:>11.2f}{t['per_core_img_per_cpu_s']:>10.2f}{vs:>8}"
              + "".join(f"{t.get(k, float('nan')):>8.2f}" for k in pools)
              + f"{t['peak_rss_mb']:>8}{t['peak_rss_workers_mb']:>8}")
    loads = [(r["loadavg_before"], r["loadavg_after"]) for r in race["rows"]]
    print(f"load average (1 min) before/after each phase: {sorted(set(loads))}")
    for p, b in race["bar"].items():
        print(f"bar: {p} per core {b['got']:.2f}x the mmdet pipeline + CopyPaste (want >= {b['want']}x): "
              f"{'met' if b['met'] else 'MISSED'}")


# -- driver ----------------------------------------------------------------------------------------------------
def _versions() -> dict:
    out = {"python": platform.python_version()}
    for mod in ("numpy", "torch", "mmdet", "mmcv", "mmengine", "ocp_dali", "pycocotools"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001
            out[mod] = f"unavailable ({type(e).__name__})"
    try:
        import nvidia.dali as dali

        out["nvidia-dali"] = dali.__version__
    except ImportError:
        out["nvidia-dali"] = "unavailable"
    return out


def _machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return dict(cpu=cpu, cores=os.cpu_count(), platform=platform.platform())


def parse_size(s: str) -> tuple[int, int]:
    """'1024' -> (1024, 1024); '1333x800' -> (800, 1333) as (H, W)."""
    if "x" in s:
        w, h = s.split("x")
        return int(h), int(w)
    return int(s), int(s)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ann"), ap.add_argument("--images")
    ap.add_argument("--quick", action="store_true", help="CI smoke test: one resolution, 4 images, one repeat")
    ap.add_argument("--resolutions", nargs="+", default=["640", "1024", "1333x800"])
    ap.add_argument("--people", nargs="+", type=int, default=[4, 10])
    ap.add_argument("--workers", nargs="+", type=int, default=None)
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[2, 8])
    ap.add_argument("--paste-nums", nargs="*", default=["1,3", "5,6", "10,11"],
                    help="paste_num sweep of the OC&P path (1024², most people, 3-image basket); 'lo,hi'")
    ap.add_argument("--images-per-run", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--race-rounds", type=int, default=4,
                    help="whole-pipeline race: chunks per path and phase, after one warm-up epoch")
    ap.add_argument("--race-epochs", type=int, default=1, help="whole-pipeline race: epochs per chunk")
    ap.add_argument("--race-batch", type=int, default=8, help="whole-pipeline race: batch size")
    ap.add_argument("--race-core", type=int, default=None,
                    help="whole-pipeline race: the core of the per-core phase (default: the last allowed one)")
    ap.add_argument("--race-only", action="store_true", help="only the whole-pipeline race (no step/paste sweeps)")
    ap.add_argument("--out", default=None, help="output folder (default: out/benchmarks/)")
    ap.add_argument("--publish", action="store_true", help="write into benchmarks/results/ (the published figures)")
    ap.add_argument("--tag", default=None, help="file name tag (default: cpu or the GPU name)")
    ap.add_argument("--train", action="store_true", help="also time Mask R-CNN iterations (CPU vs DALI loader)")
    ap.add_argument("--train-config", default="configs/mask_rcnn/mask-rcnn_r18_fpn_ocp_tiny-cpu.py")
    ap.add_argument("--train-iters", type=int, default=12)
    ap.add_argument("--train-cfg-options", nargs="*", default=[],
                    help="extra --cfg-options for the --train runs (e.g. model.backbone.init_cfg=None offline)")
    args = ap.parse_args(argv)
    if args.publish and args.out:
        ap.error("--publish writes into benchmarks/results/: give --out or --publish, not both")
    if bool(args.ann) != bool(args.images):
        ap.error("--ann and --images go together")
    args.out = args.out or str(ROOT / ("benchmarks/results" if args.publish else "out/benchmarks"))
    if args.quick:
        args.resolutions, args.people, args.batch_sizes, args.paste_nums = ["1024"], [4], [2], []
        args.images_per_run, args.repeats = 4, 1
        args.race_rounds, args.race_batch = 1, 2
        args.workers = args.workers or [1, 2]
    if args.ann:  # real images: the people count means nothing; absolute paths (mmdet joins them to data_root)
        args.people = args.people[:1]
        args.ann, args.images = str(Path(args.ann).resolve()), str(Path(args.images).resolve())
    args.workers = args.workers or sorted({1, 2, max(1, (os.cpu_count() or 2))})
    if args.race_core is None:
        args.race_core = max(os.sched_getaffinity(0))
    return args


def data_for(args: argparse.Namespace, size: tuple[int, int], people: int) -> tuple[str, str]:
    """The images a run uses: ``--ann/--images``, or synthetic scenes written once into the temp folder."""
    if args.ann:
        return args.ann, args.images
    ann, img_dir = write_synthetic_coco(Path(tempfile.gettempdir()) / "ocp_dali_bench", size, people,
                                        args.images_per_run)
    return str(ann), str(img_dir)


def run_sweep(args: argparse.Namespace) -> list[dict]:
    """The mmdet-pipeline rows: per path (fresh process each) the copy-paste step, the pipeline per core and the
    worker pools, over resolutions and people counts; then the OC&P path's paste_num sweep."""
    from tqdm import tqdm

    jobs = [(r, p) for r in args.resolutions for p in (args.people if r == "1024" else args.people[:1])]
    rows: list[dict] = []
    ctx = mp.get_context("spawn")
    bar = tqdm(total=len(jobs) * len(PATHS), desc="benchmark")
    for res, people in jobs:
        size = parse_size(res)
        ann, img_dir = data_for(args, size, people)
        for path in PATHS:
            with cf.ProcessPoolExecutor(1, mp_context=ctx) as ex:
                got = ex.submit(run_path, path, ann, img_dir, size, args.images_per_run, args.repeats,
                                args.workers, args.batch_sizes).result()
            rows += [dict(path=path, resolution=res, people=people, **r) for r in got]
            bar.update()
    bar.close()
    people, size = max(args.people), parse_size("1024")
    for pn in tqdm(args.paste_nums, desc="paste_num sweep"):
        ann, img_dir = data_for(args, size, people)
        lo, hi = (int(v) for v in pn.split(","))
        over = dict(paste_num=(lo, hi), basket_size=3, min_size_paste=0.0)
        with cf.ProcessPoolExecutor(1, mp_context=ctx) as ex:
            r = ex.submit(per_core, "ocp_ocp", ann, img_dir, size, args.images_per_run, args.repeats, over).result()
        rows.append(dict(path="ocp_ocp", resolution="1024", people=people, workers=0, batch_size=1,
                         paste_num=[lo, hi], basket_size=3, sweep="paste_num", **r))
    return rows


def run_race(args: argparse.Namespace) -> dict:
    """The whole-pipeline race at 1024² (first people count on synthetic scenes), with the machine's load."""
    size = parse_size("1024")
    ann, img_dir = data_for(args, size, args.people[0])
    pools = args.workers[:1] if args.quick else args.workers  # (the smoke test: one pool size)
    race = race_pipelines(ann, img_dir, size, args.race_batch, pools, args.race_rounds, args.race_epochs,
                          args.race_core)
    race["settings"].update(resolution="1024", people=None if args.ann else args.people[0],
                            images_per_epoch=race["rows"][0]["images_per_chunk"] // args.race_epochs,
                            fairness="one process per path, all alive, run in turn in chunks (order rotating per "
                                     "round); per core: each pinned to the same core with its worker processes; "
                                     "img/CPU-s counts the CPU time of the process and its workers, which load "
                                     "from other processes on the core inflates less than wall time")
    return race


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load0 = os.getloadavg()
    rows = [] if args.race_only else run_sweep(args)
    race = run_race(args)
    gpu_size, why = parse_size("1024"), gpu_unusable()
    gpu = (dict(available=False, reason=why) if why or args.race_only else
           gpu_rows(*map(Path, data_for(args, gpu_size, max(args.people))), gpu_size, 32, args.repeats))
    summary = summarise(rows, args.workers)
    summary.update({f"ratio_per_core_{p}_vs_mmdet_pipeline_1024": r["img_per_s"]
                    for p, r in race["ratios_vs_mmdet_per_core"].items() if p != "mmdet_copypaste"})
    tag = args.tag or (gpu.get("device", "cpu").replace(" ", "_") if gpu.get("available") else "cpu")
    tag += "_quick" if args.quick else ""
    report = dict(command=" ".join([Path(sys.executable).name] + sys.argv), machine=_machine(),
                  device=gpu.get("device", "none (CPU only)"), versions=_versions(),
                  data=("synthetic COCO-like scenes (ocp_dali.SyntheticScenes), JPEG q95" if not args.ann
                        else f"{args.ann}"),
                  load_average=dict(start=load0, end=os.getloadavg(),
                                    note="1-minute load average of the machine (this run's own processes count); "
                                         "per phase: the race's rows"),
                  settings=dict(resolutions=args.resolutions, people=args.people, workers=args.workers,
                                paste_nums=args.paste_nums, batch_sizes=args.batch_sizes,
                                images_per_run=args.images_per_run, repeats=args.repeats, warmup_rounds=1),
                  results=rows, pipelines=race, gpu=gpu, summary=summary,
                  train=train_rows(args.train_config, args.train_iters, args.train_cfg_options) if args.train
                  else None)
    write_report(report, Path(args.out), tag, args.workers)
    return 0


def write_report(report: dict, out: Path, tag: str, workers: list[int]) -> None:
    """JSON and PNG into ``out``; the tables printed."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"aug_throughput_{tag}.json").write_text(json.dumps(report, indent=1))
    plot(report["results"], workers, out / f"aug_throughput_{tag}.png", report["pipelines"])
    if report["results"]:
        print_table(report["results"], report["summary"], report["gpu"])
    print_race(report["pipelines"])
    if report["train"]:
        for k in ("cpu_loader", "dali_loader"):
            t = report["train"].get(k, {})
            print(f"train {k}: " + (f"{t['iter_s']['median']:.2f} s/iter (data {t['data_s']['median']:.2f} s)"
                                    if "iter_s" in t else f"failed: {t.get('error', '')[-300:]}"))
    print(f"wrote {out / f'aug_throughput_{tag}.json'} and {out / f'aug_throughput_{tag}.png'}")


def summarise(rows: list[dict], workers: list[int]) -> dict:
    """Ratios computed from the measured medians (1024², first people count)."""
    def med(path, key, res="1024"):
        r = [x for x in rows if x["path"] == path and x["resolution"] == res and x["workers"] == 0
             and "sweep" not in x]
        return r[0][key]["median"] if r else None

    s: dict = {}
    base_step, base_pipe = med("mmdet_copypaste", "step_ms"), med("mmdet_copypaste", "pipeline_ms")
    for p in ("ocp_simple", "ocp_ocp"):
        st, pi = med(p, "step_ms"), med(p, "pipeline_ms")
        if base_step and st:
            s[f"speedup_step_{p}_vs_mmdet_1024"] = base_step / st
            s[f"speedup_pipeline_{p}_vs_mmdet_1024"] = base_pipe / pi
    for p in PATHS:
        w = [x for x in rows if x["path"] == p and x["resolution"] == "1024" and x["workers"] > 0]
        if w:
            bs = w[0]["batch_size"]
            by = {x["workers"]: x["img_per_s"]["median"] for x in w if x["batch_size"] == bs}
            one = by.get(1)
            s[f"scaling_efficiency_{p}"] = {str(k): (v / (k * one) if one else None) for k, v in by.items()}
    return s


def print_table(rows: list[dict], summary: dict, gpu: dict) -> None:
    print(f"\n{'path':<17}{'res':>10}{'ppl':>5}{'wrk':>5}{'bs':>4}{'step ms':>10}{'pipe ms':>10}{'img/s':>9}"
          f"{'RSS MB':>9}")
    for r in rows:
        step = f"{r['step_ms']['median']:.1f}" if "step_ms" in r else ""
        pipe = f"{r['pipeline_ms']['median']:.1f}" if "pipeline_ms" in r else ""
        ips = f"{r['img_per_s']['median']:.1f}" if "img_per_s" in r else f"{1e3 / r['pipeline_ms']['median']:.1f}"
        rss = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else ""
        pn = f"  paste_num={tuple(r['paste_num'])}" if "paste_num" in r else ""
        print(f"{r['path']:<17}{r['resolution']:>10}{r['people']:>5}{r['workers']:>5}{r['batch_size']:>4}"
              f"{step:>10}{pipe:>10}{ips:>9}{rss:>9}{pn}")
    print("GPU:", gpu if not gpu.get("available") else {k: gpu[k] for k in (
        "device", "kernels_batch_ms", "geometry_batch_ms", "geometry_share_of_pipeline_batch", "pipeline_img_per_s")})
    sp = summary.get("speedup_step_ocp_simple_vs_mmdet_1024")
    spp = summary.get("speedup_pipeline_ocp_simple_vs_mmdet_1024")
    if sp:
        print(f"speedup vs mmdet CopyPaste (CPU, per core, 1024², simple mode): {sp:.2f}x "
              f"(copy-paste step; whole pipeline: {spp:.2f}x)")


def plot(rows: list[dict], workers: list[int], path: Path, race: dict | None = None) -> None:
    """Left: the mmdet-pipeline paths' img/s against workers; middle: their per-core img/s by resolution (absent
    with ``--race-only``); right: the whole-pipeline race, per core and per pool size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(16, 4.4))
    people = min((x["people"] for x in rows if x["resolution"] == "1024"), default=None)
    for p in PATHS:
        w = [x for x in rows if x["path"] == p and x["resolution"] == "1024" and x["workers"] > 0
             and x["people"] == people]
        for bs in sorted({x["batch_size"] for x in w}):
            pts = sorted((x["workers"], x["img_per_s"]["median"]) for x in w if x["batch_size"] == bs)
            a.plot(*zip(*pts), marker="o", label=f"{p} (batch {bs})")
        r = [x for x in rows if x["path"] == p and x["workers"] == 0 and x["people"] == people and "sweep" not in x]
        seen = {}
        for x in r:
            seen.setdefault(x["resolution"], 1e3 / x["pipeline_ms"]["median"])
        if seen:
            b.plot(list(seen), list(seen.values()), marker="o", label=p)
    a.set(xlabel="worker processes", ylabel="img/s", title=f"mmdet pipelines, 1024², {people} people: vs workers",
          xticks=sorted(workers))
    b.set(xlabel="resolution", ylabel="img/s per core", title=f"mmdet pipelines, one core, {people} people")
    if race:
        _plot_race(c, race)
    for ax in (a, b, c):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _plot_race(ax, race: dict) -> None:
    """Grouped bars: per path, img/s per core and with each pool size."""
    paths = race["settings"]["paths"]
    phases = sorted({r["workers"] for r in race["rows"]})
    width = 0.8 / len(phases)
    for k, w in enumerate(phases):
        got = {r["path"]: r["img_per_s"] for r in race["rows"] if r["workers"] == w}
        ax.bar([i + k * width for i in range(len(paths))], [got.get(p, 0) for p in paths], width,
               label="per core" if w == 0 else f"{w} workers")
    ax.set_xticks([i + width * (len(phases) - 1) / 2 for i in range(len(paths))], paths, rotation=25, ha="right",
                  fontsize=7)
    ax.set(ylabel="img/s", title="whole pipelines raced, 1024² LSJ")


if __name__ == "__main__":
    raise SystemExit(main())
