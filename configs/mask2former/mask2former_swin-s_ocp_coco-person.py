# The seed's Mask2Former row: Swin-S, LSJ to 1024 on destination and sources, then OC&P (mmdet pipeline, CPU path).
# Schedule: mmdet's Swin-S LSJ recipe as it is (368,750 iterations, about 50 epochs of COCO, at a total batch of 16 =
# 8 GPUs x 2; AdamW lr 1e-4, weight decay 0.05, steps at 327,778 and 355,092). The seed's Mask2Former schedule file
# was not available here, so it is not translated: compare it before a paper-comparable run. On coco_mini (a few
# hundred images) these iterations are many more passes than on COCO: set train_cfg.max_iters for a short run.
_base_ = ["mmdet::mask2former/mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco.py"]
custom_imports = dict(imports=["ocp_dali.mmdet"], allow_failed_imports=False)
data_root = "../shared/data/coco_mini/"
image_size = (1024, 1024)
num_classes = 1
model = dict(
    data_preprocessor=dict(batch_augments=[dict(type="BatchFixedSizePad", size=image_size, img_pad_value=0,
                                                pad_mask=True, mask_pad_value=0, pad_seg=False)]),
    panoptic_head=dict(num_things_classes=num_classes, num_stuff_classes=0,
                       loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])),
    panoptic_fusion_head=dict(num_things_classes=num_classes, num_stuff_classes=0))
lsj_pipeline = [
    dict(type="LoadImageFromFile", to_float32=True),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True, poly2mask=True),
    dict(type="RandomFlip", prob=0.5),
    dict(type="RandomResize", scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type="RandomCrop", crop_size=image_size, crop_type="absolute", recompute_bbox=True,
         allow_negative_crop=True),
    dict(type="FilterAnnotations", min_gt_bbox_wh=(1e-5, 1e-5), by_mask=True),
    dict(type="Pad", size=image_size, pad_val=dict(img=0)),
]
train_dataloader = dict(  # timeout: see configs/_base_/coco_person_ocp.py
    _delete_=True, batch_size=2, num_workers=2, persistent_workers=True, timeout=600,
    collate_fn=dict(type="ocp_collate"),  # leaves out (and lists) images OCPMixDataset could not use
    sampler=dict(type="DefaultSampler", shuffle=True),
    dataset=dict(
        type="OCPMixDataset",
        dataset=dict(type="OCPCocoDataset", data_root=data_root, ann_file="annotations/person_keypoints_train2017.json",
                     data_prefix=dict(img="train2017/"), metainfo=dict(classes=("person",)),
                     filter_cfg=dict(filter_empty_gt=True, min_size=32), pipeline=lsj_pipeline),
        # OC&P's settings: here and nowhere else (both paths read this entry), e.g.
        # --cfg-options train_dataloader.dataset.pipeline.0.basket_size=3
        pipeline=[dict(type="OcclusionCopyPaste", preset="ocp", seed=0), dict(type="PackDetInputs")]))
val_dataloader = dict(dataset=dict(data_root=data_root, ann_file="annotations/person_keypoints_val2017.json",
                                   data_prefix=dict(img="val2017/"), metainfo=dict(classes=("person",))))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + "annotations/person_keypoints_val2017.json")
test_evaluator = val_evaluator
custom_hooks = [dict(type="OCPEpochHook")]
randomness = dict(seed=0, diff_rank_seed=True)
# --dali: geometry read from lsj_pipeline; targets: what Mask2Former trains on (visible masks, boxes, labels)
ocp_dali = dict(py_num_workers=4, num_threads=4, timeout=600, targets="visible")
