# The seed's vanilla row: no copy-paste (prob=0: the transform returns every sample unchanged).
_base_ = ["./mask-rcnn_r50_fpn_ocp_coco-person.py"]
train_dataloader = dict(dataset=dict(pipeline=[_base_.destination_resize,
                                               dict(type="OcclusionCopyPaste", preset="ocp", prob=0.0, seed=0),
                                               dict(type="RandomFlip", prob=0.5), dict(type="PackDetInputs")]))
