# Small CPU config for tests: the bench config's short run (iteration-based, no validation) with a ResNet-18 from
# scratch at 256 px, a handful of iterations.
_base_ = ["./mask-rcnn_r50_fpn_ocp_bench-gpu.py"]
image_scale = (256, 256)
model = dict(
    backbone=dict(depth=18, init_cfg=None, norm_cfg=dict(type="BN", requires_grad=True)),
    neck=dict(in_channels=[64, 128, 256, 512]),
    train_cfg=dict(rpn=dict(sampler=dict(num=64)), rcnn=dict(sampler=dict(num=64))))
# the seed's order at a small scale: the destination resized (short edge 192..256, long at most 256), sources raw
small_resize = dict(type="RandomResize", scale=[(256, 192), (256, 256)], keep_ratio=True)
# timeout=0: torch's single-process loader (num_workers=0) refuses any other
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, timeout=0,
                        dataset=dict(pipeline=[small_resize] + _base_.train_dataloader.dataset.pipeline[1:]))
train_cfg = dict(max_iters=4)
optim_wrapper = dict(optimizer=dict(lr=0.01))
default_hooks = dict(checkpoint=dict(interval=2))
ocp_dali = dict(py_num_workers=1, num_threads=1)
custom_hooks = [dict(type="OCPEpochHook"), dict(type="DataFingerprintHook")]
