"""Issue #7 on the mmdet CPU path: the fault corpus through the torch DataLoader MMEngine builds from our config
(``OCPCocoDataset`` -> ``OCPMixDataset`` -> ``ocp_collate``), and a real epoch of training with ``OCPEpochHook``'s
accounting: every index gives one sample or one recorded skip, batches keep their size, training keeps going."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from conftest import ROOT
from faults import write_fault_corpus

pytest.importorskip("mmdet", reason="mmdet is not installed")
TINY = ROOT / "configs" / "mask_rcnn" / "mask-rcnn_r18_fpn_ocp_tiny-cpu.py"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_fault_corpus(tmp_path_factory.mktemp("mmdet_faults"))


def tiny_cfg(corpus, work_dir=None):
    from mmengine.config import Config

    cfg = Config.fromfile(str(TINY))
    inner = cfg.train_dataloader.dataset.dataset
    inner.update(data_root="", ann_file=str(corpus.ann_file), data_prefix=dict(img=str(corpus.img_dir) + "/"))
    cfg.train_dataloader.sampler.shuffle = False
    if work_dir is not None:
        cfg.work_dir = str(work_dir)
    return cfg


def test_dataloader_gives_each_index_once_as_sample_or_recorded_skip(corpus):
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    import ocp_dali.mmdet  # noqa: F401

    init_default_scope("mmdet")
    loader = Runner.build_dataloader(tiny_cfg(corpus).train_dataloader, seed=0)
    inner = loader.dataset.dataset
    seen, skipped, sizes = [], [], []
    for b in loader:
        sizes.append(len(b["data_samples"]))
        seen += [d.metainfo["ocp_index"] for d in b["data_samples"] if "ocp_stand_in_for" not in d.metainfo]
        stand_ins = [d.metainfo["ocp_stand_in_for"] for d in b["data_samples"] if "ocp_stand_in_for" in d.metainfo]
        assert sorted(stand_ins) == sorted(s["index"] for s in b["ocp_skipped"])
        skipped += b["ocp_skipped"]
    n = len(loader.dataset)
    assert Counter(seen + [s["index"] for s in skipped]) == Counter(range(n))
    # stand-ins keep batches full: only the last batch of each aspect-ratio group (mmdet's AspectRatioBatchSampler:
    # landscape, portrait) may be short, though 10 of the 30 images are bad
    bs = tiny_cfg(corpus).train_dataloader.batch_size
    assert sum(size < bs for size in sizes) <= 2 and len(skipped) == len(corpus.bad_images), sizes
    # the corpus's bad files, found by path (mmdet's indices differ: images without people are filtered out)
    bad_paths = {str(corpus.img_dir / name) for name in _bad_file_names(corpus)}
    got_paths = {inner.get_data_info(s["index"])["img_path"] for s in skipped}
    assert got_paths == bad_paths
    for s in skipped:
        assert s["reason"].startswith(inner.get_data_info(s["index"])["img_path"])


def _bad_file_names(corpus) -> list[str]:
    images = json.loads(corpus.ann_file.read_text())["images"]
    return [images[i]["file_name"] for i in corpus.bad_images]


def test_an_epoch_of_training_goes_on_and_accounts_for_every_skip(corpus, tmp_path):
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    import ocp_dali.mmdet  # noqa: F401

    cfg = tiny_cfg(corpus, tmp_path)
    cfg.train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=1, val_interval=1000)
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=1000)
    cfg.log_processor = dict(by_epoch=True)
    runner = RUNNERS.build(cfg) if "runner_type" in cfg else Runner.from_cfg(cfg)
    runner.train()
    lines = [json.loads(x) for x in (tmp_path / "ocp_skips_rank0.jsonl").read_text().splitlines()]
    assert len(lines) == len(corpus.bad_images) and all(x["epoch"] == 0 for x in lines)
    log = next(tmp_path.glob("*/*.log")).read_text()
    n = len(runner.train_dataloader.dataset)
    assert f"epoch 0: {n - len(corpus.bad_images)} samples, {len(corpus.bad_images)} images skipped" in log


def test_ocp_coco_dataset_gives_mmdet_the_masks_cocodataset_gives(coco_mini_train):
    """On clean data ``OCPCocoDataset`` and mmdet's ``CocoDataset`` load to the same masks, labels and ignore flags
    (boxes: tight mask boxes here, the json's boxes there)."""
    import numpy as np
    from mmdet.datasets import CocoDataset
    from mmdet.datasets.transforms import LoadAnnotations

    from ocp_dali.mmdet import OCPCocoDataset

    ann = str(coco_mini_train.ann_file)
    kw = dict(ann_file=ann, data_prefix=dict(img=str(coco_mini_train.img_dir) + "/"),
              metainfo=dict(classes=("person",)), filter_cfg=dict(filter_empty_gt=True), pipeline=[])
    ours, theirs = OCPCocoDataset(**kw), CocoDataset(**kw)
    assert len(ours) == len(theirs) > 0
    load = LoadAnnotations(with_bbox=True, with_mask=True, poly2mask=True)
    compared = 0
    def loaded(ds, i):
        info = ds.get_data_info(i)  # ori_shape: what LoadImageFromFile would add
        return load(dict(info, ori_shape=(info["height"], info["width"])))

    by_path = {theirs.get_data_info(j)["img_path"]: j for j in range(len(theirs))}  # image orders differ
    for i in range(len(ours)):
        a = loaded(ours, i)
        b = loaded(theirs, by_path[a["img_path"]])
        order = np.lexsort(a["gt_masks"].masks.reshape(len(a["gt_masks"]), -1).T)  # same set, any order
        other = np.lexsort(b["gt_masks"].masks.reshape(len(b["gt_masks"]), -1).T)
        assert np.array_equal(a["gt_masks"].masks[order], b["gt_masks"].masks[other]), a["img_path"]
        assert np.array_equal(a["gt_ignore_flags"][order], b["gt_ignore_flags"][other])
        assert np.array_equal(a["gt_bboxes_labels"][order], b["gt_bboxes_labels"][other])
        compared += int((~a["gt_ignore_flags"]).sum())
    assert compared > 50
