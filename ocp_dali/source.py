"""The reader of the DALI graph: what each worker process hands over for one batch (``EpochSource``).

For each batch of a shard's epoch a worker reads the encoded files and the annotations (RLE run counts, kilobytes),
draws each sample's plan and geometry from ``(seed, epoch, index)`` (``augment.draw_placed``), and returns bytes
and numbers in the ``wire.WorkerBatch`` layout. Images that cannot be used follow ``ocp_dali.data.usable``: the next
usable image stands in for a bad destination (``SampleKey.stand_in_for``), pastes from a bad source are left out
(``SampleKey.dropped_sources``).
"""
from __future__ import annotations

import functools
import io
from dataclasses import dataclass, replace

import numpy as np

from ocp_dali.config import OCPConfig
from ocp_dali.augment import draw_placed
from ocp_dali.data.base import InstanceDataset
from ocp_dali.data.usable import UsableImages
from ocp_dali.errors import DataError
from ocp_dali.lsj import Geometry
from ocp_dali.placement import PlacedPlan
from ocp_dali.wire import SampleKey, WorkerBatch, pack_annotation, pack_lsj, pack_plan
from ocp_dali.workers import exit_with_parent


@functools.lru_cache(maxsize=1)
def placeholder_png() -> np.ndarray:
    """A 1x1 PNG for unused source slots (a decoder always needs valid bytes); made once per process."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The dataset order of one epoch (a permutation drawn from ``(seed, epoch)`` when shuffling)."""
    if not shuffle:
        return np.arange(n)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(epoch), 2**31]))).permutation(n)


def shard_indices(n: int, seed: int, epoch: int, shuffle: bool, shard_id: int, num_shards: int) -> np.ndarray:
    """This shard's dataset indices for the epoch: contiguous parts of the epoch order, each index in exactly one
    shard (shard sizes differ by at most one)."""
    return np.array_split(epoch_order(n, seed, epoch, shuffle), num_shards)[shard_id]


@dataclass
class EpochSource:
    """The worker pool's callback (picklable: spawned workers get a copy).

    Called with DALI's ``BatchInfo``; returns one batch as ``WorkerBatch(...).pack()``: per sample the
    destination's encoded bytes and packed annotation, ``slots`` source images and annotations (unused slots hold a
    1x1 placeholder and an empty record), the packed plan, LSJ parameters and ``SampleKey``. The last batch of an
    epoch may be short; after it, ``StopIteration`` ends the epoch.

    ``start_iteration``: the first DALI epoch starts at this batch (resuming mid-epoch). ``bad``: dataset indices of
    images that passed the probe but failed in the decoder (the loader fills it and rebuilds); they are treated as
    unusable.
    """

    dataset: InstanceDataset
    cfg: OCPConfig
    seed: int
    batch_size: int
    geometry: Geometry | None = None
    shuffle: bool = True
    shard_id: int = 0
    num_shards: int = 1
    epoch_offset: int = 0
    start_iteration: int = 0
    bad: frozenset[int] = frozenset()

    @property
    def slots(self) -> int:
        return 0 if self.cfg.source == "batch" else self.cfg.basket_size

    def indices(self, epoch: int) -> np.ndarray:
        return shard_indices(len(self.dataset), self.seed, epoch, self.shuffle, self.shard_id, self.num_shards)

    def batch_indices(self, epoch: int, iteration: int) -> np.ndarray:
        idx = self.indices(epoch)
        return idx[iteration * self.batch_size:(iteration + 1) * self.batch_size]

    def iteration(self, info) -> int:
        """The epoch's batch number of DALI's ``BatchInfo`` (the first epoch may resume mid-way)."""
        return int(info.iteration) + (self.start_iteration if int(info.epoch_idx) == 0 else 0)

    def usable(self) -> UsableImages:
        """This batch's usable-image policy (decoder bytes per image, read once per batch)."""
        failed = {i: DataError(f"<image {i}>", "failed in the pipeline's decoder") for i in self.bad}
        return UsableImages.for_decoder(self.dataset, failed)

    def plan(self, epoch: int, batch: list[int], pos: int, usable: UsableImages) -> tuple[PlacedPlan, list[int], int]:
        """The plan and geometry of the sample at ``pos`` of ``batch`` (dataset indices after stand-ins;
        ``augment.draw_placed``), its basket, and how many of its sources were left out as unusable."""
        placed, basket = draw_placed(self.dataset, (self.seed, epoch, batch[pos], 0), self.cfg, self.geometry, batch,
                                     pos)
        plan, bad = usable.without_unusable_sources(placed.plan)
        return replace(placed, plan=plan), basket, len(bad)

    def __call__(self, info) -> tuple[list[np.ndarray], ...]:
        exit_with_parent()  # in a DALI worker: do not outlive a main process that crashed
        epoch = self.epoch_offset + int(info.epoch_idx)
        wanted = [int(i) for i in self.batch_indices(epoch, self.iteration(info))]
        if not wanted:
            raise StopIteration
        usable = self.usable()
        actual = [i if usable.problem(i) is None else usable.stand_in(i) for i in wanted]
        out = WorkerBatch([], [], tuple([] for _ in range(self.slots)), tuple([] for _ in range(self.slots)),
                          [], [], [])
        for pos, (index, src) in enumerate(zip(wanted, actual)):
            placed, basket, dropped = self.plan(epoch, actual, pos, usable)
            plan = placed.plan
            out.dest_images.append(usable.get(src))
            out.dest_anns.append(pack_annotation(self.dataset.annotation(src)))
            used = set(plan.used_sources)
            for s in range(self.slots):
                out.source_images[s].append(usable.get(basket[s]) if s in used else placeholder_png())
                out.source_anns[s].append(pack_annotation(self.dataset.annotation(basket[s])) if s in used
                                          else np.zeros(0, dtype=np.uint8))
            out.plans.append(pack_plan(plan))
            out.lsjs.append(pack_lsj(placed.geometry) if placed.geometry is not None else np.zeros(0))
            out.keys.append(SampleKey(src, epoch, index if src != index else -1, dropped).pack())
        return out.pack()
