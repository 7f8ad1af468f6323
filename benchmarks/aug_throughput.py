"""Copy-paste throughput, side by side in one run: mmdet 3.3 ``CopyPaste`` (the CPU anchor) against ocp_dali's
CPU path in the same mmdet pipeline (Simple mode for a like-for-like race, and OC&P), per core and with a pool of
worker processes, plus ocp_dali on the GPU where one is present.

    python benchmarks/aug_throughput.py              # embedded default: synthetic COCO-like scenes, full sweep
    python benchmarks/aug_throughput.py --quick      # CI smoke test (one resolution, 4 images, one repeat)
    python benchmarks/aug_throughput.py --ann A.json --images DIR
    python benchmarks/aug_throughput.py --publish    # write into benchmarks/results/ (the published figures)

Each path runs the same mmdet load pipeline (decode, masks, LSJ: RandomResize(0.1-2.0) -> RandomCrop -> Flip ->
Pad) and differs only in its copy-paste transform. Measured: the copy-paste step alone on identical prepared inputs
(the same destination and source images for every path: "step"), the whole pipeline per core ("pipeline"), and img/s
of a torch DataLoader with 1..N workers ("workers").
Medians and quartiles over repeats after a warm-up. Per-core runs happen in a fresh process each, whose peak RSS is
reported. Writes JSON and a PNG plot to ``--out`` (default ``out/benchmarks/``; ``--publish``: ``benchmarks/results/``)
and prints a table and the summary line.
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
    """ocp_dali on the GPU: kernels alone on a pre-decoded batch, and the whole DALI pipeline, both on JPEG files
    like the CPU rows' (synthetic scenes rendered in the workers would time the renderer, not the pipeline)."""
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
    return dict(available=True, device=name, kernels_batch_ms=_quartiles(times), pipeline_img_per_s=with_ocp,
                pipeline_without_ocp_img_per_s=without,
                ocp_overhead=without["median"] / with_ocp["median"] - 1.0,
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ann"), ap.add_argument("--images")
    ap.add_argument("--quick", action="store_true", help="CI smoke test: one resolution, 4 images, one repeat")
    ap.add_argument("--resolutions", nargs="+", default=["640", "1024", "1333x800"])
    ap.add_argument("--people", nargs="+", type=int, default=[4, 10])
    ap.add_argument("--workers", nargs="+", type=int, default=None)
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[2, 8])
    ap.add_argument("--paste-nums", nargs="+", default=["1,3", "5,6", "10,11"],
                    help="paste_num sweep of the OC&P path (1024², most people, 3-image basket); 'lo,hi'")
    ap.add_argument("--images-per-run", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
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
    args.out = args.out or str(ROOT / ("benchmarks/results" if args.publish else "out/benchmarks"))
    if args.quick:
        args.resolutions, args.people, args.batch_sizes, args.paste_nums = ["1024"], [4], [2], []
        args.images_per_run, args.repeats = 4, 1
        args.workers = args.workers or [1, 2]
    workers = args.workers or sorted({1, 2, max(1, (os.cpu_count() or 2))})
    from tqdm import tqdm

    tmp = Path(tempfile.gettempdir()) / "ocp_dali_bench"
    jobs = []  # (resolution, people)
    for r in args.resolutions:
        for p in (args.people if r == "1024" else args.people[:1]):
            jobs.append((r, p))
    rows: list[dict] = []
    ctx = mp.get_context("spawn")
    bar = tqdm(total=len(jobs) * len(PATHS), desc="benchmark")
    for res, people in jobs:
        size = parse_size(res)
        if args.ann:
            ann, img_dir = Path(args.ann), Path(args.images)
        else:
            ann, img_dir = write_synthetic_coco(tmp, size, people, args.images_per_run)
        for path in PATHS:
            with cf.ProcessPoolExecutor(1, mp_context=ctx) as ex:
                got = ex.submit(run_path, path, str(ann), str(img_dir), size, args.images_per_run, args.repeats,
                                workers, args.batch_sizes).result()
            rows += [dict(path=path, resolution=res, people=people, **r) for r in got]
            bar.update()
    bar.close()
    if args.paste_nums:
        people = max(args.people)
        size = parse_size("1024")
        ann, img_dir = ((Path(args.ann), Path(args.images)) if args.ann else
                        write_synthetic_coco(tmp, size, people, args.images_per_run))
        for pn in tqdm(args.paste_nums, desc="paste_num sweep"):
            lo, hi = (int(v) for v in pn.split(","))
            over = dict(paste_num=(lo, hi), basket_size=3, min_size_paste=0.0)
            with cf.ProcessPoolExecutor(1, mp_context=ctx) as ex:
                r = ex.submit(per_core, "ocp_ocp", str(ann), str(img_dir), size, args.images_per_run,
                              args.repeats, over).result()
            rows.append(dict(path="ocp_ocp", resolution="1024", people=people, workers=0, batch_size=1,
                             paste_num=[lo, hi], basket_size=3, sweep="paste_num", **r))
    gpu_size, why = parse_size("1024"), gpu_unusable()
    gpu = (dict(available=False, reason=why) if why else
           gpu_rows(*write_synthetic_coco(tmp, gpu_size, max(args.people), 64), gpu_size, 32, args.repeats))
    summary = summarise(rows, workers)
    tag = args.tag or (gpu.get("device", "cpu").replace(" ", "_") if gpu.get("available") else "cpu")
    tag += "_quick" if args.quick else ""
    report = dict(command=" ".join([Path(sys.executable).name] + sys.argv), machine=_machine(),
                  device=gpu.get("device", "none (CPU only)"), versions=_versions(),
                  data=("synthetic COCO-like scenes (ocp_dali.SyntheticScenes), JPEG q95" if not args.ann
                        else f"{args.ann}"),
                  settings=dict(resolutions=args.resolutions, people=args.people, workers=workers,
                                paste_nums=args.paste_nums,
                                batch_sizes=args.batch_sizes, images_per_run=args.images_per_run,
                                repeats=args.repeats, warmup_rounds=1),
                  results=rows, gpu=gpu, summary=summary,
                  train=train_rows(args.train_config, args.train_iters, args.train_cfg_options) if args.train
                  else None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"aug_throughput_{tag}.json").write_text(json.dumps(report, indent=1))
    plot(rows, workers, out / f"aug_throughput_{tag}.png")
    print_table(rows, summary, gpu)
    if report["train"]:
        for k in ("cpu_loader", "dali_loader"):
            t = report["train"].get(k, {})
            print(f"train {k}: " + (f"{t['iter_s']['median']:.2f} s/iter (data {t['data_s']['median']:.2f} s)"
                                    if "iter_s" in t else f"failed: {t.get('error', '')[-300:]}"))
    print(f"wrote {out / f'aug_throughput_{tag}.json'} and {out / f'aug_throughput_{tag}.png'}")
    return 0


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
    print("GPU:", gpu if not gpu.get("available") else {k: gpu[k] for k in ("device", "kernels_batch_ms",
                                                                          "pipeline_img_per_s")})
    sp = summary.get("speedup_step_ocp_simple_vs_mmdet_1024")
    spp = summary.get("speedup_pipeline_ocp_simple_vs_mmdet_1024")
    if sp:
        print(f"speedup vs mmdet CopyPaste (CPU, per core, 1024², simple mode): {sp:.2f}x "
              f"(copy-paste step; whole pipeline: {spp:.2f}x)")


def plot(rows: list[dict], workers: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
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
    a.set(xlabel="worker processes", ylabel="img/s", title=f"1024², {people} people: throughput vs workers",
          xticks=sorted(workers))
    b.set(xlabel="resolution", ylabel="img/s per core", title=f"whole pipeline, one core, {people} people")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
