"""Does each op of the fast CPU backend beat the reference? Timed at a DCGAN step's layer shapes.

    python benchmarks/cpu_kernels.py [--repeats 15] [--out benchmarks/results/cpu_kernels.json]

For every op pygan/ops/cpu.py implements itself (numba kernels; the convolutions with reused
buffers and scipy's GEMM), the calls one D+G step makes at 1x32x32 and 3x64x64, batch 64, are run
on pygan.ops.cpu and on pygan.ops.reference in alternating order, round after round, float32. Per
op and shape: the median time per step on each and the median (with quartiles) of the per-round
ratios cpu/reference. A kernel stays in the backend only where that ratio is below 1.
Threads: the CPU backend's policy (pygan/ops/cpu_runtime.py), PYGAN_NUM_THREADS to override.
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pygan.bench import machine_description  # noqa: E402
from pygan.ops import cpu  # noqa: E402
from pygan.ops import reference as R  # noqa: E402


def dcgan_layers(size, nc, batch=64, nz=100, ngf=64, ndf=64):
    """(G's conv-transpose layers, D's conv layers, G's BN shapes, D's BN shapes, D's leaky shapes,
    G's ReLU shapes), following pygan.models.dcgan."""
    n = int(np.log2(size)) - 2
    mult = 2 ** (n - 1)
    g = [((batch, nz, 1, 1), (nz, ngf * mult, 4, 4), 1, 0)]
    g_bn = [(batch, ngf * mult, 4, 4)]
    hw = 4
    for _ in range(n - 1):
        g.append(((batch, ngf * mult, hw, hw), (ngf * mult, ngf * mult // 2, 4, 4), 2, 1))
        mult //= 2
        hw *= 2
        g_bn.append((batch, ngf * mult, hw, hw))
    g.append(((batch, ngf, hw, hw), (ngf, nc, 4, 4), 2, 1))
    d = [((batch, nc, size, size), (ndf, nc, 4, 4), 2, 1)]
    d_act = [(batch, ndf, size // 2, size // 2)]
    d_bn = []
    mult, hw = 1, size // 2
    for _ in range(n - 1):
        d.append(((batch, ndf * mult, hw, hw), (ndf * mult * 2, ndf * mult, 4, 4), 2, 1))
        mult *= 2
        hw //= 2
        d_bn.append((batch, ndf * mult, hw, hw))
        d_act.append((batch, ndf * mult, hw, hw))
    d.append(((batch, ndf * mult, 4, 4), (1, ndf * mult, 4, 4), 1, 0))
    return g, d, g_bn, d_bn, d_act, g_bn


def cases(size, nc, rng):
    """op name -> list of (callable(module)) for one step's calls of that op (D runs 3 times a step)."""
    g, d, g_bn, d_bn, d_act, g_relu = dcgan_layers(size, nc)
    f = lambda shape, s=1.0: (rng.standard_normal(shape) * s).astype(np.float32)  # noqa: E731
    out = {k: [] for k in ("conv2d_forward", "conv2d_backward", "conv_transpose2d_forward", "conv_transpose2d_backward",
                           "batch_norm_forward", "batch_norm_backward", "leaky_relu_forward", "leaky_relu_backward",
                           "adam_step")}
    for xs, ws, s, p in d:
        x, w = f(xs), f(ws, 0.05)
        dy = f(R.conv2d_forward(x, w, None, s, p).shape)
        out["conv2d_forward"] += [lambda m, x=x, w=w, s=s, p=p: m.conv2d_forward(x, w, None, s, p)] * 3
        out["conv2d_backward"] += [lambda m, x=x, w=w, dy=dy, s=s, p=p: m.conv2d_backward(x, w, dy, s, p, False)] * 2
    for xs, ws, s, p in g:
        x, w = f(xs), f(ws, 0.05)
        dy = f(R.conv_transpose2d_forward(x, w, None, s, p, 0).shape)
        out["conv_transpose2d_forward"].append(lambda m, x=x, w=w, s=s, p=p: m.conv_transpose2d_forward(x, w, None, s, p, 0))
        out["conv_transpose2d_backward"].append(
            lambda m, x=x, w=w, dy=dy, s=s, p=p: m.conv_transpose2d_backward(x, w, dy, s, p, 0, False))
    for shapes, reps in ((g_bn, 1), (d_bn, 3)):
        for xs in shapes:
            c = xs[1]
            x, gm, bt, dy = f(xs), f((c,)), f((c,)), f(xs)
            rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
            _, mean, rstd = R.batch_norm_forward(x, gm, bt, None, None, True, 0.1, 1e-5)
            out["batch_norm_forward"] += [lambda m, x=x, gm=gm, bt=bt, rm=rm, rv=rv:
                                          m.batch_norm_forward(x, gm, bt, rm, rv, True, 0.1, 1e-5)] * reps
            out["batch_norm_backward"] += [lambda m, x=x, gm=gm, dy=dy, mean=mean, rstd=rstd:
                                           m.batch_norm_backward(x, gm, dy, mean, rstd, True)] * (2 if reps == 3 else 1)
    for shapes, slope, reps in ((d_act, 0.2, 3), (g_relu, 0.0, 1)):
        for xs in shapes:
            x, dy = f(xs), f(xs)
            out["leaky_relu_forward"] += [lambda m, x=x, sl=slope: m.leaky_relu_forward(x, sl)] * reps
            out["leaky_relu_backward"] += [lambda m, x=x, dy=dy, sl=slope: m.leaky_relu_backward(x, dy, sl)] * (2 if reps == 3 else 1)
    for layers, transpose in ((d, False), (g, True)):
        params = [f(ws, 0.05) for _, ws, _, _ in layers]
        state = [(p, f(p.shape), np.zeros_like(p), np.zeros_like(p)) for p in params]
        out["adam_step"].append(lambda m, st=state: m.adam_step(*map(list, zip(*st)), 5, 2e-4, 0.5, 0.999, 1e-8, 0.0))
    return out


def _quartiles(values):
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return q[0], q[2]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if not cpu.AVAILABLE:
        print(f"numba unavailable: {cpu.UNAVAILABLE}")
        return 1
    cpu.setup()
    rng = np.random.default_rng(0)
    report = {"machine": machine_description(), "repeats": args.repeats, "load_start": os.getloadavg()[0], "shapes": {}}
    print("machine:", report["machine"])
    for size, nc in ((32, 1), (64, 3)):
        shape = f"{nc}x{size}x{size} batch 64"
        rows = {}
        for op, calls in cases(size, nc, rng).items():
            t = {"cpu": [], "reference": []}
            for k in range(args.repeats + 1):
                order = (("cpu", cpu), ("reference", R)) if k % 2 else (("reference", R), ("cpu", cpu))
                for name, mod in order:
                    t0 = time.perf_counter()
                    for call in calls:
                        call(mod)
                    if k:  # the first round warms up (JIT from cache, workspaces)
                        t[name].append(time.perf_counter() - t0)
            ratios = [a / b for a, b in zip(t["cpu"], t["reference"])]
            rows[op] = {
                "calls_per_step": len(calls),
                "cpu_ms": 1e3 * statistics.median(t["cpu"]),
                "reference_ms": 1e3 * statistics.median(t["reference"]),
                "ratio": statistics.median(ratios),
                "ratio_quartiles": list(_quartiles(ratios)),
            }
            r = rows[op]
            print(f"{shape} {op:26s} cpu {r['cpu_ms']:7.2f} ms  reference {r['reference_ms']:7.2f} ms  "
                  f"cpu/reference {r['ratio']:.2f}x (quartiles {r['ratio_quartiles'][0]:.2f}-{r['ratio_quartiles'][1]:.2f})",
                  flush=True)
        report["shapes"][shape] = rows
    report["load_end"] = os.getloadavg()[0]
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
