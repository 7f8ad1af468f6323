"""Run the CUDA kernels on the CPU: each ``kernels/*.cu`` compiled with g++ against ``emulate.h``.

Why: the GPU backend must match the NumPy reference bit for bit, and most machines (CI included) have no GPU.
The emulator executes the very same kernel source (integer logic, index arithmetic, grid-stride loops, block
reductions and barriers), so ``apply_cupy``'s packing code and every kernel can be checked against the reference
anywhere. It does not replace the GPU run: real concurrency, the memory model and NVRTC itself are only exercised
there (``make test-gpu``).

Use: ``EmulatedBackend()`` is a drop-in for the CuPy backend of ``ocp_dali.kernels.apply`` (NumPy arrays, host
pointers). Compiled libraries are cached under ``$OCP_EMU_CACHE`` (default ``~/.cache/ocp_dali/emu``), keyed by a
hash of the sources. ``$OCP_EMU_CXXFLAGS`` adds compiler flags, e.g. ``-fsanitize=address`` to catch out-of-bounds
accesses of the kernels (run Python with ``LD_PRELOAD=$(g++ -print-file-name=libasan.so)``).
"""
from __future__ import annotations

import ctypes
import functools
import os
import re
from pathlib import Path

import numpy as np

from ocp_dali.kernels import hostbuild

KERNEL_DIR = Path(__file__).resolve().parent
SHIM = KERNEL_DIR / "emulate.h"

_SIG = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(ocp_\w+)\s*\(([^)]*)\)', re.S)


def kernel_signatures(source: str) -> dict[str, list[tuple[str, str]]]:
    """``{kernel name: [(C type, parameter name), ...]}`` of every ``extern "C" __global__`` kernel in ``source``."""
    out = {}
    for name, params in _SIG.findall(source):
        plist = []
        for p in params.split(","):
            p = " ".join(p.replace("__restrict__", "").split())
            m = re.match(r"(.*?)(\w+)$", p)
            if not m:
                raise ValueError(f"cannot parse parameter {p!r} of {name}")
            plist.append((m.group(1).strip(), m.group(2)))
        out[name] = plist
    return out


def _ctype(ctype: str):
    if "*" in ctype:
        return ctypes.c_void_p
    base = ctype.replace("const", "").strip()
    table = {"long long": ctypes.c_int64, "unsigned long long": ctypes.c_uint64, "int": ctypes.c_int,
             "unsigned int": ctypes.c_uint, "double": ctypes.c_double, "float": ctypes.c_float}
    if base not in table:
        raise ValueError(f"no ctypes mapping for kernel parameter type {ctype!r}")
    return table[base]


def _wrappers(sigs: dict[str, list[tuple[str, str]]]) -> str:
    parts = []
    for name, params in sigs.items():
        decl = ", ".join(f"{t} {n}" for t, n in params)
        call = ", ".join(n for _, n in params)
        parts.append(
            f'extern "C" int emu_{name}(unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,\n'
            f"    {decl}) {{\n"
            f"  std::function<void()> fn = [=]() {{ {name}({call}); }};\n"
            f"  return ocp_emu::launch(dim3(gx, gy, gz), dim3(bx, 1, 1), fn);\n}}\n"
        )
    return "\n".join(parts)


def compiler() -> str | None:
    """The host C++ compiler used for emulation (``$CXX`` or g++), or None when there is none."""
    return hostbuild.compiler()


@functools.lru_cache(maxsize=None)
def _library(cu_name: str) -> tuple[ctypes.CDLL, dict]:
    if compiler() is None:
        raise RuntimeError("kernel emulation needs a C++20 compiler (g++ or $CXX) on PATH")
    source = (KERNEL_DIR / cu_name).read_text()
    sigs = kernel_signatures(source)
    deps = "".join(p.read_text() for p in sorted(KERNEL_DIR.glob("*.cuh"))) + SHIM.read_text()
    extra = os.environ.get("OCP_EMU_CXXFLAGS", "").split()  # e.g. -fsanitize=address (with libasan preloaded)
    tu = f'#include "emulate.h"\n#include "{cu_name}"\n\n#include <functional>\n{_wrappers(sigs)}'
    flags = ["-std=c++20", "-O2", "-g", "-ffp-contract=off", "-fno-strict-aliasing", "-Wall",
             "-Wno-unused-function", *extra]
    try:
        lib = hostbuild.build_library(Path(cu_name).stem, tu, source + deps, flags,
                                      hostbuild.cache_dir("OCP_EMU_CACHE", "emu"))
    except RuntimeError as e:
        raise RuntimeError(f"emulator build of {cu_name} failed: {e}") from None
    dll = ctypes.CDLL(str(lib))
    funcs = {}
    for name, params in sigs.items():
        f = getattr(dll, f"emu_{name}")
        f.argtypes = [ctypes.c_uint] * 4 + [_ctype(t) for t, _ in params]
        f.restype = ctypes.c_int
        funcs[name] = (f, params)
    return dll, funcs


class EmulatedBackend:
    """The array backend of ``kernels/apply.py`` on the CPU: NumPy arrays, kernels run by the emulator.

    Args:
        block: threads per block (a power of two <= 256).
        max_grid: cap on each grid dimension; kernels stride over the rest, so small grids exercise the
            grid-stride loops (the GPU launches use large ones).
    """

    name = "emulated"
    xp = np

    def __init__(self, block: int = 32, max_grid: tuple[int, int] = (3, 2)):
        if block & (block - 1) or not 0 < block <= 256:
            raise ValueError("block must be a power of two <= 256")
        self.block = block
        self.max_grid = max_grid
        self.launches: list[str] = []

    def asarray(self, a, dtype=None) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=dtype)

    def to_host(self, a) -> np.ndarray:
        return np.asarray(a)

    def ptr(self, a: np.ndarray) -> int:
        if not a.flags.c_contiguous:
            raise ValueError("kernel arrays must be C-contiguous")
        return int(a.ctypes.data)

    def launch(self, cu_name: str, name: str, grid: tuple[int, int], block: int, args: tuple) -> None:
        _, funcs = _library(cu_name)
        if name not in funcs:
            raise KeyError(f"{name} is not a kernel of {cu_name}")
        f, params = funcs[name]
        if len(args) != len(params):
            raise TypeError(f"{name} takes {len(params)} arguments, got {len(args)}")
        conv = []
        for a, (ctype, pname) in zip(args, params):
            if isinstance(a, np.ndarray):
                if "*" not in ctype:
                    raise TypeError(f"{name}: array passed for scalar parameter {pname}")
                conv.append(self.ptr(a))
            else:
                if "*" in ctype:
                    raise TypeError(f"{name}: scalar passed for pointer parameter {pname}")
                conv.append(a.item() if hasattr(a, "item") else a)
        gx = max(1, min(int(grid[0]), self.max_grid[0]))
        gy = max(1, min(int(grid[1]), self.max_grid[1]))
        rc = f(gx, gy, 1, self.block, *conv)
        self.launches.append(name)
        if rc != 0:
            raise RuntimeError(f"emulated launch of {name} failed (divergent __syncthreads)")

    def cumsum(self, a: np.ndarray) -> np.ndarray:
        return np.cumsum(a, dtype=np.int64)

    def synchronize(self) -> None:
        pass
