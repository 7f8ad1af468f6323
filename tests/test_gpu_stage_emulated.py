"""The OC&P stage (masks, apply, LSJ) is one definition, ``ocp_dali.stage.ocp_stage``: run with the GPU path's
kernels on the CPU (the emulated backend) it gives exactly the outputs of the NumPy backend (the CPU graph) on the
same worker batches, synthetic and real."""
import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from conftest import data_path
from ocp_dali import CocoInstances, Geometry, OCPConfig, SyntheticScenes
from ocp_dali.source import EpochSource
from ocp_dali.stage import ocp_stage
from ocp_dali.wire import OUTPUT_NAMES, WorkerBatch

emulate = pytest.importorskip("ocp_dali.kernels.emulate")
if emulate.compiler() is None:
    pytest.skip("no C++ compiler for the kernel emulator", allow_module_level=True)


def decode(blob: np.ndarray) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(blob.tobytes())).convert("RGB"))


def stage_inputs(src: EpochSource, it: int) -> tuple:
    """A worker batch with its images decoded, as the graph hands it to the stage."""
    wb = WorkerBatch.unpack(src(SimpleNamespace(epoch_idx=0, iteration=it)), src.slots)
    return WorkerBatch([decode(b) for b in wb.dest_images], wb.dest_anns,
                       tuple([decode(b) for b in col] for col in wb.source_images), wb.source_anns, wb.plans,
                       wb.lsjs, wb.keys).pack()


def assert_stages_equal(ds, cfg, geometry, batches=2, batch_size=4) -> int:
    src = EpochSource(ds, cfg, seed=2, batch_size=batch_size, geometry=geometry)
    flip = getattr(ds, "flip_index", None)
    cpu_stage = ocp_stage("numpy", src.slots, geometry, flip)
    gpu_stage = ocp_stage("emulated", src.slots, geometry, flip)
    pasted = 0
    for it in range(batches):
        inputs = stage_inputs(src, it)
        cpu, gpu = cpu_stage(*inputs), gpu_stage(*inputs)
        for name, a, b in zip(OUTPUT_NAMES, cpu, gpu):
            for k, (x, y) in enumerate(zip(a, b)):
                assert np.array_equal(np.asarray(x), np.asarray(y)), (name, it, k)
            if name == "pasted":
                pasted += sum(int(np.asarray(x).sum()) for x in a)
    return pasted


@pytest.mark.parametrize("cfg, geometry", [
    (OCPConfig.ocp(prob=1.0, basket_size=2, blend_sigma=1.0), Geometry.lsj((64, 80), ratio_range=(0.5, 2.0))),
    (OCPConfig.ocp(prob=1.0, basket_size=2, aug_paste_geom_jitter=True, aug_paste_img_jitter=True),
     Geometry.lsj((64, 80), ratio_range=(0.5, 2.0), placement="paste_first")),
    (OCPConfig.ocp(prob=1.0, source="batch", basket_size=2), Geometry.lsj((64, 80), ratio_range=(0.5, 2.0))),
    (OCPConfig.ocp(prob=1.0, basket_size=2), Geometry.resize(((120, 60), (120, 80)))),
    (OCPConfig.simple(), None),
], ids=["lsj-seed", "lsj-paste-first", "lsj-seed-batch", "resize-seed", "simple-raw"])
def test_gpu_stage_equals_cpu_stage(cfg, geometry):
    ds = SyntheticScenes(8, seed=5, image_size=(72, 96))
    assert assert_stages_equal(ds, cfg, geometry) > 0


@pytest.mark.parametrize("geometry", [Geometry.lsj(256), Geometry.lsj(256, placement="paste_first"),
                                      Geometry.resize(((400, 200), (400, 260)))],
                         ids=["lsj-seed", "lsj-paste-first", "resize-seed"])
def test_gpu_stage_equals_cpu_stage_on_real_images(geometry):
    """Real COCO persons with keypoints, both jitters, feathering, each placement order: the same ``ocp_stage``,
    two backends, every output identical."""
    ds = CocoInstances(data_path("coco_mini", "annotations", "person_keypoints_val2017.json"),
                       data_path("coco_mini", "val2017"), classes=["person"])
    cfg = OCPConfig.ocp(prob=1.0, basket_size=2, paste_num=(2, 4), blend_sigma=1.0, aug_paste_geom_jitter=True,
                        aug_paste_img_jitter=True)
    assert assert_stages_equal(ds, cfg, geometry, batches=1, batch_size=3) > 0
