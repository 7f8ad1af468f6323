# The seed's OC&P row: Mask R-CNN R50-FPN 1x on COCO persons, OC&P with geometric and image jitter.
_base_ = ["mmdet::_base_/models/mask-rcnn_r50_fpn.py", "mmdet::_base_/schedules/schedule_1x.py",
          "mmdet::_base_/default_runtime.py", "../_base_/coco_person_ocp.py"]
model = dict(roi_head=dict(bbox_head=dict(num_classes=1), mask_head=dict(num_classes=1)))
# The seed's schedule (its Mask R-CNN configs, mmdet 2.x): SGD lr 0.0125 for a total batch of 8 (2 images x 4 GPUs),
# momentum 0.9, weight decay 4e-5; linear warm-up over 500 iterations from 0.067; 25 epochs of a 3x RepeatDataset
# with steps at epochs 22 and 24, i.e. 75 passes over the data with steps at 66 and 72 -- written here as 75 epochs
# (a RepeatDataset would hide the dataset from --dali). For another total batch,
# --cfg-options auto_scale_lr.enable=True rescales the rate linearly. Left as they are: the seed trains from scratch with SyncBN in backbone, neck and heads; these
# configs keep mmdet's R50 (frozen BN, ImageNet weights with --pretrained) and validate every 3 epochs.
optim_wrapper = dict(optimizer=dict(type="SGD", lr=0.0125, momentum=0.9, weight_decay=4e-5))
param_scheduler = [
    dict(type="LinearLR", start_factor=0.067, by_epoch=False, begin=0, end=500),
    dict(type="MultiStepLR", by_epoch=True, begin=0, end=75, milestones=[66, 72], gamma=0.1),
]
train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=75, val_interval=3)
auto_scale_lr = dict(enable=False, base_batch_size=8)
