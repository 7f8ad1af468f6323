"""PyTorch face of the pipeline: ``OCPLoader`` (DALI graph -> dict of torch tensors), and ``OCPDataset`` for
torch ``DataLoader`` worker pools."""
from __future__ import annotations

import logging
import math
from collections import Counter
import dataclasses
from dataclasses import dataclass, field
from multiprocessing.context import get_spawning_popen
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from ocp_dali.config import OCPConfig
from ocp_dali.data.base import InstanceDataset
from ocp_dali.errors import DataError
from ocp_dali.lsj import Geometry
from ocp_dali.augment import reference_sample
from ocp_dali.data.usable import UsableImages
from ocp_dali.pipeline import build_pipeline
from ocp_dali.source import shard_indices
from ocp_dali.targets import OPTIONAL, Targets
from ocp_dali.wire import OUTPUT_NAMES, InfoRow
from ocp_dali.workers import (Deadline, WorkerError, WorkerStartError, check_main_guard, dead_error, hung_error,
                              start_workers, worker_processes)

log = logging.getLogger(__name__)

# the counts of wire.InfoRow that add up into OCPLoader.stats (the others are indices and ids)
_COUNTS = ("pasted", "skipped", "dropped", "dropped_by_crop", "skipped_annotations", "dropped_sources")
ON_BAD_IMAGE = ("skip", "raise")


@dataclass(frozen=True)
class ImageSkip:
    """A dataset index that produced no sample in an epoch, and why (the ``DataError`` naming the file)."""

    epoch: int
    index: int
    reason: str


@dataclass
class EpochAccount:
    """What one epoch (from batch ``first_batch`` on) produced: the loader checks at the epoch's end that every
    dataset index of its shard gave exactly one sample or one recorded skip, and raises otherwise."""

    epoch: int
    first_batch: int = 0
    samples: int = 0
    skipped: list[ImageSkip] = field(default_factory=list)


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def require_gpu(who: str) -> None:
    """Raise a ``RuntimeError`` naming the CPU option when ``who`` (something built with ``device="gpu"``) has no
    CUDA GPU to run on: the outputs are CUDA torch tensors, so torch must see one."""
    if torch.cuda.is_available():
        return
    why = ("this torch build has no CUDA support" if torch.version.cuda is None
           else "torch finds no CUDA device (no GPU, no driver, or CUDA_VISIBLE_DEVICES hides it)")
    raise RuntimeError(f"{who}: device=\"gpu\" needs a CUDA GPU, and there is none here: {why} "
                       f"(torch {torch.__version__}). Use device=\"cpu\": the same DALI graph on CPU operators, "
                       "with the NumPy reference for the OC&P step")


def _to_torch_list(tl, device: str) -> list[torch.Tensor]:
    """Per-sample torch tensors (copies: DALI reuses its buffers on the next run)."""
    if device == "cpu":
        return [torch.from_numpy(np.array(tl[i])) for i in range(len(tl))]
    from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

    out = []
    for i in range(len(tl)):
        t = tl[i]
        dst = torch.empty(tuple(t.shape()), dtype=to_torch_type[t.dtype], device=torch.device("cuda"))
        feed_ndarray(t, dst, cuda_stream=torch.cuda.current_stream())
        out.append(dst)
    return out


class OCPLoader:
    """Iterable over augmented batches from the DALI pipeline, one epoch per ``iter()``.

    Geometry (``lsj.Geometry``): True is LSJ onto an ``output_size`` canvas (``lsj=False``: fit into it) in the
    seed's placement (the destination's geometry before the paste, each source its own LSJ draw); pass a
    ``Geometry`` for another kind (``Geometry.resize``: mmdet's multi-scale resize, sizes differ per sample) or
    ``placement="paste_first"``.

    Each batch is a dict: ``images`` (B, 3, S, S) float32 normalised ((B, S, S, 3) uint8 with ``normalize=False``;
    a list of (H, W, 3) uint8 with ``geometry=False``; a list of per-sample tensors when sizes differ); per-sample
    lists ``masks``, ``amodal_masks``, ``occluder_masks`` (N_i, S, S) bool,
    ``boxes`` (N_i, 4) float32, ``labels`` (N_i,) int64, ``occlusion_rate``, ``order`` (N_i, N_i) bool,
    ``keypoints`` (N_i, K, 3) float32, ``pasted``, ``ann_ids``; and ``indices``, ``image_ids``, ``epoch``, and ``info``
    (per sample the ``wire.InfoRow`` fields as a dict: counts of the augmentation and its plan).
    ``targets`` (``ocp_dali.targets.Targets``, a list of names, or None: all): the optional ones (amodal and
    occluder masks, occlusion rate, order, keypoints) to make; the others are neither computed nor in the batch.
    Tensors live on the pipeline's device. ``stats`` accumulates pastes, drops and skipped annotations.

    Sharding: ``shard_id``/``num_shards`` default to the torch.distributed rank and world size; each epoch's
    shards cover every image exactly once. ``set_epoch(e, iteration=i)`` (like ``DistributedSampler``) selects the
    epoch and the batch it starts at; resuming at epoch ``e``, batch ``i`` reproduces the stream from there, with any
    number of workers.

    Bad images (``on_bad_image="skip"``, the default): an image the workers cannot use (missing, bad header,
    truncated, wrong size: ``dataset.probe``) gives no sample of its own; the skip is logged and recorded in ``skips``
    and ``accounts[epoch]``, and the next usable image (in dataset order) fills its slot, so batches keep their size
    and distributed ranks stay in step: ``batch["stand_in_for"][k]`` is the skipped index for such a sample, -1 for
    the others (``batch["indices"]`` says which image each sample is). An image that passes the probe but fails in
    DALI's decoder is found by decoding its batch on the CPU, recorded, and the pipeline is rebuilt from that batch
    without it. Pastes from a source image that cannot be used are left out
    (``stats["dropped_sources"]``). At the end of each epoch the loader checks that every dataset index of its shard
    produced exactly one sample or one recorded skip. ``on_bad_image="raise"`` raises the ``DataError`` instead.

    Worker faults: a worker process that dies makes the loader raise ``WorkerError`` (naming the process, its exit
    code or signal, the epoch, the batch and its dataset indices) at once; one that hangs, after ``timeout``
    seconds (the seconds one pipeline run may take: one batch, the first of an epoch also fills the prefetch
    queue; None waits for ever), when the loader kills the workers. The loader is then closable and starts a new
    pipeline on the next ``iter()``. The workers are spawned processes that import the main script again: a script
    that iterates the loader at its top level without ``if __name__ == "__main__":`` gets a ``WorkerStartError``
    naming the line before any worker starts, and a worker that dies while starting raises ``WorkerStartError`` at
    once. ``device="gpu"`` where torch sees no CUDA GPU raises a ``RuntimeError`` naming ``device="cpu"``.
    """

    def __init__(self, dataset: InstanceDataset, cfg: OCPConfig | None = None, *, device: str = "gpu",
                 batch_size: int = 8, output_size: int | tuple[int, int] = 1024, seed: int = 0,
                 py_num_workers: int = 2, num_threads: int = 2, shard_id: int | None = None,
                 num_shards: int | None = None, lsj: bool = True, geometry: Geometry | bool = True,
                 normalize: bool = True,
                 shuffle: bool = True, epoch: int = 0, timeout: float | None = 600.0,
                 on_bad_image: str = "skip", targets: Targets | Iterable[str] | None = None) -> None:
        if timeout is not None and not timeout > 0:
            raise ValueError(f"OCPLoader: timeout must be a positive number of seconds or None, got {timeout!r}")
        if on_bad_image not in ON_BAD_IMAGE:
            raise ValueError(f"OCPLoader: on_bad_image must be one of {ON_BAD_IMAGE}, got {on_bad_image!r}")
        if device == "gpu":
            require_gpu("OCPLoader")
        rank, world = _dist_rank_world()
        self.timeout = timeout
        self.on_bad_image = on_bad_image
        self.skips: list[ImageSkip] = []
        self.accounts: dict[int, EpochAccount] = {}
        self._bad: dict[int, DataError] = {}  # passed the probe, failed in the decoder
        self._start_iteration = 0
        self.dataset = dataset
        self.cfg = cfg or OCPConfig.ocp()
        self.device = device
        self.targets = Targets.of(targets)
        self.kw = dict(device=device, batch_size=batch_size, output_size=output_size, seed=seed,
                       num_threads=num_threads, py_num_workers=py_num_workers,
                       shard_id=rank if shard_id is None else shard_id,
                       num_shards=world if num_shards is None else num_shards, lsj=lsj, geometry=geometry,
                       normalize=normalize, shuffle=shuffle, targets=self.targets)
        self.stats: Counter[str] = Counter()
        self._pipe = None
        self._epoch = epoch
        self._built_epoch = epoch
        self._completed = 0
        self._partial = False  # an epoch was left before its end: the pipeline must start afresh

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def _build(self, start_iteration: int = 0) -> None:
        """A new pipeline from batch ``start_iteration`` of the current epoch; its workers start at once, and a
        worker that cannot start raises ``WorkerStartError`` (see ``ocp_dali.workers.start_workers``)."""
        self.close()
        self._pipe, self.source = build_pipeline(self.dataset, self.cfg, epoch=self._epoch,
                                                 start_iteration=start_iteration,
                                                 bad=frozenset(self._bad), **self.kw)
        try:
            start_workers(self._pipe, "OCPLoader")
        except WorkerStartError:
            self.close()
            raise
        self._pipe.build()
        self._built_epoch, self._completed, self._partial = self._epoch, 0, False

    def set_epoch(self, epoch: int, iteration: int = 0) -> None:
        """Select the epoch the next ``iter()`` runs and the batch it starts at (resume mid-epoch); rebuilds the
        pipeline unless it is the next epoch from its start anyway."""
        if not 0 <= int(iteration) < max(len(self), 1):
            raise ValueError(f"OCPLoader.set_epoch: iteration {iteration} not in [0, {len(self)})")
        self._epoch, self._start_iteration = int(epoch), int(iteration)

    @property
    def epoch(self) -> int:
        return self._epoch

    def close(self) -> None:
        """Stop the worker processes and free the pipeline."""
        if self._pipe is not None:
            pipe, self._pipe = self._pipe, None
            del pipe

    def __enter__(self) -> "OCPLoader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        kw = self.kw  # shard sizes do not depend on the epoch
        n = len(shard_indices(len(self.dataset), kw["seed"], 0, kw["shuffle"], kw["shard_id"], kw["num_shards"]))
        return math.ceil(n / kw["batch_size"])

    # -- iteration ---------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        first, self._start_iteration = self._start_iteration, 0
        if (self._pipe is None or self._partial or first
                or self._epoch != self._built_epoch + self._completed):
            self._build(first)
        epoch = self._epoch
        self._partial = True
        account = EpochAccount(epoch, first)
        seen: list[int] = []
        it = first
        while it < len(self):
            try:
                outs = self._run(epoch, it)
            except StopIteration:
                raise RuntimeError(f"the pipeline ended epoch {epoch} after {it} of {len(self)} batches") from None
            except Exception as e:
                err = self._after_failure(e, epoch, it)
                if err is None:
                    continue  # rebuilt from batch ``it`` without the image
                raise err from e
            batch = self._batch(outs, account)
            it += 1
            seen += [i for i, s in zip(batch["indices"], batch["stand_in_for"]) if s < 0]
            yield batch
        try:  # the source's StopIteration closes the epoch in DALI
            self._run(epoch, len(self))
            raise RuntimeError(f"the pipeline produced more than {len(self)} batches in epoch {epoch}")
        except StopIteration:
            pass
        self._pipe.reset()
        self._check_account(account, seen)
        self._completed += 1
        self._epoch = epoch + 1
        self._partial = False

    def _check_account(self, account: EpochAccount, seen: list[int]) -> None:
        """Every dataset index of the epoch's shard (from its first batch on) gave one sample or one skip."""
        expected = {int(i) for i in self.source.indices(account.epoch)[account.first_batch * self.kw["batch_size"]:]}
        got = Counter(seen + [s.index for s in account.skipped])
        missing = sorted(expected - set(got))
        twice = sorted(i for i, c in got.items() if c > 1)
        extra = sorted(set(got) - expected)
        if missing or twice or extra:
            raise RuntimeError(f"epoch {account.epoch}: dataset indices without a sample or a recorded skip "
                               f"{missing[:10]}, produced twice {twice[:10]}, not in the shard {extra[:10]}")
        self.accounts[account.epoch] = account
        if account.skipped:
            log.warning("epoch %d: %d samples, %d images skipped (see OCPLoader.skips)", account.epoch,
                        account.samples, len(account.skipped))

    def _run(self, epoch: int, it: int) -> Any:
        """``pipe.run()`` for batch ``it`` of ``epoch``, bounded by ``timeout``: a worker that dies or hangs
        becomes a ``WorkerError`` (see ``ocp_dali.workers`` for what DALI does by itself and why a hang is broken
        by killing the workers)."""
        procs = worker_processes(self._pipe)
        deadline = Deadline(procs, self.timeout)
        try:
            with deadline:
                outs = self._pipe.run()
        except StopIteration:
            raise
        except Exception as e:
            where = dict(epoch=epoch, batch=it, indices=self.source.batch_indices(epoch, it))
            err = hung_error(self.timeout, **where) if deadline.expired else dead_error(procs, **where)
            if err is None:  # not a worker fault: the pipeline's own error stands
                raise
            raise err from e
        if deadline.expired:  # the batch came just as the workers were killed: the pool is gone all the same
            raise hung_error(self.timeout, epoch=epoch, batch=it, indices=self.source.batch_indices(epoch, it))
        return outs

    def _batch(self, outs, account: EpochAccount) -> dict[str, Any]:
        """A dict batch of ``outs``; the images that stand-ins replaced are recorded as skips."""
        cols = {name: _to_torch_list(tl, self.device) for name, tl in zip(OUTPUT_NAMES, outs)}
        info = [InfoRow.unpack(t.cpu().numpy()) for t in cols.pop("info")]
        stand_in_for = [row.stand_in_for for row in info]
        for skipped in stand_in_for:
            if skipped >= 0:
                self._record_skip(account, int(skipped))
        for k in _COUNTS:
            self.stats[k] += sum(getattr(row, k) for row in info)
        self.stats["samples"] += len(info)
        account.samples += sum(1 for s in stand_in_for if s < 0)
        batch: dict[str, Any] = {k: v for k, v in cols.items() if k not in OPTIONAL or k in self.targets.names}
        images = batch.pop("image")
        same_size = len({tuple(t.shape) for t in images}) == 1
        batch["images"] = torch.stack(images) if self.kw["geometry"] and same_size else images
        batch["indices"] = [row.index for row in info]
        batch["stand_in_for"] = stand_in_for
        batch["epoch"] = info[0].epoch
        batch["image_ids"] = [row.image_id for row in info]
        batch["info"] = [dataclasses.asdict(row) for row in info]
        return batch

    def _record_skip(self, account: EpochAccount, index: int) -> None:
        err = self._bad.get(index) or UsableImages.for_decoder(self.dataset).problem(index)
        reason = str(err) if err is not None else f"image {index} was unusable in a worker but reads now"
        if self.on_bad_image == "raise":
            raise err if err is not None else DataError(f"<image {index}>", reason)
        skip = ImageSkip(account.epoch, index, reason)
        self.skips.append(skip)
        account.skipped.append(skip)
        self.stats["skipped_images"] += 1
        log.warning("skipped image %d in epoch %d: %s", index, account.epoch, reason)

    def _undecodable(self, epoch: int, it: int) -> tuple[int, DataError] | None:
        """The first image of batches ``it``.. (the pipeline prefetches) that does not decode on the CPU."""
        read = getattr(self.dataset, "read_image", None)
        if read is None:
            return None
        decodes = UsableImages(read, len(self.dataset), str(getattr(self.dataset, "ann_file", "dataset")))
        return decodes.first_problem(i for k in range(it, it + 3) for i in self.source.batch_indices(epoch, k))

    def _after_failure(self, e: Exception, epoch: int, it: int) -> Exception | None:
        """After a pipeline failure: the error to raise, naming the file where an image of the batch does not
        decode on the CPU; or None when that image was recorded and the pipeline rebuilt from batch ``it`` without
        it (``on_bad_image="skip"``)."""
        if isinstance(e, (DataError, WorkerError)) or "DataError" in str(e):
            return e
        found = self._undecodable(epoch, it)
        if found is None:
            return RuntimeError(f"pipeline failed in epoch {epoch}, batch {it}: {e}")
        index, err = found
        if self.on_bad_image != "skip" or index in self._bad:
            return err
        log.warning("image %d failed in the pipeline's decoder (%s); rebuilding from epoch %d, batch %d without it",
                    index, err, epoch, it)
        self._bad[index] = err
        self._build(it)
        self._partial = True
        return None


class OCPDataset(torch.utils.data.Dataset):
    """Map-style dataset for a torch ``DataLoader`` worker pool: the CPU path without DALI.

    ``ds[i]`` is the reference sample (OC&P, then LSJ unless ``geometry=False``) for ``(seed, epoch, i)`` as a dict
    of tensors; call ``set_epoch`` in every epoch (the value reaches workers when ``persistent_workers=False``).
    Use it with ``collate_fn=list`` (variable instance counts). ``targets``: as ``OCPLoader``'s (the unrequested
    ones are neither computed nor in the dict).

    An image that cannot be used gives ``{"index", "epoch", "skipped": reason}`` instead (logged; drop these in the
    loop) with ``on_bad_image="skip"``, the default; ``"raise"`` raises its ``DataError``.
    """

    def __init__(self, dataset: InstanceDataset, cfg: OCPConfig | None = None, *, seed: int = 0,
                 output_size: int | tuple[int, int] = 1024, lsj: bool = True, geometry: Geometry | bool = True,
                 on_bad_image: str = "skip", targets: Targets | Iterable[str] | None = None) -> None:
        if on_bad_image not in ON_BAD_IMAGE:
            raise ValueError(f"OCPDataset: on_bad_image must be one of {ON_BAD_IMAGE}, got {on_bad_image!r}")
        self.targets = Targets.of(targets)
        self.dataset, self.cfg, self.seed = dataset, cfg or OCPConfig.ocp(), seed
        self.output_size, self.lsj, self.geometry, self.epoch = output_size, lsj, geometry, 0
        self.on_bad_image = on_bad_image

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getstate__(self) -> dict[str, Any]:
        """The dataset's state; when a DataLoader pickles it for a worker it spawns ("spawn" or "forkserver"),
        first a check that the main script does not start that DataLoader at its top level unguarded (each worker
        imports the main script again: ``ocp_dali.workers.check_main_guard``)."""
        if get_spawning_popen() is not None:
            check_main_guard("a DataLoader over OCPDataset starts spawned workers")
        return self.__dict__

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            s = reference_sample(self.dataset, index, epoch=self.epoch, seed=self.seed, cfg=self.cfg,
                                 output_size=self.output_size, lsj=self.lsj, geometry=self.geometry,
                                 targets=self.targets)
        except DataError as e:
            if self.on_bad_image == "raise":
                raise
            log.warning("skipped image %d in epoch %d: %s", index, self.epoch, e)
            return dict(index=index, epoch=self.epoch, skipped=str(e))
        out = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in s.arrays().items()
               if v is not None and (k not in OPTIONAL or k in s.targets.names)}
        out.update(index=index, epoch=self.epoch, image_id=s.image_id, info=dict(s.info))
        return out
