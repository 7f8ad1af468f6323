"""Crash stress of the DALI CPU graph: many fresh processes, each running ``OCPLoader(device="cpu")`` for several
epochs, over a grid of worker / thread / batch settings and augmentation seeds; records each run's exit status.

    .venv/bin/python tools/loader_stress.py                        # coco_mini val persons, visible targets, 1024²
    .venv/bin/python tools/loader_stress.py --targets all --epochs 5 --seeds 0
    .venv/bin/python tools/loader_stress.py --ann A.json --images DIR --size 640

Why a process per run: a native crash (a signal, a fatal Python error in a DALI thread) ends the process, so each
run is a child process and its return code and the tail of its output are kept. This is how the use-after-free of
the compiled CPU loops (arrays handed to ctypes as temporaries) was confirmed as the cause of the intermittent
crashes ("Fatal Python error: PyThreadState_Get ... the GIL is released"): 5 of 12 runs died before the fix, none
after (``benchmarks/results/loader_stress_before_fix.json``, ``loader_stress.json``). A run that dies leaves no
process behind (its process group is killed). Writes ``loader_stress.json`` (settings, versions, one row per run)
to ``--out`` and prints a summary table.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "coco_mini"
GRID = ((1, 1, 2), (1, 2, 4), (2, 2, 8), (2, 1, 3))  # (py_num_workers, num_threads, batch_size)


def child(args: argparse.Namespace) -> None:
    """One run: the loader over the whole dataset for ``--epochs`` epochs; prints the images seen."""
    from ocp_dali import CocoInstances, SyntheticScenes, Targets
    from ocp_dali.torch import OCPLoader

    ds = (CocoInstances(args.ann, args.images, classes=["person"], filter_empty_gt=True) if args.ann
          else SyntheticScenes(64, seed=0))
    loader = OCPLoader(ds, device="cpu", batch_size=args.batch_size, output_size=args.size,
                       py_num_workers=args.workers, num_threads=args.threads, targets=Targets.of(
                           args.targets if args.targets in ("visible", "all") else args.targets.split(",")),
                       seed=args.seed)
    seen = 0
    for epoch in range(args.epochs):
        loader.set_epoch(epoch)
        seen += sum(len(batch["indices"]) for batch in loader)
    loader.close()
    print(f"images {seen}", flush=True)


def run_one(args: argparse.Namespace, workers: int, threads: int, batch: int, seed: int) -> dict:
    cmd = [sys.executable, __file__, "--child", "--epochs", str(args.epochs), "--size", str(args.size),
           "--targets", args.targets, "--workers", str(workers), "--threads", str(threads),
           "--batch-size", str(batch), "--seed", str(seed), "--ann", args.ann, "--images", args.images]
    t = time.perf_counter()
    # output to a file, not a pipe, and a process group of its own: workers that outlive a crashed run (the code
    # before ``workers.exit_with_parent``) would hold a pipe open, and are killed with their group afterwards
    with tempfile.TemporaryFile("w+") as log:
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc: int | str = p.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            rc = "timeout"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        log.seek(0)
        lines = [line for line in log.read().splitlines() if line.strip()]
    fatal = next((line for line in lines if line.startswith("Fatal Python error")), None)
    return dict(workers=workers, threads=threads, batch_size=batch, seed=seed, rc=rc,
                images=int(lines[-1].split()[1]) if rc == 0 and lines and lines[-1].startswith("images ") else None,
                seconds=round(time.perf_counter() - t, 1), fatal=fatal, tail=lines[-6:] if rc != 0 else [])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ann", default=str(SHARED / "annotations/person_keypoints_val2017.json"),
                    help="COCO json ('' for the embedded synthetic scenes)")
    ap.add_argument("--images", default=str(SHARED / "val2017"))
    ap.add_argument("--size", type=int, default=1024, help="LSJ output size (square)")
    ap.add_argument("--targets", default="visible", help="'visible', 'all' or comma-separated optional targets")
    ap.add_argument("--epochs", type=int, default=20, help="epochs per run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--timeout", type=float, default=900, help="seconds per run before it counts as hung")
    ap.add_argument("--out", default=str(ROOT / "out" / "stress"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name, default in (("--workers", 1), ("--threads", 1), ("--batch-size", 2), ("--seed", 0)):
        ap.add_argument(name, type=int, default=default, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if args.ann and not Path(args.ann).is_file():
        ap.error(f"--ann {args.ann} not found (pass --ann '' for the synthetic scenes)")
    from tqdm import tqdm

    runs = []
    todo = [(w, t, b, s) for s in args.seeds for (w, t, b) in GRID]
    for w, t, b, s in tqdm(todo, desc="stress", unit="run"):
        runs.append(run_one(args, w, t, b, s))
    import nvidia.dali as dali

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = dict(command=" ".join(["python", *sys.argv]), machine=dict(cpu=platform.processor() or platform.machine(),
                  platform=platform.platform()), versions=dict(python=platform.python_version(),
                  dali=dali.__version__), settings={k: v for k, v in vars(args).items() if k in
                  ("ann", "images", "size", "targets", "epochs", "seeds")}, runs=runs,
                  crashed=sum(r["rc"] != 0 for r in runs))
    (out / "loader_stress.json").write_text(json.dumps(report, indent=1))
    print(f"{'workers':>7} {'threads':>7} {'batch':>5} {'seed':>4} {'rc':>7} {'images':>7} {'s':>6}  fatal")
    for r in runs:
        print(f"{r['workers']:>7} {r['threads']:>7} {r['batch_size']:>5} {r['seed']:>4} {r['rc']!s:>7} "
              f"{r['images'] if r['images'] is not None else '-':>7} {r['seconds']:>6}  {r['fatal'] or ''}")
    print(f"{report['crashed']} of {len(runs)} runs failed; {out / 'loader_stress.json'}")


if __name__ == "__main__":
    main()
