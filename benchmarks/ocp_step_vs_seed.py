"""The OC&P step with both jitters on, against the seed's own ``OccCopyPaste``, on the same LSJ-1024 real samples.

    python benchmarks/ocp_step_vs_seed.py --seed-src /tmp/seed_ocp              # coco_mini val persons, 390 calls
    python benchmarks/ocp_step_vs_seed.py --seed-src /tmp/seed_ocp --calls 780 --core 1 --publish

Samples: every image of ``--ann``/``--images`` with at least one non-crowd person (``CocoInstances(...,
classes=["person"], filter_empty_gt=True)``), loaded and put through ocp_dali's LSJ (``Geometry.lsj(1024)``, the
draw of ``lsj_for_sample``) once, before any timing. Each call draws a destination and a different basket image
(basket_size 1, as in the seed's configs) from a fixed generator; every timed transform gets that same pair:

- ``ocp_dali``: ``sample_plan`` (the plan draw belongs to the step) + ``reference.apply_numpy`` with
  ``OCPConfig.ocp(aug_paste_geom_jitter=True, aug_paste_img_jitter=True)``: every output (visible, amodal and
  occluder masks, boxes, occlusion rates, order);
- ``seed``: the seed's ``OccCopyPaste`` with its paper OC&P row (prob 0.8, basket 1, paste_num [1, 3],
  min_size_paste 0.1, min_size_occ 0.01, targeted 0.8 / 0.4, both jitters on), fed an mmdet 2.x results dict
  (``img`` uint8 HWC, ``gt_masks`` BitmapMasks of uint8 masks, ``gt_labels``, ``gt_bboxes``, ``mix_results``);
- ``mmdet3_copypaste``: mmdet 3's ``CopyPaste`` (defaults), when mmdet imports.

The calls alternate transform by transform (the order rotates every call), in one process pinned to one core
(``--core``; -1: the less loaded of the allowed cores, measured over a second), after a few untimed warm-up calls.
Reported per transform: wall and process-CPU ms per call (mean, median, p90, p99) and the ratios seed / ocp_dali.

``--seed-src DIR``: a folder *outside this repository* that holds the seed's transform with small stand-ins, never
committed here: ``ocp.py`` (the seed's ``mmdet/custom/ocp.py``, unmodified) and ``seed_entry.py`` whose
``load(seed)`` returns a namespace with ``OccCopyPaste``, ``BitmapMasks`` (the results-dict mask class the seed
expects) and ``info`` (a dict: where the code came from). Without it the script says so and exits 0.
Writes JSON and a PNG box plot to ``--out`` (default ``out/benchmarks/``; ``--publish``: ``benchmarks/results/``).
"""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ocp_dali import CocoInstances, Geometry, ImageMeta, OCPConfig, sample_plan, sample_rng  # noqa: E402
from ocp_dali.lsj import apply_lsj, lsj_for_sample  # noqa: E402
from ocp_dali.reference import apply_numpy, cpu_loops  # noqa: E402
from ocp_dali.sample import Sample  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "coco_mini"
# The seed's OC&P row with both jitters (its Mask R-CNN and Mask2Former "OCP_aug" configs).
SEED_ROW = dict(prob=0.8, basket_size=1, paste_num=[1, 3], min_size_paste=0.1, min_size_occ=0.01,
                targeted_paste_prob=0.8, targeted_paste_buffer=0.4, aug_paste_geom_jitter=True,
                aug_paste_img_jitter=True)
PUBLISHED = "ocp_step_vs_seed_cpu"


@dataclass
class Side:
    """One timed transform: ``prepare(k, dst, src)`` builds its inputs for call ``k`` (untimed: what the pipeline
    before it would hand over), ``call(inputs)`` is the step (timed); wall and CPU seconds per call."""

    name: str
    prepare: Callable[[int, int, int], Any]
    call: Callable[[Any], Any]
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def run(self, k: int, dst: int, src: int, timed: bool = True) -> Any:
        inputs = self.prepare(k, dst, src)
        w, c = time.perf_counter(), time.process_time()
        out = self.call(inputs)
        dw, dc = time.perf_counter() - w, time.process_time() - c
        if timed:
            self.wall.append(dw)
            self.cpu.append(dc)
        return out


def lsj_samples(ann: str, images: str, size: int = 1024, limit: int = 0,
                seed: int = 0) -> tuple[list[Sample], list[ImageMeta]]:
    """The persons images of ``ann`` (>= 1 non-crowd person), loaded and LSJ'd to ``size``² once (ocp_dali's LSJ,
    each image its own ``lsj_for_sample`` draw), and their plan metadata (tight boxes, the keypoint flip
    permutation), which the loaders hold before any pixel is read; ``limit`` > 0: only the first ``limit``."""
    ds = CocoInstances(ann, images, classes=["person"], filter_empty_gt=True)
    geo = Geometry.lsj(size)
    n = len(ds) if limit <= 0 else min(limit, len(ds))
    samples, metas = [], []
    for i in range(n):
        s, flip_index = ds.load(i), ds.meta(i).flip_index
        samples.append(apply_lsj(s, lsj_for_sample(seed, 0, i, s.height, s.width, geo), flip_index))
        metas.append(ImageMeta.of_sample(samples[-1], i, flip_index))
    return samples, metas


def draw_pairs(n_images: int, calls: int, seed: int = 0) -> list[tuple[int, int]]:
    """``(destination, basket image)`` per call, two different images (basket_size 1), from a fixed generator."""
    if n_images < 2:
        raise ValueError("need at least 2 images (a destination and a different basket image)")
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(calls):
        d = int(rng.integers(n_images))
        s = int(rng.integers(n_images - 1))
        pairs.append((d, s + (s >= d)))
    return pairs


def ocp_dali_side(samples: Sequence[Sample], metas: Sequence[ImageMeta], cfg: OCPConfig | None = None,
                  seed: int = 0) -> Side:
    """ocp_dali's OC&P step: the plan draw (its own ``(seed, 0, k)`` stream) and ``apply_numpy``."""
    cfg = cfg or OCPConfig.ocp(aug_paste_geom_jitter=True, aug_paste_img_jitter=True)

    def call(inputs: tuple[int, int, int]) -> Sample:
        k, d, s = inputs
        plan = sample_plan(sample_rng(seed, 0, k), metas[d], [metas[s]], cfg)
        return apply_numpy(plan, samples[d], [samples[s]])

    return Side("ocp_dali", lambda k, d, s: (k, d, s), call)


def seed_side(seed_src: Path, samples: Sequence[Sample], seed: int = 0) -> tuple[Side, dict]:
    """The seed's ``OccCopyPaste`` (``SEED_ROW``) loaded by ``seed_src/seed_entry.py``; results dicts are built
    once per image (mmdet 2.x ``LoadAnnotations(poly2mask=True)`` gives uint8 masks) and shallow-copied per call,
    as the seed replaces ``img``/``gt_*`` in the dict rather than writing into their arrays."""
    sys.path.insert(0, str(seed_src))
    try:
        entry = importlib.import_module("seed_entry").load(seed)
    finally:
        sys.path.remove(str(seed_src))
    transform = entry.OccCopyPaste(**SEED_ROW)
    templates = [dict(img=s.image, gt_masks=entry.BitmapMasks(s.masks.astype(np.uint8), s.height, s.width),
                      gt_labels=np.asarray(s.labels, dtype=np.int64),
                      gt_bboxes=np.asarray(s.boxes, dtype=np.float32)) for s in samples]

    def prepare(k: int, d: int, s: int) -> dict:
        return dict(templates[d], mix_results=[dict(templates[s])])

    return Side("seed", prepare, transform), dict(entry.info, settings=SEED_ROW)


def mmdet3_side(samples: Sequence[Sample], seed: int = 0) -> tuple[Side | None, str]:
    """mmdet 3's ``CopyPaste`` (defaults) on mmdet 3 results dicts, or None and why not."""
    try:
        import torch
        from mmdet import __version__ as mmdet_version
        from mmdet.datasets.transforms import CopyPaste
        from mmdet.structures.bbox import HorizontalBoxes
        from mmdet.structures.mask import BitmapMasks
    except Exception as e:  # noqa: BLE001 - any import failure means no mmdet row, said in the report
        return None, f"mmdet not importable: {type(e).__name__}: {e}"
    np.random.seed(seed)  # mmdet's transforms draw from NumPy's global generator
    templates = [dict(img=s.image, img_shape=(s.height, s.width),
                      gt_bboxes=HorizontalBoxes(torch.as_tensor(np.asarray(s.boxes, dtype=np.float32))),
                      gt_bboxes_labels=np.asarray(s.labels, dtype=np.int64),
                      gt_masks=BitmapMasks(s.masks.astype(np.uint8), s.height, s.width),
                      gt_ignore_flags=np.zeros(len(s), dtype=bool)) for s in samples]
    transform = CopyPaste()

    def prepare(k: int, d: int, s: int) -> dict:
        return dict(templates[d], mix_results=[dict(templates[s])])

    return Side("mmdet3_copypaste", prepare, transform.transform), f"mmdet {mmdet_version}"


def race(sides: list[Side], pairs: Sequence[tuple[int, int]], warmup: int = 3, progress: bool = True) -> None:
    """Time every side on every pair, alternating side by side (the order rotates each call so none always runs
    on a cache its rival warmed); ``warmup`` untimed calls each first (imports, compiled loops, caches)."""
    for k, (d, s) in enumerate(pairs[:warmup]):
        for side in sides:
            side.run(k, d, s, timed=False)
    it = enumerate(pairs)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, total=len(pairs), desc="calls", unit="call")
    gc.collect()
    for k, (d, s) in it:
        for j in range(len(sides)):
            sides[(k + j) % len(sides)].run(k, d, s)


# ocp_dali.reference's stages (module functions apply_numpy calls by name), timed by ``stage_profile``.
STAGES = ("jitter_image", "warp_crop", "paste_alpha", "composite", "occlude", "place", "keep_rule", "emit")


def stage_profile(side: Side, pairs: Sequence[tuple[int, int]]) -> dict:
    """Where ocp_dali's step spends its time: ms per call of the plan draw, ``PasteLayers.start`` and every stage of
    ``STAGES`` (the rest of ``apply_numpy`` is "other"), over ``pairs`` in a separate pass after the race (the
    wrappers cost microseconds, kept out of the race). Only on the ocp_dali side."""
    import ocp_dali.reference as ref

    spent = {name: 0.0 for name in ("plan", "start") + STAGES}

    def timed(name: str, fn: Callable) -> Callable:
        def run(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - t
        return run

    saved = {name: getattr(ref, name) for name in STAGES}
    start, plan_fn = ref.PasteLayers.__dict__["start"], globals()["sample_plan"]
    for name in STAGES:
        setattr(ref, name, timed(name, saved[name]))
    ref.PasteLayers.start = classmethod(timed("start", start.__func__))
    globals()["sample_plan"] = timed("plan", plan_fn)
    total = 0.0
    try:
        for k, (d, s) in enumerate(pairs):
            t = time.perf_counter()
            side.run(k, d, s, timed=False)
            total += time.perf_counter() - t
    finally:
        for name in STAGES:
            setattr(ref, name, saved[name])
        ref.PasteLayers.start = start
        globals()["sample_plan"] = plan_fn
    n = max(len(pairs), 1)
    ms = {name: 1e3 * v / n for name, v in spent.items()}
    ms["other"] = 1e3 * total / n - sum(ms.values())
    return dict(calls=len(pairs), total_ms_per_call=1e3 * total / n, ms_per_call=ms,
                share={name: v / max(1e3 * total / n, 1e-9) for name, v in ms.items()})


def stats(seconds: Sequence[float]) -> dict:
    """ms per call: mean, median, p90, p99, max and the count."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return dict(n=int(ms.size), mean=float(ms.mean()), median=float(np.median(ms)),
                p90=float(np.percentile(ms, 90)), p99=float(np.percentile(ms, 99)), max=float(ms.max()))


def core_loads(seconds: float = 1.0, cores: set[int] | None = None) -> dict[int, float]:
    """Busy share of each of ``cores`` (default: the allowed ones) over ``seconds`` (from /proc/stat; empty where it
    cannot be read)."""
    def snap() -> dict[int, tuple[int, int]]:
        out = {}
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("cpu") and line[3:4].isdigit():
                name, *vals = line.split()
                v = [int(x) for x in vals]
                out[int(name[3:])] = (sum(v), v[3] + (v[4] if len(v) > 4 else 0))  # total, idle + iowait
        return out

    try:
        a = snap()
        time.sleep(seconds)
        b = snap()
    except OSError:
        return {}
    allowed = os.sched_getaffinity(0) if cores is None else cores
    return {c: round(1.0 - (b[c][1] - a[c][1]) / max(b[c][0] - a[c][0], 1), 3) for c in sorted(a) if c in allowed}


def machine() -> dict:
    """CPU model, core count, load average and the per-core busy share just before the run."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return dict(cpu_model=model, cores=os.cpu_count(), allowed_cores=sorted(os.sched_getaffinity(0)),
                loadavg=list(os.getloadavg()), python=platform.python_version(), platform=platform.platform())


def versions() -> dict:
    """Versions of what the timed code runs on."""
    import cv2

    out = dict(numpy=np.__version__, opencv=cv2.__version__)
    for name in ("mmcv", "mmdet", "mmengine", "torch"):
        mod = sys.modules.get(name)
        if mod is not None:
            out[name] = getattr(mod, "__version__", "?")
    return out


def ratios(results: dict) -> dict:
    """seed / ocp_dali (and mmdet / ocp_dali) of every statistic: > 1 means ocp_dali is faster."""
    ours = results["ocp_dali"]
    out = {}
    for name in ("seed", "mmdet3_copypaste"):
        if name in results:
            out[f"{name}_over_ocp_dali"] = {
                kind: {q: results[name][kind][q] / max(ours[kind][q], 1e-9) for q in ("mean", "median", "p90", "p99")}
                for kind in ("wall_ms", "cpu_ms")}
    return out


def print_table(report: dict) -> None:
    """The measured table: ms per call (wall; CPU in brackets) and the ratios."""
    m, s = report["machine"], report["settings"]
    print(f"\n{s['calls']} calls each, {s['images']} LSJ-{s['size']} images, core {s['core']} of {m['cores']} "
          f"({m['cpu_model']}), compiled loops: {report['compiled_loops']}, busy: {report['busy']}")
    print(f"{'transform':18s} {'mean':>15s} {'median':>15s} {'p90':>15s} {'p99':>15s}   ms per call, wall (cpu)")
    for name, row in report["results"].items():
        cells = [f"{row['wall_ms'][q]:6.1f} ({row['cpu_ms'][q]:5.1f})" for q in ("mean", "median", "p90", "p99")]
        print(f"{name:18s} " + " ".join(f"{c:>15s}" for c in cells))
    for key, r in report["ratios"].items():
        w = r["wall_ms"]
        print(f"{key:28s} mean {w['mean']:.2f}x  median {w['median']:.2f}x  p90 {w['p90']:.2f}x  p99 {w['p99']:.2f}x"
              f"  (cpu mean {r['cpu_ms']['mean']:.2f}x, p90 {r['cpu_ms']['p90']:.2f}x)")
    t = report["target"]
    print(f"target (>= 2x on mean and p90, wall): {'met' if t['met'] else 'NOT met'}")
    if "ocp_dali_stages" in report:
        p = report["ocp_dali_stages"]
        print(f"ocp_dali stages, ms per call ({p['calls']} calls, {p['total_ms_per_call']:.1f} ms): " + ", ".join(
            f"{k} {v:.1f} ({100 * p['share'][k]:.0f}%)" for k, v in p["ms_per_call"].items()))


def plot(sides: list[Side], report: dict, path: Path) -> None:
    """Box plot of wall ms per call of every transform (log scale: the tails matter)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    data = [np.asarray(s.wall) * 1e3 for s in sides]
    ax.boxplot(data, whis=(10, 90), showmeans=True, showfliers=True, flierprops=dict(markersize=2))
    ax.set_xticks(range(1, len(sides) + 1), [s.name for s in sides])
    ax.set_yscale("log")
    ax.set_ylabel("ms per call (wall)")
    s = report["settings"]
    ax.set_title(f"OC&P step, both jitters, LSJ-{s['size']}: {s['calls']} calls each, core {s['core']}\n"
                 "box: quartiles, whiskers: p10-p90, triangle: mean", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pick_core(requested: int) -> tuple[int, dict[int, float]]:
    """The core to pin to: ``requested``, or (-1) the less loaded allowed core; and the cores' busy shares."""
    loads = core_loads()
    if requested >= 0:
        return requested, loads
    return (min(loads, key=loads.get) if loads else min(os.sched_getaffinity(0))), loads


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed-src", default=None, help="folder with the seed's ocp.py and seed_entry.py (see above)")
    ap.add_argument("--ann", default=str(DATA / "annotations" / "person_keypoints_val2017.json"))
    ap.add_argument("--images", default=str(DATA / "val2017"))
    ap.add_argument("--calls", type=int, default=390, help="timed calls per transform")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls per transform first")
    ap.add_argument("--size", type=int, default=1024, help="LSJ canvas side")
    ap.add_argument("--core", type=int, default=-1, help="core to pin to (-1: the less loaded one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-mmdet", action="store_true", help="leave mmdet 3's CopyPaste out")
    ap.add_argument("--profile", action="store_true",
                    help="after the race, time ocp_dali's stages on the same calls (stage_profile)")
    ap.add_argument("--out", default=None, help="output folder (default out/benchmarks/)")
    ap.add_argument("--publish", action="store_true", help="write into benchmarks/results/ (the published figure)")
    args = ap.parse_args(argv)
    if args.publish and args.out:
        ap.error("--publish writes into benchmarks/results/: give --out or --publish, not both")
    args.out = args.out or str(ROOT / ("benchmarks/results" if args.publish else "out/benchmarks"))
    return args


def build_sides(args: argparse.Namespace, samples: list[Sample],
                metas: list[ImageMeta]) -> tuple[list[Side], dict]:
    """ocp_dali, the seed and (when it imports) mmdet 3's CopyPaste, with what was loaded for each."""
    seed, seed_info = seed_side(Path(args.seed_src), samples, args.seed)
    sides = [ocp_dali_side(samples, metas, seed=args.seed), seed]
    loaded = dict(seed=seed_info)
    if args.no_mmdet:
        loaded["mmdet3_copypaste"] = "left out (--no-mmdet)"
    else:
        mm, why = mmdet3_side(samples, args.seed)
        loaded["mmdet3_copypaste"] = why
        if mm is not None:
            sides.append(mm)
    return sides, loaded


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.seed_src or not (Path(args.seed_src) / "seed_entry.py").is_file():
        print(f"skipped: no seed source (--seed-src {args.seed_src!r} has no seed_entry.py); the seed's code is "
              "not part of this repository: see this script's docstring for the folder it needs")
        return 0
    allowed = os.sched_getaffinity(0)
    core, loads = pick_core(args.core)
    os.sched_setaffinity(0, {core})
    t0 = time.time()
    samples, metas = lsj_samples(args.ann, args.images, args.size, seed=args.seed)
    sides, loaded = build_sides(args, samples, metas)
    pairs = draw_pairs(len(samples), args.calls, args.seed)
    race(sides, pairs, warmup=args.warmup)
    loads_after = core_loads(cores=allowed)  # every core the run could have used, not just the pinned one
    busy = any(v > 0.5 for c, v in {**loads, **loads_after}.items() if c != core) or os.getloadavg()[0] > 1.5
    report = dict(
        command=" ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        machine=dict(machine(), core_busy_before=loads, core_busy_after=loads_after),
        busy=bool(busy),
        busy_note=("other work ran on this machine during the run (see machine.core_busy_*, loadavg); the "
                   "transforms alternate call by call, so each met the same load") if busy else "",
        versions=versions(), compiled_loops=cpu_loops() is not None,
        settings=dict(calls=args.calls, warmup=args.warmup, images=len(samples), size=args.size, core=core,
                      seed=args.seed, ann=args.ann, images_dir=args.images,
                      ocp_dali_config="OCPConfig.ocp(aug_paste_geom_jitter=True, aug_paste_img_jitter=True)"),
        loaded=loaded,
        results={s.name: dict(wall_ms=stats(s.wall), cpu_ms=stats(s.cpu)) for s in sides},
        seconds=round(time.time() - t0, 1))
    report["ratios"] = ratios(report["results"])
    r = report["ratios"]["seed_over_ocp_dali"]["wall_ms"]
    report["target"] = dict(want="ocp_dali >= 2x faster than the seed on the mean and on p90 (wall)",
                            mean_ratio=r["mean"], p90_ratio=r["p90"], met=bool(r["mean"] >= 2 and r["p90"] >= 2))
    if args.profile:
        report["ocp_dali_stages"] = stage_profile(sides[0], pairs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = PUBLISHED if args.publish else "ocp_step_vs_seed"
    (out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    plot(sides, report, out / f"{name}.png")
    print_table(report)
    print(f"wrote {out / (name + '.json')} and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
