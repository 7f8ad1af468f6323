"""MMEngine hooks of the adapter."""
from __future__ import annotations

import hashlib
import json
import os

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class OCPEpochHook(Hook):
    """Tells the training dataset (``OCPMixDataset``) and the DALI loader which epoch is running, so OC&P draws
    from ``(seed, epoch, index)``. With iteration-based training an epoch is ``len(dataloader)`` iterations."""

    priority = "NORMAL"

    def _set(self, runner, epoch: int) -> None:
        loader = runner.train_dataloader
        for target in (loader, getattr(loader, "dataset", None)):
            if target is not None and hasattr(target, "set_epoch"):
                target.set_epoch(epoch)

    def before_train_epoch(self, runner) -> None:
        self._set(runner, runner.epoch)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if not runner.train_loop.__class__.__name__.startswith("IterBased"):
            return
        n = len(runner.train_dataloader)
        if n and runner.iter % n == 0:
            self._set(runner, runner.iter // n)


@HOOKS.register_module()
class DataFingerprintHook(Hook):
    """Appends, per training iteration, a hash of the batch (images and gt masks) to ``<work_dir>/data_stream.jsonl``:
    the evidence that a resumed or re-run training sees the same augmentation stream."""

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if data_batch is None:
            return
        h = hashlib.sha256()
        for img, ds in zip(data_batch["inputs"], data_batch["data_samples"]):
            h.update(img.detach().cpu().numpy().tobytes())
            h.update(ds.gt_instances.masks.to_ndarray().astype("uint8").tobytes())
        rank = int(os.environ.get("RANK", 0))
        with open(os.path.join(runner.work_dir, f"data_stream_rank{rank}.jsonl"), "a") as f:
            f.write(json.dumps(dict(iter=runner.iter, epoch=runner.epoch, rank=rank, sha256=h.hexdigest(),
                                    img_ids=[int(d.metainfo.get("img_id", -1)) for d in data_batch["data_samples"]]))
                    + "\n")
