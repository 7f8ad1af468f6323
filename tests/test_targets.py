"""Targets on request (``ocp_dali.targets``): with a subset requested, every requested output equals the all-targets
output exactly, the others are empty (never computed), on the NumPy reference, the CPU stage and the emulated GPU
stage, on real COCO persons and synthetic scenes. The combinations are those the loaders use: visible only (the
mmdet configs' default), occluder masks (``examples/plain_torch_loop.py``), occlusion rate (an mmdet config that
asks for it), keypoints, order, and all."""
import numpy as np
import pytest

from conftest import data_path
from ocp_dali import CocoInstances, Geometry, OCPConfig, SyntheticScenes, Targets
from ocp_dali.augment import reference_sample
from ocp_dali.reference import PasteLayers
from ocp_dali.stage import ocp_stage
from ocp_dali.targets import OPTIONAL
from ocp_dali.wire import OUTPUT_NAMES

COMBOS = {
    "visible": Targets.visible(),
    "example": Targets(("occluder_masks",)),
    "rate": Targets(("occlusion_rate",)),
    "keypoints": Targets(("keypoints",)),
    "order": Targets(("order",)),
    "amodal+rate": Targets(("amodal_masks", "occlusion_rate")),
    "all": Targets.all(),
}
EMPTY = dict(amodal_masks=3, occluder_masks=3, occlusion_rate=1, order=2)  # rank of each empty target


@pytest.fixture(scope="module")
def coco_val():
    return CocoInstances(data_path("coco_mini", "annotations", "person_keypoints_val2017.json"),
                         data_path("coco_mini", "val2017"), classes=["person"])


def test_targets_names_validate_and_default_to_all():
    assert Targets.of(None) == Targets.all() == Targets()
    assert Targets.of("visible") == Targets.visible() and not Targets.visible().names
    assert Targets.of(["masks", "boxes", "occlusion_rate"]) == Targets(("occlusion_rate",))
    assert list(Targets.all()) == list(OPTIONAL) and set(OPTIONAL) <= set(OUTPUT_NAMES)
    assert "masks" in Targets.visible() and "order" not in Targets.visible()
    with pytest.raises(ValueError, match="amodal"):
        Targets(("amodal",))


def assert_subset_equal(got, full, targets):
    """``got`` (made with ``targets``) equals ``full`` (all targets) on every requested array; the others empty."""
    assert got.targets == targets and got.info == full.info and got.image_id == full.image_id
    for name, value in full.arrays().items():
        mine = getattr(got, name)
        if name in OPTIONAL and name not in targets.names:
            if name == "keypoints":
                assert mine is None
            else:
                assert mine.shape[0] == 0 and mine.ndim == EMPTY[name] and mine.dtype == value.dtype, name
        elif value is None:
            assert mine is None, name
        else:
            assert mine.dtype == value.dtype and np.array_equal(mine, value), name


@pytest.mark.parametrize("geometry", [Geometry.lsj(384), Geometry.lsj(384, placement="paste_first"),
                                      Geometry.resize(((500, 300), (500, 360))), False],
                         ids=["lsj-seed", "lsj-paste-first", "resize-seed", "raw"])
@pytest.mark.parametrize("combo", list(COMBOS))
def test_reference_subset_equals_all_on_real_images(coco_val, geometry, combo):
    cfg = OCPConfig.ocp(prob=1.0, basket_size=2, paste_num=(2, 4), blend_sigma=1.0, aug_paste_geom_jitter=True)
    pasted = 0
    for index in range(3):
        kw = dict(epoch=0, seed=4, cfg=cfg, geometry=geometry)
        full = reference_sample(coco_val, index, **kw)
        got = reference_sample(coco_val, index, targets=COMBOS[combo], **kw)
        assert_subset_equal(got, full, COMBOS[combo])
        pasted += int(full.pasted.sum())
    assert pasted > 0


@pytest.mark.parametrize("combo", ["visible", "rate", "order", "all"])
def test_reference_subset_equals_all_in_simple_mode(combo):
    ds = SyntheticScenes(6, seed=3, image_size=(72, 96))
    for index in range(4):
        kw = dict(epoch=0, seed=1, cfg=OCPConfig.simple(), geometry=Geometry.lsj((64, 80), ratio_range=(0.5, 2.0)))
        assert_subset_equal(reference_sample(ds, index, targets=COMBOS[combo], **kw),
                            reference_sample(ds, index, **kw), COMBOS[combo])


def test_unrequested_stacks_are_not_allocated():
    """The amodal stack only for amodal masks or order (the rate reads areas), keypoints only when requested."""
    dst = SyntheticScenes(2, seed=0, image_size=(40, 48)).load(0)
    for targets, stacked in ((Targets.visible(), False), (Targets(("occlusion_rate", "occluder_masks")), False),
                             (Targets(("order",)), True), (Targets.all(), True)):
        layers = PasteLayers.start(dst.restrict(targets), 3, targets)
        assert (layers.amodal is not None) == stacked
        assert (layers.keypoints is not None) == ("keypoints" in targets.names and dst.keypoints is not None)
    restricted = dst.restrict(Targets.visible())
    assert restricted.occluder_masks.shape == (0, 40, 48) and restricted.order.shape == (0, 0)
    with pytest.raises(ValueError, match="carries no"):
        restricted.restrict(Targets.all())


def stage_outputs(ds, cfg, geometry, backend, targets, batches, batch_size):
    from test_gpu_stage_emulated import stage_inputs
    from ocp_dali.source import EpochSource

    src = EpochSource(ds, cfg, seed=2, batch_size=batch_size, geometry=geometry)
    stage = ocp_stage(backend, src.slots, geometry, getattr(ds, "flip_index", None), targets)
    return [[[np.asarray(x) for x in col] for col in stage(*stage_inputs(src, it))] for it in range(batches)]


def assert_stage_subset(ds, cfg, geometry, combo, batches, batch_size):
    """CPU stage with ``combo`` == CPU stage with all targets (requested outputs), unrequested ones empty; and the
    emulated GPU stage with ``combo`` == the CPU stage with ``combo``, output for output."""
    targets = COMBOS[combo]
    full = stage_outputs(ds, cfg, geometry, "numpy", None, batches, batch_size)
    cpu = stage_outputs(ds, cfg, geometry, "numpy", targets, batches, batch_size)
    gpu = stage_outputs(ds, cfg, geometry, "emulated", targets, batches, batch_size)
    pasted = 0
    for it in range(batches):
        for name, f, c, g in zip(OUTPUT_NAMES, full[it], cpu[it], gpu[it]):
            for k, (x, y, z) in enumerate(zip(f, c, g)):
                assert y.dtype == z.dtype and np.array_equal(y, z), (name, it, k, "cpu != emulated")
                if name in OPTIONAL and name not in targets.names:
                    assert y.shape[0] == 0 and y.ndim == x.ndim and y.dtype == x.dtype, (name, y.shape)
                else:
                    assert y.dtype == x.dtype and np.array_equal(x, y), (name, it, k, "subset != all")
            if name == "pasted":
                pasted += sum(int(x.sum()) for x in f)
    assert pasted > 0


@pytest.mark.parametrize("combo", ["visible", "example", "rate", "all"])
def test_stage_subset_on_real_images_cpu_and_emulated(coco_val, combo):
    cfg = OCPConfig.ocp(prob=1.0, basket_size=2, paste_num=(2, 4), blend_sigma=1.0, aug_paste_geom_jitter=True,
                        aug_paste_img_jitter=True)
    assert_stage_subset(coco_val, cfg, Geometry.lsj(256), combo, batches=1, batch_size=3)


@pytest.mark.parametrize("cfg, geometry", [
    (OCPConfig.ocp(prob=1.0, basket_size=2, blend_sigma=1.0), Geometry.lsj((64, 80), ratio_range=(0.5, 2.0))),
    (OCPConfig.ocp(prob=1.0, basket_size=2), Geometry.lsj((64, 80), ratio_range=(0.5, 2.0), placement="paste_first")),
    (OCPConfig.simple(), None),
], ids=["lsj-seed", "lsj-paste-first", "simple-raw"])
@pytest.mark.parametrize("combo", ["visible", "example", "keypoints", "order", "amodal+rate"])
def test_stage_subset_on_synthetic_scenes_cpu_and_emulated(cfg, geometry, combo):
    ds = SyntheticScenes(8, seed=5, image_size=(72, 96))
    assert_stage_subset(ds, cfg, geometry, combo, batches=2, batch_size=4)


@pytest.mark.parametrize("combo", ["visible", "example"])
def test_loader_batches_hold_the_requested_targets_only(coco_val, combo):
    """The DALI CPU graph with ``targets``: the batch dict has the requested optional outputs only, each equal to
    the reference's (which equals the all-targets one, above); ``OCPDataset`` alike."""
    pytest.importorskip("nvidia.dali", reason="nvidia-dali is not installed")
    from ocp_dali.torch import OCPDataset, OCPLoader

    targets, cfg = COMBOS[combo], OCPConfig.ocp(prob=1.0, basket_size=2)
    with OCPLoader(coco_val, cfg, device="cpu", batch_size=3, output_size=256, seed=5, py_num_workers=1,
                   targets=targets) as loader:
        batch = next(iter(loader))
    assert {k for k in OPTIONAL if k in batch} == targets.names
    for k, index in enumerate(batch["indices"]):
        ref = reference_sample(coco_val, index, epoch=0, seed=5, cfg=cfg, output_size=256, targets=targets)
        for name in ("masks", "boxes", "labels", "pasted", "ann_ids", *targets.names):
            assert np.array_equal(batch[name][k].numpy(), getattr(ref, name)), (name, index)
    item = OCPDataset(coco_val, cfg, output_size=256, seed=5, targets=targets)[0]
    assert {k for k in OPTIONAL if k in item} == targets.names and "masks" in item
