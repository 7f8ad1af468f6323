"""The three occlusion figures of an mmdet checkpoint on OCHuman-style data, computed by MMEngine's test loop.

    python -m ocp_dali.mmdet.evaluate --config CFG --checkpoint CKPT [--data ../shared/data/ochuman_samples]
        [--out results.json] [--scale W H] [--batch-size N] [--workers N] [--seed S] [--verbose]

1. ``mask_AP``: COCO mask AP on the COCO-format json (``mmpose/test_ochuman.json``);
2. ``occluded_mask_AP``: mask AP on the instances with occlusion rate > 0.15 of the occlusion-stress set that OC&P
   makes from the same images (fixed seed, exact rates; written to a temporary folder, never kept), with
   ``num_occluded``, the number of those instances;
3. ``ochuman_mask_AP``: mask AP on OCHuman's native-format json (``icevision/annotations/ochuman.json``),
   converted to COCO json first.

Each figure is one ``Runner.test()``: the config's test pipeline (its ``Resize`` scale unless ``--scale`` overrides
it) over a ``CocoDataset`` of that json, batched, scored by mmdet's ``CocoMetric`` (``segm`` and ``bbox``). The
model is built and loaded once and shared by the three runners, on the GPU when there is one (MMEngine's choice of
device), else on the CPU.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmengine.hooks import Hook
from tqdm import tqdm

from ocp_dali.config import OCPConfig
from ocp_dali.data.coco import CocoInstances
from ocp_dali.eval import STAT_NAMES, coco_from_ochuman, occluded_subset, occlusion_stress_set

CLASSES = ("person",)  # OCHuman's only category; the model's label 0 must be person
RESIZES = ("Resize", "RandomResize")
# our figure names -> CocoMetric's (after "coco/<metric>_")
METRIC_ITEMS = dict(zip(STAT_NAMES, ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")))


@dataclass(frozen=True)
class EvalSet:
    """One figure's data: a COCO json (ground truth and image list) and the folder of its images."""
    name: str
    ann_file: Path
    img_dir: Path
    extra: dict[str, Any] = field(default_factory=dict)  # reported with the figure (e.g. num_occluded)


def evaluation_sets(data: Path, tmp: Path, seed: int = 0, thr: float = 0.15) -> list[EvalSet]:
    """The three sets of ``data`` (an ``ochuman_samples``-style folder). The occlusion-stress set (OC&P, ``seed``,
    epoch 0, every instance's exact occlusion rate), its occluded subset (rate > ``thr``; others are crowd/ignore)
    and the COCO conversion of OCHuman's native json are written under ``tmp``."""
    coco_json = data / "mmpose" / "test_ochuman.json"
    ds = CocoInstances(coco_json, data / "mmpose", classes=list(CLASSES))
    stress_json, stress_imgs, rates = occlusion_stress_set(ds, OCPConfig.ocp(prob=1.0), seed, tmp / "stress")
    subset, n = occluded_subset(json.loads(stress_json.read_text()), rates, thr)
    subset_json = tmp / "stress" / "occluded_subset.json"
    subset_json.write_text(json.dumps(subset))
    native_json = tmp / "ochuman_native_as_coco.json"
    native_json.write_text(json.dumps(coco_from_ochuman(data / "icevision" / "annotations" / "ochuman.json")))
    return [EvalSet("mask_AP", coco_json, data / "mmpose"),
            EvalSet("occluded_mask_AP", subset_json, stress_imgs, {"num_occluded": n}),
            EvalSet("ochuman_mask_AP", native_json, data / "icevision" / "images")]


def _dataset_pipelines(dataset_cfg: dict | None) -> list[list[dict]]:
    """The ``pipeline``s of a dataset config and of the datasets it wraps (``dataset=dict(...)``), outer first."""
    out = []
    while dataset_cfg is not None:
        if dataset_cfg.get("pipeline"):
            out.append(list(dataset_cfg["pipeline"]))
        dataset_cfg = dataset_cfg.get("dataset")
    return out


def largest_scale(scale: Any) -> tuple[int, int]:
    """A resize's ``scale``, one ``(w, h)`` pair or the multi-scale list of them (``RandomResize``), as the one pair
    of the largest short edge: the top of the scales the model trained at."""
    pairs = [scale] if isinstance(scale[0], (int, float)) else list(scale)
    return tuple(int(v) for v in max(pairs, key=min))  # type: ignore[return-value]


def eval_pipeline(cfg, scale: tuple[int, int] | None = None) -> tuple[list[dict], Any, str]:
    """The test pipeline of ``cfg`` (an mmengine ``Config``), its test scale (``Resize``'s ``scale``, ``(W, H)``) and
    where that came from.

    The config's ``test_dataloader`` (else ``val_dataloader``) pipeline is used as it is, its ``Resize`` scale set to
    ``scale`` when given. Configs without one (the tiny test configs) get LoadImageFromFile, Resize, PackDetInputs
    at ``scale``, else at the scale of the training pipeline's ``Resize`` / ``RandomResize`` (what the model saw).
    Raises ``ValueError`` when no scale can be found."""
    for key in ("test_dataloader", "val_dataloader"):
        pipelines = _dataset_pipelines((cfg.get(key) or {}).get("dataset"))
        if not pipelines:
            continue
        pipeline = copy.deepcopy(pipelines[0])
        resizes = [t for t in pipeline if t.get("type") == "Resize"]
        if not resizes:
            raise ValueError(f"the {key} pipeline of the config has no Resize: no test scale to use or override")
        for t in resizes:
            if scale:
                t["scale"] = tuple(scale)
        return pipeline, resizes[0]["scale"], "--scale" if scale else f"the {key} pipeline's Resize"
    if scale:
        source = "--scale"
    else:
        train = _dataset_pipelines((cfg.get("train_dataloader") or {}).get("dataset"))
        scale = next((largest_scale(t["scale"]) for p in train for t in p if t.get("type") in RESIZES and "scale" in t),
                     None)
        if scale is None:
            raise ValueError("the config has no test, val or train pipeline with a Resize scale: pass --scale W H")
        source = "the train pipeline's Resize (the config has no test pipeline)"
    pipeline = [dict(type="LoadImageFromFile"), dict(type="Resize", scale=tuple(scale), keep_ratio=True),
                dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape",
                                                      "scale_factor"))]
    return pipeline, tuple(scale), source


class ProgressHook(Hook):
    """A progress bar over one test set's images, labelled with the figure it computes; the label says when the
    images are done and COCO evaluation (run by the loop after the last batch) is under way."""
    priority = "VERY_LOW"

    def __init__(self, label: str):
        self.label = label
        self.bar: tqdm | None = None

    def before_test_epoch(self, runner) -> None:
        self.bar = tqdm(total=len(runner.test_dataloader.dataset), desc=self.label, unit="img", leave=True)

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self.bar.update(len(outputs))
        if self.bar.n >= self.bar.total:
            self.bar.set_description(f"{self.label}: COCO evaluation")

    def after_test_epoch(self, runner, metrics: dict | None = None) -> None:
        self.bar.set_description(f"{self.label}: done")
        self.bar.close()


def figures(metrics: dict[str, float], prefix: str = "coco") -> dict[str, float]:
    """CocoMetric's results (``coco/segm_mAP``, ...) as our figures: ``AP``... from ``segm``, ``bbox_AP``... from
    ``bbox``. A figure COCOeval cannot compute (-1: no ground truth of that size) or that CocoMetric left out (no
    detections at all) is 0, as in ``ocp_dali.eval.mask_ap``."""
    out = {}
    for metric, ours in (("segm", ""), ("bbox", "bbox_")):
        for name, item in METRIC_ITEMS.items():
            out[ours + name] = max(float(metrics.get(f"{prefix}/{metric}_{item}", 0.0)), 0.0)
    return out


def load_config(config: str):
    """The mmengine ``Config`` of ``config`` with mmdet's and ocp_dali's modules registered and our own
    checkpoints trusted by torch.load."""
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    import ocp_dali.mmdet  # noqa: F401  (registers the transforms, datasets and hooks configs name)
    from ocp_dali.mmdet.checkpoint import trust_own_checkpoints

    register_all_modules()
    trust_own_checkpoints()
    return Config.fromfile(config)


def build_model(cfg, checkpoint: str):
    """The config's model with the checkpoint's weights (built once, shared by the three runners)."""
    from mmdet.registry import MODELS
    from mmengine.runner import load_checkpoint

    model = MODELS.build(cfg.model)
    load_checkpoint(model, checkpoint, map_location="cpu", logger="current")
    return model


def run_set(model, cfg, s: EvalSet, pipeline: list[dict], label: str, batch_size: int, workers: int,
            work_dir: Path, verbose: bool = False) -> dict[str, float]:
    """``Runner.test()`` of ``model`` on ``s``: CocoDataset of ``s.ann_file`` through ``pipeline``, batches of
    ``batch_size`` from ``workers`` loader processes, CocoMetric (segm, bbox) against the same json."""
    from mmengine.runner import Runner

    dataset = dict(type="CocoDataset", data_root="", ann_file=str(s.ann_file), data_prefix=dict(img=f"{s.img_dir}/"),
                   metainfo=dict(classes=CLASSES), test_mode=True, pipeline=pipeline)
    loader = dict(batch_size=batch_size, num_workers=workers, persistent_workers=False, drop_last=False,
                  sampler=dict(type="DefaultSampler", shuffle=False), dataset=dataset)
    evaluator = dict(type="CocoMetric", ann_file=str(s.ann_file), metric=["segm", "bbox"], format_only=False)
    runner = Runner(model=model, work_dir=str(work_dir), test_dataloader=loader, test_evaluator=evaluator,
                    test_cfg=dict(type="TestLoop"), custom_hooks=[ProgressHook(label)],
                    default_hooks=dict(checkpoint=None, param_scheduler=None),
                    env_cfg=cfg.get("env_cfg", dict(dist_cfg=dict(backend="nccl"))),
                    default_scope=cfg.get("default_scope", "mmdet"), log_level="INFO" if verbose else "WARNING",
                    experiment_name=f"ocp_eval_{s.name}_{time.time_ns()}")
    # pycocotools prints its tables to stdout; the figures are printed (and saved) by main()
    with contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO()):
        metrics = runner.test()
    return {**figures(metrics), **s.extra}


def evaluate(config: str, checkpoint: str, data: Path, scale: tuple[int, int] | None = None, batch_size: int = 4,
             workers: int = 2, seed: int = 0, verbose: bool = False) -> dict[str, dict[str, float]]:
    """The three figures (``mask_AP``, ``occluded_mask_AP``, ``ochuman_mask_AP``) of ``checkpoint``; each maps
    ``AP``, ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl`` (mask) and ``bbox_AP``... (box) to values in [0, 1]."""
    cfg = load_config(config)
    pipeline, used, source = eval_pipeline(cfg, scale)
    print(f"test scale {used} (W, H) from {source}", file=sys.stderr)
    model = build_model(cfg, checkpoint)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        sets = evaluation_sets(data, Path(tmp), seed)
        for k, s in enumerate(sets, start=1):
            label = f"[{k}/{len(sets)}] {s.name} ({s.ann_file.name})"
            out[s.name] = run_set(model, cfg, s, pipeline, label, batch_size, workers, Path(tmp) / "work", verbose)
    return out


def arg_parser() -> argparse.ArgumentParser:
    """The command line: every flag with its help text and default."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--config", required=True, help="mmdet config the checkpoint was trained with (model, test "
                                                    "pipeline)")
    ap.add_argument("--checkpoint", required=True, help="checkpoint (.pth) to evaluate")
    ap.add_argument("--data", default="../shared/data/ochuman_samples",
                    help="folder with mmpose/test_ochuman.json + images and icevision/annotations/ochuman.json + "
                         "icevision/images (OCHuman's layout)")
    ap.add_argument("--scale", nargs=2, type=int, metavar=("W", "H"), default=None,
                    help="override the test Resize scale; default: the config's test pipeline's Resize (or, for "
                         "configs without a test pipeline, its train pipeline's)")
    ap.add_argument("--batch-size", type=int, default=4, help="images per test batch")
    ap.add_argument("--workers", type=int, default=2, help="data loader worker processes (0: load in this process)")
    ap.add_argument("--seed", type=int, default=0, help="OC&P seed of the occlusion-stress set")
    ap.add_argument("--verbose", action="store_true", help="show MMEngine's log and pycocotools' tables")
    ap.add_argument("--out", help="also write the figures to this json file")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = arg_parser().parse_args(argv)
    res = evaluate(args.config, args.checkpoint, Path(args.data), tuple(args.scale) if args.scale else None,
                   args.batch_size, args.workers, args.seed, args.verbose)
    print(f"{'figure':<20}{'AP':>8}{'AP50':>8}{'AP75':>8}{'box AP':>8}")
    for k, v in res.items():
        print(f"{k:<20}{v['AP']:>8.3f}{v['AP50']:>8.3f}{v['AP75']:>8.3f}{v['bbox_AP']:>8.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
