"""Issue #7, loader level: the generated fault corpus (``tests/faults.py``) through the DALI graph on CPU operators.

Every dataset index of an epoch gives exactly one sample or one recorded skip naming the file; the loader keeps going
past bad images (also one that only DALI's decoder rejects); each sample it gives equals the NumPy reference (whose
invariants ``test_faults.py`` checks); pastes from unusable sources are left out on both paths alike; resuming at
(epoch, batch) reproduces the stream with any worker count.
"""
from __future__ import annotations

import numpy as np
import pytest

from faults import write_fault_corpus
from ocp_dali import CocoInstances, DataError, OCPConfig, SyntheticScenes
from ocp_dali.augment import reference_sample
from ocp_dali.torch import OCPDataset, OCPLoader
from test_pipeline_cpu import FIELDS, batches, fingerprint

pytest.importorskip("nvidia.dali", reason="nvidia-dali is not installed")
CFG = OCPConfig.ocp(prob=1.0)
SIZE = 96


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_fault_corpus(tmp_path_factory.mktemp("loader_faults"))


@pytest.fixture(scope="module")
def ds(corpus):
    return CocoInstances(corpus.ann_file, corpus.img_dir, classes=["person"])


@pytest.fixture(scope="module")
def epoch0(ds):
    with OCPLoader(ds, CFG, device="cpu", batch_size=4, output_size=SIZE, seed=5, py_num_workers=2) as loader:
        got = batches(loader)
    return loader, got


def test_every_index_gives_one_sample_or_one_recorded_skip_naming_the_file(corpus, ds, epoch0):
    loader, got = epoch0
    own = [i for b in got for i, s in zip(b["indices"], b["stand_in_for"]) if s < 0]
    stand_ins = sorted(s for b in got for s in b["stand_in_for"] if s >= 0)
    assert sorted(own) == corpus.good, "every usable image gives exactly one sample of its own"
    assert stand_ins == sorted(corpus.bad_images), "each bad image's slot is filled by a stand-in"
    assert [len(b["indices"]) for b in got[:-1]] == [4] * (len(got) - 1), "batches keep their size"
    assert {s.index: s.epoch for s in loader.skips} == {i: 0 for i in corpus.bad_images}
    for s in loader.skips:
        assert corpus.bad_images[s.index] in s.reason and str(ds.file_path(s.index)) in s.reason, s
    account = loader.accounts[0]
    assert account.samples == len(corpus.good) and len(account.skipped) == len(corpus.bad_images)
    assert loader.stats["samples"] == len(ds) and loader.stats["skipped_images"] == len(corpus.bad_images)
    want_anns = sum(len(ds.annotation(i)["skipped"]) for b in got for i in b["indices"])
    assert want_anns > 0 and loader.stats["skipped_annotations"] == want_anns


def test_samples_around_bad_images_equal_the_reference(corpus, ds, epoch0):
    _, got = epoch0
    dropped = 0
    for b in got:
        for k, index in enumerate(b["indices"]):
            if index == corpus.index["huge"]:  # 8k x 8k: shape only (its reference costs ~20 s; test_faults has it)
                assert b["images"][k].shape == (3, SIZE, SIZE)
                continue
            ref = reference_sample(ds, index, epoch=0, seed=5, cfg=CFG, output_size=SIZE)
            arrays = ref.arrays()
            for f in FIELDS:
                assert np.array_equal(b[f][k].numpy(), arrays[f]), (f, index)
            dropped += (ref.info or {}).get("dropped_sources", 0)
    assert dropped > 0, "some baskets hold a bad image: their pastes must be left out on both paths"


def test_raise_mode_names_the_first_bad_file(corpus, ds):
    with OCPLoader(ds, CFG, device="cpu", batch_size=4, output_size=SIZE, seed=5, py_num_workers=1,
                   shuffle=False, on_bad_image="raise") as loader:
        with pytest.raises(DataError) as err:
            batches(loader)
    first = min(corpus.bad_images)
    assert str(ds.file_path(first)) in str(err.value) and corpus.bad_images[first] in str(err.value)


class LenientProbe(CocoInstances):
    """Trusts the json instead of reading headers: a broken file then reaches DALI's decoder, as damage inside the
    compressed data does (the probe cannot see it)."""

    def probe(self, index, data=None):
        from ocp_dali.data.imageio import ImageHeader

        info = self.coco.imgs[self.img_ids[index]]
        return ImageHeader(width=int(info["width"]), height=int(info["height"]), format="JPEG", mode="RGB",
                           orientation=1)


def test_an_image_only_the_decoder_rejects_is_recorded_and_the_epoch_goes_on(corpus):
    ds = LenientProbe(corpus.ann_file, corpus.img_dir, classes=["person"])
    bad = corpus.index["corrupt_jpeg"]
    keep = [i for i in corpus.good if i != corpus.index["huge"]] + [bad]
    sub = Subset(ds, keep)
    with OCPLoader(sub, OCPConfig.ocp(prob=0.0), device="cpu", batch_size=4, output_size=SIZE, seed=1,
                   py_num_workers=1) as loader:
        got = batches(loader)
    assert sorted(keep[i] for b in got for i, s in zip(b["indices"], b["stand_in_for"]) if s < 0) == sorted(keep[:-1])
    assert [s.index for s in loader.skips] == [len(keep) - 1]
    assert [s for b in got for s in b["stand_in_for"] if s >= 0] == [len(keep) - 1]
    assert str(ds.file_path(bad)) in loader.skips[0].reason and loader.accounts[0].samples == len(keep) - 1


class Subset:
    """Images ``keep`` of a dataset, re-indexed 0..n-1 (picklable for the spawned workers)."""

    def __init__(self, base, keep):
        self.base, self.keep = base, list(keep)

    def __len__(self):
        return len(self.keep)

    def __getattr__(self, name):
        fn = getattr(self.base, name)
        if name in ("meta", "read_bytes", "annotation", "probe", "read_image", "load", "file_path"):
            return lambda i, *a, **k: fn(self.keep[i], *a, **k)
        return fn

    def __getstate__(self):
        return self.__dict__

    def __setstate__(self, state):
        self.__dict__.update(state)

    def basket_indices(self, rng, index, size):
        from ocp_dali.data.base import draw_basket

        return draw_basket(rng, index, len(self), size)


def test_resume_at_epoch_and_batch_reproduces_the_stream_with_any_worker_count():
    ds = SyntheticScenes(14, seed=3)
    kw = dict(device="cpu", batch_size=3, output_size=128, seed=2)
    with OCPLoader(ds, CFG, py_num_workers=2, **kw) as loader:
        batches(loader)
        epoch1 = [fingerprint(b) for b in batches(loader)]
    for workers in (1, 3):
        with OCPLoader(ds, CFG, py_num_workers=workers, **kw) as loader:
            loader.set_epoch(1, iteration=2)
            resumed = [fingerprint(b) for b in batches(loader)]
            assert loader.accounts[1].first_batch == 2
            following = batches(loader, limit=1)[0]  # the next epoch starts from its first batch
        assert resumed == epoch1[2:]
        assert following["epoch"] == 2 and len(following["indices"]) == 3
    with pytest.raises(ValueError):
        OCPLoader(ds, CFG, **kw).set_epoch(0, iteration=len(epoch1))


def test_torch_dataloader_path_skips_bad_images_with_the_reason(corpus, ds):
    import torch

    data = OCPDataset(ds, CFG, output_size=SIZE, seed=5)
    pick = [corpus.index["missing"], corpus.good[0], corpus.index["truncated_jpeg"]]
    dl = torch.utils.data.DataLoader(torch.utils.data.Subset(data, pick), batch_size=3, num_workers=1,
                                     collate_fn=list)
    (got,) = list(dl)
    assert [s["index"] for s in got] == pick
    assert "skipped" in got[0] and str(ds.file_path(pick[0])) in got[0]["skipped"]
    assert "skipped" not in got[1] and got[1]["masks"].shape[1:] == (SIZE, SIZE)
    assert corpus.bad_images[pick[2]] in got[2]["skipped"]
