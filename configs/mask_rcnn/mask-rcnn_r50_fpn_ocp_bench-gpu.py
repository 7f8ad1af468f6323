# Loader benchmark on one GPU (benchmarks/aug_throughput.py --train): the R50 OC&P config as a short iteration-based
# run, backbone from scratch (GPU machines here are offline: no ImageNet weights), no validation.
_base_ = ["./mask-rcnn_r50_fpn_ocp_coco-person.py"]
model = dict(backbone=dict(init_cfg=None))
train_cfg = dict(_delete_=True, type="IterBasedTrainLoop", max_iters=40, val_interval=100000)
param_scheduler = []
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(by_epoch=False, interval=100000))
log_processor = dict(by_epoch=False)
val_cfg = None
val_dataloader = None
val_evaluator = None
test_cfg = None
test_dataloader = None
test_evaluator = None
