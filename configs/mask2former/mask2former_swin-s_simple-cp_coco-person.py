# Mask2Former Swin-S with Simple Copy-Paste (mmdet CopyPaste semantics through OcclusionCopyPaste).
_base_ = ["./mask2former_swin-s_ocp_coco-person.py"]
train_dataloader = dict(dataset=dict(pipeline=[dict(type="OcclusionCopyPaste", preset="simple", seed=0),
                                               dict(type="PackDetInputs")]))
