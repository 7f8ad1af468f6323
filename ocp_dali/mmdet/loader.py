"""The DALI loader as an MMEngine ``train_dataloader`` (``DALIDetDataLoader``, built from a config by ``OCPRunner``),
and a mask structure that stays on the loader's device."""
from __future__ import annotations

import os.path as osp
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import HorizontalBoxes
from mmdet.structures.mask import BaseInstanceMasks
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner
from mmengine.structures import InstanceData

from ocp_dali.config import OCPConfig
from ocp_dali.data.coco import CocoInstances
from ocp_dali.lsj import Geometry
from ocp_dali.mmdet.transforms import OcclusionCopyPaste
from ocp_dali.targets import Targets
from ocp_dali.torch import OCPLoader

DALI_LOADER = "DALIDetDataLoader"  # the ``type`` of a train_dataloader config that OCPRunner builds as one


RESIZES = ("RandomResize", "Resize")


def _scale_pairs(scale: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    """mmdet's ``scale`` of a resize (one ``(w, h)`` pair or a list of two) as two pairs."""
    pairs = [tuple(scale)] if isinstance(scale[0], (int, float)) else [tuple(p) for p in scale]
    if len(pairs) == 1:
        pairs *= 2
    if len(pairs) != 2:
        raise ValueError(f"a resize scale of one or two (w, h) pairs is expected, got {scale}")
    return (int(pairs[0][0]), int(pairs[0][1])), (int(pairs[1][0]), int(pairs[1][1]))


def pipeline_geometry(dataset: dict, placement: str = "seed") -> Geometry:
    """The geometry an ``OCPMixDataset`` config trains on, for the DALI path (``lsj.Geometry``).

    A resize before ``OcclusionCopyPaste`` in the outer pipeline (the destination only: the seed's Mask R-CNN
    order) gives ``Geometry.resize`` with its scales; an inner pipeline with ``RandomResize(ratio_range)`` and
    ``RandomCrop`` (every image: the seed's Mask2Former order) gives ``Geometry.lsj`` at the crop size.
    ``placement``: ``"seed"`` or ``"paste_first"`` (``ocp_dali`` settings of the config).

    Raises:
        ValueError: naming the entry, for a pipeline that resizes every image with a plain resize (sources would be
            resized too, which the DALI path does not do), or that has no train resize at all.
    """
    outer = list(dataset.get("pipeline", []))
    inner = list(dataset.get("dataset", {}).get("pipeline", []))
    types = [t.get("type") for t in outer]
    if "OcclusionCopyPaste" not in types:
        raise ValueError("the dataset's pipeline has no OcclusionCopyPaste entry")
    before = [t for t in outer[:types.index("OcclusionCopyPaste")] if t.get("type") in RESIZES]
    if before:
        return Geometry.resize(_scale_pairs(before[-1]["scale"]), placement=placement)  # type: ignore[arg-type]
    resize = [t for t in inner if t.get("type") in RESIZES]
    crop = [t for t in inner if t.get("type") == "RandomCrop"]
    if resize and "ratio_range" in resize[-1] and crop:
        h, w = crop[-1]["crop_size"]  # mmdet's crop_size is (h, w)
        return Geometry.lsj((int(h), int(w)), tuple(resize[-1]["ratio_range"]),  # type: ignore[arg-type]
                            placement=placement)  # type: ignore[arg-type]
    if resize:
        raise ValueError(f"--dali: the inner pipeline resizes every image ({resize[-1]}), sources included; put the "
                         "resize before OcclusionCopyPaste in the outer pipeline (the seed's Mask R-CNN order)")
    raise ValueError("--dali: no train resize found in the dataset's pipelines")


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
        return (f"TensorMasks(num_masks={len(self)}, height={self.height}, width={self.width}, "
                f"device={self.masks.device})")

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


class LoaderDataset:
    """What MMEngine reads from ``train_dataloader.dataset``: ``metainfo`` (saved in checkpoints as
    ``dataset_meta``, compared on resume, handed to the visualizer) and ``len``. ``source`` is the
    ``InstanceDataset`` the DALI pipeline reads."""

    def __init__(self, source, metainfo: dict) -> None:
        self.source = source
        self.metainfo = metainfo

    def __len__(self) -> int:
        return len(self.source)


class DALIDetDataLoader:
    """``OCPLoader`` batches as MMEngine expects them: ``dict(inputs=[(3, H, W) uint8 BGR], data_samples=[...])``.

    Each ``DetDataSample`` has ``gt_instances`` (``bboxes`` HorizontalBoxes, ``labels`` 0-based class indices,
    ``masks`` TensorMasks on the pipeline's device, ``pasted``; ``occlusion_rate`` when requested) and the metainfo
    mmdet's models read (img_id, img_path, ori_shape, img_shape, pad_shape, scale_factor, flip). ``set_epoch`` and
    ``len`` as a torch DataLoader with a sampler; ``dataset.metainfo`` (default: the dataset's ``classes``) as an
    mmdet dataset's, so checkpoints carry ``dataset_meta``. ``timeout``: as ``OCPLoader``'s (a dead or hung worker
    raises ``ocp_dali.workers.WorkerError``).

    Targets (``targets``; ``--dali`` passes a config's ``ocp_dali.targets``): ``"visible"`` is what mmdet's Mask
    R-CNN and Mask2Former train on (``gt_instances``: bboxes, labels, visible masks; ``["occlusion_rate"]`` adds
    ``gt_instances.occlusion_rate``; ``"all"`` computes every target, though the batch carries only these). The
    default is ``"visible"``; each config names its own.
    """

    def __init__(self, dataset, cfg: OCPConfig, *, geometry: Geometry | dict | None = None, device: str = "cpu",
                 batch_size: int = 2, seed: int = 0, py_num_workers: int = 2, num_threads: int = 2,
                 shard_id: int | None = None, num_shards: int | None = None, timeout: float | None = 600.0,
                 metainfo: dict | None = None, targets: Targets | Iterable[str] | str | None = "visible") -> None:
        classes = tuple(getattr(dataset, "classes", ("person",)))
        self.dataset = LoaderDataset(dataset, metainfo if metainfo is not None else dict(classes=classes))
        self.batch_size = batch_size
        # default: LSJ onto 1024² in the seed's placement (trainers/train_mmdet.py --dali passes the config's own)
        self.geometry = geometry if isinstance(geometry, Geometry) else Geometry(**(geometry or {}))
        self.loader = OCPLoader(dataset, cfg, device=device, batch_size=batch_size, seed=seed,
                                py_num_workers=py_num_workers, num_threads=num_threads, geometry=self.geometry,
                                normalize=False,  # mmdet's data preprocessor normalises
                                shard_id=shard_id, num_shards=num_shards, timeout=timeout,
                                targets=Targets.of(targets))
        cat_ids = list(getattr(dataset, "cat_ids", [1]))
        self._label_of = {c: i for i, c in enumerate(cat_ids)}

    @classmethod
    def from_cfg(cls, cfg: dict) -> "DALIDetDataLoader":
        """The loader a ``train_dataloader`` config of ``type="DALIDetDataLoader"`` describes.

        Keys: ``dataset`` (an mmdet COCO dataset config: ``data_root``, ``ann_file``, ``data_prefix.img``,
        ``metainfo.classes``, ``filter_cfg``), ``geometry`` (``lsj.Geometry`` fields: ``pipeline_geometry``),
        ``ocp`` (an ``OcclusionCopyPaste`` config: ``preset``, ``seed`` and ``OCPConfig`` fields, read by the
        transform itself so both paths parse it alike), ``batch_size``, ``device`` (``"auto"``,
        the default: ``"gpu"`` when CUDA is available) and the other keyword arguments of ``__init__``.
        """
        kw = dict(cfg)
        kw.pop("type", None)
        ds, ocp = kw.pop("dataset"), dict(kw.pop("ocp"))
        ocp.pop("type", None)
        transform = OcclusionCopyPaste(**ocp)
        root = ds.get("data_root", "") or ""
        classes = ds.get("metainfo", {}).get("classes")
        filter_cfg = ds.get("filter_cfg") or {}  # the CPU path's filter, so both paths train on the same images
        source = CocoInstances(osp.join(root, ds["ann_file"]), osp.join(root, ds.get("data_prefix", {}).get("img", "")),
                               classes=list(classes) if classes is not None else None,
                               filter_empty_gt=bool(filter_cfg.get("filter_empty_gt", False)),
                               min_size=int(filter_cfg.get("min_size", 0)))
        if kw.get("device", "auto") == "auto":
            kw["device"] = "gpu" if torch.cuda.is_available() else "cpu"
        return cls(source, transform.cfg, seed=transform.seed, **kw)

    def describe(self) -> str:
        """One line for the training log: device, workers, geometry, targets, batch size, shard, OC&P."""
        kw, src, g = self.loader.kw, self.dataset.source, self.geometry
        rate = ", occlusion_rate" if "occlusion_rate" in self.loader.targets.names else ""
        unused = sorted(self.loader.targets.names - {"occlusion_rate"})  # requested, computed, not handed on
        rate += f" (also computed, not handed on: {', '.join(unused)})" if unused else ""
        size = f"{g.size[1]}x{g.size[0]}"
        geometry = {"lsj": f"large-scale jitter (scale {g.ratio_range[0]}..{g.ratio_range[1]}), crop to {size}",
                    "fit": f"resize to fit {size}, pad to {size}",
                    "resize": f"multi-scale keep-ratio resize to {g.scales[0]}..{g.scales[1]}"}[g.kind]
        order = ("the seed's placement (destination geometry, then the paste"
                 + (", each source its own LSJ)" if g.kind == "lsj" else ", sources raw)")
                 if g.seed_order else "ocp_dali's paste_first placement (paste, then geometry)")
        geometry += f", flip p={g.flip_prob}; {order}"
        return (f"DALI loader: device {kw['device']}, {kw['py_num_workers']} worker processes, "
                f"{kw['num_threads']} threads; batch size {kw['batch_size']} per rank, shard {kw['shard_id']} of "
                f"{kw['num_shards']} ({len(self)} batches an epoch, {len(src)} images, classes "
                f"{list(self.dataset.metainfo.get('classes', ()))}); geometry: {geometry}; targets: bboxes, labels, "
                f"masks (TensorMasks on {kw['device']}), pasted{rate}; uint8 BGR images (the model's "
                f"data preprocessor normalises); OC&P seed {kw['seed']}: {self.loader.cfg}")

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
        for k, index in enumerate(batch["indices"]):
            img = batch["images"][k]
            if img.dtype != torch.uint8:
                raise ValueError("DALIDetDataLoader needs un-normalised uint8 images")
            if img.shape[-1] == 3:  # un-normalised pipeline output is HWC
                img = img.permute(2, 0, 1)
            h, w = int(img.shape[1]), int(img.shape[2])  # per sample: a multi-scale resize varies the size
            inputs.append(img.flip(0))  # RGB -> BGR: mmdet's preprocessors expect BGR (bgr_to_rgb=True)
            labels = torch.as_tensor([self._label_of[int(c)] for c in batch["labels"][k].tolist()],
                                     dtype=torch.long, device=img.device)
            gt = InstanceData(bboxes=HorizontalBoxes(batch["boxes"][k].to(img.device)), labels=labels,
                              masks=TensorMasks(batch["masks"][k], h, w), pasted=batch["pasted"][k])
            if "occlusion_rate" in batch:  # requested (``targets``)
                gt.occlusion_rate = batch["occlusion_rate"][k]
            meta = dict(img_id=int(batch["image_ids"][k]), img_path=str(index), ori_shape=(h, w), img_shape=(h, w),
                        pad_shape=(h, w), scale_factor=(1.0, 1.0), flip=False, flip_direction=None)
            ds = DetDataSample(metainfo=meta)
            ds.gt_instances = gt
            ds.ignored_instances = InstanceData(bboxes=HorizontalBoxes(torch.zeros((0, 4), device=img.device)),
                                                labels=torch.zeros(0, dtype=torch.long, device=img.device))
            samples.append(ds)
        return dict(inputs=inputs, data_samples=samples)

    def close(self) -> None:
        self.loader.close()


@RUNNERS.register_module()
class OCPRunner(Runner):
    """MMEngine's ``Runner``; its ``train_dataloader`` may also be a ``DALIDetDataLoader`` config
    (``type="DALIDetDataLoader"``, see ``DALIDetDataLoader.from_cfg``). The loader is built where MMEngine builds
    a DataLoader, when the training loop is: after the distributed setup, so it shards by the rank. Use with
    ``runner_type = "OCPRunner"`` (``trainers/train_mmdet.py --dali`` sets both)."""

    @staticmethod
    def build_dataloader(dataloader, seed: int | None = None, diff_rank_seed: bool = False):
        if isinstance(dataloader, dict) and dataloader.get("type") == DALI_LOADER:
            loader = DALIDetDataLoader.from_cfg(dataloader)
            print_log(loader.describe(), logger="current")
            return loader
        return Runner.build_dataloader(dataloader, seed=seed, diff_rank_seed=diff_rank_seed)
