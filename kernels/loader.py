"""Compiled CUDA modules of ``kernels/*.cu``, one ``cupy.RawModule`` per (device, source file, defines), cached.

NVRTC compiles the source text read from this package's directory, with the directory on the include path (the
``.cu`` files include ``ocp_common.cuh``). ``--fmad=false`` keeps the few floating-point expressions (keep rule,
occlusion rate) evaluated operation by operation, as NumPy does. Nothing here touches the GPU at import time.
The CUDA sources never include system headers, so NVRTC needs no CUDA include path.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent
NVRTC_OPTIONS = ("-std=c++17", "--fmad=false")


def source(cu_name: str) -> str:
    """Text of ``kernels/<cu_name>``."""
    path = KERNEL_DIR / cu_name
    if path.suffix != ".cu" or not path.is_file():
        raise FileNotFoundError(f"no CUDA source {cu_name!r} in {KERNEL_DIR}")
    return path.read_text()


def headers_digest() -> str:
    """Hash of every ``kernels/*.cuh``: part of the compiled text, because CuPy's kernel cache is keyed by the
    source text only and would otherwise reuse a binary built against an older header."""
    h = hashlib.sha256()
    for p in sorted(KERNEL_DIR.glob("*.cuh")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def module(device_id: int, cu_name: str, defines: tuple[tuple[str, str], ...] = ()):
    """The ``cupy.RawModule`` of ``cu_name`` for one device (``defines``: extra ``#define NAME VALUE`` lines)."""
    import cupy

    code = (f"// ocp_dali kernel headers {headers_digest()}\n"
            + "".join(f"#define {k} {v}\n" for k, v in defines) + source(cu_name))
    with cupy.cuda.Device(device_id):
        return cupy.RawModule(code=code, options=NVRTC_OPTIONS + ("-I" + str(KERNEL_DIR),))


def kernel(cu_name: str, name: str, defines: tuple[tuple[str, str], ...] = ()):
    """The ``cupy.RawKernel`` ``name`` of ``cu_name`` on the current device."""
    import cupy

    return module(cupy.cuda.Device().id, cu_name, defines).get_function(name)


class CupyBackend:
    """The array backend of ``kernels/apply.py`` on the GPU: CuPy arrays, kernels from ``kernel()``."""

    name = "cupy"

    def __init__(self) -> None:
        import cupy

        self.xp = cupy

    def asarray(self, a, dtype=None):
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))

    def to_host(self, a):
        return self.xp.asnumpy(a)

    def ptr(self, a) -> int:
        if not a.flags.c_contiguous:
            raise ValueError("kernel arrays must be C-contiguous")
        return int(a.data.ptr)

    def launch(self, cu_name: str, name: str, grid: tuple[int, int], block: int, args: tuple) -> None:
        gx = max(1, min(int(grid[0]), 2**31 - 1))
        gy = max(1, min(int(grid[1]), 65535))  # kernels stride over y beyond the hardware limit
        kernel(cu_name, name)((gx, gy, 1), (block, 1, 1), args)

    def cumsum(self, a):
        return self.xp.cumsum(a, dtype=self.xp.int64)

    def synchronize(self) -> None:
        self.xp.cuda.Device().synchronize()
