"""Bounded-time failure of DALI's Python worker pool (the parallel ``external_source`` that runs ``EpochSource``).

What DALI 2.4 does by itself: its pool keeps one ``multiprocessing.Process`` per worker and an observer thread
that waits on their sentinels. When a worker exits (a crash, ``os._exit``, SIGKILL from the OOM killer), the
observer closes the result queue and stops the other workers, and the ``pipe.run()`` waiting for a batch raises
``RuntimeError("Worker data receiving interrupted")`` at once, without saying which worker or which batch. A
worker that hangs inside the callback is never noticed: ``pipe.run()`` blocks for ever.

So ``Deadline`` kills the workers when a run takes longer than the timeout, which turns a hang into a death that
DALI's own observer then handles (the blocked ``pipe.run()`` raises), and ``hung_error`` / ``dead_error`` turn
either case into a ``WorkerError`` that names the process, the epoch, the batch and its dataset indices.

Start-up: DALI starts its workers with the "spawn" method, and a spawned process first imports the main script
again (as ``__mp_main__``). A script that starts a loader at its top level, outside ``if __name__ == "__main__":``,
makes every worker start a loader of its own while importing it, which fails. On CPython before 3.13.8 the parent
then never returns (gh-118981: it writes the worker's start-up data, larger than a pipe buffer when the dataset is
large, into a pipe whose read end it still holds itself, while the dead worker never reads it).
``check_main_guard`` refuses that case before any worker starts; ``start_workers`` starts the pool with CPython's
fix applied, so that any other worker that dies while starting fails the loader at once (``WorkerStartError``).

The other way round: when the main process dies without its clean-up (a native crash, SIGKILL from the OOM killer),
DALI's workers live on, idle, holding their memory and the stdout/stderr they inherited, so whatever reads that
output to its end (a job runner, a supervising script) waits for ever. ``exit_with_parent``, called in each worker,
ends the worker when its parent is gone.
"""
from __future__ import annotations

import ast
import contextlib
import functools
import inspect
import io
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from multiprocessing import popen_spawn_posix, reduction, spawn, util
from types import TracebackType
from typing import Any

GUARD = 'if __name__ == "__main__":'


class WorkerError(RuntimeError):
    """A worker process of the loader died or hung. ``epoch``, ``batch`` and ``indices`` (dataset indices) say
    which batch the loader was waiting for."""

    def __init__(self, message: str, *, epoch: int, batch: int, indices: Sequence[int]) -> None:
        super().__init__(message)
        self.epoch, self.batch, self.indices = epoch, batch, [int(i) for i in indices]


class WorkerStartError(RuntimeError):
    """The loader's worker processes could not start (or a worker would import a script that starts loaders)."""


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


_watching_parent = False


def exit_with_parent(interval: float = 1.0) -> None:
    """In a process started by ``multiprocessing`` (a DALI worker): end it with ``os._exit(1)`` once its parent has
    died, checked every ``interval`` seconds (its parent pid changes when it is re-parented). Measured before:
    after a segmentation fault of the main process its DALI workers stayed for 19 minutes and more (~120 MB each),
    and a script reading the crashed run's output through a pipe hung on them. Once per process; a no-op in a
    process that ``multiprocessing`` did not start (the main process, whose own parent may well exit first)."""
    global _watching_parent
    parent = multiprocessing.parent_process()
    if parent is None or _watching_parent:
        return
    _watching_parent = True

    def watch() -> None:
        while os.getppid() == parent.pid:
            time.sleep(interval)
        os._exit(1)  # not sys.exit: a worker blocked in DALI's receive loop never returns to check a flag

    threading.Thread(target=watch, name="ocp-exit-with-parent", daemon=True).start()


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


# -- start-up -----------------------------------------------------------------------------------------------------
def _main_reimported() -> bool:
    """Whether spawned processes import this process's main module again (as ``multiprocessing.spawn`` decides:
    by module name unless it is a package's ``__main__``, else by file path; never for ``-c`` or a REPL)."""
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None:
        return not (name == "__main__" or name.endswith(".__main__"))
    return getattr(main, "__file__", None) is not None


@functools.lru_cache(maxsize=8)
def _guarded_lines(path: str) -> tuple[tuple[int, int], ...] | None:
    """The line ranges of the bodies of every ``if __name__ == "__main__":`` in the file; None if unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    ranges = []
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and len(node.test.ops) == 1 \
                and isinstance(node.test.ops[0], ast.Eq):
            sides = {ast.unparse(node.test.left), ast.unparse(node.test.comparators[0])}
            if sides in ({"__name__", "'__main__'"}, {"__name__", '"__main__"'}):
                ranges.append((node.body[0].lineno, node.body[-1].end_lineno or node.body[-1].lineno))
    return tuple(ranges)


def unguarded_main_line() -> tuple[str, int, bool] | None:
    """``(script, line, in_worker)`` when the caller runs at the top level of a main script that spawned workers
    import again, outside ``if __name__ == "__main__":`` (``in_worker``: this process is such a worker, importing
    it now); None otherwise (the call is guarded, or spawned workers do not import the main script)."""
    frame = inspect.currentframe()
    while frame is not None:
        if frame.f_code.co_name == "<module>":
            path, line = frame.f_code.co_filename, frame.f_lineno
            name = frame.f_globals.get("__name__")
            if name == "__mp_main__":
                return path, line, True
            if name == "__main__" and _main_reimported():
                guarded = _guarded_lines(path)
                if guarded is not None and not any(a <= line <= b for a, b in guarded):
                    return path, line, False
        frame = frame.f_back
    return None


def check_main_guard(what: str) -> None:
    """Raise ``WorkerStartError`` naming the script line and the fix when ``what`` (something about to start
    spawned workers) runs unguarded at the top level of the main script (``unguarded_main_line``)."""
    found = unguarded_main_line()
    if found is None:
        return
    path, line, in_worker = found
    if in_worker:
        raise WorkerStartError(
            f"{what}: this process is a spawned worker importing the main script {path}, whose line {line} starts "
            f"workers again. Put the script's top-level code under `{GUARD}`")
    raise WorkerStartError(
        f"{what} at the top level of {path} (line {line}), outside `{GUARD}`: its worker processes are started "
        f"with the 'spawn' method, and each imports the main script again before it runs, so every worker would "
        f"run that line too and fail while starting. Put the script's top-level code under `{GUARD}`")


def spawn_hint() -> str:
    """What a spawned worker does first, when it imports the main script again; '' when it does not."""
    if not _main_reimported():
        return ""
    main = sys.modules["__main__"]
    script = getattr(main, "__file__", None) or getattr(main.__spec__, "name", "")
    return (f" Spawned workers first import the main script {script} again: anything at its top level runs in "
            f"every worker, so keep it under `{GUARD}`.")


def _launch_closing_child_fds(self: Any, process_obj: Any) -> None:
    """``popen_spawn_posix.Popen._launch`` of CPython 3.11 with the fix of gh-118981 (CPython >= 3.13.8): the
    parent closes its copies of the child's pipe ends right after the spawn, so a child that dies before reading
    its start-up data makes the parent's write fail (BrokenPipeError) instead of blocking for ever. Adapted from
    CPython's Lib/multiprocessing/popen_spawn_posix.py (PSF License); it reads the ``Popen``'s own fields."""
    from multiprocessing import resource_tracker
    from multiprocessing.context import set_spawning_popen

    tracker_fd = resource_tracker.getfd()
    self._fds.append(tracker_fd)
    prep_data = spawn.get_preparation_data(process_obj._name)
    fp = io.BytesIO()
    set_spawning_popen(self)
    try:
        reduction.dump(prep_data, fp)
        reduction.dump(process_obj, fp)
    finally:
        set_spawning_popen(None)
    parent_r = child_w = child_r = parent_w = None
    try:
        parent_r, child_w = os.pipe()
        child_r, parent_w = os.pipe()
        cmd = spawn.get_command_line(tracker_fd=tracker_fd, pipe_handle=child_r)
        self._fds.extend([child_r, child_w])
        self.pid = util.spawnv_passfds(spawn.get_executable(), cmd, self._fds)
        for fd in (child_r, child_w):  # the fix: the child has its own copies now
            os.close(fd)
        child_r = child_w = None
        self.sentinel = parent_r
        with open(parent_w, "wb", closefd=False) as f:
            f.write(fp.getbuffer())
    finally:
        self.finalizer = util.Finalize(self, util.close_fds, [fd for fd in (parent_r, parent_w) if fd is not None])
        for fd in (child_r, child_w):
            if fd is not None:
                os.close(fd)


_ORIGINAL_LAUNCH = popen_spawn_posix.Popen._launch
_fix_lock = threading.Lock()
_fix_users = 0


@contextlib.contextmanager
def _spawn_fix() -> Iterator[None]:
    """CPython's fix of gh-118981 in ``multiprocessing``'s spawn launcher while the block runs (on Pythons that
    lack it); the original comes back when the last of overlapping blocks (loaders in several threads) ends."""
    global _fix_users
    if sys.version_info >= (3, 13, 8):
        yield
        return
    with _fix_lock:
        if _fix_users == 0:
            popen_spawn_posix.Popen._launch = _launch_closing_child_fds  # type: ignore[method-assign]
        _fix_users += 1
    try:
        yield
    finally:
        with _fix_lock:
            _fix_users -= 1
            if _fix_users == 0:
                popen_spawn_posix.Popen._launch = _ORIGINAL_LAUNCH  # type: ignore[method-assign]


def start_workers(pipe: Any, what: str) -> None:
    """Start the worker pool of a DALI pipeline (``pipe.start_py_workers()``); a worker that cannot start, or
    dies while starting, raises ``WorkerStartError`` at once, naming the cause."""
    check_main_guard(what)
    with _spawn_fix():
        try:
            pipe.start_py_workers()
        except Exception as e:
            raise WorkerStartError(
                f"{what}: the DALI worker processes could not start ({type(e).__name__}: {e}); a worker that "
                f"exits while starting prints its own error above.{spawn_hint()}") from e
