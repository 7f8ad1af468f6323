"""ocp_dali: Occlusion Copy & Paste as a NumPy reference and GPU operators for DALI / mmdet / PyTorch loops.

The bottom floors imported here (config, sample, plan, reference, data) need only NumPy and pycocotools.
"""
from ocp_dali.augment import apply, augment, augment_batch, plan_for
from ocp_dali.config import OCPConfig
from ocp_dali.data.coco import CocoInstances
from ocp_dali.data.synthetic import SyntheticScenes
from ocp_dali.errors import DataError
from ocp_dali.plan import ImageMeta, PasteOp, PastePlan, sample_plan, sample_rng
from ocp_dali.sample import Sample

__all__ = [
    "OCPConfig", "CocoInstances", "SyntheticScenes", "DataError", "ImageMeta", "PasteOp", "PastePlan", "Sample",
    "apply", "augment", "augment_batch", "plan_for", "sample_plan", "sample_rng",
]
__version__ = "0.1.0"
