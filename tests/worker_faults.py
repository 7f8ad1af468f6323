"""Fault injection for the worker-pool tests: worker processes that die or hang on one dataset index.

- ``FaultyScenes``: a dataset for ``OCPLoader`` (DALI's worker pool);
- ``DieAtIndex`` / ``HangAtIndex``: mmdet pipeline transforms for torch ``DataLoader`` workers (the mmdet CPU
  path; ``register_mmdet_transforms()`` puts them in mmdet's TRANSFORMS registry);
- ``dali_scenario`` / ``mmdet_scenario``: run a faulty loader until it raises, for tests to call in a subprocess
  (a hung pipeline may not be stoppable in-process);
- ``main_dies_scenario``: the main process dies (SIGKILL) while its DALI workers run.

Importable by module name (``worker_faults``): DALI's spawned workers unpickle the dataset by reference to its
class, and ``multiprocessing``'s spawn start method hands the parent's ``sys.path`` to the child, so the folder
that holds this file only has to be on the parent's path. Nothing here imports mmdet at module level: every DALI
worker imports this module, and mmdet would add seconds to each.
"""
from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import time
from typing import Any

import numpy as np

from ocp_dali.data.synthetic import SyntheticScenes

FAULTS = ("die", "kill", "hang", "raise")
EXIT_CODE = 3


def inject(fault: str) -> None:
    """Do the fault: ``die`` exits the process at once (no cleanup, like a crash), ``kill`` SIGKILLs it (as the
    OOM killer would), ``hang`` never returns, ``raise`` raises a RuntimeError."""
    if fault == "die":
        os._exit(EXIT_CODE)
    if fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fault == "hang":
        time.sleep(10**6)
    if fault == "raise":
        raise RuntimeError("injected fault")
    raise ValueError(f"unknown fault {fault!r}; one of {FAULTS}")


class FaultyScenes(SyntheticScenes):
    """``SyntheticScenes`` whose ``read_bytes(bad_index)`` injects ``fault`` in any process but the one that made
    the dataset (so only in worker processes: the test process itself can still read every image)."""

    def __init__(self, *args, bad_index: int, fault: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {FAULTS}")
        self.bad_index, self.fault = int(bad_index), fault
        self.owner_pid = os.getpid()  # pickled along: a worker compares it with its own pid

    def read_bytes(self, index: int) -> np.ndarray:
        if index == self.bad_index and os.getpid() != self.owner_pid:
            inject(self.fault)
        return super().read_bytes(index)


class _FaultAtIndex:
    """An mmdet pipeline transform (any callable on the results dict will do: no mmcv base class, see the module
    docstring) that injects ``fault`` on the sample of dataset index ``index``, only in DataLoader workers."""

    fault = ""

    def __init__(self, index: int) -> None:
        self.index = int(index)

    def __call__(self, results: dict) -> dict:
        import torch.utils.data

        if results.get("sample_idx") == self.index and torch.utils.data.get_worker_info() is not None:
            inject(self.fault)
        return results


class DieAtIndex(_FaultAtIndex):
    fault = "die"


class HangAtIndex(_FaultAtIndex):
    fault = "hang"


def register_mmdet_transforms() -> None:
    """Put ``DieAtIndex`` and ``HangAtIndex`` in mmdet's TRANSFORMS registry (config ``type`` names)."""
    from mmdet.registry import TRANSFORMS

    for cls in (DieAtIndex, HangAtIndex):
        if TRANSFORMS.get(cls.__name__) is None:
            TRANSFORMS.register_module(module=cls)


def _outcome(error: BaseException | None, started: float) -> dict[str, Any]:
    return dict(type=None if error is None else type(error).__name__, message="" if error is None else str(error),
                attrs={k: getattr(error, k) for k in ("epoch", "batch", "indices") if hasattr(error, k)},
                seconds=time.monotonic() - started)


def dali_scenario(fault: str, timeout: float | None, bad_index: int = 1) -> dict[str, Any]:
    """Iterate a DALI CPU-graph ``OCPLoader`` over ``FaultyScenes`` (8 scenes in order, batches of 2, 2 workers)
    until it raises. Returns the exception's type, message and attributes, the seconds it took to come, and then,
    with the fault gone, how many batches a second epoch of the same loader gives (``recovered``) and how many
    worker processes are left once the loader is closed and collected (``alive``)."""
    from ocp_dali import OCPConfig
    from ocp_dali.torch import OCPLoader

    ds = FaultyScenes(8, image_size=(128, 128), bad_index=bad_index, fault=fault)
    loader = OCPLoader(ds, OCPConfig.ocp(), device="cpu", batch_size=2, output_size=128, py_num_workers=2,
                       num_threads=1, shuffle=False, timeout=timeout)
    started, error = time.monotonic(), None
    try:
        for _ in loader:
            pass
    except Exception as e:  # the scenario reports whatever came
        error = e
    out = _outcome(error, started)
    del error
    ds.bad_index = -1  # the next iter() builds a new pipeline, which pickles the dataset afresh
    out["recovered"] = sum(1 for _ in loader)
    loader.close()
    del loader
    gc.collect()
    out["alive"] = len(multiprocessing.active_children())
    return out


def mmdet_scenario(config: str, fault: str, timeout: float, bad_index: int = 0) -> dict[str, Any]:
    """Iterate the torch DataLoader MMEngine builds from ``config``'s ``train_dataloader`` (2 workers, the given
    ``timeout``, images in order) with ``DieAtIndex`` / ``HangAtIndex`` first in the pipeline, until it raises."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    from mmengine.utils import import_modules_from_strings

    cfg = Config.fromfile(config)
    import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.get("default_scope", "mmdet"))
    register_mmdet_transforms()
    kind = {"die": "DieAtIndex", "hang": "HangAtIndex"}[fault]
    dl = cfg.train_dataloader
    dl.update(num_workers=2, persistent_workers=False, timeout=timeout)
    dl.sampler.shuffle = False
    dl.dataset.pipeline = [dict(type=kind, index=bad_index), *dl.dataset.pipeline]
    loader = Runner.build_dataloader(dl, seed=0)
    started, error = time.monotonic(), None
    try:
        for n, _ in enumerate(loader):
            if n >= 20:  # the faulty index comes within the first batches: no error by now is a failure
                break
    except Exception as e:  # the scenario reports whatever came
        error = e
    out = _outcome(error, started)
    del loader, error
    gc.collect()
    return out


def main_dies_scenario() -> None:
    """Start a DALI CPU-graph ``OCPLoader`` (2 workers), take one batch, print ``WORKERS <pids>`` and SIGKILL this
    (the main) process, as the OOM killer would: no clean-up runs, so only the workers themselves can end."""
    from ocp_dali import OCPConfig
    from ocp_dali.torch import OCPLoader

    loader = OCPLoader(SyntheticScenes(8, image_size=(128, 128)), OCPConfig.ocp(), device="cpu", batch_size=2,
                       output_size=128, py_num_workers=2, num_threads=1, shuffle=False)
    next(iter(loader))
    print("WORKERS", *[p.pid for p in multiprocessing.active_children()], flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
