"""Multi-tensor Adam kernel: check every variant against the reference, then time one step.

    python benchmarks/bench_adam.py [--device cuda|cpu] [--reps 30]

The tensors are DCGAN's (nz 100, ngf = ndf = 64, 3x64x64): G and D, 6.3M parameters in 24
tensors, all updated by one adam_step call. cuda: each variant is first checked over two steps
against pygan.ops.reference.adam_step (rtol 1e-5, atol 1e-6), then timed with CUDA events (median
of --reps steps); GB/s counts 7 floats per parameter (read p, g, m, v; write p, m, v). cpu: the
numpy reference. Self-contained on purpose (no harness import).
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pygan.ops import reference  # noqa: E402

HYPER = dict(lr=2e-4, beta1=0.5, beta2=0.999, eps=1e-8, weight_decay=0.0)


def dcgan_shapes(nz=100, ngf=64, ndf=64, nc=3):
    g = [(nz, ngf * 8, 4, 4), (ngf * 8,), (ngf * 8,), (ngf * 8, ngf * 4, 4, 4), (ngf * 4,), (ngf * 4,),
         (ngf * 4, ngf * 2, 4, 4), (ngf * 2,), (ngf * 2,), (ngf * 2, ngf, 4, 4), (ngf,), (ngf,), (ngf, nc, 4, 4)]
    d = [(ndf, nc, 4, 4), (ndf * 2, ndf, 4, 4), (ndf * 2,), (ndf * 2,), (ndf * 4, ndf * 2, 4, 4), (ndf * 4,),
         (ndf * 4,), (ndf * 8, ndf * 4, 4, 4), (ndf * 8,), (ndf * 8,), (1, ndf * 8, 4, 4)]
    return g + d


def state(rng, shapes):
    p = [rng.standard_normal(s, dtype=np.float32) * 0.02 for s in shapes]
    g = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    m = [np.zeros(s, np.float32) for s in shapes]
    v = [np.zeros(s, np.float32) for s in shapes]
    return p, g, m, v


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    shapes = dcgan_shapes()
    n = sum(int(np.prod(s)) for s in shapes)
    nbytes = 7 * 4 * n
    print(f"{len(shapes)} tensors, {n} parameters")

    if args.device == "cpu":
        p, g, m, v = state(rng, shapes)
        times = []
        for step in range(1, args.reps + 1):
            t0 = time.perf_counter()
            reference.adam_step(p, g, m, v, step, **HYPER)
            times.append(time.perf_counter() - t0)
        t = statistics.median(times)
        print(f"numpy reference: {t * 1e3:8.2f} ms  {nbytes / t / 1e9:7.1f} GB/s")
        return 0

    from pygan.backend import require_cupy

    try:
        cp = require_cupy()
    except RuntimeError as exc:
        print(f"no GPU: {exc}")
        return 1
    from pygan.ops import cuda

    gpu = cuda.backend()
    names = gpu.variants()["adam"]
    print(f"device: {cp.cuda.runtime.getDeviceProperties(0)['name'].decode()}; variants: {names}")
    failed = 0
    for variant, label in enumerate(names, start=1):
        p, g, m, v = state(rng, shapes)
        dev = [[cp.asarray(a) for a in group] for group in (p, g, m, v)]
        for step in (1, 2):
            gpu.adam_step(*dev, step, **HYPER, variant=variant)
            reference.adam_step(p, g, m, v, step, **HYPER)
        ok = all(np.allclose(d.get(), h, rtol=1e-5, atol=1e-6) for dg, hg in zip(dev, (p, g, m, v)) for d, h in zip(dg, hg))
        if not ok:
            print(f"{variant}: {label}: FAILED check against the reference")
            failed += 1
            continue
        for step in range(3, 6):  # warm-up
            gpu.adam_step(*dev, step, **HYPER, variant=variant)
        start, stop, times = cp.cuda.Event(), cp.cuda.Event(), []
        for step in range(6, 6 + args.reps):
            start.record()
            gpu.adam_step(*dev, step, **HYPER, variant=variant)
            stop.record()
            stop.synchronize()
            times.append(cp.cuda.get_elapsed_time(start, stop) / 1e3)
        t = statistics.median(times)
        print(f"{variant}: {label:40s} {t * 1e6:9.1f} us  {nbytes / t / 1e9:7.1f} GB/s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
