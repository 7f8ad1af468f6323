"""Peak memory of one 1024^2 batch of 8 with all targets and with fewer (``ocp_dali.targets``), on the CPU.

    python benchmarks/targets_memory.py                     # coco_mini val persons, OCPConfig.ocp(), LSJ 1024^2
    python benchmarks/targets_memory.py --size 1024 --batch 8 --cases all visible --paths reference stage

Each (path, targets) case runs in a fresh process: the first ``--batch`` images of the dataset (unshuffled), as one
batch whose outputs are all held at the end (as a loader's batch is). Paths: ``reference`` is ``reference_sample``
per image (what ``OCPDataset`` serves); ``stage`` is the DALI CPU graph's stage (``ocp_stage("numpy")``) on the
workers' batch, images decoded by PIL. Measured: the tracemalloc peak (every NumPy and Python allocation of the
batch, from after the imports and the dataset's loading), the process's peak RSS growth over that same point
(``resource`` ru_maxrss), and the bytes of the batch's output arrays. Prints a table; writes JSON to ``--out``.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import subprocess
import sys
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data" / "coco_mini"
CASES = {"all": None, "visible": (), "example": ("occluder_masks",), "rate": ("occlusion_rate",)}
MIB = float(1 << 20)


def rss_mib() -> float:
    """Peak resident set size of this process so far (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def nbytes(value) -> int:
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    return int(getattr(value, "nbytes", 0))


def run_reference(ds, indices, cfg, geometry, targets) -> list:
    from ocp_dali.augment import reference_sample

    out = []
    for i in indices:
        s = reference_sample(ds, i, epoch=0, seed=0, cfg=cfg, geometry=geometry, targets=targets)
        out.append([v for v in s.arrays().values() if v is not None])
    return out


def stage_inputs(ds, cfg, geometry, batch):
    """The workers' first batch with its images decoded (as DALI hands it to the stage), and the source."""
    from PIL import Image

    from ocp_dali.source import EpochSource
    from ocp_dali.wire import WorkerBatch

    def decode(blob):
        return np.asarray(Image.open(io.BytesIO(np.asarray(blob).tobytes())).convert("RGB"))

    src = EpochSource(ds, cfg, 0, batch, geometry, False)
    wb = WorkerBatch.unpack(src(SimpleNamespace(epoch_idx=0, iteration=0)), src.slots)
    return src, WorkerBatch([decode(b) for b in wb.dest_images], wb.dest_anns,
                            tuple([decode(b) for b in col] for col in wb.source_images), wb.source_anns, wb.plans,
                            wb.lsjs, wb.keys).pack()


def child(args) -> dict:
    """One case in this process: the measurements as a dict."""
    from ocp_dali import CocoInstances, Geometry, OCPConfig, Targets
    from ocp_dali.stage import ocp_stage

    ds = CocoInstances(str(DATA / "annotations" / "person_keypoints_val2017.json"), str(DATA / "val2017"),
                       classes=["person"])
    cfg, geometry = OCPConfig.ocp(), Geometry.lsj(args.size)
    targets = Targets.of(CASES[args.case])
    if args.path == "stage":
        src, inputs = stage_inputs(ds, cfg, geometry, args.batch)
        stage = ocp_stage("numpy", src.slots, geometry, ds.flip_index, targets)
    indices = list(range(args.batch))
    base_rss = rss_mib()
    tracemalloc.start()
    out = stage(*inputs) if args.path == "stage" else run_reference(ds, indices, cfg, geometry, targets)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return dict(path=args.path, case=args.case, targets=sorted(targets.names), batch=args.batch, size=args.size,
                tracemalloc_peak_mib=round(peak / MIB, 1), rss_growth_mib=round(rss_mib() - base_rss, 1),
                peak_rss_mib=round(rss_mib(), 1), output_mib=round(nbytes(out) / MIB, 1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--cases", nargs="+", default=["all", "visible", "example", "rate"], choices=list(CASES))
    ap.add_argument("--paths", nargs="+", default=["reference", "stage"], choices=["reference", "stage"])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "targets_memory_cpu.json"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--case", default="all", help=argparse.SUPPRESS)
    ap.add_argument("--path", default="reference", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    rows = []
    for path in args.paths:
        for case in args.cases:  # a fresh process per case: peaks do not carry over
            cmd = [sys.executable, __file__, "--child", "--case", case, "--path", path, "--size", str(args.size),
                   "--batch", str(args.batch)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(f"{'path':10} {'case':8} {'optional targets':26} {'tracemalloc peak':>17} {'RSS growth':>11} "
          f"{'outputs':>8}  (MiB)")
    for r in rows:
        named = "all" if r["case"] == "all" else ",".join(r["targets"]) or "-"
        print(f"{r['path']:10} {r['case']:8} {named:26} {r['tracemalloc_peak_mib']:17.1f} {r['rss_growth_mib']:11.1f} "
              f"{r['output_mib']:8.1f}")
    res = dict(machine=platform.processor() or platform.machine(), cpus=os.cpu_count(), python=sys.version.split()[0],
               command="python benchmarks/targets_memory.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               data=str(DATA.relative_to(ROOT.parent)), preset="OCPConfig.ocp()", geometry=f"lsj {args.size}",
               rows=rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
