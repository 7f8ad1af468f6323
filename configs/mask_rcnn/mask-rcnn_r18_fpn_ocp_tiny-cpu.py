# Small CPU config for tests: ResNet-18 from scratch, 256 px, a handful of iterations.
_base_ = ["./mask-rcnn_r50_fpn_ocp_coco-person.py"]
image_scale = (256, 256)
model = dict(
    backbone=dict(depth=18, init_cfg=None, norm_cfg=dict(type="BN", requires_grad=True)),
    neck=dict(in_channels=[64, 128, 256, 512]),
    train_cfg=dict(rpn=dict(sampler=dict(num=64)), rcnn=dict(sampler=dict(num=64))))
load_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", with_bbox=True, with_mask=True, poly2mask=True),
    dict(type="Resize", scale=image_scale, keep_ratio=True),
]
# timeout=0: torch's single-process loader (num_workers=0) refuses any other
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, timeout=0,
                        dataset=dict(dataset=dict(pipeline=load_pipeline)))
train_cfg = dict(_delete_=True, type="IterBasedTrainLoop", max_iters=4, val_interval=1000)
param_scheduler = []
optim_wrapper = dict(optimizer=dict(lr=0.01))
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(by_epoch=False, interval=2))
ocp_dali = dict(output_size=256, lsj=False, py_num_workers=1, num_threads=1)
log_processor = dict(by_epoch=False)
# no validation in the tiny runs (evaluation is tested on its own)
val_cfg = None
val_dataloader = None
val_evaluator = None
test_cfg = None
test_dataloader = None
test_evaluator = None
custom_hooks = [dict(type="OCPEpochHook"), dict(type="DataFingerprintHook")]
