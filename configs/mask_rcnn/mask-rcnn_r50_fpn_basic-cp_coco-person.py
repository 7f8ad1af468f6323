# The seed's Basic C&P row.
_base_ = ["./mask-rcnn_r50_fpn_ocp_coco-person.py"]
ocp_transform = dict(type="OcclusionCopyPaste", preset="basic", seed=0)
train_dataloader = dict(dataset=dict(pipeline=[ocp_transform, dict(type="RandomFlip", prob=0.5),
                                               dict(type="PackDetInputs")]))
