# The seed's Basic C&P row.
_base_ = ["./mask-rcnn_r50_fpn_ocp_coco-person.py"]
train_dataloader = dict(dataset=dict(pipeline=[_base_.destination_resize,
                                               dict(type="OcclusionCopyPaste", preset="basic", seed=0),
                                               dict(type="RandomFlip", prob=0.5), dict(type="PackDetInputs")]))
