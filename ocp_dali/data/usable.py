"""Which images can be used, and what takes the place of one that cannot: the one policy of every path.

An image is usable when its check passes: for an ``InstanceDataset`` the check is ``dataset.probe`` (the header
read against the annotations, no pixel decoding: missing, unreadable, truncated or wrongly sized files fail it),
for the DALI workers the check also yields the bytes the decoder gets (``decoder_bytes``), for mmdet datasets it
probes the data info's file (``ocp_dali.mmdet``). Every path then applies the same rules:

- a destination that cannot be used gives no sample of its own: the next usable image in dataset order stands in
  for it (``stand_in``), and the skip is recorded by the loader;
- pastes from a basket image that cannot be used are left out of the plan (``without_unusable_sources``), each
  logged and counted.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ocp_dali.errors import DataError
from ocp_dali.plan import PastePlan

log = logging.getLogger(__name__)


def decoder_bytes(dataset: Any, index: int) -> np.ndarray:
    """(N,) uint8 bytes of image ``index`` for DALI's decoder (``imageio.bytes_for_decoder``: the file itself, or a
    PNG re-encoding of unusual formats), after ``dataset.probe`` when the dataset has one. Raises ``DataError``
    naming the file when the image cannot be used."""
    from ocp_dali.data.imageio import bytes_for_decoder

    data = dataset.read_bytes(index)
    probe = getattr(dataset, "probe", None)
    if probe is None:
        return data
    file_path = getattr(dataset, "file_path", None)  # only for messages: no annotation record built for it
    path = str(file_path(index)) if file_path is not None else f"<image {index}>"
    return bytes_for_decoder(data, path, probe(index, data))


def dataset_probe(dataset: Any) -> Callable[[int], Any]:
    """The check of an ``InstanceDataset``: ``dataset.probe`` (raises ``DataError``), or none for datasets without
    files (every image usable)."""
    probe = getattr(dataset, "probe", None)
    return probe if probe is not None else (lambda index: None)


class UsableImages:
    """The usable-image policy over a check of dataset indices (see the module docstring).

    Args:
        check: ``check(index)`` returns what a usable image yields (a header, decoder bytes, ...) or raises
            ``DataError`` naming the file.
        length: the number of images (for the stand-in search).
        name: what to call the dataset in the error raised when no image is usable (its annotation file).
        unusable: indices known to be unusable whatever the check says (e.g. they failed in a decoder), with why.

    Results are kept per index, so each file is checked once for as long as the object lives.
    """

    def __init__(self, check: Callable[[int], Any], length: int, name: str = "dataset",
                 unusable: dict[int, DataError] | None = None) -> None:
        self.check, self.length, self.name = check, int(length), str(name)
        self._results: dict[int, tuple[Any, DataError | None]] = {
            int(i): (None, e) for i, e in (unusable or {}).items()}

    @classmethod
    def of(cls, dataset: Any, unusable: dict[int, DataError] | None = None) -> "UsableImages":
        """The policy of an ``InstanceDataset`` (its ``probe``)."""
        return cls(dataset_probe(dataset), len(dataset), str(getattr(dataset, "ann_file", "dataset")), unusable)

    @classmethod
    def for_decoder(cls, dataset: Any, unusable: dict[int, DataError] | None = None) -> "UsableImages":
        """The policy of the DALI workers: the check yields the bytes for DALI's decoder (``decoder_bytes``)."""
        return cls(functools.partial(decoder_bytes, dataset), len(dataset),
                   str(getattr(dataset, "ann_file", "dataset")), unusable)

    def _result(self, index: int) -> tuple[Any, DataError | None]:
        index = int(index)
        if index not in self._results:
            try:
                self._results[index] = (self.check(index), None)
            except DataError as e:
                self._results[index] = (None, e)
        return self._results[index]

    def get(self, index: int) -> Any:
        """What the check yields for a usable image; None for one that cannot be used."""
        value, err = self._result(index)
        return None if err is not None else value

    def problem(self, index: int) -> DataError | None:
        """Why image ``index`` cannot be used (the ``DataError`` naming its file), or None."""
        return self._result(index)[1]

    def stand_in(self, index: int) -> int:
        """The next usable image after ``index`` in dataset order (wrapping round), which fills the slot of an image
        that cannot be used. Raises ``DataError`` with the first reasons when no image is usable."""
        for k in range(1, self.length):
            j = (int(index) + k) % self.length
            if self.problem(j) is None:
                return j
        reasons = [str(self.problem(j)) for j in range(min(self.length, 3)) if self.problem(j) is not None]
        raise DataError(self.name, "no image of the dataset is usable; the first reasons: " + "; ".join(reasons))

    def first_problem(self, indices: Iterable[int]) -> tuple[int, DataError] | None:
        """The first of ``indices`` that cannot be used, with why; None when all can."""
        for index in indices:
            err = self.problem(int(index))
            if err is not None:
                return int(index), err
        return None

    def without_unusable_sources(self, plan: PastePlan) -> tuple[PastePlan, set[int]]:
        """``plan`` less the pastes from basket images that cannot be used (each logged), and their basket
        positions."""
        bad = set()
        for b in plan.used_sources:
            err = self.problem(plan.basket[b])
            if err is not None:
                log.warning("paste source %s dropped: %s", plan.basket[b], err)
                bad.add(b)
        return plan.without_sources(bad), bad
