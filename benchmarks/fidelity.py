"""Fidelity benchmark: the seed's statistics (``../shared/docs/seed-statistics.md``), measured on ocp_dali's paths
and compared with the seed's figures row by row, in standard errors.

    python benchmarks/fidelity.py                                  # every path, presets ocp and basic
    python benchmarks/fidelity.py --paths A-reference --samples 195
    python benchmarks/fidelity.py --ann A.json --images DIR --out DIR

Paths (``PATHS``: name -> function returning per-sample ``SampleRecord``s; one function per new path):
    A-reference  ``ocp_dali.augment.augment`` on raw images (section A);
    B-mmdet      the Mask R-CNN config's mmdet training pipeline, cut after ``OcclusionCopyPaste`` (section B);
    C-mmdet      the Mask2Former config's (LSJ per image, then the transform; section C).
Data: ``--ann`` restricted to persons, ``filter_empty_gt`` (images with a non-crowd person), ``--images``. Each path
runs as many epochs over the images as ``--samples`` needs (default: the seed's sample count for that section and
preset). Prints a table (ours +- SE, the seed's +- SE, the difference in combined SEs) and writes
``<out>/fidelity.json`` with the machine, the command, versions and sample counts. Everything is measured here.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ocp_dali.fidelity import (ROWS, SEED, SampleRecord, aggregate, compare, record_from_sample,  # noqa: E402
                               record_of, stats_json)

DATA = ROOT.parent / "shared" / "data" / "coco_mini"
DEFAULT_ANN = DATA / "annotations" / "instances_val2017.json"
DEFAULT_IMAGES = DATA / "val2017"
CONFIGS = {"B-mmdet": ROOT / "configs" / "mask_rcnn" / "mask-rcnn_r50_fpn_ocp_coco-person.py",
           "C-mmdet": ROOT / "configs" / "mask2former" / "mask2former_swin-s_ocp_coco-person.py"}
INPUT_KEY = "fidelity_gt_in"  # results key: the destination's masks and ignore flags before the transform


@dataclass(frozen=True)
class RunSpec:
    """One path run: data (``ann`` json, ``images`` folder), the OC&P ``preset``, how many ``samples``, the OC&P
    ``seed``, and whether to show a progress bar."""

    ann: Path
    images: Path
    preset: str
    samples: int
    seed: int = 0
    progress: bool = True


@dataclass(frozen=True)
class PathEntry:
    """A registered path: its function and the seed section (A, B, C) it is compared with."""

    run: Callable[[RunSpec], Iterator[SampleRecord]]
    section: str


PATHS: dict[str, PathEntry] = {}


def register(name: str, section: str) -> Callable:
    """Decorator: add a path ``name`` (compared with the seed's ``section``) to ``PATHS``."""
    def wrap(fn: Callable[[RunSpec], Iterator[SampleRecord]]) -> Callable:
        PATHS[name] = PathEntry(fn, section)
        return fn
    return wrap


def schedule(length: int, samples: int) -> Iterator[tuple[int, int]]:
    """``(epoch, index)`` pairs: whole epochs over ``length`` images, in index order, until ``samples``."""
    for k in range(samples):
        yield divmod(k, length)


class LoadRecorder:
    """An ``InstanceDataset`` that keeps what ``load`` returned, by index (everything else is the wrapped one's):
    ``augment`` loads the destination anyway, and its masks as loaded give the overlap statistics their dropped
    ground-truth instances without a second decode."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.loaded: dict[int, Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.dataset, name)

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, index: int):
        self.loaded[index] = s = self.dataset.load(index)
        return s


@register("A-reference", "A")
def a_reference(spec: RunSpec) -> Iterator[SampleRecord]:
    """Section A: ``augment`` (NumPy reference) on the raw images; the plan (``plan_for``) gives ran and the
    candidate count."""
    from ocp_dali.augment import augment, plan_for
    from ocp_dali.config import OCPConfig
    from ocp_dali.data.coco import CocoInstances

    ds = LoadRecorder(CocoInstances(spec.ann, spec.images, classes=["person"], filter_empty_gt=True))
    cfg = OCPConfig.from_preset(spec.preset)
    for epoch, index in schedule(len(ds), spec.samples):
        plan = plan_for(ds.dataset, index, epoch=epoch, seed=spec.seed, cfg=cfg)
        out = augment(ds, index, epoch=epoch, seed=spec.seed, cfg=cfg)
        gt_in = ds.loaded[index].masks
        ds.loaded.clear()
        yield record_from_sample(out, ran=not plan.skipped_by_prob, num_candidates=plan.num_candidates,
                                 gt_in=gt_in)


def mmdet_dataset(config: Path, spec: RunSpec):
    """The config's training dataset (``OCPMixDataset``) on ``spec``'s data and preset, its pipeline cut just after
    ``OcclusionCopyPaste`` (before ``PackDetInputs``: the results keep their arrays). The transform instance is
    wrapped to keep the destination's input masks under ``INPUT_KEY`` (for ``paste_overlaps``)."""
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    import ocp_dali.mmdet  # noqa: F401  (registers the OC&P transform and datasets)

    cfg = Config.fromfile(str(config))
    dcfg = cfg.train_dataloader.dataset
    inner = dcfg.dataset
    inner.update(data_root="", ann_file=str(spec.ann.resolve()), data_prefix=dict(img=str(spec.images.resolve())),
                 metainfo=dict(classes=("person",)),
                 filter_cfg=dict(inner.get("filter_cfg") or {}, filter_empty_gt=True))
    cut = next(k for k, t in enumerate(dcfg.pipeline) if t["type"] == "OcclusionCopyPaste")
    dcfg.pipeline = dcfg.pipeline[:cut + 1]
    dcfg.pipeline[cut].update(preset=spec.preset, seed=spec.seed)
    ds = DATASETS.build(dcfg)
    ocp = ds.pipeline[cut]
    inner_transform = ocp.transform

    def keep_input(results: dict) -> dict:
        m = results["gt_masks"]
        gt = np.asarray(m.masks if hasattr(m, "masks") else m.to_ndarray(), dtype=bool)
        flags = np.asarray(results["gt_ignore_flags"], dtype=bool)
        out = inner_transform(results)
        out[INPUT_KEY] = gt[~flags]
        return out

    ocp.transform = keep_input
    return ds


def mmdet_record(r: dict) -> SampleRecord:
    """The record of one mmdet results dict after ``OcclusionCopyPaste`` (ignore rows left out; ``ocp_info``
    gives ran, the candidate count and the dropped ground-truth count)."""
    keep = ~np.asarray(r["gt_ignore_flags"], dtype=bool)
    info = r["ocp_info"]
    return record_of(np.asarray(r["gt_masks"].masks, dtype=bool)[keep],
                     np.asarray(r["gt_amodal_masks"].masks, dtype=bool)[keep], r["gt_pasted"][keep],
                     r["gt_occlusion_rate"][keep], ran=info["ran"], num_candidates=info["num_candidates"],
                     dropped=info["dropped_existing"], gt_in=r[INPUT_KEY])


def mmdet_path(config: Path, spec: RunSpec) -> Iterator[SampleRecord]:
    """Records of ``spec.samples`` samples of a config's mmdet training pipeline, whole epochs in index order
    (``OCPMixDataset.set_epoch``). mmdet's own random transforms (resize, crop, flip) draw from the global
    generators: seeded here so a run is repeatable."""
    np.random.seed(spec.seed)
    random.seed(spec.seed)
    ds = mmdet_dataset(config, spec)
    for epoch, index in schedule(len(ds), spec.samples):
        if ds.epoch != epoch:
            ds.set_epoch(epoch)
        yield mmdet_record(ds[index])


@register("B-mmdet", "B")
def b_mmdet(spec: RunSpec) -> Iterator[SampleRecord]:
    """Section B: the Mask R-CNN config's pipeline."""
    return mmdet_path(CONFIGS["B-mmdet"], spec)


@register("C-mmdet", "C")
def c_mmdet(spec: RunSpec) -> Iterator[SampleRecord]:
    """Section C: the Mask2Former config's pipeline (LSJ to 1024 per image, then the transform)."""
    return mmdet_path(CONFIGS["C-mmdet"], spec)


def config_geometry(config: Path):
    """The geometry ``--dali`` trains a config with (``ocp_dali.mmdet.loader.pipeline_geometry``)."""
    from mmengine.config import Config

    from ocp_dali.mmdet.loader import pipeline_geometry

    cfg = Config.fromfile(str(config), import_custom_modules=False)
    return pipeline_geometry(cfg.train_dataloader.dataset)


def dali_path(config: Path, spec: RunSpec, placement: str = "seed") -> Iterator[SampleRecord]:
    """Records of the DALI graph on CPU operators (``OCPLoader(device="cpu")``) in the geometry ``--dali`` takes
    from a config, whole epochs in index order; the plan's facts and the dropped count come with each sample's
    ``info``. Without the destination's masks as loaded, dropped ground truth is missed by the overlap rows."""
    from ocp_dali.config import OCPConfig
    from ocp_dali.data.coco import CocoInstances
    from ocp_dali.torch import OCPLoader

    ds = CocoInstances(spec.ann, spec.images, classes=["person"], filter_empty_gt=True)
    cfg = OCPConfig.from_preset(spec.preset)
    done = 0
    geometry = dataclasses.replace(config_geometry(config), placement=placement)
    with OCPLoader(ds, cfg, device="cpu", batch_size=4, seed=spec.seed, geometry=geometry,
                   shuffle=False, py_num_workers=1, num_threads=1, normalize=False,
                   targets=["amodal_masks", "occlusion_rate"]) as loader:
        for epoch in range((spec.samples + len(ds) - 1) // len(ds)):
            loader.set_epoch(epoch)
            for batch in loader:
                for k, info in enumerate(batch["info"]):
                    if done == spec.samples:
                        break
                    done += 1
                    yield record_of(batch["masks"][k].numpy(), batch["amodal_masks"][k].numpy(),
                                    batch["pasted"][k].numpy(), batch["occlusion_rate"][k].numpy(),
                                    ran=bool(info["ran"]), num_candidates=info["candidates"],
                                    dropped=info["dropped_existing"])


@register("B-dali", "B")
def b_dali(spec: RunSpec) -> Iterator[SampleRecord]:
    """Section B: the DALI CPU graph with the Mask R-CNN config's geometry (the destination's multi-scale resize,
    sources raw)."""
    return dali_path(CONFIGS["B-mmdet"], spec)


@register("C-dali", "C")
def c_dali(spec: RunSpec) -> Iterator[SampleRecord]:
    """Section C: the DALI CPU graph with the Mask2Former config's geometry (LSJ 1024 of the destination and of
    each source, folded into the paste)."""
    return dali_path(CONFIGS["C-mmdet"], spec)


@register("C-dali-paste-first", "C")
def c_dali_paste_first(spec: RunSpec) -> Iterator[SampleRecord]:
    """ocp_dali's ``paste_first`` variant (paste at raw size, then the Mask2Former config's LSJ), against section C:
    how far the variant is from the seed's order."""
    return dali_path(CONFIGS["C-mmdet"], spec, placement="paste_first")


def run_path(name: str, spec: RunSpec) -> dict[str, Any]:
    """Run one path and preset: its table, the comparison with the seed's section (when the doc has it), timing."""
    entry = PATHS[name]
    records = entry.run(spec)
    if spec.progress:
        from tqdm import tqdm

        records = tqdm(records, total=spec.samples, desc=f"{name} {spec.preset}", leave=False)
    t0 = time.perf_counter()
    recs = list(records)
    seconds = time.perf_counter() - t0
    table = aggregate(recs)
    seed = SEED.get((entry.section, spec.preset))
    return dict(path=name, section=entry.section, preset=spec.preset, samples=len(recs), seconds=round(seconds, 1),
                table=table, comparison=compare(table, seed) if seed else {},
                seed_samples=seed.samples if seed else None)


def fmt(value: float | None, se: float | None) -> str:
    """``value +- se`` with 3 significant digits ('-' for a missing value)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    s = f"{value:.3g}"
    return s if se is None or math.isnan(se) else f"{s} ± {se:.2g}"


def print_table(result: dict[str, Any]) -> None:
    """One path and preset: row, ours +- SE, the seed's +- SE, the difference in combined SEs."""
    seed_n = result["seed_samples"] or "no seed figures"
    print(f"\n{result['path']} / {result['preset']}: {result['samples']} samples (seed: {seed_n}), "
          f"{result['seconds']} s")
    print(f"  {'row':<13} {'ours':>18} {'seed':>18} {'diff (SE)':>9}")
    for row in ROWS:
        o, c = result["table"][row], result["comparison"].get(row)
        z = "" if c is None or math.isnan(c.z) else f"{c.z:+.1f}"
        seed = fmt(c.seed.value, c.seed.se) if c else ""
        print(f"  {row:<13} {fmt(o.value, o.se):>18} {seed:>18} {z:>9}")


def versions() -> dict[str, str]:
    """Versions of the stack and the project's commit (``unavailable`` for what does not import)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("numpy", "pycocotools", "mmcv", "mmengine", "mmdet"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    try:
        out["ocp_dali commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                                                capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out["ocp_dali commit"] = "unknown"
    return out


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo")
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")), "") if cpuinfo.exists() else platform.processor()
    return dict(cpu=cpu, cores=os.cpu_count(), platform=platform.platform(), node=platform.node())


def result_json(result: dict[str, Any]) -> dict[str, Any]:
    """``run_path``'s result as plain JSON."""
    comp = {row: dict(ours=stats_json({"": c.ours})[""], seed=stats_json({"": c.seed})[""],
                      diff_se=None if math.isnan(c.z) else round(c.z, 3))
            for row, c in result["comparison"].items()}
    return {**{k: v for k, v in result.items() if k not in ("table", "comparison")},
            "table": stats_json(result["table"]), "comparison": comp}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ann", type=Path, default=DEFAULT_ANN, help="COCO json (persons are used)")
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="image folder of --ann")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder for fidelity.json")
    p.add_argument("--samples", type=int, default=None,
                   help="samples per path and preset (default: the seed's count for its section and preset)")
    p.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    p.add_argument("--presets", nargs="+", default=["ocp", "basic"], choices=["ocp", "basic"])
    p.add_argument("--seed", type=int, default=0, help="OC&P seed (plans from (seed, epoch, index))")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every requested path and preset the seed has figures for (or any, with ``--samples``); printed as it goes."""
    results = []
    for name in args.paths:
        for preset in args.presets:
            seed = SEED.get((PATHS[name].section, preset))
            if seed is None and args.samples is None:
                print(f"\n{name} / {preset}: skipped (the doc has no seed figures for it; give --samples to run it)")
                continue
            spec = RunSpec(args.ann, args.images, preset, args.samples or seed.samples, args.seed,
                           progress=not args.no_progress)
            results.append(run_path(name, spec))
            print_table(results[-1])
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "fidelity.json"
    doc = dict(command=" ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
               machine=machine(), versions=versions(),
               data=dict(ann=os.path.relpath(args.ann, ROOT), images=os.path.relpath(args.images, ROOT)),
               seed=args.seed, results=[result_json(r) for r in results])
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
