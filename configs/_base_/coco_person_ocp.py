# COCO persons with OC&P (CPU path: mmdet pipeline with OcclusionCopyPaste), in the seed's Mask R-CNN order: the
# destination is resized by the multi-scale keep-ratio resize (RandomResize, 1333 x 640..800) before the transform,
# the sources come raw (OCPMixDataset loads them through load_pipeline, which does not resize), RandomFlip after it.
# --dali reads the same order from this pipeline (trainers/train_mmdet.py, ocp_dali.mmdet.loader.pipeline_geometry).
custom_imports = dict(imports=["ocp_dali.mmdet"], allow_failed_imports=False)
data_root = "../shared/data/coco_mini/"
train_ann = "annotations/person_keypoints_train2017.json"
train_img = "train2017/"
val_ann = "annotations/person_keypoints_val2017.json"
val_img = "val2017/"
image_scale = (1333, 800)
train_scales = [(1333, 640), (1333, 800)]  # the seed's Resize(img_scale=[(1333, 640), (1333, 800)], 'range')
metainfo = dict(classes=("person",))

load_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True, poly2mask=True),
]
destination_resize = dict(type="RandomResize", scale=train_scales, keep_ratio=True)  # the destination only
# timeout: seconds a batch may take before the run fails with "DataLoader timed out" (a hung worker would block
# training for ever otherwise; a dead worker is reported at once). It needs num_workers > 0: set 0 with 0 workers.
train_dataloader = dict(
    batch_size=2, num_workers=2, persistent_workers=True, timeout=600,
    collate_fn=dict(type="ocp_collate"),  # leaves out (and lists) images OCPMixDataset could not use
    sampler=dict(type="DefaultSampler", shuffle=True),
    batch_sampler=dict(type="AspectRatioBatchSampler"),
    dataset=dict(
        type="OCPMixDataset",
        dataset=dict(type="OCPCocoDataset", data_root=data_root, ann_file=train_ann, data_prefix=dict(img=train_img),
                     metainfo=metainfo, filter_cfg=dict(filter_empty_gt=True, min_size=32), pipeline=load_pipeline),
        # OC&P's settings: in its entry here and nowhere else (both paths read it), e.g.
        # --cfg-options train_dataloader.dataset.pipeline.1.basket_size=3
        pipeline=[destination_resize, dict(type="OcclusionCopyPaste", preset="ocp", seed=0),
                  dict(type="RandomFlip", prob=0.5), dict(type="PackDetInputs")]))
val_dataloader = dict(
    batch_size=1, num_workers=1, persistent_workers=False, drop_last=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(type="CocoDataset", data_root=data_root, ann_file=val_ann, data_prefix=dict(img=val_img),
                 metainfo=metainfo, test_mode=True,
                 pipeline=[dict(type="LoadImageFromFile"), dict(type="Resize", scale=image_scale, keep_ratio=True),
                           dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
                           dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape",
                                                                 "scale_factor"))]))
test_dataloader = val_dataloader
val_evaluator = dict(type="CocoMetric", ann_file=data_root + val_ann, metric=["bbox", "segm"], format_only=False)
test_evaluator = val_evaluator
custom_hooks = [dict(type="OCPEpochHook")]
randomness = dict(seed=0, diff_rank_seed=True)  # the sampler order and the model's own draws; OC&P has its own seed
# --dali: trainers/train_mmdet.py puts a DALIDetDataLoader in place of train_dataloader: the same dataset, batch size,
# OcclusionCopyPaste entry and geometry (read from the pipeline), with these settings (timeout: seconds a pipeline
# run may take before a hung worker fails the run with WorkerError; placement="paste_first" for ocp_dali's variant;
# targets: what Mask R-CNN trains on, so the loader computes no amodal or occluder masks, rate, order or keypoints)
ocp_dali = dict(py_num_workers=4, num_threads=4, timeout=600, targets="visible")
