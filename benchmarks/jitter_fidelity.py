"""Image jitter fidelity: ocp_dali's ``jitter_image`` against the seed's own jitter, on the same crops and factors.

    python benchmarks/jitter_fidelity.py --seed-src /tmp/occlusion-copy-paste --mmcv-src /tmp/mmcv-1.5.3 \\
        --pairs 300 --label after

The seed (the OC&P paper's repository, mmdet 2.x) jitters a pasted crop with its ``colour_jitter``: mmcv's
``adjust_color``, ``adjust_brightness``, ``adjust_contrast`` and ``adjust_sharpness`` (cv2 backend) on the BGR crop,
the factors drawn with ``random.integers``. This script holds none of that code: it reads ``colour_jitter`` from the
seed checkout given by ``--seed-src`` and runs it as it is, with the real mmcv photometric functions (``--mmcv-src``,
an mmcv checkout, e.g. tag v1.5.3, the seed's version; or an importable ``mmcv``) and with its ``random.integers``
answered by our factors, so both sides jitter the same crop with the same factors. Without ``--seed-src`` (or
without mmcv) it prints why and exits 0 without writing anything.

Crops: the tight mask boxes of person instances of ``coco_mini`` val2017 that OC&P would paste (box sides
``> 0.1 * sqrt(H*W)``), drawn at random with factors drawn from the seed's ranges (``plan.JITTER_RANGES``). Per
pair both outputs are compared inside the instance's mask (the pixels that get pasted) and over the whole crop:
mean signed difference (ours - seed), mean absolute difference, max, and the share of differing values; and once
more per step alone (the other factors 1.0) to say which step any residual comes from. The figures are merged
into ``--out`` under ``--label`` (e.g. "before" and "after" a change), with the machine and the command.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import platform
import subprocess
import sys
import types
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ocp_dali import CocoInstances  # noqa: E402
from ocp_dali.photometric import jitter_image  # noqa: E402
from ocp_dali.plan import JITTER_RANGES  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "coco_mini"
STEPS = ("colour", "brightness", "contrast", "sharpness")


class FactorFeed:
    """Stands in for the seed's ``random`` (a NumPy Generator): ``integers(lo, hi)`` answers the queued factors in
    order and records the ranges asked for, so that they can be checked against ``JITTER_RANGES``."""

    def __init__(self) -> None:
        self.queue: list[int] = []
        self.asked: list[tuple[int, int]] = []

    def integers(self, lo: int, hi: int) -> int:
        self.asked.append((int(lo), int(hi)))
        return self.queue.pop(0)


def load_mmcv_photometric(mmcv_src: str | None):
    """mmcv's photometric module: from an mmcv checkout's ``mmcv/image`` (loaded alone, as a private package, so
    that mmcv's compiled ops are not needed), else the installed ``mmcv``. Returns (module or None, reason)."""
    if mmcv_src:
        image_dir = Path(mmcv_src) / "mmcv" / "image"
        if not (image_dir / "photometric.py").is_file():
            return None, f"--mmcv-src {mmcv_src}: no mmcv/image/photometric.py there"
        for name, path in (("_fid_mmcv", image_dir.parent), ("_fid_mmcv.image", image_dir)):
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(path)]
            sys.modules[name] = pkg
        utils = types.ModuleType("_fid_mmcv.utils")  # photometric imports is_tuple_of from it (clahe only)
        utils.is_tuple_of = lambda seq, t: isinstance(seq, tuple) and all(isinstance(x, t) for x in seq)
        sys.modules["_fid_mmcv.utils"] = utils
        for name in ("colorspace", "photometric"):
            spec = importlib.util.spec_from_file_location(f"_fid_mmcv.image.{name}", image_dir / f"{name}.py")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = mod
            spec.loader.exec_module(mod)
        return sys.modules["_fid_mmcv.image.photometric"], f"mmcv photometric from {image_dir}"
    try:
        import mmcv
    except ImportError:
        return None, "no --mmcv-src and mmcv is not importable"
    return mmcv, f"installed mmcv {getattr(mmcv, '__version__', '?')}"


def load_seed_jitter(seed_src: str, mmcv_mod) -> tuple[Callable[[np.ndarray, tuple], np.ndarray], str]:
    """The seed's ``colour_jitter`` read from its checkout and run as written; returns ``(fn, file)`` where
    ``fn(rgb, factors)`` takes and returns an (H, W, 3) uint8 RGB crop (the seed works on BGR: flipped around it)."""
    files = [p for p in sorted(Path(seed_src).rglob("*.py")) if "def colour_jitter(" in p.read_text(errors="ignore")]
    if not files:
        raise SystemExit(f"--seed-src {seed_src}: no file defines colour_jitter")
    path = next((p for p in files if p.parts[-2:] == ("custom", "ocp.py")), files[0])
    tree = ast.parse(path.read_text())
    fdef = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "colour_jitter")
    feed = FactorFeed()
    scope: dict = {"mmcv": mmcv_mod, "random": feed, "np": np}
    exec(compile(ast.Module(body=[fdef], type_ignores=[]), str(path), "exec"), scope)  # noqa: S102

    def run(rgb: np.ndarray, factors: tuple) -> np.ndarray:
        feed.queue, feed.asked = list(factors), []
        bgr = scope["colour_jitter"](np.ascontiguousarray(rgb[..., ::-1]))
        if tuple(feed.asked) != tuple(JITTER_RANGES):
            raise SystemExit(f"the seed draws its factors from {feed.asked}, ocp_dali from {JITTER_RANGES}")
        return np.ascontiguousarray(bgr[..., ::-1])
    return run, str(path)


def draw_pairs(ds: CocoInstances, n: int, rng: np.random.Generator):
    """``n`` (image index, instance, box, factors) with pasteable person boxes, factors in the seed's ranges."""
    cands = []
    for i in range(len(ds)):
        m = ds.meta(i)
        side = float(np.sqrt(m.height * m.width))
        for k, (x0, y0, x1, y1) in enumerate(np.asarray(m.boxes).reshape(-1, 4)):
            if x1 - x0 > 0.1 * side and y1 - y0 > 0.1 * side:
                cands.append((i, k, (int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1)))))
    pick = rng.choice(len(cands), size=n, replace=len(cands) < n)
    return [(*cands[int(p)], tuple(int(rng.integers(lo, hi)) for lo, hi in JITTER_RANGES)) for p in pick]


class Stats:
    """Accumulated differences (ours - seed) of uint8 values."""

    def __init__(self) -> None:
        self.n = self.sum = self.abs = self.differ = 0
        self.max = 0

    def add(self, d: np.ndarray) -> None:
        self.n += d.size
        self.sum += int(d.sum())
        self.abs += int(np.abs(d).sum())
        self.differ += int(np.count_nonzero(d))
        self.max = max(self.max, int(np.abs(d).max(initial=0)))

    def figures(self) -> dict:
        n = max(self.n, 1)
        return {"values": self.n, "mean_signed": self.sum / n, "mean_abs": self.abs / n, "max_abs": self.max,
                "share_differing": self.differ / n}


def measure(ds: CocoInstances, pairs: list, seed_fn) -> dict:
    """Figures of the full jitter (inside masks, inside masks less the crop's one-pixel border, whole crops) and
    of each step alone (inside masks)."""
    full_mask, full_crop, interior = Stats(), Stats(), Stats()
    steps = {s: Stats() for s in STEPS}
    cache: dict[int, object] = {}
    for i, k, (x0, y0, x1, y1), factors in pairs:
        if i not in cache:
            cache.clear()
            cache[i] = ds.load(i)
        s = cache[i]
        crop = np.ascontiguousarray(s.image[y0:y1, x0:x1])
        inside = np.asarray(s.masks[k, y0:y1, x0:x1], dtype=bool)
        d = jitter_image(crop, factors).astype(np.int64) - seed_fn(crop, factors).astype(np.int64)
        full_mask.add(d[inside])
        full_crop.add(d)
        interior.add(d[1:-1, 1:-1][inside[1:-1, 1:-1]])
        for j, name in enumerate(STEPS):
            one = [10, 10, 10, 10]
            one[j] = factors[j]
            d1 = jitter_image(crop, tuple(one)).astype(np.int64) - seed_fn(crop, tuple(one)).astype(np.int64)
            steps[name].add(d1[inside])
    return {"inside_masks": full_mask.figures(), "whole_crops": full_crop.figures(),
            "inside_masks_off_the_crop_border": interior.figures(),
            "per_step_inside_masks": {k: v.figures() for k, v in steps.items()}}


def code_version() -> str:
    """The ocp_dali commit measured (``git describe --always --dirty``), or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed-src", help="checkout of the OC&P paper's repository (read, run, never copied)")
    ap.add_argument("--mmcv-src", help="checkout of mmcv (tag v1.5.3, the seed's version); else installed mmcv")
    ap.add_argument("--data", default=str(DATA), help="coco_mini root (annotations/, val2017/)")
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0, help="RNG seed of the crop and factor draws")
    ap.add_argument("--label", default="current", help="key of this run's figures in --out")
    ap.add_argument("--code-version", help="what ocp_dali code is measured (default: git describe of this checkout)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "jitter_fidelity.json"))
    a = ap.parse_args()
    if not a.seed_src:
        print("jitter_fidelity: skipped, no --seed-src (a checkout of the OC&P paper's repository) given")
        return
    mmcv_mod, how = load_mmcv_photometric(a.mmcv_src)
    if mmcv_mod is None:
        print(f"jitter_fidelity: skipped, {how}")
        return
    seed_fn, seed_file = load_seed_jitter(a.seed_src, mmcv_mod)
    data = Path(a.data)
    ds = CocoInstances(data / "annotations" / "person_keypoints_val2017.json", data / "val2017", classes=["person"])
    pairs = draw_pairs(ds, a.pairs, np.random.default_rng(a.seed))
    figures = measure(ds, pairs, seed_fn)
    import cv2
    run = {"ocp_dali_commit": a.code_version or code_version(), "pairs": len(pairs), "seed_file": Path(seed_file).relative_to(a.seed_src).as_posix(), "mmcv": how,
           "opencv": cv2.__version__, "numpy": np.__version__, **figures}
    out = Path(a.out)
    doc = json.loads(out.read_text()) if out.is_file() else {}
    doc.update({"machine": f"{platform.machine()}, {platform.processor() or platform.system()}",
                "command": "python benchmarks/jitter_fidelity.py --seed-src SEED --mmcv-src MMCV "
                           f"--pairs {a.pairs} --seed {a.seed} --label LABEL"})
    doc.setdefault("runs", {})[a.label] = run
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({a.label: run}, indent=2))


if __name__ == "__main__":
    main()
