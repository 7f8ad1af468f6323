"""MMEngine hooks of the adapter."""
from __future__ import annotations

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
