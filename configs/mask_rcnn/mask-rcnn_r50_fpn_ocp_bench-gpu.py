# Loader benchmark on one GPU (benchmarks/aug_throughput.py --train): the R50 OC&P config as a short iteration-based
# run, backbone from scratch (GPU machines here are offline: no ImageNet weights), no validation. The tiny CPU config
# builds on it.
_base_ = ["./mask-rcnn_r50_fpn_ocp_coco-person.py"]
model = dict(backbone=dict(init_cfg=None))
train_cfg = dict(_delete_=True, type="IterBasedTrainLoop", max_iters=40)
param_scheduler = []
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(by_epoch=False, interval=100000))
log_processor = dict(by_epoch=False)
val_cfg = val_dataloader = val_evaluator = test_cfg = test_dataloader = test_evaluator = None  # no validation
