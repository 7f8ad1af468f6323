"""mmdet / MMEngine adapter (a leaf: nothing in ocp_dali imports it). Importing it registers the transforms,
datasets and hooks in mmdet's registries."""
from ocp_dali.mmdet.hooks import DataFingerprintHook, OCPEpochHook
from ocp_dali.mmdet.transforms import OCPMixDataset, OcclusionCopyPaste

__all__ = ["DataFingerprintHook", "OCPEpochHook", "OCPMixDataset", "OcclusionCopyPaste"]
