"""mmdet's ``filter_cfg`` is one rule (``CocoInstances``) on every path: images without a person, or smaller than
``min_size``, are neither destinations nor paste sources, on the mmdet CPU path and with ``--dali`` alike."""
import pytest

from conftest import data_path
from ocp_dali import CocoInstances, OCPConfig, augment


@pytest.fixture(scope="module")
def val_json():
    return (data_path("coco_mini", "annotations", "instances_val2017.json"), data_path("coco_mini", "val2017"))


def test_filter_empty_gt_keeps_exactly_the_images_with_a_person(val_json):
    ann, img = val_json
    every = CocoInstances(ann, img, classes=["person"])
    kept = CocoInstances(ann, img, classes=["person"], filter_empty_gt=True)
    with_person = [every.img_ids[i] for i in range(len(every)) if len(every.meta(i).labels) > 0]
    assert 0 < len(kept) < len(every)
    assert kept.img_ids == with_person
    # baskets draw from dataset indices, so a filtered image can never be a paste source
    cfg = OCPConfig.ocp(prob=1.0, basket_size=3)
    for index in range(len(kept)):
        out = augment(kept, index, cfg=cfg)
        assert out.image_id in with_person
    tall = CocoInstances(ann, img, classes=["person"], filter_empty_gt=True, min_size=10_000)
    assert len(tall) == 0


def test_dali_loader_and_mmdet_dataset_train_on_the_same_images(val_json):
    pytest.importorskip("mmdet", reason="mmdet is not installed")
    pytest.importorskip("nvidia.dali", reason="nvidia-dali is not installed")
    from ocp_dali.mmdet import OCPCocoDataset
    from ocp_dali.mmdet.loader import DALIDetDataLoader

    ann, img = val_json
    ds_cfg = dict(type="OCPCocoDataset", ann_file=str(ann), data_prefix=dict(img=str(img) + "/"),
                  metainfo=dict(classes=("person",)), filter_cfg=dict(filter_empty_gt=True, min_size=32),
                  pipeline=[])
    mmdet_ds = OCPCocoDataset(**{k: v for k, v in ds_cfg.items() if k != "type"})
    loader = DALIDetDataLoader.from_cfg(dict(dataset=ds_cfg, ocp=dict(preset="ocp", seed=0), batch_size=2,
                                             device="cpu", geometry=dict(kind="lsj", size=(256, 256))))
    ids = {mmdet_ds.get_data_info(i)["img_id"] for i in range(len(mmdet_ds))}
    assert len(ids) > 0 and set(loader.dataset.source.img_ids) == ids
