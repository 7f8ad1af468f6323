"""ocp_dali: Occlusion Copy & Paste as a NumPy reference and GPU operators for DALI / mmdet / PyTorch loops.

The bottom floors imported here (config, sample, plan, reference, data) need only NumPy and pycocotools.
"""
import importlib.util
import sys
from pathlib import Path


def _bind_kernels() -> None:
    """Make ``ocp_dali.kernels`` the top-level ``kernels/`` folder of a source checkout.

    setup.py installs ``kernels/`` as ``ocp_dali.kernels`` (``package_dir``); a bare checkout (no install, no
    network for one) has no such subpackage, so the name is bound here. Nothing in ``kernels/`` is imported
    beyond its empty ``__init__``: CuPy and the compilers load only when a kernel module is used.
    """
    here = Path(__file__).resolve().parent
    top = here.parent / "kernels"
    if (here / "kernels").is_dir() or not (top / "__init__.py").is_file() or "ocp_dali.kernels" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location("ocp_dali.kernels", top / "__init__.py",
                                                  submodule_search_locations=[str(top)])
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]


_bind_kernels()
from ocp_dali.augment import apply, augment, augment_batch, plan_for
from ocp_dali.config import OCPConfig
from ocp_dali.data.coco import CocoInstances
from ocp_dali.data.synthetic import SyntheticScenes
from ocp_dali.errors import DataError
from ocp_dali.lsj import Geometry
from ocp_dali.plan import ImageMeta, PasteOp, PastePlan, sample_plan, sample_rng
from ocp_dali.sample import Sample
from ocp_dali.targets import Targets

__all__ = [
    "OCPConfig", "Geometry", "CocoInstances", "SyntheticScenes", "DataError", "ImageMeta", "PasteOp", "PastePlan",
    "Sample", "Targets",
    "apply", "augment", "augment_batch", "plan_for", "sample_plan", "sample_rng",
]
__version__ = "0.1.0"
