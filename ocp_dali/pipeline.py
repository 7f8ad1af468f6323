"""The DALI graph: worker pool -> decode -> OC&P stage -> normalise, on GPU or on CPU. This module only wires it.

    external_source (parallel: spawned worker processes run ``ocp_dali.source.EpochSource``; bytes and numbers in
                     the ``ocp_dali.wire.WorkerBatch`` layout)
    -> decoders.image ("mixed": nvJPEG on the GPU; "cpu" otherwise), destination and source images
    -> python_function(``ocp_dali.stage.ocp_stage``: masks from RLE, OC&P apply, LSJ geometry; the CuPy backend on
       the GPU, the NumPy reference on the CPU)
    -> crop_mirror_normalize (image only)

Outputs, in order (``ocp_dali.wire.OUTPUT_NAMES``): image (3, S, S) float32 normalised, masks (N, S, S) bool,
amodal_masks, occluder_masks, boxes (N, 4) float32, labels (N,) int64, occlusion_rate (N,) float32, order (N, N)
bool, keypoints (N, K, 3) float32 (K = 0 without keypoints), pasted (N,) bool, ann_ids (N,) int64, info
(``wire.InfoRow``, int64). Variable instance counts stay per-sample tensors: nothing is truncated or padded.
The optional ones not in ``targets`` (``ocp_dali.targets``) are empty arrays, never computed.
"""
from __future__ import annotations

from dataclasses import replace

from ocp_dali.config import OCPConfig
from ocp_dali.data.base import InstanceDataset
from ocp_dali.lsj import Geometry, as_geometry
from ocp_dali.source import EpochSource
from ocp_dali.stage import ocp_stage
from ocp_dali.targets import Targets
from ocp_dali.wire import OUTPUT_NAMES, WorkerBatch

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def build_pipeline(dataset: InstanceDataset, cfg: OCPConfig, *, device: str = "gpu", batch_size: int = 8,
                   output_size: int | tuple[int, int] = 1024, seed: int = 0, num_threads: int = 2,
                   py_num_workers: int = 2, shard_id: int = 0, num_shards: int = 1, lsj: bool = True,
                   geometry: Geometry | bool = True, normalize: bool = True, shuffle: bool = True, epoch: int = 0,
                   prefetch_queue_depth: int = 2, device_id: int | None = None, start_iteration: int = 0,
                   bad: frozenset[int] = frozenset(), targets: Targets | None = None):
    """A built-ready DALI pipeline of OC&P (see the module docstring for the outputs).

    Args:
        dataset: ``CocoInstances``, ``SyntheticScenes`` or any ``InstanceDataset`` with ``read_bytes`` and
            ``annotation``; it is pickled into each worker process.
        device: ``"gpu"`` (nvJPEG, CuPy kernels) or ``"cpu"`` (DALI CPU operators, the NumPy reference).
        geometry: the samples' geometry and placement (``lsj.Geometry``); True: ``Geometry.lsj(output_size)``
            (``lsj=False``: ``Geometry.fit(output_size)``) in the seed's placement; False skips geometry and
            normalisation (outputs at the image's own size: for tests and inspection).
        output_size, lsj: see ``geometry``.
        epoch: the epoch of DALI's first epoch (later ones count up from it).
        start_iteration: the batch that first epoch starts at (resume mid-epoch).
        bad: dataset indices of images to treat as unusable (see ``EpochSource``).
        targets: the optional outputs wanted (``ocp_dali.targets``; default all).
    Returns:
        ``(pipeline, source)``: the DALI pipeline (call ``.build()``) and its ``EpochSource``.
    """
    from nvidia.dali import fn, pipeline_def, types

    if device not in ("gpu", "cpu"):
        raise ValueError(f"device must be 'gpu' or 'cpu', got {device!r}")
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id {shard_id} must be in [0, {num_shards})")
    geo = as_geometry(geometry, output_size, lsj)
    source = EpochSource(dataset, cfg, seed, batch_size, geo, shuffle, shard_id, num_shards, epoch, start_iteration,
                         frozenset(bad))
    slots = source.slots
    stage = ocp_stage("cupy" if device == "gpu" else "numpy", slots, geo, getattr(dataset, "flip_index", None),
                      targets)
    dev_id = (0 if device_id is None else device_id) if device == "gpu" else None

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=dev_id, py_num_workers=py_num_workers,
                  py_start_method="spawn", prefetch_queue_depth=prefetch_queue_depth, seed=seed)
    def ocp_pipeline():
        decoder_device = "mixed" if device == "gpu" else "cpu"

        def decode(encoded):
            return fn.decoders.image(encoded, device=decoder_device, output_type=types.RGB)

        outs = fn.external_source(source=source, num_outputs=WorkerBatch.width(slots), parallel=True, batch=True,
                                  batch_info=True)
        raw = WorkerBatch.unpack(outs, slots)
        inputs = replace(raw, dest_images=decode(raw.dest_images),
                         source_images=tuple(decode(x) for x in raw.source_images)).pack()
        dest, rest = inputs[0], list(inputs[1:])
        if device == "gpu":  # a GPU python_function takes GPU inputs only
            rest = [r.gpu() for r in rest]
        res = list(fn.python_function(dest, *rest, function=stage, num_outputs=len(OUTPUT_NAMES),
                                      batch_processing=True, device=device))
        if geo is not None and normalize:
            res[0] = fn.crop_mirror_normalize(res[0], dtype=types.FLOAT, output_layout="CHW", mean=IMAGENET_MEAN,
                                              std=IMAGENET_STD, device=device)
        return tuple(res)

    return ocp_pipeline(), source
