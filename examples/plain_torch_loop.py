"""A plain PyTorch training loop fed by ``OCPLoader``: the template for "other training loops".

A deliberately small model of its own (no mmdet): a tiny FCN predicts, per pixel, foreground (any person) and
the occlusion boundary (visible pixels of occluded people next to an occluder), from the OC&P batch. Run:

    python examples/plain_torch_loop.py                   # synthetic scenes, CPU graph
    python examples/plain_torch_loop.py --ann A.json --images DIR --device gpu
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ocp_dali import CocoInstances, OCPConfig, SyntheticScenes
from ocp_dali.torch import OCPLoader

# the optional outputs this loop uses (``ocp_dali.targets``; visible masks, boxes and labels always come)
TARGETS = ("occluder_masks",)


class TinyFCN(nn.Module):
    """(B, 3, S, S) -> (B, 2, S/4, S/4) logits: person foreground and 'occluded by a paste'."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def targets(batch: dict, size: int) -> torch.Tensor:
    """(B, 2, size, size) float targets from the per-sample mask lists."""
    out = []
    for masks, occluders in zip(batch["masks"], batch["occluder_masks"]):
        fg = masks.any(0) if len(masks) else torch.zeros(masks.shape[-2:], dtype=torch.bool, device=masks.device)
        occ = (occluders & ~masks).any(0) if len(masks) else torch.zeros_like(fg)
        out.append(torch.stack([fg, occ]).float())
    t = torch.stack(out)
    return F.interpolate(t, size=(size, size), mode="nearest")


def make_model(device: str, lr: float = 1e-2) -> tuple[TinyFCN, torch.optim.Optimizer]:
    """The model and its optimiser on the torch device of a loader built with ``device`` ("gpu" or "cpu")."""
    model = TinyFCN().to("cuda" if device == "gpu" else "cpu")
    return model, torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)


def train_step(model: TinyFCN, opt: torch.optim.Optimizer, batch: dict) -> float:
    """One optimiser step on an ``OCPLoader`` batch; the loss."""
    logits = model(batch["images"])
    loss = F.binary_cross_entropy_with_logits(logits, targets(batch, logits.shape[-1]))
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def batches(loader: OCPLoader, iterations: int) -> Iterator[tuple[int, dict]]:
    """``(epoch, batch)`` for ``iterations`` batches, epoch after epoch (``set_epoch`` at each epoch's start)."""
    done, epoch = 0, 0
    while done < iterations:
        loader.set_epoch(epoch)
        for batch in loader:
            yield epoch, batch
            done += 1
            if done >= iterations:
                return
        epoch += 1


def train(loader: OCPLoader, iterations: int, lr: float = 1e-2) -> list[float]:
    model, opt = make_model(loader.device, lr)
    losses: list[float] = []
    for epoch, batch in batches(loader, iterations):
        losses.append(train_step(model, opt, batch))
        print(f"epoch {epoch} iter {len(losses)} loss {losses[-1]:.4f} pasted so far {loader.stats['pasted']}")
    return losses


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ann"), ap.add_argument("--images")
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    ap.add_argument("--iterations", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    ds = (CocoInstances(args.ann, args.images, classes=["person"]) if args.ann else
          SyntheticScenes(32, seed=0))
    # the loop reads visible and occluder masks (``targets``): only those are made
    with OCPLoader(ds, OCPConfig.ocp(), device=args.device, batch_size=args.batch_size, output_size=args.size,
                   py_num_workers=args.workers, targets=TARGETS) as loader:
        losses = train(loader, args.iterations)
    ok = all(math.isfinite(x) for x in losses)
    print(f"{len(losses)} iterations, first loss {losses[0]:.4f}, last {losses[-1]:.4f}, finite: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
