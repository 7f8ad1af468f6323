"""Whether the compiled CPU loops run: ``cpu_loops()``, the one accessor of ``kernels/geometry_cpu`` for the NumPy
path (``reference`` for the paste warp, ``lsj`` through it, ``photometric`` for the image jitter).

A module of its own because ``photometric`` sits below ``reference`` (which imports it): both reach it here without
an import cycle. Patching ``hostloops.cpu_loops`` to return None turns every loop off; ``reference.cpu_loops``
delegates to it, and patching that one turns off those of ``reference`` and ``lsj`` only (paste warp, composite,
LSJ).
"""
from __future__ import annotations

from types import ModuleType


def cpu_loops() -> ModuleType | None:
    """``ocp_dali.kernels.geometry_cpu`` when its compiled loops can be used (a C++ compiler is there and
    ``OCP_CPU_LOOPS`` is not 0), else None: the NumPy code is then the CPU path (and always the oracle)."""
    from ocp_dali.kernels import geometry_cpu

    return geometry_cpu if geometry_cpu.loops() is not None else None
