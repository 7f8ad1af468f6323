"""Build a C++ translation unit into a shared library with the host compiler, once, cached by a hash of its text.

Used by the kernel emulator (``kernels/emulate.py``) and the compiled CPU loops (``kernels/geometry_cpu.py``):
nothing is built at install time; the first use compiles (a few seconds) and later processes load the cached
library. Libraries are written atomically, so concurrent first uses (DALI threads, loader workers) are safe.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent


def compiler() -> str | None:
    """The host C++ compiler (``$CXX`` or g++), or None when there is none."""
    return shutil.which(os.environ.get("CXX", "g++"))


def cache_dir(env: str, default: str) -> Path:
    """``$env``, or ``~/.cache/ocp_dali/<default>``: where the libraries are kept."""
    return Path(os.environ.get(env, Path.home() / ".cache" / "ocp_dali" / default))


def build_library(stem: str, tu_text: str, key_text: str, flags: list[str], cache: Path) -> Path:
    """The shared library of the C++ source ``tu_text``, compiled with ``flags`` (and ``-I kernels/``) unless
    ``cache/<stem>-<hash>.so`` already exists; the hash covers ``tu_text``, ``key_text`` (the text of what it
    includes) and the command. Raises RuntimeError when there is no compiler or the build fails."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (g++ or $CXX) on PATH")
    key = hashlib.sha256((tu_text + key_text + cxx + " ".join(flags)).encode()).hexdigest()[:16]
    cache.mkdir(parents=True, exist_ok=True)
    lib = cache / f"{stem}-{key}.so"
    if lib.exists():
        return lib
    tu = cache / f"{stem}-{key}.{os.getpid()}.cpp"
    tu.write_text(tu_text)
    tmp = lib.with_suffix(f".{os.getpid()}.tmp")
    cmd = [cxx, *flags, "-shared", "-fPIC", "-I", str(KERNEL_DIR), "-o", str(tmp), str(tu)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:  # the translation unit stays in the cache, to reproduce the failure
        raise RuntimeError(f"build of {stem} failed:\n{' '.join(cmd)}\n{proc.stderr}")
    os.replace(tmp, lib)  # atomic: a concurrent build of the same key writes the same library
    tu.unlink(missing_ok=True)
    return lib
