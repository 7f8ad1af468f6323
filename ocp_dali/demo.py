"""The project's main job on the embedded default: ``python -m ocp_dali.demo [--samples 200] [--out out/demo]``.

Augments ``--samples`` samples of ``SyntheticScenes(--num-images)`` (sample ``i`` is image ``i % num_images`` at
epoch ``i // num_images``), prints a summary table, and writes ``<out>/summary.json`` and ``<out>/preview.png``
(the first four samples that got pastes, drawn with ``ocp_dali.preview.draw_grid``).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence

import numpy as np

from ocp_dali.augment import augment
from ocp_dali.data.synthetic import SyntheticScenes
from ocp_dali.preview import PRESETS, draw_grid, make_config
from ocp_dali.sample import Sample

PREVIEW_ROWS = 4


def _mean(values: list[float] | list[int]) -> float | None:
    return float(np.mean(values)) if values else None


def sample_stats(before: int, out: Sample) -> dict:
    """Per-sample figures (kept instead of the sample itself, whose masks are large)."""
    p = np.asarray(out.pasted, dtype=bool)
    overlapping = 0
    if p.any() and (~p).any():
        # order[i, j]: i was pasted after j and their amodal masks overlap
        overlapping = int(np.asarray(out.order)[np.ix_(p, ~p)].any(axis=1).sum())
    return {
        "before": before,
        "after": len(out),
        "pasted": int(p.sum()),
        "occ_pasted": out.occlusion_rate[p].tolist(),
        "occ_existing": out.occlusion_rate[~p].tolist(),
        "overlapping": overlapping,
        **{k: int(out.info.get(k, 0)) for k in ("skipped", "dropped_existing", "dropped_pasted")},
    }


def summarise(stats: list[dict], seconds: float) -> dict:
    """The demo's figures from the per-sample ``sample_stats`` and the total augmentation time."""
    total_pasted = sum(s["pasted"] for s in stats)
    overlapping = sum(s["overlapping"] for s in stats)
    return {
        "samples": len(stats),
        "samples_with_pastes": sum(s["pasted"] > 0 for s in stats),
        "mean_instances_before": _mean([s["before"] for s in stats]),
        "mean_instances_after": _mean([s["after"] for s in stats]),
        "total_pasted": total_pasted,
        **{k: sum(s[k] for s in stats) for k in ("skipped", "dropped_existing", "dropped_pasted")},
        "mean_occlusion_pasted": _mean([v for s in stats for v in s["occ_pasted"]]),
        "mean_occlusion_existing": _mean([v for s in stats for v in s["occ_existing"]]),
        "frac_pasted_overlapping_existing": overlapping / total_pasted if total_pasted else None,
        "ms_per_sample": 1000.0 * seconds / max(len(stats), 1),
    }


def format_summary(summary: dict) -> str:
    """The summary as an aligned two-column text table."""
    width = max(len(k) for k in summary)
    rows = []
    for k, v in summary.items():
        text = "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
        rows.append(f"{k:<{width}}  {text:>10}")
    rule = "-" * (width + 12)
    return "\n".join([rule, *rows, rule])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of the demo."""
    p = argparse.ArgumentParser(prog="python -m ocp_dali.demo", description=__doc__.split("\n")[0])
    p.add_argument("--num-images", type=int, default=64, help="synthetic dataset size")
    p.add_argument("--samples", type=int, default=200, help="samples to augment")
    p.add_argument("--preset", choices=sorted(PRESETS), default="ocp", help="config preset")
    p.add_argument("--seed", type=int, default=0, help="augmentation seed")
    p.add_argument("--out", default=os.path.join("out", "demo"), help="output folder")
    args = p.parse_args(argv)
    if args.num_images < 1 or args.samples < 1:
        p.error("--num-images and --samples must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns 0."""
    from tqdm import tqdm

    args = parse_args(argv)
    dataset = SyntheticScenes(args.num_images)
    cfg = make_config(args.preset)
    stats: list[dict] = []
    preview: list[tuple[Sample, Sample]] = []
    seconds = 0.0
    for i in tqdm(range(args.samples), desc=f"OC&P {args.preset}", unit="sample"):
        index, epoch = i % args.num_images, i // args.num_images
        t0 = time.perf_counter()
        out = augment(dataset, index, epoch=epoch, seed=args.seed, cfg=cfg)
        seconds += time.perf_counter() - t0
        stats.append(sample_stats(len(dataset.meta(index).boxes), out))
        if np.any(out.pasted) and len(preview) < PREVIEW_ROWS:
            preview.append((dataset.load(index), out))
    summary = summarise(stats, seconds)
    summary = {"preset": args.preset, "num_images": args.num_images, "seed": args.seed, **summary}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(format_summary(summary))
    if preview:
        draw_grid(preview, os.path.join(args.out, "preview.png"))
        print(f"wrote {os.path.join(args.out, 'summary.json')} and {os.path.join(args.out, 'preview.png')}")
    else:
        print(f"wrote {os.path.join(args.out, 'summary.json')} (no sample got pastes: no preview)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
