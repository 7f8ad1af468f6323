# Mask2Former Swin-S without copy-paste (prob=0).
_base_ = ["./mask2former_swin-s_ocp_coco-person.py"]
train_dataloader = dict(dataset=dict(pipeline=[dict(type="OcclusionCopyPaste", preset="ocp", prob=0.0, seed=0),
                                               dict(type="PackDetInputs")]))
