"""Bounded-time failure of DALI's Python worker pool (the parallel ``external_source`` that runs ``EpochSource``).

What DALI 2.4 does by itself: its pool keeps one ``multiprocessing.Process`` per worker and an observer thread
that waits on their sentinels. When a worker exits (a crash, ``os._exit``, SIGKILL from the OOM killer), the
observer closes the result queue and stops the other workers, and the ``pipe.run()`` waiting for a batch raises
``RuntimeError("Worker data receiving interrupted")`` at once, without saying which worker or which batch. A
worker that hangs inside the callback is never noticed: ``pipe.run()`` blocks for ever.

So ``Deadline`` kills the workers when a run takes longer than the timeout, which turns a hang into a death that
DALI's own observer then handles (the blocked ``pipe.run()`` raises), and ``hung_error`` / ``dead_error`` turn
either case into a ``WorkerError`` that names the process, the epoch, the batch and its dataset indices.
"""
from __future__ import annotations

import multiprocessing
import signal
import threading
import warnings
from collections.abc import Sequence
from types import TracebackType
from typing import Any


class WorkerError(RuntimeError):
    """A worker process of the loader died or hung. ``epoch``, ``batch`` and ``indices`` (dataset indices) say
    which batch the loader was waiting for."""

    def __init__(self, message: str, *, epoch: int, batch: int, indices: Sequence[int]) -> None:
        super().__init__(message)
        self.epoch, self.batch, self.indices = epoch, batch, [int(i) for i in indices]


def worker_processes(pipe: Any) -> list[multiprocessing.Process]:
    """The worker processes of a built DALI pipeline with a parallel ``external_source``.

    DALI has no public accessor: in DALI 2.4 ``Pipeline._py_pool`` is a ``WorkerPool`` whose ``ProcPool``
    (``.pool``) keeps the ``multiprocessing.Process`` objects in ``_processes``. Returns [] (and warns) when a
    DALI version keeps them elsewhere; a hung worker then cannot be stopped.
    """
    procs = getattr(getattr(getattr(pipe, "_py_pool", None), "pool", None), "_processes", None)
    if procs is None:  # warnings, not logging: said once, not at every batch
        warnings.warn("cannot find the DALI worker processes (DALI internals changed?): a hung worker will block "
                      "the loader", RuntimeWarning, stacklevel=2)
        return []
    return list(procs)


class Deadline:
    """A ``with`` block that SIGKILLs ``processes`` unless it ends within ``timeout`` seconds (None: no limit).

    ``expired`` says whether it did. The kill and the end of the block exclude each other (a lock), so a block
    that ends in time never sees its workers killed.
    """

    def __init__(self, processes: Sequence[multiprocessing.Process], timeout: float | None) -> None:
        self.processes, self.timeout = list(processes), timeout
        self.expired = False
        self._lock = threading.Lock()
        self._ended = False
        self._timer: threading.Timer | None = None

    def __enter__(self) -> "Deadline":
        if self.timeout is not None:
            self._timer = threading.Timer(self.timeout, self._expire)
            self._timer.daemon = True  # never keeps the interpreter alive
            self._timer.start()
        return self

    def _expire(self) -> None:
        with self._lock:
            if self._ended:
                return
            self.expired = True
            for p in self.processes:
                if p.exitcode is None:
                    # SIGKILL, not SIGTERM: a worker stuck in native code may not act on SIGTERM
                    p.kill()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._lock:
            self._ended = True
        if self._timer is not None:
            self._timer.cancel()


def _exit_status(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name} ({-code})"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def dead_workers(processes: Sequence[multiprocessing.Process]) -> str | None:
    """'worker pid P exited with code N' for the workers that have exited, or None if all run.

    After the first death DALI stops the other workers with SIGTERM: those are left out when another one died
    otherwise, so that the message names the culprit.
    """
    dead: list[tuple[int | None, int]] = []
    for p in processes:
        code = p.exitcode  # read once: it changes under us while DALI stops the pool
        if code is not None:
            dead.append((p.pid, code))
    if not dead:
        return None
    culprits = [(pid, code) for pid, code in dead if code != -signal.SIGTERM] or dead
    return ", ".join(f"worker pid {pid} {_exit_status(code)}" for pid, code in culprits)


def _where(epoch: int, batch: int, indices: Sequence[int]) -> str:
    return (f"epoch {epoch}, batch {batch}, dataset indices {[int(i) for i in indices]}; the pipeline prefetches, "
            "so a later batch of the epoch may be the one at fault")


def hung_error(timeout: float, *, epoch: int, batch: int, indices: Sequence[int]) -> WorkerError:
    """The ``WorkerError`` of a run that outlived its ``Deadline``."""
    return WorkerError(f"no batch within {timeout:g} s: a DALI worker is hung ({_where(epoch, batch, indices)}); "
                       "the workers were killed. If batches are legitimately this slow, raise the loader's timeout",
                       epoch=epoch, batch=batch, indices=indices)


def dead_error(processes: Sequence[multiprocessing.Process], *, epoch: int, batch: int,
               indices: Sequence[int]) -> WorkerError | None:
    """The ``WorkerError`` of a run that failed because a worker exited; None when all workers run (the run's own
    exception then stands)."""
    dead = dead_workers(processes)
    if dead is None:
        return None
    return WorkerError(f"DALI {dead} ({_where(epoch, batch, indices)})", epoch=epoch, batch=batch, indices=indices)
