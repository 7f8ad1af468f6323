"""mmdet / MMEngine adapter (a leaf: nothing in ocp_dali imports it). Importing it registers the transforms,
datasets and hooks in mmdet's registries."""
from ocp_dali.mmdet.dataset import OCPCocoDataset
from ocp_dali.mmdet.hooks import DataFingerprintHook, OCPEpochHook
from ocp_dali.mmdet.transforms import OCPMixDataset, OcclusionCopyPaste, ocp_collate

__all__ = ["DataFingerprintHook", "OCPCocoDataset", "OCPEpochHook", "OCPMixDataset", "OcclusionCopyPaste",
           "ocp_collate"]
