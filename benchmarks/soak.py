"""Soak test of the DALI CPU graph: push many samples through ``OCPLoader(device="cpu")`` over several epochs and
watch the resident memory of the main process and of its worker processes.

    python benchmarks/soak.py                  # 20,000 samples (10 epochs of 2,000 synthetic 384² scenes)
    python benchmarks/soak.py --quick          # ~200-sample smoke run, writes to a temporary folder
    python benchmarks/soak.py --samples 40000 --images 4000 --size 640

Every ``--every`` batches the script reads VmRSS (plus its anonymous / file / shared-memory parts) from
``/proc/<pid>/status`` for the main process and for every descendant process (DALI's spawned worker pool, found by
walking ``/proc/*/stat`` parent links), and records ``(samples_done, main_rss_mb, workers_rss_mb, total_rss_mb,
elapsed_s)``.

Growth = (total RSS at the end) / (total RSS at the baseline) - 1, where the baseline is the first point at or after
``--warmup`` of the samples (default 10 %, i.e. after the first epoch of the default run). The warm-up is excluded
because DALI sizes its buffers (and each worker fills the dataset's per-index layout cache) during the first epoch.
Main-process and worker growth are reported separately, and the peaks. ``pass`` = growth < ``--limit`` (5 %) and
the checks below. Single points are noisy (the main process's heap moves by a few per cent from batch to batch), so
the report adds ``windowed``: the median total RSS of the last ``warmup`` samples against the median of the first
``warmup`` samples after the baseline (reported, not the pass criterion).

Sizes: 384² scenes and output because the 512² graph ran at about 8 img/s on 2 shared cores (20,000 samples would
take about 40 minutes alone, more next to other jobs) and 384² at about 14 img/s (about 25 minutes).

The loader's ``stats`` are recorded, and the run checks that nothing was silently lost: every complete epoch yields
each dataset index exactly once, and the samples seen (counted by the script and by ``stats["samples"]``) equal the
samples requested. Writes ``soak_cpu.json`` and ``soak_cpu.png`` to ``--out`` and prints a summary table.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from aug_throughput import _machine, _versions, descendants  # noqa: E402  (shared report helpers)

_FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")


# -- memory from /proc -----------------------------------------------------------------------------------------
def proc_mem(pid: int) -> dict[str, float] | None:
    """VmRSS and its parts (MB) of one process, or None if it is gone (or a zombie)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    out = {}
    for line in text.splitlines():
        key, _, val = line.partition(":")
        if key in _FIELDS:
            out[key] = int(val.split()[0]) / 1024  # kB -> MB
    return out if "VmRSS" in out else None


def snapshot(pid: int) -> dict:
    """Memory of ``pid`` and of its descendants (summed), in MB."""
    main = proc_mem(pid) or {}
    kids = [m for m in (proc_mem(c) for c in descendants(pid)) if m]
    workers = {k: sum(m.get(k, 0.0) for m in kids) for k in _FIELDS}
    return dict(main_rss_mb=main.get("VmRSS", 0.0), workers_rss_mb=workers["VmRSS"],
                total_rss_mb=main.get("VmRSS", 0.0) + workers["VmRSS"], processes=1 + len(kids),
                main_anon_mb=main.get("RssAnon", 0.0), main_shmem_mb=main.get("RssShmem", 0.0),
                workers_anon_mb=workers["RssAnon"], workers_shmem_mb=workers["RssShmem"],
                workers_each_mb=[round(m["VmRSS"], 1) for m in kids])


# -- growth ----------------------------------------------------------------------------------------------------
def baseline_index(series: list[dict], warmup_samples: int) -> int:
    """The first point at or after the warm-up (the last point if the run is shorter)."""
    return next((i for i, p in enumerate(series) if p["samples_done"] >= warmup_samples), len(series) - 1)


def growth(series: list[dict], warmup_samples: int) -> dict:
    """Growth of total and main RSS from the baseline point to the last point, and the peaks after the baseline."""
    b = baseline_index(series, warmup_samples)
    base, last = series[b], series[-1]
    after = series[b:]
    window = windowed(series, warmup_samples)
    return dict(baseline_index=b, baseline_samples=base["samples_done"],
                baseline_total_rss_mb=base["total_rss_mb"], final_total_rss_mb=last["total_rss_mb"],
                total=last["total_rss_mb"] / base["total_rss_mb"] - 1.0,
                baseline_main_rss_mb=base["main_rss_mb"], final_main_rss_mb=last["main_rss_mb"],
                main=last["main_rss_mb"] / base["main_rss_mb"] - 1.0,
                baseline_workers_rss_mb=base["workers_rss_mb"], final_workers_rss_mb=last["workers_rss_mb"],
                workers=last["workers_rss_mb"] / base["workers_rss_mb"] - 1.0,
                peak_total_rss_mb=max(p["total_rss_mb"] for p in series),
                peak_total_after_baseline_mb=max(p["total_rss_mb"] for p in after),
                max_total_vs_baseline=max(p["total_rss_mb"] for p in after) / base["total_rss_mb"] - 1.0,
                peak_main_rss_mb=max(p["main_rss_mb"] for p in series), windowed=window)


def windowed(series: list[dict], warmup_samples: int) -> dict:
    """Median total RSS of the last ``warmup_samples`` samples against the median of the ``warmup_samples`` samples
    from the baseline on (both windows hold at least one point)."""
    import statistics

    b = baseline_index(series, warmup_samples)
    start, end = series[b]["samples_done"], series[-1]["samples_done"]
    first = [p["total_rss_mb"] for p in series[b:] if p["samples_done"] < start + warmup_samples] or \
        [series[b]["total_rss_mb"]]
    last = [p["total_rss_mb"] for p in series[b:] if p["samples_done"] > end - warmup_samples] or \
        [series[-1]["total_rss_mb"]]
    a, z = statistics.median(first), statistics.median(last)
    return dict(first_median_mb=a, last_median_mb=z, growth=z / a - 1.0, first_points=len(first),
                last_points=len(last))


# -- the run ---------------------------------------------------------------------------------------------------
def soak(args) -> dict:
    import numpy as np
    from tqdm import tqdm

    from ocp_dali import OCPConfig, SyntheticScenes
    from ocp_dali.torch import OCPLoader

    ds = SyntheticScenes(args.images, seed=0, image_size=(args.size, args.size), max_people=args.people)
    n = len(ds)
    epochs = math.ceil(args.samples / n)
    pid = os.getpid()
    series: list[dict] = []
    per_epoch: list[dict] = []
    done = batches = 0
    t0 = time.perf_counter()

    def record() -> None:
        series.append(dict(samples_done=done, batches=batches, elapsed_s=round(time.perf_counter() - t0, 2),
                           **snapshot(pid)))

    before = dict(snapshot(pid), samples_done=0)  # before the pipeline exists (no workers yet): not in the series
    loader = OCPLoader(ds, OCPConfig.ocp(), device="cpu", batch_size=args.batch_size, output_size=args.size,
                       seed=0, py_num_workers=args.workers, num_threads=args.threads)
    bar = tqdm(total=args.samples, desc="soak", unit="img", smoothing=0.05)
    try:
        for epoch in range(epochs):
            loader.set_epoch(epoch)
            want = min(n, args.samples - done)
            seen = np.zeros(n, dtype=np.int64)
            got = 0
            for batch in loader:
                k = len(batch["indices"])
                np.add.at(seen, batch["indices"], 1)
                if batch["epoch"] != epoch:
                    raise RuntimeError(f"batch of epoch {batch['epoch']} in epoch {epoch}")
                got += k
                done += k
                batches += 1
                bar.update(k)
                del batch
                if batches % args.every == 0:
                    record()
                    bar.set_postfix(total_mb=f"{series[-1]['total_rss_mb']:.0f}")
                if want < n and got >= want:  # a partial last epoch (a full one must run to its end, so that
                    break                      # the loader closes the epoch and keeps its workers)
            complete = got == n
            if complete and not (seen == 1).all():
                raise RuntimeError(f"epoch {epoch}: {int((seen == 0).sum())} indices missing, "
                                   f"{int((seen > 1).sum())} repeated")
            if series[-1]["samples_done"] != done:
                record()  # a point at every epoch end
            per_epoch.append(dict(epoch=epoch, samples=got, complete=complete,
                                  each_index_once=bool((seen == 1).all()) if complete else None,
                                  total_rss_mb_at_end=series[-1]["total_rss_mb"],
                                  main_rss_mb_at_end=series[-1]["main_rss_mb"], elapsed_s=series[-1]["elapsed_s"]))
    finally:
        bar.close()
        wall = time.perf_counter() - t0
        stats = dict(loader.stats)
        loader.close()
    return dict(series=series, before_pipeline=before, per_epoch=per_epoch, epochs=epochs, samples_seen=done,
                batches=batches, wall_s=wall, stats=stats)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--images", type=int, default=2000, help="SyntheticScenes length (one epoch)")
    ap.add_argument("--size", type=int, default=384, help="scene size and LSJ output size (square)")
    ap.add_argument("--people", type=int, default=6, help="SyntheticScenes max_people")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2, help="DALI py_num_workers (spawned processes)")
    ap.add_argument("--threads", type=int, default=2, help="DALI num_threads")
    ap.add_argument("--every", type=int, default=10, help="sample RSS every N batches")
    ap.add_argument("--warmup", type=float, default=0.1, help="fraction of samples before the baseline point")
    ap.add_argument("--limit", type=float, default=0.05, help="pass if total RSS growth is below this")
    ap.add_argument("--quick", action="store_true", help="~200-sample smoke run (writes to a temporary folder)")
    ap.add_argument("--out", default=None, help="output folder (default: benchmarks/results; --quick: a tmp dir)")
    args = ap.parse_args(argv)
    if args.quick:
        args.samples, args.images, args.size, args.people, args.every = 200, 50, 256, 4, 2
    if args.samples < 1 or args.images < 1:
        ap.error("--samples and --images must be >= 1")
    if (args.samples % args.images) % args.batch_size:
        ap.error("the last (partial) epoch must be a whole number of batches: "
                 "(samples %% images) %% batch_size must be 0")
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="ocp_soak_")) if args.quick
                                           else ROOT / "benchmarks" / "results")
    warmup_samples = int(round(args.warmup * args.samples))
    print(f"soak: {args.samples} samples = {math.ceil(args.samples / args.images)} epoch(s) of "
          f"SyntheticScenes({args.images}, image_size=({args.size}, {args.size}), max_people={args.people}), "
          f"OCPConfig.ocp(), DALI CPU graph, batch {args.batch_size}, {args.workers} workers, {args.threads} "
          f"threads, output {args.size}²; RSS every {args.every} batches; baseline after {warmup_samples} samples",
          flush=True)

    # a plain SIGTERM would leave the spawned DALI workers orphaned: exit through the loader's close() instead
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    r = soak(args)
    g = growth(r["series"], warmup_samples)
    stats = r["stats"]
    checks = dict(samples_seen_equals_requested=r["samples_seen"] == args.samples,
                  stats_samples_equals_requested=stats.get("samples", 0) == args.samples,
                  complete_epochs_each_index_once=all(e["each_index_once"] for e in r["per_epoch"] if e["complete"]))
    report = dict(command=" ".join([Path(sys.executable).name] + sys.argv), machine=_machine(), versions=_versions(),
                  load_average=list(os.getloadavg()),
                  settings=dict(samples=args.samples, dataset=f"SyntheticScenes({args.images}, seed=0, image_size="
                                f"({args.size}, {args.size}), max_people={args.people})",
                                images=args.images, size=args.size, people=args.people, epochs=r["epochs"],
                                cfg="OCPConfig.ocp()", device="cpu", batch_size=args.batch_size,
                                py_num_workers=args.workers, num_threads=args.threads, output_size=args.size,
                                every_batches=args.every, warmup_fraction=args.warmup,
                                warmup_samples=warmup_samples, limit=args.limit, quick=args.quick),
                  samples=dict(requested=args.samples, seen=r["samples_seen"], batches=r["batches"]),
                  stats=stats, per_epoch=r["per_epoch"], checks=checks, wall_s=r["wall_s"],
                  img_per_s=r["samples_seen"] / r["wall_s"],
                  baseline=dict(index=g["baseline_index"], samples_done=g["baseline_samples"],
                                total_rss_mb=g["baseline_total_rss_mb"], main_rss_mb=g["baseline_main_rss_mb"],
                                workers_rss_mb=g["baseline_workers_rss_mb"],
                                rule=f"first point at or after {args.warmup:.0%} of the samples"),
                  growth=g, before_pipeline=r["before_pipeline"], series=r["series"])
    report["pass"] = bool(g["total"] < args.limit and all(checks.values()))
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak_cpu.json").write_text(json.dumps(report, indent=1))
    plot(report, out / "soak_cpu.png")
    print_table(report)
    print(f"wrote {out / 'soak_cpu.json'} and {out / 'soak_cpu.png'}")
    if not all(checks.values()):
        print(f"FAILED checks: {[k for k, v in checks.items() if not v]}", file=sys.stderr)
        return 1
    return 0


def print_table(rep: dict) -> None:
    g, s = rep["growth"], rep["stats"]
    print(f"\n{'':<10}{'baseline MB':>13}{'final MB':>10}{'growth':>9}{'peak MB':>9}")
    for k in ("total", "main", "workers"):
        peak = {"total": g["peak_total_rss_mb"], "main": g["peak_main_rss_mb"]}.get(k)
        print(f"{k:<10}{g[f'baseline_{k}_rss_mb']:>13.1f}{g[f'final_{k}_rss_mb']:>10.1f}{g[k]:>+9.2%}"
              f"{'' if peak is None else f'{peak:.1f}':>9}")
    print(f"baseline at {g['baseline_samples']} samples; max total after it {g['peak_total_after_baseline_mb']:.1f} MB "
          f"({g['max_total_vs_baseline']:+.2%}); windowed (medians of the first and last "
          f"{rep['settings']['warmup_samples']} samples after it): {g['windowed']['first_median_mb']:.1f} -> "
          f"{g['windowed']['last_median_mb']:.1f} MB ({g['windowed']['growth']:+.2%})")
    ends = " ".join(f"{e['total_rss_mb_at_end']:.0f}" for e in rep["per_epoch"])
    print(f"total RSS (MB) at each epoch end: {ends}")
    print(f"samples {rep['samples']['seen']}/{rep['samples']['requested']} in {rep['samples']['batches']} batches, "
          f"{rep['wall_s']:.0f} s ({rep['img_per_s']:.1f} img/s); stats: samples {s.get('samples', 0)}, "
          f"pasted {s.get('pasted', 0)}, skipped {s.get('skipped', 0)}, dropped {s.get('dropped', 0)}, "
          f"dropped_by_crop {s.get('dropped_by_crop', 0)}, skipped_annotations {s.get('skipped_annotations', 0)}")
    print(f"total RSS growth {g['total']:+.2%} (limit {rep['settings']['limit']:.0%}): "
          f"{'PASS' if rep['pass'] else 'FAIL'}")


def plot(rep: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ser, g = rep["series"], rep["growth"]
    x = [p["samples_done"] for p in ser]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for key, label in (("total_rss_mb", "total"), ("main_rss_mb", "main process"),
                       ("workers_rss_mb", f"workers ({rep['settings']['py_num_workers']} + helpers)")):
        ax.plot(x, [p[key] for p in ser], label=label, lw=1.4)
    bx, by = g["baseline_samples"], g["baseline_total_rss_mb"]
    ax.axvline(bx, color="grey", ls="--", lw=0.8)
    ax.axhline(by, color="grey", ls=":", lw=0.8)
    ax.axhline(by * (1 + rep["settings"]["limit"]), color="red", ls=":", lw=0.8,
               label=f"baseline + {rep['settings']['limit']:.0%}")
    ax.plot([bx], [by], "ko", ms=4, label=f"baseline ({by:.0f} MB at {bx} samples)")
    ax.set(xlabel="samples", ylabel="RSS (MB)", ylim=(0, None),
           title=f"soak, DALI CPU graph: {rep['samples']['seen']} samples, total RSS growth {g['total']:+.2%} "
                 f"({'pass' if rep['pass'] else 'FAIL'})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
