"""The backends of the OC&P stage, one object shape, chosen in one place (``get_backend``).

A backend holds an array module and three operations the stage needs:
    ``asarray(a)``                          host or device array -> the backend's array
    ``decode_masks(requests)``              packed RLE run counts -> (N, H, W) bool mask stacks
    ``apply_batch(plans, dsts, sources, targets=None)``
                                            the OC&P apply step of a batch (``[apply_numpy(p, d, s, targets) ...]``;
                                            ``targets``: the optional outputs wanted, ``ocp_dali.targets``; None:
                                            the destinations')

Backends:
    ``numpy``     the NumPy reference (the oracle, and the CPU path)
    ``cupy``      the CUDA kernels through CuPy (needs a CUDA GPU)
    ``emulated``  the same CUDA kernels compiled for the CPU (``kernels/emulate.py``): the GPU path's code, runnable
                  and testable on machines without a GPU
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ocp_dali.data.rle import decode_packed, unpack_counts
from ocp_dali.plan import PastePlan
from ocp_dali.reference import apply_numpy
from ocp_dali.sample import Sample
from ocp_dali.targets import Targets

BACKENDS = ("numpy", "cupy", "emulated")


@dataclass(frozen=True)
class MaskRequest:
    """Masks to decode from one annotation record: ``counts`` packed run counts (``pack_counts``) of an
    ``height x width`` image; ``rows``: only these instances (the others stay empty), None for all."""

    counts: np.ndarray
    height: int
    width: int
    rows: tuple[int, ...] | None = None


class NumpyBackend:
    """The NumPy reference: pycocotools-identical RLE decoding and ``apply_numpy``, per sample."""

    name = "numpy"
    xp = np

    def asarray(self, a: Any) -> np.ndarray:
        return np.asarray(a)

    def decode_masks(self, requests: Sequence[MaskRequest]) -> list[np.ndarray]:
        return [decode_packed(r.counts, r.height, r.width, None if r.rows is None else list(r.rows))
                for r in requests]

    def apply_batch(self, plans: Sequence[PastePlan], dsts: Sequence[Sample],
                    sources: Sequence[Sequence[Sample | None]], targets: Targets | None = None) -> list[Sample]:
        return [apply_numpy(p, d, s, targets) for p, d, s in zip(plans, dsts, sources)]


class KernelBackend:
    """The CUDA kernels of ``kernels/`` over an array backend: CuPy on the GPU (``kernels.loader.CupyBackend``) or
    the CPU emulator (``kernels.emulate.EmulatedBackend``). All masks of a batch are decoded by one launch; the
    apply step is ``apply_cupy_batch`` (one launch per stage)."""

    def __init__(self, arrays: Any) -> None:
        self.arrays = arrays
        self.name = arrays.name
        self.xp = arrays.xp

    def asarray(self, a: Any) -> Any:
        return self.xp.asarray(a)

    def decode_masks(self, requests: Sequence[MaskRequest]) -> list[Any]:
        from ocp_dali.kernels.rle import decode_rles

        xp = self.xp
        rles, where = [], []
        out = []
        for k, r in enumerate(requests):
            parts = unpack_counts(r.counts)
            out.append(xp.zeros((len(parts), r.height, r.width), dtype=bool))
            for row in (range(len(parts)) if r.rows is None else r.rows):
                rles.append(dict(size=[r.height, r.width], counts=parts[row]))
                where.append((k, row))
        for (k, row), mask in zip(where, decode_rles(rles, backend=self.arrays)):
            out[k][row] = mask
        return out

    def apply_batch(self, plans: Sequence[PastePlan], dsts: Sequence[Sample],
                    sources: Sequence[Sequence[Sample | None]], targets: Targets | None = None) -> list[Sample]:
        from ocp_dali.kernels.apply import apply_cupy_batch

        return apply_cupy_batch(plans, dsts, sources, backend=self.arrays, targets=targets)


def cuda_device_count() -> int:
    """How many CUDA GPUs CuPy sees (0 without CuPy, a driver or a device)."""
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # no CuPy, no driver, no device: all mean "no GPU here"
        return 0


def get_backend(name: str | Any = "numpy") -> NumpyBackend | KernelBackend:
    """The stage backend called ``name`` (see the module docstring); a backend object is returned as it is.

    ``cupy`` without a CUDA GPU raises a ``RuntimeError`` that says so and names the CPU options.
    """
    if not isinstance(name, str):
        return name
    if name == "numpy":
        return NumpyBackend()
    if name == "emulated":
        from ocp_dali.kernels.emulate import EmulatedBackend

        return KernelBackend(EmulatedBackend())
    if name == "cupy":
        if cuda_device_count() == 0:
            raise RuntimeError("backend='cupy' needs a CUDA GPU and none was found; use backend='numpy' (the CPU "
                               "path; device='cpu' for the loaders), or backend='emulated' to run the GPU kernels "
                               "on the CPU for testing")
        from ocp_dali.kernels.loader import CupyBackend

        return KernelBackend(CupyBackend())
    raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
