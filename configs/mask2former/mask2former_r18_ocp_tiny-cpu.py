# Small CPU config for tests: Mask2Former with a ResNet-18 from scratch, small head, 256 px LSJ.
_base_ = ["./mask2former_swin-s_ocp_coco-person.py"]
image_size = (256, 256)
d = 64
model = dict(
    backbone=dict(_delete_=True, type="ResNet", depth=18, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=-1,
                  norm_cfg=dict(type="BN", requires_grad=True), norm_eval=True, style="pytorch", init_cfg=None),
    data_preprocessor=dict(batch_augments=[dict(type="BatchFixedSizePad", size=image_size, img_pad_value=0,
                                                pad_mask=True, mask_pad_value=0, pad_seg=False)]),
    panoptic_head=dict(
        in_channels=[64, 128, 256, 512], feat_channels=d, out_channels=d, num_queries=10, num_transformer_feat_level=3,
        pixel_decoder=dict(encoder=dict(num_layers=1, layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=d, num_heads=4), ffn_cfg=dict(embed_dims=d, feedforward_channels=128))),
            positional_encoding=dict(num_feats=d // 2)),
        positional_encoding=dict(num_feats=d // 2),
        transformer_decoder=dict(num_layers=2, layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=d, num_heads=4), cross_attn_cfg=dict(embed_dims=d, num_heads=4),
            ffn_cfg=dict(embed_dims=d, feedforward_channels=128))),
        train_cfg=dict(num_points=1024)),
    train_cfg=dict(num_points=1024))
# the Swin-S config's LSJ steps at 256 px, with a narrower scale range for the small model
lsj_at_size = dict(RandomResize=dict(scale=image_size, ratio_range=(0.5, 1.5)), RandomCrop=dict(crop_size=image_size),
                   Pad=dict(size=image_size))
lsj_pipeline = [dict(step, **lsj_at_size.get(step.type, {})) for step in _base_.lsj_pipeline]
# timeout=0: torch's single-process loader (num_workers=0) refuses any other
train_dataloader = dict(num_workers=0, persistent_workers=False, timeout=0,
                        dataset=dict(dataset=dict(pipeline=lsj_pipeline)))
train_cfg = dict(_delete_=True, type="IterBasedTrainLoop", max_iters=3)
param_scheduler = []
optim_wrapper = dict(_delete_=True, type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-4, weight_decay=0.05),
                     clip_grad=dict(max_norm=0.01, norm_type=2))
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(by_epoch=False, interval=3))
log_processor = dict(by_epoch=False)
ocp_dali = dict(py_num_workers=1, num_threads=1)
custom_hooks = [dict(type="OCPEpochHook"), dict(type="DataFingerprintHook")]
val_cfg = val_dataloader = val_evaluator = test_cfg = test_dataloader = test_evaluator = None  # no validation
