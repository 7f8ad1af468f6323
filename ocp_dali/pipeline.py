"""The DALI graph: worker pool -> decode -> masks -> OC&P apply -> LSJ -> normalise, on GPU or on CPU.

The worker pool is a parallel ``external_source`` (spawned Python processes). For each batch of a shard's epoch the
workers read the encoded files and the annotations (RLE run counts, kilobytes), draw each sample's plan and LSJ
parameters from ``(seed, epoch, index)``, and hand bytes and numbers to DALI. DALI decodes the images ("mixed":
nvJPEG on the GPU; "cpu" otherwise); the masks and the OC&P apply step run as a ``python_function`` (CuPy kernels on
the GPU, the NumPy reference on the CPU), then the LSJ geometry, then normalisation. Variable instance counts stay
per-sample tensors: nothing is truncated or padded.

Outputs, in order (``OUTPUT_NAMES``): image (3, S, S) float32 normalised, masks (N, S, S) bool, amodal_masks,
occluder_masks, boxes (N, 4) float32, labels (N,) int64, occlusion_rate (N,) float32, order (N, N) bool, keypoints
(N, K, 3) float32 (K = 0 without keypoints), pasted (N,) bool, ann_ids (N,) int64, info (10,) int64 = (index, epoch,
image_id, pasted, skipped, dropped_existing + dropped_pasted, dropped_by_crop, skipped_annotations, stand_in_for,
dropped_sources).

Bad images never stop the graph: the workers probe every image they hand over (``dataset.probe``). The slot of an
image that cannot be used is filled by the next usable image in dataset order, augmented as itself, with
``stand_in_for`` = the bad image's index (-1 otherwise): batches keep their size (distributed ranks stay in step)
and the loader records the skip. Pastes from a source that cannot be used are left out of the plan
(``dropped_sources``), as ``augment`` does.
"""
from __future__ import annotations

import functools
import io
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ocp_dali.config import OCPConfig
from ocp_dali.data.base import InstanceDataset, sample_from_annotation
from ocp_dali.errors import DataError
from ocp_dali.lsj import LSJParams, apply_lsj, sample_lsj
from ocp_dali.plan import ImageMeta, pack_plan, sample_plan, sample_rng, unpack_plan
from ocp_dali.reference import apply_numpy
from ocp_dali.sample import Sample

log = logging.getLogger(__name__)

OUTPUT_NAMES = ("image", "masks", "amodal_masks", "occluder_masks", "boxes", "labels", "occlusion_rate", "order",
                "keypoints", "pasted", "ann_ids", "info")
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
_LSJ_FIELDS = 13


@functools.lru_cache(maxsize=1)
def _placeholder_png() -> np.ndarray:
    """A 1x1 PNG for unused source slots (a decoder always needs valid bytes); made once per process."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def decoder_bytes(dataset: InstanceDataset, index: int) -> tuple[np.ndarray | None, DataError | None]:
    """``(bytes for DALI's decoder, None)`` for a usable image (``imageio.bytes_for_decoder``: the file itself, or a
    PNG re-encoding of unusual formats), or ``(None, the DataError naming the file)`` for one that cannot be used
    (missing, bad header, truncated, not the json's size: ``dataset.probe``, no pixel decoding)."""
    from ocp_dali.data.imageio import bytes_for_decoder

    try:
        data = dataset.read_bytes(index)  # type: ignore[attr-defined]
        probe = getattr(dataset, "probe", None)
        if probe is None:
            return data, None
        file_path = getattr(dataset, "file_path", None)  # only for messages: no annotation record built for it
        path = str(file_path(index)) if file_path is not None else f"<image {index}>"
        return bytes_for_decoder(data, path, probe(index, data)), None
    except DataError as e:
        return None, e


def _pack_ann(ann: dict[str, Any]) -> np.ndarray:
    """An annotation record as uint8 bytes (npz) to travel through DALI."""
    buf = io.BytesIO()
    kp = ann["keypoints"]
    np.savez(buf, height=ann["height"], width=ann["width"], counts=ann["counts"], crowd_counts=ann["crowd_counts"],
             labels=ann["labels"], ann_ids=ann["ann_ids"],
             keypoints=np.zeros((0, 0, 3), np.float32) if kp is None else kp, has_kp=kp is not None,
             image_id=ann["image_id"], file_name=ann["file_name"],
             skipped=np.asarray([a for a, _ in ann.get("skipped", [])], dtype=np.int64))
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def _unpack_ann(blob: np.ndarray) -> dict[str, Any]:
    z = np.load(io.BytesIO(np.asarray(blob).tobytes()), allow_pickle=False)
    ann = {k: z[k] for k in z.files}
    ann["keypoints"] = ann["keypoints"] if bool(ann.pop("has_kp")) else None
    ann["file_name"] = str(ann["file_name"])
    ann["image_id"] = int(ann["image_id"])
    return ann


def pack_lsj(p: LSJParams) -> np.ndarray:
    return np.asarray([p.out_h, p.out_w, p.scale_x, p.scale_y, p.crop_x, p.crop_y, p.valid_w, p.valid_h, p.flip,
                       *p.inv_q16], dtype=np.float64)


def unpack_lsj(a: np.ndarray) -> LSJParams:
    a = np.asarray(a, dtype=np.float64)
    return LSJParams(int(a[0]), int(a[1]), float(a[2]), float(a[3]), int(a[4]), int(a[5]), int(a[6]), int(a[7]),
                     bool(a[8]), tuple(int(v) for v in a[9:15]))  # type: ignore[arg-type]


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The dataset order of one epoch (a permutation drawn from ``(seed, epoch)`` when shuffling)."""
    if not shuffle:
        return np.arange(n)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(epoch), 2**31]))).permutation(n)


def shard_indices(n: int, seed: int, epoch: int, shuffle: bool, shard_id: int, num_shards: int) -> np.ndarray:
    """This shard's dataset indices for the epoch: contiguous parts of the epoch order, each index in exactly one
    shard (shard sizes differ by at most one)."""
    return np.array_split(epoch_order(n, seed, epoch, shuffle), num_shards)[shard_id]


@dataclass
class EpochSource:
    """The worker pool's callback (picklable: spawned workers get a copy).

    Called with DALI's ``BatchInfo``; returns one batch: per sample the destination's encoded bytes and annotation
    record, ``slots`` source images (bytes and records; unused slots hold a 1x1 placeholder), the packed plan, the
    packed LSJ parameters, and ``(index, epoch, stand_in_for, dropped_sources)`` (see the module docstring). The
    last batch of an epoch may be short; after it, ``StopIteration`` ends the epoch.

    ``start_iteration``: the first DALI epoch starts at this batch (resuming mid-epoch). ``bad``: dataset indices of
    images that passed the probe but failed in the decoder (the loader fills it and rebuilds); they are treated as
    unusable.
    """

    dataset: InstanceDataset
    cfg: OCPConfig
    seed: int
    batch_size: int
    out_size: tuple[int, int]
    lsj: bool = True
    geometry: bool = True
    shuffle: bool = True
    shard_id: int = 0
    num_shards: int = 1
    epoch_offset: int = 0
    start_iteration: int = 0
    bad: frozenset[int] = frozenset()

    @property
    def slots(self) -> int:
        return 0 if self.cfg.source == "batch" else self.cfg.basket_size

    def indices(self, epoch: int) -> np.ndarray:
        return shard_indices(len(self.dataset), self.seed, epoch, self.shuffle, self.shard_id, self.num_shards)

    def batch_indices(self, epoch: int, iteration: int) -> np.ndarray:
        idx = self.indices(epoch)
        return idx[iteration * self.batch_size:(iteration + 1) * self.batch_size]

    def iteration(self, info) -> int:
        """The epoch's batch number of DALI's ``BatchInfo`` (the first epoch may resume mid-way)."""
        return int(info.iteration) + (self.start_iteration if int(info.epoch_idx) == 0 else 0)

    def __call__(self, info) -> tuple[list[np.ndarray], ...]:
        epoch = self.epoch_offset + int(info.epoch_idx)
        batch = self.batch_indices(epoch, self.iteration(info))
        if len(batch) == 0:
            raise StopIteration
        outs: list[list[np.ndarray]] = [[] for _ in range(2 + 2 * self.slots + 3)]
        placeholder = _placeholder_png()
        cache: dict[int, np.ndarray | None] = {}

        def usable(i: int) -> np.ndarray | None:
            """The decoder bytes of image ``i``, or None when it cannot be used."""
            if i not in cache:
                cache[i] = None if i in self.bad else decoder_bytes(self.dataset, i)[0]
            return cache[i]

        def stand_in(i: int) -> int:
            """The next usable image after ``i`` in dataset order (fills the slot of an image that cannot be used)."""
            n = len(self.dataset)
            for k in range(1, n):
                if usable((i + k) % n) is not None:
                    return (i + k) % n
            raise DataError(str(getattr(self.dataset, "ann_file", "dataset")), "no image of the dataset is usable")

        wanted = [int(i) for i in batch]
        actual = [i if usable(i) is not None else stand_in(i) for i in wanted]
        for pos, (index, src) in enumerate(zip(wanted, actual)):
            rng = sample_rng(self.seed, epoch, src)
            if self.cfg.source == "batch":
                others = [b for k, b in enumerate(actual) if k != pos]
                pick = rng.choice(len(others), size=min(self.cfg.basket_size, len(others)), replace=False)
                basket = [others[int(p)] for p in pick]
            else:
                basket = self.dataset.basket_indices(rng, src, self.cfg.basket_size)  # type: ignore[attr-defined]
            dmeta = self.dataset.meta(src)
            plan = sample_plan(rng, dmeta, [self.dataset.meta(b) for b in basket], self.cfg)
            bad = {b for b in plan.used_sources if usable(basket[b]) is None}
            plan = plan.without_sources(bad)
            outs[0].append(usable(src))
            outs[1].append(_pack_ann(self.dataset.annotation(src)))
            used = set(plan.used_sources)
            for s in range(self.slots):
                if s in used:
                    outs[2 + 2 * s].append(usable(basket[s]))
                    outs[3 + 2 * s].append(_pack_ann(self.dataset.annotation(basket[s])))
                else:
                    outs[2 + 2 * s].append(placeholder)
                    outs[3 + 2 * s].append(np.zeros(0, dtype=np.uint8))
            p = 2 + 2 * self.slots
            outs[p].append(pack_plan(plan))
            lsj = sample_lsj(sample_rng(self.seed, epoch, src, stream=1), dmeta.height, dmeta.width, self.out_size,
                             lsj=self.lsj)
            outs[p + 1].append(pack_lsj(lsj))
            outs[p + 2].append(np.asarray([src, epoch, index if src != index else -1, len(bad)], dtype=np.int64))
        return tuple(outs)


def _sources_of(plan, anns: list, images: list, batch_images: dict | None) -> list[Sample | None]:
    sources: list[Sample | None] = [None] * len(plan.basket)
    for b in plan.used_sources:
        pasted = sorted({op.instance for op in plan.pastes if op.source == b})
        if batch_images is not None:
            img, ann = batch_images[plan.basket[b]]
        else:
            img, ann = images[b], anns[b]
        sources[b] = sample_from_annotation(img, ann, only=pasted)
    return sources


def ocp_stage_numpy(slots: int, geometry: bool, flip_index) -> Any:
    """The CPU ``python_function`` (batch mode): masks from RLE, OC&P apply (NumPy reference), LSJ geometry."""

    def stage(dest_imgs, dest_anns, *rest):
        src = rest[:2 * slots]
        plans, lsjs, keys = rest[2 * slots:]
        n = len(dest_imgs)
        anns = [_unpack_ann(a) for a in dest_anns]
        images = [np.asarray(x) for x in dest_imgs]
        batch_images = None if slots else {int(np.asarray(keys[i])[0]): (images[i], anns[i]) for i in range(n)}
        outs: list[list[np.ndarray]] = [[] for _ in OUTPUT_NAMES]
        for i in range(n):
            plan = unpack_plan(plans[i])
            dst = sample_from_annotation(images[i], anns[i])
            s_imgs = [np.asarray(src[2 * s][i]) for s in range(slots)]
            s_anns = [(_unpack_ann(src[2 * s + 1][i]) if np.asarray(src[2 * s + 1][i]).size else None)
                      for s in range(slots)]
            out = apply_numpy(plan, dst, _sources_of(plan, s_anns, s_imgs, batch_images))
            if geometry:
                out = apply_lsj(out, unpack_lsj(lsjs[i]), plan.flip_index if plan.flip_index else flip_index)
            for k, v in enumerate(sample_arrays(out, np.asarray(keys[i]), len(anns[i]["skipped"]))):
                outs[k].append(v)
        return tuple(outs)

    return stage


def sample_arrays(s: Sample, key: np.ndarray, skipped_anns: int, xp=np) -> list:
    """The stage outputs of one sample, in ``OUTPUT_NAMES`` order, as contiguous ``xp`` (NumPy or CuPy) arrays."""
    n = len(s)
    kp = s.keypoints if s.keypoints is not None else xp.zeros((n, 0, 3), dtype=xp.float32)
    info = s.info or {}
    meta = xp.asarray(np.asarray([int(key[0]), int(key[1]), s.image_id, info.get("pasted", 0),
                                  info.get("skipped", 0), info.get("dropped_existing", 0) + info.get("dropped_pasted", 0),
                                  info.get("dropped_by_crop", 0), skipped_anns, int(key[2]), int(key[3])],
                                 dtype=np.int64))
    return [xp.ascontiguousarray(a) for a in (s.image, s.masks, s.amodal_masks, s.occluder_masks, s.boxes, s.labels,
                                             s.occlusion_rate, s.order, kp, s.pasted, s.ann_ids, meta)]


def build_pipeline(dataset: InstanceDataset, cfg: OCPConfig, *, device: str = "gpu", batch_size: int = 8,
                   output_size: int | tuple[int, int] = 1024, seed: int = 0, num_threads: int = 2,
                   py_num_workers: int = 2, shard_id: int = 0, num_shards: int = 1, lsj: bool = True,
                   geometry: bool = True, normalize: bool = True, shuffle: bool = True, epoch: int = 0,
                   prefetch_queue_depth: int = 2, device_id: int | None = None, start_iteration: int = 0,
                   bad: frozenset[int] = frozenset()):
    """A built-ready DALI pipeline of OC&P (see the module docstring for the outputs).

    Args:
        dataset: ``CocoInstances``, ``SyntheticScenes`` or any ``InstanceDataset`` with ``read_bytes`` and
            ``annotation``; it is pickled into each worker process.
        device: ``"gpu"`` (nvJPEG, CuPy kernels) or ``"cpu"`` (DALI CPU operators, the NumPy reference).
        output_size: LSJ output canvas (``S`` or ``(H, W)``).
        geometry: False skips LSJ and normalisation (outputs at the image's own size: for tests and inspection).
        epoch: the epoch of DALI's first epoch (later ones count up from it).
        start_iteration: the batch that first epoch starts at (resume mid-epoch).
        bad: dataset indices of images to treat as unusable (see ``EpochSource``).
    Returns:
        ``(pipeline, source)``: the DALI pipeline (call ``.build()``) and its ``EpochSource``.
    """
    from nvidia.dali import fn, pipeline_def, types

    if device not in ("gpu", "cpu"):
        raise ValueError(f"device must be 'gpu' or 'cpu', got {device!r}")
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id {shard_id} must be in [0, {num_shards})")
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    source = EpochSource(dataset, cfg, seed, batch_size, size, lsj, geometry, shuffle, shard_id, num_shards, epoch,
                         start_iteration, frozenset(bad))
    slots = source.slots
    if device == "gpu":
        from ocp_dali.kernels.pipeline_stage import ocp_stage_cupy  # type: ignore[import-not-found]

        stage = ocp_stage_cupy(slots, geometry, getattr(dataset, "flip_index", None))
        dev_id = 0 if device_id is None else device_id
    else:
        stage = ocp_stage_numpy(slots, geometry, getattr(dataset, "flip_index", None))
        dev_id = None

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=dev_id, py_num_workers=py_num_workers,
                  py_start_method="spawn", prefetch_queue_depth=prefetch_queue_depth, seed=seed)
    def ocp_pipeline():
        outs = fn.external_source(source=source, num_outputs=2 + 2 * slots + 3, parallel=True, batch=True,
                                  batch_info=True)
        decoder_device = "mixed" if device == "gpu" else "cpu"
        dest = fn.decoders.image(outs[0], device=decoder_device, output_type=types.RGB)
        srcs = []
        for s in range(slots):
            srcs += [fn.decoders.image(outs[2 + 2 * s], device=decoder_device, output_type=types.RGB),
                     outs[3 + 2 * s]]
        rest = [outs[1], *srcs, *outs[2 + 2 * slots:]]
        if device == "gpu":
            rest = [r.gpu() for r in rest]
        res = fn.python_function(dest, *rest, function=stage, num_outputs=len(OUTPUT_NAMES), batch_processing=True,
                                 device=device)
        res = list(res)
        if geometry and normalize:
            res[0] = fn.crop_mirror_normalize(res[0], dtype=types.FLOAT, output_layout="CHW", mean=IMAGENET_MEAN,
                                              std=IMAGENET_STD, device=device)
        return tuple(res)

    return ocp_pipeline(), source


def reference_sample(dataset: InstanceDataset, index: int, *, epoch: int, seed: int, cfg: OCPConfig,
                     output_size: int | tuple[int, int] = 1024, lsj: bool = True, geometry: bool = True,
                     batch: list[int] | None = None) -> Sample:
    """What the pipeline must produce for one sample, by the NumPy reference alone (tests compare with it).

    ``batch``: the sample's batch, for ``cfg.source == "batch"``.
    """
    from ocp_dali.augment import augment, augment_batch

    if cfg.source == "batch":
        if batch is None:
            raise ValueError("source='batch' needs the sample's batch")
        out = augment_batch(dataset, batch, epoch=epoch, seed=seed, cfg=cfg)[batch.index(index)]
    else:
        out = augment(dataset, index, epoch=epoch, seed=seed, cfg=cfg)
    if not geometry:
        return out
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    meta: ImageMeta = dataset.meta(index)
    p = sample_lsj(sample_rng(seed, epoch, index, stream=1), meta.height, meta.width, size, lsj=lsj)
    return apply_lsj(out, p, meta.flip_index)
