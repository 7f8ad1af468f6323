"""The DALI graph on CPU operators: equal to the reference sample by sample, deterministic, sharded, epoch-aware."""
import json
import signal
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest

from conftest import ROOT, data_path
from ocp_dali import CocoInstances, DataError, Geometry, OCPConfig, SyntheticScenes
from ocp_dali.augment import reference_sample
from ocp_dali.pipeline import IMAGENET_MEAN, IMAGENET_STD
from ocp_dali.torch import OCPLoader, OCPDataset

pytest.importorskip("nvidia.dali", reason="nvidia-dali is not installed")
FIELDS = ("masks", "amodal_masks", "occluder_masks", "boxes", "labels", "occlusion_rate", "order", "pasted",
          "ann_ids")


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging (the loader must never hang on bad input)."""
    def boom(*_):
        raise TimeoutError(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def coco():
    return CocoInstances(data_path("coco_mini", "annotations", "person_keypoints_val2017.json"),
                         data_path("coco_mini", "val2017"), classes=["person"])


def batches(loader, limit=None):
    out = []
    with deadline(120):
        for b in loader:
            out.append(b)
            if limit and len(out) >= limit:
                break
    return out


def assert_equal_to_reference(ds, batch, cfg, *, epoch, seed, size, geometry):
    for k, index in enumerate(batch["indices"]):
        group = batch["indices"] if cfg.source == "batch" else None
        ref = reference_sample(ds, index, epoch=epoch, seed=seed, cfg=cfg, output_size=size, geometry=geometry,
                               batch=group)
        arrays = ref.arrays()
        for f in FIELDS:
            assert np.array_equal(batch[f][k].numpy(), arrays[f]), (f, index)
        kp = batch["keypoints"][k].numpy()
        assert np.array_equal(kp, arrays["keypoints"]) if ref.keypoints is not None else kp.shape[1] == 0
        img = batch["images"][k].numpy()
        if geometry:
            want = (ref.image.astype(np.float32) - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
            np.testing.assert_allclose(img.transpose(1, 2, 0), want, atol=1e-4)
        else:
            assert np.array_equal(img, ref.image), index


@pytest.mark.parametrize("geometry", [False, True, Geometry.lsj(320, placement="paste_first"),
                                      Geometry.resize(((500, 300), (500, 400)))],
                         ids=["raw", "lsj-seed", "lsj-paste-first", "resize-seed"])
def test_cpu_graph_equals_the_reference_sample_by_sample(coco, geometry):
    cfg = OCPConfig.ocp(prob=1.0, basket_size=2, blend_sigma=1.0)
    loader = OCPLoader(coco, cfg, device="cpu", batch_size=4, output_size=320, seed=5, py_num_workers=2,
                       geometry=geometry, epoch=2)
    got = batches(loader, limit=3)
    loader.close()
    assert loader.stats["pasted"] > 0
    for b in got:
        assert b["epoch"] == 2
        assert_equal_to_reference(coco, b, cfg, epoch=2, seed=5, size=320, geometry=geometry)


def test_batch_sources_and_simple_mode_equal_the_reference(coco):
    for cfg in (OCPConfig.ocp(prob=1.0, source="batch", basket_size=3), OCPConfig.simple()):
        loader = OCPLoader(coco, cfg, device="cpu", batch_size=4, output_size=256, seed=1, py_num_workers=1)
        got = batches(loader, limit=2)
        loader.close()
        for b in got:
            assert_equal_to_reference(coco, b, cfg, epoch=0, seed=1, size=256, geometry=True)


def fingerprint(batch):
    return [(i, [t.numpy().tobytes() for t in batch[f]]) for f in ("masks", "boxes", "labels")
            for i in [tuple(batch["indices"])]] + [batch["images"].numpy().tobytes()]


def test_identical_with_one_and_two_workers_and_across_runs_new_epoch_new_plans():
    ds = SyntheticScenes(12, seed=2)
    cfg = OCPConfig.ocp(prob=1.0)
    runs = []
    for workers in (1, 2, 2):
        loader = OCPLoader(ds, cfg, device="cpu", batch_size=4, output_size=192, seed=9, py_num_workers=workers)
        e0 = batches(loader)
        e1 = batches(loader)  # the next epoch, same pipeline
        loader.close()
        assert len(e0) == len(loader) == 3 and [b["epoch"] for b in e0 + e1] == [0] * 3 + [1] * 3
        runs.append(([fingerprint(b) for b in e0], [fingerprint(b) for b in e1]))
    assert runs[0] == runs[1] == runs[2]
    assert runs[0][0] != runs[0][1], "a new epoch must give new plans"
    # set_epoch(1) on a fresh loader reproduces epoch 1 (resume)
    loader = OCPLoader(ds, cfg, device="cpu", batch_size=4, output_size=192, seed=9, py_num_workers=1)
    loader.set_epoch(1)
    assert [fingerprint(b) for b in batches(loader)] == runs[0][1]
    loader.close()


def test_shards_of_one_epoch_cover_every_image_exactly_once():
    ds = SyntheticScenes(11, seed=0)
    seen = []
    for shard in range(3):
        loader = OCPLoader(ds, OCPConfig.ocp(), device="cpu", batch_size=2, output_size=128, seed=4,
                           py_num_workers=1, shard_id=shard, num_shards=3, epoch=3)
        got = batches(loader)
        assert len(got) == len(loader)
        seen += [i for b in got for i in b["indices"]]
        loader.close()
    assert sorted(seen) == list(range(11))


def broken_copy(tmp_path, coco_dir, *, corrupt=None, missing=None, bad_ann=False):
    """A copy of coco_mini val (symlinked images) with one image corrupt or missing, or a bad polygon."""
    src = coco_dir / "annotations" / "person_keypoints_val2017.json"
    d = json.loads(src.read_text())
    imgs = tmp_path / "images"
    imgs.mkdir()
    keep = d["images"][:6]
    for im in keep:
        (imgs / im["file_name"]).symlink_to(coco_dir / "val2017" / im["file_name"])
    ids = {im["id"] for im in keep}
    d["images"] = keep
    d["annotations"] = [a for a in d["annotations"] if a["image_id"] in ids]
    if corrupt is not None:
        f = imgs / keep[corrupt]["file_name"]
        data = f.read_bytes()
        f.unlink()
        f.write_bytes(data[:200] + b"\x00" * 64)
    if missing is not None:
        (imgs / keep[missing]["file_name"]).unlink()
    if bad_ann:
        a = next(a for a in d["annotations"] if not a.get("iscrowd"))
        a["segmentation"] = [[1.0, 2.0, 3.0, 4.0]]  # two points: cannot be rasterised
    (tmp_path / "ann.json").write_text(json.dumps(d))
    return CocoInstances(tmp_path / "ann.json", imgs, classes=["person"]), keep, (a["id"] if bad_ann else None)


@pytest.mark.parametrize("kind", ["corrupt", "missing"])
def test_bad_image_is_a_recorded_skip_or_an_error_naming_the_file_never_a_hang(tmp_path, kind):
    ds, keep, _ = broken_copy(tmp_path, data_path("coco_mini"), **{kind: 2})
    cfg = OCPConfig.ocp(prob=1.0)
    with OCPLoader(ds, cfg, device="cpu", batch_size=2, output_size=128, py_num_workers=1, shuffle=False) as loader:
        got = batches(loader)
    bad = next(i for i in range(len(ds)) if ds.file_path(i).name == keep[2]["file_name"])
    got_pairs = [(i, s) for b in got for i, s in zip(b["indices"], b["stand_in_for"])]
    assert [i for i, s in got_pairs if s < 0] == [i for i in range(6) if i != bad]  # the loader kept going
    assert [(i, s) for i, s in got_pairs if s >= 0] == [((bad + 1) % 6, bad)]  # the next image fills its slot
    assert [len(b["indices"]) for b in got] == [2, 2, 2]
    assert [(s.epoch, s.index) for s in loader.skips] == [(0, bad)]
    assert keep[2]["file_name"] in loader.skips[0].reason
    assert loader.stats["skipped_images"] == 1 and loader.accounts[0].samples == 5
    with OCPLoader(ds, cfg, device="cpu", batch_size=2, output_size=128, py_num_workers=1, shuffle=False,
                   on_bad_image="raise") as loader:
        with pytest.raises(DataError) as err:
            batches(loader)
    assert keep[2]["file_name"] in str(err.value)


def test_unrasterisable_annotation_is_a_counted_skip(tmp_path):
    ds, keep, bad_id = broken_copy(tmp_path, data_path("coco_mini"), bad_ann=True)
    loader = OCPLoader(ds, OCPConfig.ocp(), device="cpu", batch_size=3, output_size=128, py_num_workers=1)
    got = batches(loader)
    loader.close()
    assert loader.stats["skipped_annotations"] == 1
    assert all(bad_id not in b["ann_ids"][k].tolist() for b in got for k in range(len(b["indices"])))


def test_torch_dataloader_worker_pool_alternative():
    import torch

    ds = OCPDataset(SyntheticScenes(6, seed=1), OCPConfig.ocp(prob=1.0), output_size=128, seed=3)
    dl = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, collate_fn=list)
    got = [s for b in dl for s in b]
    assert [s["index"] for s in got] == list(range(6))
    ref = reference_sample(ds.dataset, 4, epoch=0, seed=3, cfg=ds.cfg, output_size=128)
    assert np.array_equal(got[4]["masks"].numpy(), ref.masks)


def test_plain_torch_loop_runs_and_its_loss_is_finite():
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "plain_torch_loop.py"), "--iterations", "3",
                        "--size", "128", "--workers", "1"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "finite: True" in r.stdout
