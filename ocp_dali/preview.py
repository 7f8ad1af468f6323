"""Before/after preview grids of the augmentation: ``python -m ocp_dali.preview --ann FILE --images DIR --out g.png``.

Each row shows one sample: the original on the left, the augmented sample on the right, with visible masks filled,
amodal outlines dashed where they differ from the visible mask, occluder masks hatched, boxes, keypoints (filled:
v=2, hollow: v=1) and a title with the counts. Without ``--ann``/``--images`` it previews ``SyntheticScenes(8)``.
Matplotlib is imported inside the functions so ``import ocp_dali`` stays light.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import numpy as np

from ocp_dali.augment import augment
from ocp_dali.config import OCPConfig
from ocp_dali.sample import Sample

PRESETS = {"ocp": OCPConfig.ocp, "basic": OCPConfig.basic, "simple": OCPConfig.simple}


def make_config(preset: str, blend_sigma: float = 0.0, prob: float | None = None) -> OCPConfig:
    """The preset's config with ``blend_sigma`` (and ``prob`` when given) applied."""
    cfg = PRESETS[preset](blend_sigma=float(blend_sigma))
    return cfg if prob is None else cfg.replace(prob=float(prob))


def mean_pasted_occlusion(s: Sample) -> float:
    """Mean occlusion rate of the pasted instances of ``s`` (NaN when none)."""
    p = np.asarray(s.pasted, dtype=bool)
    return float(np.mean(s.occlusion_rate[p])) if p.any() else float("nan")


def _outline(ax, mask: np.ndarray, colour, style: str, width: float) -> None:
    """Contour of ``mask`` drawn on its (padded) box only, so contours close at the image border."""
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if not len(ys):
        return
    y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
    sub = np.pad(mask[y0:y1, x0:x1].astype(np.float32), 1)
    ax.contour(np.arange(x0 - 1, x1 + 1), np.arange(y0 - 1, y1 + 1), sub, levels=[0.5], colors=[colour],
               linestyles=style, linewidths=width)


def _title(s: Sample, tag: str) -> str:
    name = os.path.basename(s.file_name) or str(s.image_id)
    occ = mean_pasted_occlusion(s)
    head = f"{tag} {name}: N={len(s)}, pasted={int(np.sum(s.pasted))}"
    if not np.isnan(occ):
        head += f", mean occ(pasted)={occ:.2f}"
    info = " ".join(f"{k}={v}" for k, v in s.info.items()) if s.info else "info: (not augmented)"
    return f"{head}\n{info}"


def _draw_sample(ax, s: Sample, tag: str) -> None:
    """Draw one sample on ``ax``: image, masks, amodal outlines, occluders, boxes, keypoints, title."""
    import matplotlib

    h, w = s.height, s.width
    cmap = matplotlib.colormaps["tab10"]
    colours = [cmap(i % 10) for i in range(len(s))]
    ax.imshow(s.image)
    overlay = np.zeros((h, w, 4), dtype=np.float32)
    for i, m in enumerate(np.asarray(s.masks, dtype=bool)):
        overlay[m] = (*colours[i][:3], 0.45)
    if len(s.crowd_masks):
        overlay[np.any(s.crowd_masks, axis=0)] = (0.5, 0.5, 0.5, 0.5)
    ax.imshow(overlay)
    occluder = np.any(s.occluder_masks, axis=0) if len(s) else np.zeros((h, w), bool)
    if occluder.any():
        with matplotlib.rc_context({"hatch.color": "black", "hatch.linewidth": 0.6}):
            ax.contourf(occluder.astype(np.float32), levels=[0.5, 1.5], colors=[(0.0, 0.0, 0.0, 0.0)],
                        hatches=["///"])
        _outline(ax, occluder, "black", "dotted", 0.8)
    for i in range(len(s)):
        if not np.array_equal(s.amodal_masks[i], s.masks[i]):
            _outline(ax, np.asarray(s.amodal_masks[i], dtype=bool), colours[i], "dashed", 1.4)
        x0, y0, x1, y1 = (float(v) for v in s.boxes[i])
        pasted = bool(s.pasted[i])
        ax.add_patch(matplotlib.patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colours[i],
                                                  linewidth=2.0 if pasted else 1.0))
        label = f"{i}{' P' if pasted else ''} {float(s.occlusion_rate[i]):.2f}"
        ax.text(x0 + 2, y0 + 2, label, fontsize=6, va="top", color="white",
                bbox=dict(facecolor=colours[i], alpha=0.8, pad=0.5, linewidth=0))
        if s.keypoints is not None:
            kp = np.asarray(s.keypoints[i])
            for v, face in ((2, colours[i]), (1, "none")):
                sel = kp[:, 2] == v
                if sel.any():
                    ax.scatter(kp[sel, 0], kp[sel, 1], s=14, facecolors=face, edgecolors=colours[i] if v == 1
                               else "black", linewidths=1.0 if v == 1 else 0.5, zorder=5)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_axis_off()
    ax.set_title(_title(s, tag), fontsize=7)


def draw_grid(pairs: list[tuple[Sample, Sample]], out_path: str | os.PathLike) -> None:
    """Write a PNG grid to ``out_path``: one row per ``(original, augmented)`` pair, two panels per row."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not pairs:
        raise ValueError("draw_grid: no samples to draw")
    ratios = [max(b.height / b.width, a.height / a.width) for b, a in pairs]
    panel_w, title_h = 5.5, 0.45
    fig = Figure(figsize=(2 * panel_w, sum(panel_w * r + title_h for r in ratios) + 0.3), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(pairs), 2, squeeze=False, gridspec_kw={"height_ratios": ratios})
    for row, (before, after) in enumerate(pairs):
        _draw_sample(axes[row][0], before, "original")
        _draw_sample(axes[row][1], after, "augmented")
    fig.text(0.5, 0.002, "fill: visible mask | dashed: amodal outline | black hatch: occluder | thick box / P: "
             "pasted | number: occlusion rate | dot: v=2, ring: v=1", ha="center", va="bottom", fontsize=7)
    fig.tight_layout(rect=(0, 0.015, 1, 1))
    out_dir = os.path.dirname(os.fspath(out_path))
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    fig.savefig(out_path)


def select_pairs(dataset, num: int, *, seed: int, epoch: int, cfg: OCPConfig) -> list[tuple[int, Sample, Sample]]:
    """Up to ``num`` ``(index, original, augmented)`` triples, preferring indices whose output has pastes.

    Indices are tried in order until ``num`` pasted samples are found; the rest of the rows, if any, are filled with
    unpasted samples in index order.
    """
    from tqdm import tqdm

    with_paste: list[tuple[int, Sample, Sample]] = []
    without: list[tuple[int, Sample, Sample]] = []
    indices = range(len(dataset))
    for i in tqdm(indices, desc="augment", disable=len(dataset) <= 4, leave=False):
        after = augment(dataset, i, epoch=epoch, seed=seed, cfg=cfg)
        triple = (i, dataset.load(i), after)
        (with_paste if np.any(after.pasted) else without).append(triple)
        if len(with_paste) >= num:
            break
    return (with_paste + without[: max(0, num - len(with_paste))])[:num]


def summary_table(triples: Sequence[tuple[int, Sample, Sample]]) -> str:
    """A text table: index, instances before/after, pasted, mean occlusion rate of the pasted instances."""
    lines = [f"{'index':>6} {'N before':>9} {'N after':>8} {'pasted':>7} {'occ(pasted)':>12}"]
    for i, before, after in triples:
        occ = mean_pasted_occlusion(after)
        occ_s = "-" if np.isnan(occ) else f"{occ:.3f}"
        lines.append(f"{i:>6} {len(before):>9} {len(after):>8} {int(np.sum(after.pasted)):>7} {occ_s:>12}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of the preview."""
    p = argparse.ArgumentParser(prog="python -m ocp_dali.preview", description=__doc__.split("\n")[0])
    p.add_argument("--ann", help="COCO annotation json (default: synthetic scenes)")
    p.add_argument("--images", help="image folder of --ann")
    p.add_argument("--out", default="grid.png", help="output PNG path")
    p.add_argument("--num", type=int, default=4, help="rows (samples) in the grid")
    p.add_argument("--seed", type=int, default=0, help="augmentation seed")
    p.add_argument("--epoch", type=int, default=0, help="augmentation epoch")
    p.add_argument("--preset", choices=sorted(PRESETS), default="ocp", help="config preset")
    p.add_argument("--blend-sigma", type=float, default=0.0, help="feathering sigma in pixels (0: hard paste)")
    p.add_argument("--classes", nargs="+", help="category names to keep (COCO only)")
    args = p.parse_args(argv)
    if (args.ann is None) != (args.images is None):
        p.error("--ann and --images go together")
    if args.num < 1:
        p.error("--num must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the preview CLI; returns the exit status."""
    args = parse_args(argv)
    if args.ann:
        from ocp_dali.data.coco import CocoInstances

        dataset = CocoInstances(args.ann, args.images, classes=args.classes)
    else:
        from ocp_dali.data.synthetic import SyntheticScenes

        dataset = SyntheticScenes(8)
    cfg = make_config(args.preset, args.blend_sigma, prob=1.0)
    triples = select_pairs(dataset, args.num, seed=args.seed, epoch=args.epoch, cfg=cfg)
    draw_grid([(b, a) for _, b, a in triples], args.out)
    print(summary_table(triples))
    if getattr(dataset, "skips", None):
        print(f"skipped annotations: {len(dataset.skips)}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
