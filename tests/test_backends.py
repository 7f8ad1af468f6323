"""The backends are chosen in one place (``ocp_dali.backends.get_backend``): a bad name, or the CUDA backend on a
machine without a GPU, is a clear error that names the CPU options; the emulated backend equals the reference."""
import numpy as np
import pytest

from ocp_dali import OCPConfig, SyntheticScenes, apply, augment, plan_for
from ocp_dali.backends import cuda_device_count, get_backend


def test_unknown_backend_lists_the_names():
    with pytest.raises(ValueError, match="numpy.*cupy.*emulated"):
        get_backend("cuda")


@pytest.mark.skipif(cuda_device_count() > 0, reason="this machine has a CUDA GPU")
def test_cupy_without_a_gpu_names_the_cpu_backend():
    ds = SyntheticScenes(4, seed=1, image_size=(48, 64))
    plan = plan_for(ds, 0, cfg=OCPConfig.ocp(prob=1.0))
    with pytest.raises(RuntimeError, match=r"needs a CUDA GPU.*backend='numpy'"):
        apply(plan, ds.load(0), [ds.load(b) for b in plan.basket], backend="cupy")


def test_emulated_backend_equals_the_reference():
    pytest.importorskip("ocp_dali.kernels.emulate")
    ds = SyntheticScenes(6, seed=3, image_size=(48, 64))
    cfg = OCPConfig.ocp(prob=1.0, basket_size=2)
    for index in range(3):
        ref, emu = augment(ds, index, cfg=cfg), augment(ds, index, cfg=cfg, backend="emulated")
        for name, a in ref.arrays().items():
            b = emu.arrays()[name]
            assert (a is None and b is None) or np.array_equal(np.asarray(a), np.asarray(b)), (index, name)
        assert ref.info == emu.info


def test_map_arrays_converts_every_array_field_and_keeps_none():
    """``Sample.map_arrays`` (how samples move to and from a GPU) converts each array once, keeps None fields."""
    s = SyntheticScenes(2, seed=5, image_size=(24, 32)).load(0)
    seen = []

    def convert(a):
        seen.append(a)
        return np.array(a, copy=True)

    t = s.map_arrays(convert)
    assert len(seen) == sum(v is not None for v in s.arrays().values())
    for name, a in s.arrays().items():
        b = t.arrays()[name]
        assert (a is None) == (b is None), name
        if a is not None:
            assert b is not a and b.dtype == a.dtype and np.array_equal(a, b), name
    assert t.info == s.info and t.targets == s.targets and t.file_name == s.file_name
