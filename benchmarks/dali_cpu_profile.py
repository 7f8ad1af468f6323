"""Where a batch of the DALI CPU graph spends its time, per core (one process pinned to one core, every part run
in turn in this process on the same batches):

    python benchmarks/dali_cpu_profile.py                    # coco_mini val persons, OC&P, LSJ 1024², batch 8
    python benchmarks/dali_cpu_profile.py --targets visible --batches 10 --core 1 --out out/

Parts: the worker callback (``EpochSource``: read files, annotations, plans), DALI's CPU JPEG decode (a pipeline of
only that operator, one thread), the stage (``ocp_stage`` with the NumPy backend, split into unpacking the inputs,
mask decode from RLE, building the samples, the OC&P apply step, the LSJ geometry and the outputs), DALI's
``crop_mirror_normalize`` (one thread), and the loader's host side (outputs to torch tensors). The whole
``OCPLoader(device="cpu", py_num_workers=1, num_threads=1)`` is timed on the same core over the same epoch; what
it takes beyond the parts is DALI's overhead (scheduling, worker IPC through shared memory, copies).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "coco_mini"

TIMES: dict[str, float] = defaultdict(float)


@contextmanager
def timed(name: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        TIMES[name] += time.perf_counter() - t0


def wrap(owner, attr: str, name: str) -> None:
    """Time every call of ``owner.attr`` under ``name``."""
    fn = getattr(owner, attr)

    def timed_fn(*a, **k):
        with timed(name):
            return fn(*a, **k)

    setattr(owner, attr, timed_fn)


def dali_op(op: str, batch_size: int):
    """A one-thread DALI CPU pipeline of one operator (``"decode"`` or ``"normalize"``) fed by ``feed(list)``."""
    from nvidia.dali import fn, pipeline_def, types

    from ocp_dali.pipeline import IMAGENET_MEAN, IMAGENET_STD

    @pipeline_def(batch_size=batch_size, num_threads=1, device_id=None, prefetch_queue_depth=1)
    def pipe():
        x = fn.external_source(name="x", device="cpu")
        if op == "decode":
            return fn.decoders.image(x, device="cpu", output_type=types.RGB)
        return fn.crop_mirror_normalize(x, dtype=types.FLOAT, output_layout="CHW", mean=IMAGENET_MEAN,
                                        std=IMAGENET_STD, device="cpu")

    p = pipe()
    p.build()

    def run(arrays: list[np.ndarray]) -> list[np.ndarray]:
        p.feed_input("x", arrays)
        (out,) = p.run()
        return [np.array(out.at(i)) for i in range(len(arrays))]

    return run


def instrument() -> None:
    """Time the stage's parts where the stage calls them (module attributes looked up at call time)."""
    from ocp_dali import backends, stage

    wrap(stage.StageBatch, "unpack", "stage: unpack inputs")
    wrap(backends.NumpyBackend, "decode_masks", "stage: mask decode (RLE)")
    wrap(stage, "sample_from_record", "stage: build samples")
    wrap(stage, "apply_lsj_batch", "stage: LSJ geometry")
    wrap(backends.NumpyBackend, "apply_batch", "stage: OC&P apply")
    wrap(stage, "stage_outputs", "stage: outputs")


def profile_parts(ds, cfg, targets, size: int, batch_size: int, batches: int) -> int:
    """Every part of the graph in turn, in this process, on the epoch's first ``batches`` batches; returns the
    image count."""
    from ocp_dali.lsj import Geometry
    from ocp_dali.source import EpochSource
    from ocp_dali.stage import ocp_stage
    from ocp_dali.wire import OUTPUT_NAMES, WorkerBatch
    import torch

    geo = Geometry.lsj(size)
    src = EpochSource(ds, cfg, 0, batch_size, geo)
    stage = ocp_stage("numpy", src.slots, geo, getattr(ds, "flip_index", None), targets)
    decode, normalize = dali_op("decode", batch_size), dali_op("normalize", batch_size)
    images = 0
    for it in range(batches):
        with timed("worker callback (files, annotations, plans)"):
            flat = src(SimpleNamespace(epoch_idx=0, iteration=it))
        wb = WorkerBatch.unpack(flat, src.slots)
        with timed("decode (DALI CPU, 1 thread)"):
            dec = [decode(list(wb.dest_images))] + [decode(list(x)) for x in wb.source_images]
        inputs = WorkerBatch(dec[0], wb.dest_anns, tuple(dec[1:]), wb.source_anns, wb.plans, wb.lsjs, wb.keys)
        with timed("stage (total)"):
            cols = stage(*inputs.pack())
        with timed("normalize (DALI crop_mirror_normalize)"):
            cols = (normalize(cols[0]), *cols[1:])
        with timed("loader: to torch"):
            [[torch.from_numpy(np.array(a)) for a in col] for name, col in zip(OUTPUT_NAMES, cols)]
        images += len(wb.keys)
    return images


def profile_loader(ds, cfg, targets, size: int, batch_size: int, batches: int) -> tuple[int, float]:
    """The whole ``OCPLoader`` (one worker, one thread) over the same batches, after one warm-up epoch."""
    from ocp_dali.torch import OCPLoader

    with OCPLoader(ds, cfg, device="cpu", batch_size=batch_size, output_size=size, py_num_workers=1,
                   num_threads=1, targets=targets) as loader:
        for _ in loader:
            pass
        batches = min(batches, len(loader))
        n, t0 = 0, time.perf_counter()
        for k, b in enumerate(loader):
            if k < batches:
                n += len(b["indices"])
            if k == batches - 1:
                dt = time.perf_counter() - t0
    return n, dt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ann", default=str(DATA / "annotations" / "person_keypoints_val2017.json"))
    ap.add_argument("--images", default=str(DATA / "val2017"))
    ap.add_argument("--targets", choices=("visible", "all"), default="visible")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--batches", type=int, default=4,
                    help="batches timed (the parts after one warm-up batch, the loader after a warm-up epoch)")
    ap.add_argument("--core", type=int, default=None, help="the core (default: the last allowed one)")
    ap.add_argument("--out", default=str(ROOT / "out" / "benchmarks"))
    args = ap.parse_args(argv)
    core = max(os.sched_getaffinity(0)) if args.core is None else args.core
    os.sched_setaffinity(0, {core})  # before any worker starts: they inherit it
    from ocp_dali import OCPConfig, Targets
    from ocp_dali.data.coco import CocoInstances

    ds = CocoInstances(args.ann, args.images, classes=["person"], filter_empty_gt=True)
    cfg, targets = OCPConfig.ocp(), Targets.of(args.targets)
    load0 = os.getloadavg()[0]
    n_loader, t_loader = profile_loader(ds, cfg, targets, args.size, args.batch_size, args.batches)
    instrument()
    profile_parts(ds, cfg, targets, args.size, args.batch_size, 1)  # warm-up
    TIMES.clear()
    n = profile_parts(ds, cfg, targets, args.size, args.batch_size, args.batches)
    parts = {k: v / n * 1e3 for k, v in TIMES.items()}
    top = [k for k in parts if not k.startswith("stage: ")]
    parts["stage: rest (python)"] = parts["stage (total)"] - sum(v for k, v in parts.items() if k.startswith("stage: "))
    loader_ms = t_loader / n_loader * 1e3
    parts["DALI overhead (loader - parts)"] = loader_ms - sum(parts[k] for k in top)
    report = dict(data=args.ann, targets=args.targets, size=args.size, batch_size=args.batch_size,
                  batches=args.batches, images=n, core=core, loadavg=(load0, os.getloadavg()[0]),
                  loader_ms_per_img=loader_ms, loader_img_per_s=1e3 / loader_ms, ms_per_img=parts)
    print(f"DALI CPU graph, one core ({core}), {args.targets} targets, {args.size}², batch {args.batch_size}: "
          f"loader {loader_ms:.1f} ms/img ({1e3 / loader_ms:.1f} img/s); load {report['loadavg']}")
    for k, v in parts.items():
        print(f"  {k:<45}{v:8.1f} ms/img")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"dali_cpu_profile_{args.targets}.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out / f'dali_cpu_profile_{args.targets}.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
