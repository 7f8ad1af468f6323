"""MMEngine hooks of the adapter."""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter

from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import IterBasedTrainLoop
from torch.utils.data import DataLoader


@HOOKS.register_module()
class OCPEpochHook(Hook):
    """Tells the training dataset (``OCPMixDataset``) and the DALI loader which epoch is running, so OC&P draws
    from ``(seed, epoch, index)``. With iteration-based training an epoch is ``len(dataloader)`` iterations.

    Accounting (epoch-based training with a torch ``DataLoader``): every index the sampler gave this rank in the
    epoch must come back as one sample (``ocp_index`` metainfo; stand-ins for skipped images aside) or one skip
    record (``ocp_collate``'s ``ocp_skipped``); otherwise the epoch ends with a ``RuntimeError``. Skips are logged
    and appended to ``<work_dir>/ocp_skips_rank{r}.jsonl``. (The DALI loader keeps its own accounts:
    ``OCPLoader.accounts``.)
    """

    priority = "NORMAL"

    def __init__(self) -> None:
        self._seen: list[int] = []
        self._skipped: list[dict] = []

    def _set(self, runner, epoch: int) -> None:
        loader = runner.train_dataloader
        for target in (loader, getattr(loader, "dataset", None)):
            if target is not None and hasattr(target, "set_epoch"):
                target.set_epoch(epoch)

    def before_train_epoch(self, runner) -> None:
        self._set(runner, runner.epoch)
        self._seen, self._skipped = [], []

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not isinstance(data_batch, dict):
            return
        self._seen += [int(d.metainfo["ocp_index"]) for d in data_batch.get("data_samples", [])
                       if "ocp_index" in d.metainfo and "ocp_stand_in_for" not in d.metainfo]
        skipped = data_batch.get("ocp_skipped", [])
        if skipped:
            rank = int(os.environ.get("RANK", 0))
            with open(os.path.join(runner.work_dir, f"ocp_skips_rank{rank}.jsonl"), "a") as f:
                for s in skipped:
                    runner.logger.warning(f"skipped image {s['index']} in epoch {s['epoch']}: {s['reason']}")
                    f.write(json.dumps(s) + "\n")
            self._skipped += skipped

    def after_train_epoch(self, runner) -> None:
        loader = runner.train_dataloader
        # a torch DataLoader's sampler lists the epoch's indices (the DALI loader keeps its own accounts)
        if (not isinstance(loader, DataLoader) or not (self._seen or self._skipped)
                or isinstance(runner.train_loop, IterBasedTrainLoop)):
            return
        sampler = loader.sampler
        got = Counter(self._seen + [int(s["index"]) for s in self._skipped])
        expected = Counter(int(i) for i in sampler)
        if got != expected:
            missing, unexpected = sorted((expected - got).elements()), sorted((got - expected).elements())
            raise RuntimeError(f"epoch {runner.epoch}: dataset indices without a sample or a recorded skip "
                               f"{missing[:10]}, unexpected {unexpected[:10]}")
        runner.logger.info(f"epoch {runner.epoch}: {len(self._seen)} samples, {len(self._skipped)} images skipped")

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if not isinstance(runner.train_loop, IterBasedTrainLoop):
            return
        n = len(runner.train_dataloader)
        if n and runner.iter % n == 0:
            self._set(runner, runner.iter // n)


@HOOKS.register_module()
class ProgressHook(Hook):
    """Progress in the log from the first minute on, whatever the logger's interval (mmdet's runtime logs every 50
    iterations: on a CPU that can be an hour of silence). Logs the start of training, the first batch's arrival
    and the first iteration's end, then an iteration's end whenever ``every_s`` seconds passed since the last
    line. ``trainers/train_mmdet.py`` adds it to every run."""

    priority = "BELOW_NORMAL"

    def __init__(self, every_s: float = 60.0) -> None:
        self.every_s = float(every_s)
        self._start = self._last = 0.0
        self._first = 0

    def before_train(self, runner) -> None:
        self._start = self._last = time.monotonic()
        self._first = runner.iter
        runner.logger.info(f"training starts at iteration {runner.iter + 1} of {runner.max_iters} "
                           f"({len(runner.train_dataloader)} batches an epoch); progress at least every "
                           f"{self.every_s:.0f} s")

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if runner.iter == self._first:
            runner.logger.info(f"first batch ready after {time.monotonic() - self._start:.1f} s")

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        now = time.monotonic()
        if runner.iter != self._first and now - self._last < self.every_s:
            return
        self._last = now
        loss = (outputs or {}).get("loss")
        shown = f", loss {float(loss):.4f}" if loss is not None else ""
        runner.logger.info(f"iteration {runner.iter + 1} of {runner.max_iters} done, {now - self._start:.1f} s "
                           f"since the start{shown}")


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
