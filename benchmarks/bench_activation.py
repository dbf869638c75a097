"""Pointwise activation kernels: check every variant against the reference, then time it.

    python benchmarks/bench_activation.py [--device cuda|cpu] [--reps 50] [--sizes 1048576 ...]

cuda: every kernel variant of leaky_relu / tanh / sigmoid forward and backward, first checked
against pygan.ops.reference (rtol 1e-5, atol 1e-6; a mismatch is printed as FAILED and not timed),
then timed with CUDA events (median of --reps runs after a warm-up) on CuPy's current stream;
GB/s counts the bytes each op must move (forward: read x, write y; backward: read two, write one).
A device-to-device copy of the same size is timed as the bandwidth ceiling. cpu: the numpy
reference, timed with perf_counter. Self-contained on purpose (no harness import).
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pygan.ops import reference  # noqa: E402

OPS = [  # (name, extra args, backward input: "x" or "y")
    ("leaky_relu", (0.2,), "x"),
    ("tanh", (), "y"),
    ("sigmoid", (), "y"),
]
DEFAULT_SIZES = [64 * 128 * 16 * 16, 1 << 24]  # a DCGAN activation (batch 64, 128x16x16); 16M


def time_gpu(cp, fn, reps):
    for _ in range(3):
        fn()
    start, stop, times = cp.cuda.Event(), cp.cuda.Event(), []
    for _ in range(reps):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop) / 1e3)
    return statistics.median(times)


def time_cpu(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def row(op, n, impl, seconds, nbytes, ceiling=None):
    gbs = nbytes / seconds / 1e9
    frac = f"  {gbs / ceiling:5.0%} of copy" if ceiling else ""
    print(f"{op:22s} n={n:>9d}  {impl:44s} {seconds * 1e6:9.1f} us  {gbs:8.1f} GB/s{frac}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--sizes", type=int, nargs="*", default=DEFAULT_SIZES)
    args = ap.parse_args()
    rng = np.random.default_rng(0)

    if args.device == "cpu":
        for n in args.sizes:
            x, dy = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
            for name, extra, src in OPS:
                fwd, bwd = getattr(reference, f"{name}_forward"), getattr(reference, f"{name}_backward")
                y = fwd(x, *extra)
                s = x if src == "x" else y
                row(f"{name}_forward", n, "numpy reference", time_cpu(lambda: fwd(x, *extra), args.reps), 8 * n)
                row(f"{name}_backward", n, "numpy reference", time_cpu(lambda: bwd(s, dy, *extra), args.reps), 12 * n)
        return 0

    from pygan.backend import require_cupy

    try:
        cp = require_cupy()
    except RuntimeError as exc:
        print(f"no GPU: {exc}")
        return 1
    from pygan.ops import cuda

    gpu = cuda.backend()
    names = gpu.variants()["activation"]
    print(f"device: {cp.cuda.runtime.getDeviceProperties(0)['name'].decode()}; variants: {names}")
    failed = 0
    for n in args.sizes:
        x = rng.standard_normal(n, dtype=np.float32) * 3
        dy = rng.standard_normal(n, dtype=np.float32)
        xd, dyd = cp.asarray(x), cp.asarray(dy)
        dst = cp.empty_like(xd)
        copy = time_gpu(cp, lambda: cp.copyto(dst, xd), args.reps)
        ceiling = 8 * n / copy / 1e9
        row("copy (ceiling)", n, "cupy.copyto", copy, 8 * n)
        for name, extra, src in OPS:
            y_ref = getattr(reference, f"{name}_forward")(x, *extra)
            s = x if src == "x" else y_ref
            dx_ref = getattr(reference, f"{name}_backward")(s, dy, *extra)
            sd = cp.asarray(s)
            for v, label in enumerate(names, start=1):
                fwd = lambda: getattr(gpu, f"{name}_forward")(xd, *extra, variant=v)  # noqa: E731
                bwd = lambda: getattr(gpu, f"{name}_backward")(sd, dyd, *extra, variant=v)  # noqa: E731
                for op, fn, ref, nbytes in ((f"{name}_forward", fwd, y_ref, 8 * n), (f"{name}_backward", bwd, dx_ref, 12 * n)):
                    if not np.allclose(fn().get(), ref, rtol=1e-5, atol=1e-6, equal_nan=True):
                        print(f"{op:22s} n={n:>9d}  {v}: {label}: FAILED check against the reference")
                        failed += 1
                        continue
                    row(op, n, f"{v}: {label}", time_gpu(cp, fn, args.reps), nbytes, ceiling)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
