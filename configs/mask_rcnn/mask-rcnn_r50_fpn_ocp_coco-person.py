# The seed's OC&P row: Mask R-CNN R50-FPN 1x on COCO persons, OC&P with geometric and image jitter.
_base_ = ["mmdet::_base_/models/mask-rcnn_r50_fpn.py", "mmdet::_base_/schedules/schedule_1x.py",
          "mmdet::_base_/default_runtime.py", "../_base_/coco_person_ocp.py"]
model = dict(roi_head=dict(bbox_head=dict(num_classes=1), mask_head=dict(num_classes=1)))
