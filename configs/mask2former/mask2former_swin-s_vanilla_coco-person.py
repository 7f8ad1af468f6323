# Mask2Former Swin-S without copy-paste (prob=0).
_base_ = ["./mask2former_swin-s_ocp_coco-person.py"]
ocp_transform = dict(type="OcclusionCopyPaste", preset="ocp", prob=0.0, seed=0)
train_dataloader = dict(dataset=dict(pipeline=[ocp_transform, dict(type="PackDetInputs")]))
