"""CPU geometry speed, before and after the compiled loops, side by side in one run on one core.

    python benchmarks/geometry_speed.py                  # coco_mini val persons, OCPConfig.ocp(), LSJ 1024^2
    python benchmarks/geometry_speed.py --limit 10 --size 1024 --core 0 --out out/

Per image, after one warm-up image: ``reference_sample`` (load, OC&P apply, LSJ: what the DALI CPU stage
computes for the sample) runs twice, "numpy" with the compiled loops off (``reference.cpu_loops`` -> None: the
NumPy code, as before them) and "compiled" with them on, in alternating order so both meet the same machine load.
Timed: the LSJ (``apply_lsj``), the paste warps (``warp_crop`` of non-identity geometries; identity ones are views
either way) and the whole sample, in wall and CPU time of the process (pinned to ``--core``). Both outputs are
compared bit for bit. Prints a table; writes JSON to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import importlib  # noqa: E402

from ocp_dali import CocoInstances, OCPConfig  # noqa: E402
from ocp_dali.kernels import geometry_cpu  # noqa: E402

# the modules (the package's ``augment`` and ``reference`` names would be a function and a submodule alike)
augment_mod = importlib.import_module("ocp_dali.augment")
ref = importlib.import_module("ocp_dali.reference")
DATA = ROOT.parent / "shared" / "data" / "coco_mini"
ARRAYS = ("image", "masks", "amodal_masks", "occluder_masks", "boxes", "labels", "occlusion_rate", "order",
          "pasted", "ann_ids", "crowd_masks", "keypoints")


@dataclass
class Clock:
    """Accumulated wall and process CPU seconds of timed calls, and each call's (wall, CPU) seconds."""

    wall: float = 0.0
    cpu: float = 0.0
    calls: list[tuple[float, float]] = field(default_factory=list)

    def wrap(self, fn: Callable[..., Any], timed: Callable[..., bool] = lambda *a: True) -> Callable[..., Any]:
        """``fn`` timed into this clock (calls for which ``timed(*args)`` is False are not counted)."""
        def run(*args: Any, **kwargs: Any) -> Any:
            if not timed(*args):
                return fn(*args, **kwargs)
            w, c = time.perf_counter(), time.process_time()
            out = fn(*args, **kwargs)
            dw, dc = time.perf_counter() - w, time.process_time() - c
            self.wall += dw
            self.cpu += dc
            self.calls.append((dw, dc))
            return out
        return run


@dataclass
class Side:
    """One side of the race ("numpy" or "compiled"): a clock for the whole sample, the LSJ and the paste warps."""

    name: str
    sample: Clock = field(default_factory=Clock)
    lsj: Clock = field(default_factory=Clock)
    warp: Clock = field(default_factory=Clock)

    def run(self, ds: CocoInstances, index: int, cfg: OCPConfig, size: int) -> Any:
        """``reference_sample`` of ``index`` on this side, timed."""
        originals = augment_mod.apply_lsj, ref.warp_crop, ref.cpu_loops
        augment_mod.apply_lsj = self.lsj.wrap(originals[0])
        ref.warp_crop = self.warp.wrap(originals[1], lambda img, mask, geom, *rest: not geom.identity)
        if self.name == "numpy":
            ref.cpu_loops = lambda: None
        try:
            return self.sample.wrap(augment_mod.reference_sample)(ds, index, epoch=0, seed=0, cfg=cfg,
                                                                  output_size=size)
        finally:
            augment_mod.apply_lsj, ref.warp_crop, ref.cpu_loops = originals


def same(a: Any, b: Any) -> bool:
    """Bit-identical outputs (every array and the counts)."""
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        if (x is None) != (y is None) or (x is not None and (x.dtype != y.dtype or not np.array_equal(x, y))):
            return False
    return a.info == b.info


def summary(sides: list[Side], n: int) -> dict[str, Any]:
    """Per side: ms per image (wall, CPU) of the sample, the LSJ and the paste warps; per warp call: mean, max."""
    out = {}
    for s in sides:
        row = {}
        for part in ("sample", "lsj", "warp"):
            c: Clock = getattr(s, part)
            row[part] = dict(wall_ms_per_img=1e3 * c.wall / n, cpu_ms_per_img=1e3 * c.cpu / n, calls=len(c.calls))
        calls = np.array(s.warp.calls, dtype=np.float64).reshape(-1, 2) * 1e3
        for k, kind in enumerate(("wall", "cpu")):
            col = calls[:, k]
            row["warp"][f"{kind}_ms_per_call"] = dict(mean=float(col.mean()) if col.size else 0.0,
                                                      max=float(col.max()) if col.size else 0.0)
        out[s.name] = row
    return out


def print_table(res: dict[str, Any]) -> None:
    a, b = res["numpy"], res["compiled"]
    print(f"\n{res['images']} images, LSJ {res['size']}^2, OCPConfig.ocp(), core {res['core']}, "
          f"bit-identical: {res['identical']}")
    print(f"{'ms per image (wall / cpu)':34s} {'numpy':>17s} {'compiled':>17s} {'speed-up':>9s}")
    for part, label in (("lsj", "LSJ (apply_lsj)"), ("warp", "paste warp (warp_crop)"),
                        ("sample", "whole sample (reference_sample)")):
        x, y = a[part], b[part]
        ratio = x["wall_ms_per_img"] / max(y["wall_ms_per_img"], 1e-9)
        print(f"{label:34s} {x['wall_ms_per_img']:8.1f} / {x['cpu_ms_per_img']:6.1f} "
              f"{y['wall_ms_per_img']:8.1f} / {y['cpu_ms_per_img']:6.1f} {ratio:8.1f}x")
    for kind in ("wall", "cpu"):
        x, y = a["warp"][f"{kind}_ms_per_call"], b["warp"][f"{kind}_ms_per_call"]
        print(f"{'paste warp per call, ' + kind + ' (mean / max)':34s} {x['mean']:8.2f} / {x['max']:6.1f} "
              f"{y['mean']:8.2f} / {y['max']:6.1f}   ({a['warp']['calls']} calls)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ann", default=str(DATA / "annotations" / "person_keypoints_val2017.json"))
    ap.add_argument("--images", default=str(DATA / "val2017"))
    ap.add_argument("--limit", type=int, default=0, help="images to time (0: all)")
    ap.add_argument("--size", type=int, default=1024, help="LSJ output side")
    ap.add_argument("--core", type=int, default=0, help="CPU core to pin to (-1: no pinning)")
    ap.add_argument("--out", default=str(ROOT / "out"))
    args = ap.parse_args()
    if args.core >= 0:
        os.sched_setaffinity(0, {args.core})
    if geometry_cpu.loops() is None:
        print("no compiled loops (no C++ compiler, or OCP_CPU_LOOPS=0): nothing to compare", file=sys.stderr)
        return 1
    ds = CocoInstances(args.ann, args.images, classes=["person"])
    cfg = OCPConfig.ocp()
    n = len(ds) if args.limit <= 0 else min(args.limit, len(ds))
    Side("compiled").run(ds, 0, cfg, args.size)  # warm-up: imports, caches, the library load
    sides = [Side("numpy"), Side("compiled")]
    identical = True
    for i in range(n):
        order = sides if i % 2 == 0 else sides[::-1]
        outs = {s.name: s.run(ds, i, cfg, args.size) for s in order}
        identical &= same(outs["numpy"], outs["compiled"])
    res = dict(images=n, size=args.size, core=args.core, identical=identical, machine=platform.processor() or
               platform.machine(), cpus=os.cpu_count(), **summary(sides, n))
    print_table(res)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "geometry_speed.json"
    path.write_text(json.dumps(res, indent=2))
    print(f"wrote {path}")
    return 0 if identical else 2


if __name__ == "__main__":
    sys.exit(main())
