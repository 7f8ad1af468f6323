"""Small workload for ``compute-sanitizer`` (memcheck, racecheck): every kernel on a few synthetic scenes.

``python tools/sanitize_driver.py`` runs ``apply_cupy_batch`` on batches that exercise jitter,
geometric jitter, feathering, the simple mode and empty plans, plus the RLE decoder, and checks the results
against the NumPy reference. CuPy's memory pool is switched off so that every array is its own ``cudaMalloc``:
memcheck then sees an out-of-bounds access even when it lands inside memory the pool would own.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=6, help="synthetic scenes per batch")
    ap.add_argument("--size", type=int, nargs=2, default=(160, 224), metavar=("H", "W"))
    ap.add_argument("--keep-pool", action="store_true", help="leave CuPy's memory pool on")
    args = ap.parse_args(argv)

    import cupy
    from pycocotools import mask as mask_utils

    from ocp_dali import OCPConfig, SyntheticScenes, apply, plan_for
    from ocp_dali.kernels.apply import apply_cupy_batch
    from ocp_dali.kernels.rle import decode_rles

    if not args.keep_pool:
        cupy.cuda.set_allocator(None)
    ds = SyntheticScenes(num_images=args.images + 4, seed=3, image_size=tuple(args.size), max_people=6)
    cfgs = [
        OCPConfig.ocp(prob=1.0, paste_num=(2, 6), basket_size=2, min_size_paste=0.0, blend_sigma=1.5),
        OCPConfig.ocp(prob=0.7, paste_num=(1, 4), min_size_paste=0.0),
        OCPConfig.simple(),
    ]
    failures = 0
    for c, cfg in enumerate(cfgs):
        plans, dsts, srcs = [], [], []
        for i in range(args.images):
            plan = plan_for(ds, i, seed=c, cfg=cfg)
            plans.append(plan)
            dsts.append(ds.load(i))
            srcs.append([ds.load(plan.basket[b]) if b in plan.used_sources else None
                         for b in range(len(plan.basket))])
        outs = apply_cupy_batch(plans, dsts, srcs)
        cupy.cuda.Device().synchronize()
        for plan, dst, s, out in zip(plans, dsts, srcs, outs):
            ref = apply(plan, dst, s)
            for k, v in ref.arrays().items():
                w = getattr(out, k)
                same = (v is None and w is None) or (v is not None and w is not None
                                                     and np.array_equal(v, cupy.asnumpy(w)))
                if not same:
                    failures += 1
                    print(f"config {c}: {dst.file_name}: {k} differs from the reference", file=sys.stderr)
    masks = [np.asfortranarray((np.random.default_rng(i).random((17 + i, 23)) < 0.4).astype(np.uint8))
             for i in range(5)]
    rles = [mask_utils.encode(m) for m in masks]
    for m, g in zip(masks, decode_rles(rles)):
        if not np.array_equal(cupy.asnumpy(g), m.astype(bool)):
            failures += 1
            print("rle decode differs from pycocotools", file=sys.stderr)
    cupy.cuda.Device().synchronize()
    print(f"sanitize driver: {len(cfgs)} batches of {args.images}, {failures} mismatches")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
