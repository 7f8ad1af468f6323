"""The DALI graph on the GPU (nvJPEG, CuPy stage) equals the same graph on CPU operators, batch by batch: masks,
boxes, labels, order and keypoints identical, pixels within one intensity level. Runs on a GPU machine
(``make test-gpu``); skipped elsewhere with the reason."""
import os

import numpy as np
import pytest

from conftest import data_path
from test_gpu_parity import _gpu_unusable
from ocp_dali import CocoInstances, OCPConfig
from ocp_dali.pipeline import IMAGENET_STD

UNUSABLE = _gpu_unusable()
if UNUSABLE and os.environ.get("OCP_REQUIRE_GPU") == "1":
    pytest.fail(f"OCP_REQUIRE_GPU=1 but {UNUSABLE}", pytrace=False)
pytestmark = pytest.mark.skipif(UNUSABLE is not None, reason=UNUSABLE or "")
EXACT = ("masks", "amodal_masks", "occluder_masks", "boxes", "labels", "occlusion_rate", "order", "keypoints",
         "pasted", "ann_ids")


def batches(device, ds, cfg, n=3):
    from ocp_dali.torch import OCPLoader

    with OCPLoader(ds, cfg, device=device, batch_size=4, output_size=512, seed=7, py_num_workers=2) as loader:
        out = []
        for b in loader:
            out.append({k: ([t.cpu() for t in v] if isinstance(v, list) and v and hasattr(v[0], "cpu")
                            else (v.cpu() if hasattr(v, "cpu") else v)) for k, v in b.items()})
            if len(out) == n:
                break
    return out


@pytest.mark.parametrize("cfg", [OCPConfig.ocp(prob=1.0, basket_size=2, blend_sigma=1.5), OCPConfig.simple(),
                                 OCPConfig.ocp(prob=1.0, source="batch", basket_size=3)])
def test_gpu_graph_equals_cpu_graph(cfg):
    ds = CocoInstances(data_path("coco_mini", "annotations", "person_keypoints_val2017.json"),
                       data_path("coco_mini", "val2017"), classes=["person"])
    gpu, cpu = batches("gpu", ds, cfg), batches("cpu", ds, cfg)
    assert len(gpu) == len(cpu) == 3
    one_level = 1.001 / min(IMAGENET_STD)
    for g, c in zip(gpu, cpu):
        assert g["indices"] == c["indices"]
        for k in EXACT:
            for x, y in zip(g[k], c[k]):
                assert np.array_equal(x.numpy(), y.numpy()), k
        assert np.abs(g["images"].numpy() - c["images"].numpy()).max() <= one_level
