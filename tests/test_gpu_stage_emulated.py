"""The GPU pipeline stage (masks, OC&P apply, LSJ on the device), run through the kernels' CPU emulator, gives
exactly the CPU stage's outputs on the same worker batches."""
import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from ocp_dali import OCPConfig, SyntheticScenes
from ocp_dali.pipeline import OUTPUT_NAMES, EpochSource, ocp_stage_numpy

emulate = pytest.importorskip("ocp_dali.kernels.emulate")
if emulate.compiler() is None:
    pytest.skip("no C++ compiler for the kernel emulator", allow_module_level=True)


def decode(blob: np.ndarray) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(blob.tobytes())).convert("RGB"))


@pytest.mark.parametrize("cfg, geometry", [
    (OCPConfig.ocp(prob=1.0, basket_size=2, blend_sigma=1.0), True),
    (OCPConfig.ocp(prob=1.0, source="batch", basket_size=2), True),
    (OCPConfig.simple(), False),
])
def test_gpu_stage_equals_cpu_stage(cfg, geometry):
    from ocp_dali.kernels.pipeline_stage import ocp_stage_cupy

    ds = SyntheticScenes(8, seed=5, image_size=(72, 96))
    src = EpochSource(ds, cfg, seed=2, batch_size=4, out_size=(64, 80), geometry=geometry)
    slots = src.slots
    for it in range(2):
        outs = src(SimpleNamespace(epoch_idx=0, iteration=it))
        inputs = [[decode(b) for b in outs[0]], outs[1]]
        for s in range(slots):
            inputs += [[decode(b) for b in outs[2 + 2 * s]], outs[3 + 2 * s]]
        inputs += list(outs[2 + 2 * slots:])
        cpu = ocp_stage_numpy(slots, geometry, ds.flip_index)(*inputs)
        gpu = ocp_stage_cupy(slots, geometry, ds.flip_index, backend=emulate.EmulatedBackend())(*inputs)
        pasted = 0
        for name, a, b in zip(OUTPUT_NAMES, cpu, gpu):
            for k, (x, y) in enumerate(zip(a, b)):
                assert np.array_equal(np.asarray(x), np.asarray(y)), (name, it, k)
            if name == "pasted":
                pasted += sum(int(np.asarray(x).sum()) for x in a)
        assert pasted > 0
