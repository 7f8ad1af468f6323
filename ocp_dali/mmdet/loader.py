"""The DALI loader as an MMEngine ``train_dataloader``, and a mask structure that stays on the loader's device."""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import HorizontalBoxes
from mmdet.structures.mask import BaseInstanceMasks
from mmengine.structures import InstanceData

from ocp_dali.config import OCPConfig
from ocp_dali.torch import OCPLoader


class TensorMasks(BaseInstanceMasks):
    """Instance masks as an (N, H, W) torch tensor on any device: what ``BitmapMasks`` offers Mask R-CNN's mask
    targets (``crop_and_resize``) and Mask2Former (``to_tensor``, ``pad``), without a host copy of the masks.

    Geometric transforms are not offered: on the DALI path, geometry happens in the pipeline.
    """

    def __init__(self, masks: torch.Tensor, height: int, width: int) -> None:
        self.masks = masks.reshape(-1, height, width)
        self.height, self.width = int(height), int(width)

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def __getitem__(self, index) -> "TensorMasks":
        if isinstance(index, np.ndarray):
            index = torch.as_tensor(index, device=self.masks.device)
        return TensorMasks(self.masks[index], self.height, self.width)

    def __repr__(self) -> str:
        return f"TensorMasks(num_masks={len(self)}, height={self.height}, width={self.width}, device={self.masks.device})"

    def to_tensor(self, dtype: torch.dtype, device) -> torch.Tensor:
        return self.masks.to(device=device, dtype=dtype)

    def to_ndarray(self) -> np.ndarray:
        return self.masks.cpu().numpy()

    @property
    def areas(self) -> np.ndarray:
        return self.masks.flatten(1).sum(1).cpu().numpy()

    def pad(self, out_shape, pad_val: int = 0) -> "TensorMasks":
        h, w = int(out_shape[0]), int(out_shape[1])
        out = self.masks.new_full((len(self), h, w), pad_val)
        out[:, :self.height, :self.width] = self.masks
        return TensorMasks(out, h, w)

    def crop_and_resize(self, bboxes, out_shape, inds, device="cpu", interpolation="bilinear", binarize=True):
        """RoIAlign crops of the masks ``inds`` in ``bboxes`` (as ``BitmapMasks.crop_and_resize``), on the masks'
        device."""
        from mmcv.ops import roi_align

        out_h, out_w = out_shape
        dev = self.masks.device
        if len(self) == 0 or len(bboxes) == 0:
            return TensorMasks(torch.zeros((0, out_h, out_w), dtype=torch.bool, device=dev), out_h, out_w)
        boxes = torch.as_tensor(np.asarray(bboxes), dtype=torch.float32, device=dev)
        idx = torch.as_tensor(np.asarray(inds), dtype=torch.long, device=dev)
        rois = torch.cat([torch.arange(len(boxes), device=dev, dtype=torch.float32)[:, None], boxes], dim=1)
        crops = roi_align(self.masks.index_select(0, idx).float()[:, None], rois, (out_h, out_w), 1.0, 0, "avg",
                          True).squeeze(1)
        return TensorMasks(crops >= 0.5 if binarize else crops, out_h, out_w)

    def get_bboxes(self, dst_type=HorizontalBoxes):
        from ocp_dali.masks import tight_boxes

        return dst_type(torch.as_tensor(tight_boxes(self.to_ndarray().astype(bool)), dtype=torch.float32))

    @classmethod
    def cat(cls, masks: list["TensorMasks"]) -> "TensorMasks":
        if not masks:
            raise ValueError("TensorMasks.cat needs at least one TensorMasks")
        return cls(torch.cat([m.masks for m in masks]), masks[0].height, masks[0].width)

    def _geometry(self, *args: Any, **kwargs: Any):
        raise NotImplementedError("TensorMasks: geometric transforms happen in the DALI pipeline, not in mmdet")

    rescale = resize = flip = crop = expand = translate = shear = rotate = _geometry


class DALIDetDataLoader:
    """``OCPLoader`` batches as MMEngine expects them: ``dict(inputs=[(3, H, W) uint8 BGR], data_samples=[...])``.

    Each ``DetDataSample`` has ``gt_instances`` (``bboxes`` HorizontalBoxes, ``labels`` 0-based class indices,
    ``masks`` TensorMasks on the pipeline's device; plus ``occlusion_rate`` and ``pasted``) and the metainfo
    mmdet's models read (img_id, img_path, ori_shape, img_shape, pad_shape, scale_factor, flip). ``set_epoch`` and
    ``len`` as a torch DataLoader with a sampler. ``timeout``: as ``OCPLoader``'s (a dead or hung worker raises
    ``ocp_dali.workers.WorkerError``).
    """

    def __init__(self, dataset, cfg: OCPConfig, *, device: str = "cpu", batch_size: int = 2,
                 output_size: int = 1024, seed: int = 0, py_num_workers: int = 2, num_threads: int = 2,
                 lsj: bool = True, shard_id: int | None = None, num_shards: int | None = None,
                 timeout: float | None = 600.0) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.output_size = output_size
        self.loader = OCPLoader(dataset, cfg, device=device, batch_size=batch_size, output_size=output_size,
                                seed=seed, py_num_workers=py_num_workers, num_threads=num_threads, lsj=lsj,
                                geometry=True, normalize=False,  # mmdet's data preprocessor normalises
                                shard_id=shard_id, num_shards=num_shards, timeout=timeout)
        cat_ids = list(getattr(dataset, "cat_ids", [1]))
        self._label_of = {c: i for i, c in enumerate(cat_ids)}
        self.metainfo = dict(classes=tuple(getattr(dataset, "classes", ("person",))))

    # what MMEngine's loops and hooks look for on a DataLoader
    @property
    def sampler(self) -> "DALIDetDataLoader":
        return self

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict]:
        for batch in self.loader:
            yield self._to_mmdet(batch)

    def _to_mmdet(self, batch: dict) -> dict:
        inputs, samples = [], []
        s = self.output_size
        for k, index in enumerate(batch["indices"]):
            img = batch["images"][k]
            if img.dtype != torch.uint8:
                raise ValueError("DALIDetDataLoader needs un-normalised uint8 images")
            if img.shape[-1] == 3:  # un-normalised pipeline output is HWC
                img = img.permute(2, 0, 1)
            inputs.append(img.flip(0))  # RGB -> BGR: mmdet's preprocessors expect BGR (bgr_to_rgb=True)
            labels = torch.as_tensor([self._label_of[int(c)] for c in batch["labels"][k].tolist()],
                                     dtype=torch.long, device=img.device)
            gt = InstanceData(bboxes=HorizontalBoxes(batch["boxes"][k].to(img.device)), labels=labels,
                              masks=TensorMasks(batch["masks"][k], s, s),
                              occlusion_rate=batch["occlusion_rate"][k], pasted=batch["pasted"][k])
            meta = dict(img_id=int(batch["image_ids"][k]), img_path=str(index), ori_shape=(s, s), img_shape=(s, s),
                        pad_shape=(s, s), scale_factor=(1.0, 1.0), flip=False, flip_direction=None)
            ds = DetDataSample(metainfo=meta)
            ds.gt_instances = gt
            ds.ignored_instances = InstanceData(bboxes=HorizontalBoxes(torch.zeros((0, 4), device=img.device)),
                                                labels=torch.zeros(0, dtype=torch.long, device=img.device))
            samples.append(ds)
        return dict(inputs=inputs, data_samples=samples)

    def close(self) -> None:
        self.loader.close()
