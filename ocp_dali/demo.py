"""The project's main path on the embedded data: ``python -m ocp_dali.demo [--steps 16] [--out out/demo]``.

``SyntheticScenes`` -> the DALI graph through ``OCPLoader`` (GPU operators and the CuPy kernels where torch sees a
CUDA GPU, DALI's CPU operators and the NumPy reference otherwise) -> a few steps of the plain PyTorch training loop
of ``examples/plain_torch_loop.py``. Prints a summary table and writes ``<out>/summary.json`` and
``<out>/preview.png`` (the first samples of the loader's own batches that got pastes, each next to its original,
drawn with ``ocp_dali.preview.draw_grid``). Needs a source checkout (the loop is imported from ``examples/``).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np

from ocp_dali.data.synthetic import SyntheticScenes
from ocp_dali.pipeline import IMAGENET_MEAN, IMAGENET_STD
from ocp_dali.preview import PRESETS, draw_grid, make_config
from ocp_dali.sample import Sample

# torch and ocp_dali.torch are imported inside the functions: DALI's spawned workers import this module again
# (it is the main module), and torch would add seconds to each worker's start.

PREVIEW_ROWS = 3
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plain_torch_loop.py"


def example_loop() -> ModuleType:
    """``examples/plain_torch_loop.py`` as a module (``examples/`` is a folder of scripts, not a package)."""
    if not EXAMPLE.is_file():
        raise FileNotFoundError(f"{EXAMPLE}: the demo trains with the example loop of a source checkout")
    spec = importlib.util.spec_from_file_location("plain_torch_loop", EXAMPLE)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def batch_sample(batch: dict, k: int) -> Sample:
    """Sample ``k`` of an ``OCPLoader`` batch (normalised CHW images) as a ``Sample`` on the CPU, for drawing."""
    import torch

    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    image = (batch["images"][k].cpu() * std + mean).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
    cols = {name: batch[name][k].cpu().numpy() for name in ("masks", "amodal_masks", "boxes", "labels",
                                                            "occlusion_rate", "occluder_masks", "order",
                                                            "keypoints", "pasted", "ann_ids")}
    h, w = image.shape[:2]
    return Sample(image=image.numpy(), crowd_masks=np.zeros((0, h, w), dtype=bool),
                  image_id=int(batch["image_ids"][k]), file_name=f"image {batch['indices'][k]} after LSJ",
                  info={"pasted": int(cols["pasted"].sum())}, **cols)


def batch_figures(batch: dict) -> dict[str, list[float]]:
    """Occlusion rates of the batch's pasted and existing instances."""
    out: dict[str, list[float]] = {"occ_pasted": [], "occ_existing": []}
    for rates, pasted in zip(batch["occlusion_rate"], batch["pasted"]):
        rates, pasted = rates.cpu().numpy(), pasted.cpu().numpy().astype(bool)
        out["occ_pasted"] += rates[pasted].tolist()
        out["occ_existing"] += rates[~pasted].tolist()
    return out


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


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
    p.add_argument("--num-images", type=int, default=32, help="synthetic dataset size")
    p.add_argument("--steps", type=int, default=16, help="training steps (two epochs of the default data)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--size", type=int, default=256, help="output size of the large-scale jitter")
    p.add_argument("--workers", type=int, default=2, help="DALI worker processes")
    p.add_argument("--preset", choices=sorted(PRESETS), default="ocp", help="config preset")
    p.add_argument("--seed", type=int, default=0, help="augmentation seed")
    p.add_argument("--out", default=os.path.join("out", "demo"), help="output folder")
    args = p.parse_args(argv)
    if min(args.num_images, args.steps, args.batch_size, args.workers) < 1:
        p.error("--num-images, --steps, --batch-size and --workers must be >= 1")
    return args


def train_on_loader(args: argparse.Namespace, device: str) -> tuple[dict, list[tuple[Sample, Sample]]]:
    """Run ``args.steps`` training steps on the loader; the summary and the preview pairs."""
    from tqdm import tqdm

    from ocp_dali.torch import OCPLoader

    loop = example_loop()
    dataset = SyntheticScenes(args.num_images, seed=args.seed)
    model, opt = loop.make_model(device)
    losses: list[float] = []
    occ: dict[str, list[float]] = {"occ_pasted": [], "occ_existing": []}
    preview: list[tuple[Sample, Sample]] = []
    images = 0
    with OCPLoader(dataset, make_config(args.preset), device=device, batch_size=args.batch_size,
                   output_size=args.size, seed=args.seed, py_num_workers=args.workers, num_threads=2) as loader:
        started = time.perf_counter()
        progress = tqdm(loop.batches(loader, args.steps), total=args.steps, desc=f"OC&P {args.preset} on {device}",
                        unit="step")
        for _, batch in progress:
            losses.append(loop.train_step(model, opt, batch))
            images += len(batch["indices"])
            for key, values in batch_figures(batch).items():
                occ[key] += values
            for k, index in enumerate(batch["indices"]):
                if len(preview) < PREVIEW_ROWS and bool(batch["pasted"][k].any()):
                    preview.append((dataset.load(index), batch_sample(batch, k)))
            progress.set_postfix(loss=f"{losses[-1]:.3f}", pasted=loader.stats["pasted"])
        seconds = time.perf_counter() - started
        stats = dict(loader.stats)
    summary = {
        "device": device, "preset": args.preset, "steps": len(losses), "images": images,
        "img_per_s": images / seconds, "pasted": stats.get("pasted", 0), "dropped": stats.get("dropped", 0),
        "dropped_by_crop": stats.get("dropped_by_crop", 0), "skipped_images": stats.get("skipped_images", 0),
        "mean_occlusion_pasted": _mean(occ["occ_pasted"]), "mean_occlusion_existing": _mean(occ["occ_existing"]),
        "first_loss": losses[0], "last_loss": losses[-1],
    }
    return summary, preview


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns 0."""
    import torch

    args = parse_args(argv)
    device = "gpu" if torch.cuda.is_available() else "cpu"
    summary, preview = train_on_loader(args, device)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(format_summary(summary))
    written = [os.path.join(args.out, "summary.json")]
    if preview:
        draw_grid(preview, os.path.join(args.out, "preview.png"))
        written.append(os.path.join(args.out, "preview.png"))
    print("wrote " + " and ".join(written) + ("" if preview else " (no sample got pastes: no preview)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
