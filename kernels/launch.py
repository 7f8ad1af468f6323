"""What every kernel driver (``apply.py``, ``lsj.py``, ``rle.py``) launches with: the block size, the x grid of a
per-pixel kernel, and the descriptor tables (one int64 struct per row) the kernels read their work from."""
from __future__ import annotations

import numpy as np

BLOCK = 256  # threads per block (kernels need a power of two <= OCP_BLOCK)
ITEMS_PER_THREAD = 16  # pixels per thread that size the x grid of the per-pixel kernels


def grid_x(items: int, per_thread: int = ITEMS_PER_THREAD, cap: int = 4096) -> int:
    """Blocks along x for ``items`` work items, ``per_thread`` each, at most ``cap`` (kernels grid-stride the rest)."""
    return int(min(max(1, -(-int(items) // (BLOCK * per_thread))), cap))


def struct_table(rows: list[dict], fields: tuple[str, ...]) -> np.ndarray:
    """(max(len(rows), 1), len(fields)) int64: one struct per row, in ``fields`` order (missing fields are 0; an
    empty table is one zero row, so a device pointer always exists)."""
    known = set(fields)
    for row in rows:
        if not known.issuperset(row):
            raise KeyError(f"unknown struct fields {sorted(set(row) - known)}")
    if not rows:
        return np.zeros((1, len(fields)), dtype=np.int64)
    return np.array([[int(row.get(f, 0)) for f in fields] for row in rows], dtype=np.int64)
