"""NumPy / CuPy agnosticism for the few helpers both backends share (the GPU never imports more than this)."""
from __future__ import annotations

from types import ModuleType

import numpy as np


def array_module(a) -> ModuleType:
    """``cupy`` for CuPy arrays, ``numpy`` otherwise (CuPy is imported only when a CuPy array is seen)."""
    if type(a).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


def to_numpy(a):
    """A NumPy array of ``a`` (copied from the GPU when it is a CuPy array); None stays None."""
    if a is None:
        return None
    return a.get() if type(a).__module__.startswith("cupy") else np.asarray(a)
