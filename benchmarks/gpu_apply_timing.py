"""Time ``apply_cupy_batch`` against the NumPy reference on one CPU core, with a memory-bandwidth roofline.

Workload (defaults): a batch of 32 synthetic 1024x1024 images, each with up to 10 existing people
(``SyntheticScenes(image_size=(1024, 1024), max_people=10)``, also the paste sources) and 10 pastes from a basket of
3 (``OCPConfig.ocp(prob=1.0, paste_num=(10, 11), basket_size=3, min_size_paste=0.0)``).

GPU: inputs already on the device (the pipeline's situation: images decoded there), ``--warmup`` untimed runs, then
``--repeats`` runs, each followed by ``cupy.cuda.Device().synchronize()``; the median is reported (also with NumPy
inputs, i.e. including their upload). CPU: ``reference.apply_numpy`` pinned to one core on ``--cpu-samples`` of
the same plans, scaled to the batch.

Roofline: the bytes any implementation must move through device memory for the batch,
    B = sum over samples of [ 6 H W                     (destination image read, output image written)
                              + 3 n_in H W              (visible, amodal, occluder planes of existing instances read)
                              + 3 n_out H W             (visible, amodal, occluder planes written)
                              + (c_in + c_out) H W      (crowd planes read and written)
                              + n_out^2                 (order matrix written)
                              + sum over pastes 4 h w ] (crop pixels (3 bytes) and crop mask (1 byte) read)
and the achieved fraction is (B / t_gpu) / peak, with peak = memoryClockRate * 2 (DDR) * busWidth / 8 from the
device attributes. Masks are one byte per pixel (NumPy / CuPy bool), as in the outputs.

Results: ``benchmarks/results/gpu_apply_<device>.json`` (device name, versions, the exact command, timings,
speedup, roofline). ``--cpu-only`` skips the GPU (no CuPy needed) and by default runs a tiny size, as a smoke test.
``--lsj`` adds ``gpu_lsj``: the geometry kernels alone (``kernels/lsj.cu``) on the same batch (``time_lsj_gpu``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ocp_dali import OCPConfig, SyntheticScenes, plan_for  # noqa: E402
from ocp_dali.reference import apply_numpy  # noqa: E402


def build_batch(batch: int, size: int, max_people: int, pastes: int, seed: int):
    """(plans, destinations, sources per sample) of the benchmark workload."""
    ds = SyntheticScenes(num_images=max(2 * batch, 8), seed=seed, image_size=(size, size), max_people=max_people)
    cfg = OCPConfig.ocp(prob=1.0, paste_num=(pastes, pastes + 1), basket_size=3, min_size_paste=0.0)
    cache: dict[int, object] = {}

    def load(i: int):
        if i not in cache:
            cache[i] = ds.load(i)
        return cache[i]

    plans, dsts, srcs = [], [], []
    for i in range(batch):
        plan = plan_for(ds, i, seed=seed, cfg=cfg)
        plans.append(plan)
        dsts.append(load(i))
        srcs.append([load(plan.basket[b]) if b in plan.used_sources else None for b in range(len(plan.basket))])
    return plans, dsts, srcs, cfg


def compulsory_bytes(plans, dsts, outs) -> int:
    """B of the module docstring."""
    total = 0
    for plan, dst, out in zip(plans, dsts, outs):
        hw = dst.height * dst.width
        n_in, n_out = len(dst), len(out)
        c_in, c_out = len(dst.crowd_masks), len(out.crowd_masks)
        total += 6 * hw + 3 * n_in * hw + 3 * n_out * hw + (c_in + c_out) * hw + n_out * n_out
        for op in plan.pastes:
            x0, y0, x1, y1 = op.src_box
            total += 4 * (x1 - x0) * (y1 - y0)
    return total


def time_cpu(plans, dsts, srcs, n: int) -> list[float]:
    """Seconds of ``apply_numpy`` per sample for the first n samples, on one pinned core."""
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    except (AttributeError, OSError):
        pass
    times = []
    for plan, dst, src in list(zip(plans, dsts, srcs))[:n]:
        t0 = time.perf_counter()
        apply_numpy(plan, dst, src)
        times.append(time.perf_counter() - t0)
    return times


def device_info() -> dict:
    import cupy

    rt = cupy.cuda.runtime
    dev = cupy.cuda.Device().id
    props = rt.getDeviceProperties(dev)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])

    def attr(key: str, enum: int | None):
        if key in props and props[key]:
            return int(props[key])
        try:
            return int(rt.deviceGetAttribute(enum, dev)) if enum is not None else None
        except Exception:  # attribute not offered by this runtime
            return None

    clock_khz = attr("memoryClockRate", getattr(rt, "cudaDevAttrMemoryClockRate", None))
    bus_bits = attr("memoryBusWidth", getattr(rt, "cudaDevAttrGlobalMemoryBusWidth", None))
    peak = clock_khz * 1e3 * 2 * bus_bits / 8 if clock_khz and bus_bits else None
    return dict(
        device=name, memory_clock_khz=clock_khz, bus_width_bits=bus_bits, peak_bandwidth_GBps=peak and peak / 1e9,
        cupy=cupy.__version__, cuda_runtime=rt.runtimeGetVersion(), cuda_driver=rt.driverGetVersion(),
    )


def time_gpu(plans, dsts, srcs, warmup: int, repeats: int) -> dict:
    import cupy

    from ocp_dali.kernels.apply import apply_cupy_batch

    def up(s):
        return None if s is None else s.map_arrays(cupy.asarray)

    cache: dict[int, object] = {}

    def dev(s):
        if s is None:
            return None
        if id(s) not in cache:
            cache[id(s)] = up(s)
        return cache[id(s)]

    d_dsts = [dev(d) for d in dsts]
    d_srcs = [[dev(s) for s in ss] for ss in srcs]

    def run(a, b):
        cupy.cuda.Device().synchronize()
        t0 = time.perf_counter()
        outs = apply_cupy_batch(plans, a, b)
        cupy.cuda.Device().synchronize()
        return time.perf_counter() - t0, outs

    for _ in range(warmup):
        run(d_dsts, d_srcs)
    dev_times = [run(d_dsts, d_srcs)[0] for _ in range(repeats)]
    host_times = [run(dsts, srcs)[0] for _ in range(max(1, repeats // 2))]
    _, outs = run(d_dsts, d_srcs)
    return dict(device_inputs_s=dev_times, host_inputs_s=host_times, outs=outs)


def time_lsj_gpu(dsts, size: int, warmup: int, repeats: int, seed: int = 0) -> dict | None:
    """The geometry kernels alone (``kernels.lsj.resample_batch``: three launches and one synchronisation per
    batch, every mask kind) on the batch's destinations, inputs on the device, LSJ onto a ``size``^2 canvas; the
    median of ``repeats`` synchronised runs. None without a CUDA GPU (nothing is imported from CuPy then)."""
    from ocp_dali.backends import cuda_device_count

    if cuda_device_count() == 0:
        return None
    import cupy

    from ocp_dali.kernels.loader import CupyBackend
    from ocp_dali.kernels.lsj import resample_batch
    from ocp_dali.lsj import Geometry

    rng = np.random.default_rng(seed)
    params = [Geometry.lsj(size).draw(rng, d.height, d.width) for d in dsts]
    dev = [d.map_arrays(cupy.asarray) for d in dsts]
    be = CupyBackend()

    def run() -> float:
        be.synchronize()
        t0 = time.perf_counter()
        resample_batch(be, dev, params)
        be.synchronize()
        return time.perf_counter() - t0

    for _ in range(warmup):
        run()
    times = [run() for _ in range(repeats)]
    med = statistics.median(times)
    return dict(median_ms=1e3 * med, ms=[1e3 * t for t in times], images_per_s=len(dsts) / med,
                output_size=[size, size], instances=int(sum(len(d) for d in dsts)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="apply_cupy_batch vs the NumPy reference (one core)")
    ap.add_argument("--batch", type=int, default=None, help="images per batch (32; 4 with --cpu-only)")
    ap.add_argument("--size", type=int, default=None, help="image side in pixels (1024; 128 with --cpu-only)")
    ap.add_argument("--max-people", type=int, default=10)
    ap.add_argument("--pastes", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--cpu-samples", type=int, default=8, help="samples the CPU reference is timed on")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cpu-only", action="store_true", help="no GPU: time the reference only (smoke test)")
    ap.add_argument("--lsj", action="store_true", help="also time the geometry kernels alone on the batch (LSJ "
                                                       "onto --size^2; GPU only, reported as skipped without one)")
    ap.add_argument("--out", type=Path, default=None, help="result json (default: benchmarks/results/"
                                                            "gpu_apply_<device>.json; none with --cpu-only)")
    args = ap.parse_args(argv)
    batch = args.batch or (4 if args.cpu_only else 32)
    size = args.size or (128 if args.cpu_only else 1024)
    command = " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else " ".join(
        ["gpu_apply_timing.py", *argv])

    t0 = time.perf_counter()
    plans, dsts, srcs, cfg = build_batch(batch, size, args.max_people, args.pastes, args.seed)
    build_s = time.perf_counter() - t0
    n_cpu = max(1, min(args.cpu_samples, batch))
    cpu = time_cpu(plans, dsts, srcs, n_cpu)
    cpu_batch_s = statistics.mean(cpu) * batch
    result = dict(
        command=command,
        workload=dict(batch=batch, size=[size, size], max_people=args.max_people, pastes_per_image=args.pastes,
                      config=repr(cfg), seed=args.seed,
                      existing_instances=int(sum(len(d) for d in dsts)),
                      planned_pastes=int(sum(len(p.pastes) for p in plans))),
        versions=dict(python=platform.python_version(), numpy=np.__version__),
        cpu=dict(samples_timed=n_cpu, per_sample_ms=[1e3 * t for t in cpu], batch_ms_estimated=1e3 * cpu_batch_s,
                 cores=1),
        build_s=build_s,
    )
    if not args.cpu_only:
        info = device_info()
        g = time_gpu(plans, dsts, srcs, args.warmup, args.repeats)
        med = statistics.median(g["device_inputs_s"])
        nbytes = compulsory_bytes(plans, dsts, g["outs"])
        achieved = nbytes / med
        result["versions"].update(cupy=info["cupy"], cuda_runtime=info["cuda_runtime"], cuda_driver=info["cuda_driver"])
        result["device"] = {k: info[k] for k in ("device", "memory_clock_khz", "bus_width_bits", "peak_bandwidth_GBps")}
        result["gpu"] = dict(
            median_ms=1e3 * med, device_inputs_ms=[1e3 * t for t in g["device_inputs_s"]],
            host_inputs_median_ms=1e3 * statistics.median(g["host_inputs_s"]),
            images_per_s=batch / med, warmup=args.warmup, repeats=args.repeats,
        )
        result["speedup_vs_one_core"] = cpu_batch_s / med
        result["roofline"] = dict(
            formula="B = sum_samples[6HW + 3 n_in HW + 3 n_out HW + (c_in + c_out) HW + n_out^2 + sum_pastes 4hw]",
            compulsory_bytes=nbytes, achieved_GBps=achieved / 1e9,
            fraction_of_peak=(achieved / (info["peak_bandwidth_GBps"] * 1e9)) if info["peak_bandwidth_GBps"] else None,
        )
        out = args.out or ROOT / "benchmarks" / "results" / (
            "gpu_apply_" + re.sub(r"[^a-z0-9]+", "-", info["device"].lower()).strip("-") + ".json")
    else:
        out = args.out
    if args.lsj:
        lsj = time_lsj_gpu(dsts, size, args.warmup, args.repeats, args.seed)
        result["gpu_lsj"] = lsj if lsj is not None else "skipped: no CUDA GPU"
    text = json.dumps(result, indent=2)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
