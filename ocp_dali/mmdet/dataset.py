"""``OCPCocoDataset``: mmdet's data list from ``CocoInstances``, so the mmdet CPU path parses COCO with the same
checks (counted, logged skips) as the DALI path, instead of pycocotools' ``KeyError`` on a malformed annotation."""
from __future__ import annotations

from mmdet.datasets import BaseDetDataset
from mmdet.registry import DATASETS
from pycocotools import mask as mask_utils

from ocp_dali.data.coco import CocoInstances


def _rle_str(rle: dict) -> dict:
    """Compressed RLE with ``str`` counts: mmdet's ``LoadAnnotations`` takes a dict mask only with list or str
    counts (bytes would turn the instance into an ignored empty polygon)."""
    counts = rle["counts"]
    return dict(size=list(rle["size"]), counts=counts.decode() if isinstance(counts, bytes) else counts)


@DATASETS.register_module()
class OCPCocoDataset(BaseDetDataset):
    """A COCO json as mmdet data infos: ``img_path``, ``img_id``, ``width``, ``height`` and ``instances`` (``bbox``
    xyxy: the tight box of the mask; ``bbox_label``: index in ``metainfo["classes"]``; ``mask``: RLE;
    ``ignore_flag``: 1 for crowd regions). Annotations that cannot make a mask are skipped by ``CocoInstances``
    (logged, listed in ``self.instances_of.skips``). ``filter_cfg`` (training only): ``filter_empty_gt`` drops images
    without a non-crowd annotation of the classes, ``min_size`` images whose shorter side is below it, as mmdet's
    ``CocoDataset`` does; ``CocoInstances`` applies it, so ``--dali`` trains on the same images.
    """

    METAINFO = {"classes": ("person",)}

    def load_data_list(self) -> list[dict]:
        f = {} if self.test_mode or not self.filter_cfg else self.filter_cfg  # one rule: CocoInstances applies it
        ds = CocoInstances(self.ann_file, self.data_prefix.get("img", ""), classes=list(self.metainfo["classes"]),
                           filter_empty_gt=bool(f.get("filter_empty_gt", False)), min_size=int(f.get("min_size", 0)))
        self.instances_of = ds
        label_of = {cid: k for k, cid in enumerate(ds.cat_ids)}
        out = []
        for i in range(len(ds)):
            a, meta = ds.instances(i), ds.meta(i)
            instances = [dict(bbox=[float(v) for v in box], bbox_label=label_of[int(lab)], mask=_rle_str(rle),
                              ignore_flag=0) for box, lab, rle in zip(a.boxes, a.labels, a.rles)]
            for rle in a.crowd_rles:
                x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
                instances.append(dict(bbox=[x, y, x + w, y + h], bbox_label=0, mask=_rle_str(rle), ignore_flag=1))
            out.append(dict(img_path=str(ds.file_path(i)), img_id=int(ds.img_ids[i]), width=meta.width,
                            height=meta.height, instances=instances))
        return out

    def filter_data(self) -> list[dict]:
        """The data list as loaded: ``filter_cfg`` was applied by ``CocoInstances`` (the rule the DALI path uses)."""
        return self.data_list
