"""Correctness checks the GPU suite runs (benchmarks/gpu_suite.sh, issue 13 section 3).

    python benchmarks/gpu_checks.py small  [--backend cuda|emulated]   one small shape per kernel family
    python benchmarks/gpu_checks.py dcgan  [--batch N]                 every variant at the DCGAN shapes
    python benchmarks/gpu_checks.py stream                             kernels run on the current stream

small: every variant of every kernel family once, at a small shape, outputs poisoned (NaN) and
    checked against the float64 reference: what compute-sanitizer memcheck, racecheck and synccheck
    run (small, so the sanitizers finish in seconds). With --backend emulated it runs on the CPU
    through pygan._emu (tests/test_gpu_checks_script.py does, so the script stays runnable).
dcgan: the same at the DCGAN 64x64 layer shapes (batch 128 by default): D's convolutions, G's
    transposed convolutions, batch norm (all variants, (128, 64, 32, 32) included), the pointwise ops,
    the losses, Adam.
stream: under a non-default, non-blocking CuPy stream held busy by a spinning kernel, an op's
    output must not be ready before the spin ends (it was queued behind it, on that stream), and
    must be right after. A kernel launched on the legacy default stream would have run at once.
Exit status 0 when every check passed; one line per check, failures first in the summary.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pygan.ops import reference as R  # noqa: E402

TOL = (1e-4, 1e-3)  # (atol relative to max(max|ref|, 1), rtol), as the benchmarks check
TF32_TOL = (5e-3, 1e-2)


class Checker:
    def __init__(self, backend):
        self.backend = backend
        if backend == "cuda":
            import cupy as cp

            from pygan.ops import cuda

            self.xp, self.ops = cp, cuda.backend(poison=True)
        else:
            from pygan.ops import emulated

            self.xp, self.ops = np, emulated.backend(poison=True)
        self.variants = self.ops.variants()
        self.results = []  # (name, ok, detail)

    def dev(self, a):
        if a is None or isinstance(a, (int, float)):
            return a
        if isinstance(a, list):
            return [self.dev(v) for v in a]
        return self.xp.asarray(a)

    def host(self, a):
        return a if a is None or isinstance(a, np.ndarray) else (self.xp.asnumpy(a) if self.xp is not np else a)

    def compare(self, name, outs, refs, tol):
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        refs = refs if isinstance(refs, (tuple, list)) else (refs,)
        if len(outs) != len(refs):
            self.results.append((name, False, f"{len(outs)} outputs, expected {len(refs)}"))
            return
        for i, (o, r) in enumerate(zip(outs, refs)):
            if r is None:
                continue
            o = np.asarray(self.host(o), np.float64)
            r = np.asarray(r, np.float64)
            scale = max(float(np.abs(r).max(initial=0.0)), 1.0)
            err = np.abs(o - r)
            bad = ~(err <= tol[0] * scale + tol[1] * np.abs(r))  # NaN (unwritten) is bad
            if o.shape != r.shape or bad.any():
                worst = float(np.nanmax(err, initial=np.inf)) if o.shape == r.shape else float("nan")
                self.results.append((f"{name} [output {i}]", False, f"shape {o.shape} vs {r.shape}, max err {worst:.3g}"))
                return
        self.results.append((name, True, ""))

    def run(self, family, name, call, ref, tol=TOL):
        """call(variant) -> outputs, for every variant of `family`; ref: float64 outputs."""
        for v, vname in enumerate(self.variants[family], 1):
            tf32 = "tf32" in vname.lower()
            label = f"{name} {family} v{v}"
            try:
                outs = call(v)
            except ValueError as exc:
                if tf32:  # refused: under emulation, or a GPU/build below sm_80
                    self.results.append((label, True, f"skipped: {exc}"))
                    continue
                self.results.append((label, False, f"ValueError: {exc}"))
                continue
            except Exception as exc:  # a launch error: report it, go on
                self.results.append((label, False, f"{type(exc).__name__}: {exc}"))
                continue
            self.compare(label, outs, ref, TF32_TOL if tf32 else tol)


def f32(rng, shape, scale=1.0, shift=0.0):
    return (rng.standard_normal(shape) * scale + shift).astype(np.float32)


def f64(a):
    return None if a is None else (a.astype(np.float64) if isinstance(a, np.ndarray) else [f64(v) for v in a])


def check_conv(ck, rng, label, n, c, h, w, o, k, s, p, transpose=False):
    ops, d = ck.ops, ck.dev
    if not transpose:
        x, wt = f32(rng, (n, c, h, w)), f32(rng, (o, c, k, k), 0.1)
        b = f32(rng, (o,))
        y = R.conv2d_forward(f64(x), f64(wt), f64(b), s, p)
        dy = f32(rng, y.shape)
        ck.run("conv2d", f"{label} forward", lambda v: ops.conv2d_forward(d(x), d(wt), d(b), s, p, variant=v), y)
        ref = R.conv2d_backward(f64(x), f64(wt), f64(dy), s, p, True)
        ck.run("conv2d", f"{label} backward", lambda v: ops.conv2d_backward(d(x), d(wt), d(dy), s, p, True, variant=v),
               ref)
    else:  # x (n, c, h, w) -> y (n, o, ...); weight (c, o, k, k)
        x, wt = f32(rng, (n, c, h, w)), f32(rng, (c, o, k, k), 0.1)
        y = R.conv_transpose2d_forward(f64(x), f64(wt), None, s, p, 0)
        dy = f32(rng, y.shape)
        ck.run("conv2d", f"{label} forward",
               lambda v: ops.conv_transpose2d_forward(d(x), d(wt), None, s, p, 0, variant=v), y)
        ref = R.conv_transpose2d_backward(f64(x), f64(wt), f64(dy), s, p, 0, False)
        ck.run("conv2d", f"{label} backward",
               lambda v: ops.conv_transpose2d_backward(d(x), d(wt), d(dy), s, p, 0, False, variant=v), ref)


def check_bn(ck, rng, shape, slope=0.2):
    ops, d = ck.ops, ck.dev
    c = shape[1]
    x, g, b, dy = f32(rng, shape, 2.0, 0.5), f32(rng, (c,), 0.5, 1.0), f32(rng, (c,)), f32(rng, shape)
    rm, rv = f32(rng, (c,)), (rng.random(c) + 0.5).astype(np.float32)
    for training in (True, False):
        mode = "train" if training else "eval"
        ref = R.batch_norm_forward(f64(x), f64(g), f64(b), f64(rm), f64(rv), training, 0.1, 1e-5)
        ck.run("batch_norm", f"bn {shape} forward {mode}",
               lambda v: ops.batch_norm_forward(d(x), d(g), d(b), d(rm), d(rv), training, 0.1, 1e-5, variant=v), ref)
        mean, rstd = ref[1].astype(np.float32), ref[2].astype(np.float32)
        gref = R.batch_norm_leaky_relu_backward(f64(x), f64(g), f64(b), f64(dy), f64(mean), f64(rstd), training, slope)
        ck.run("batch_norm", f"bn+lrelu {shape} backward {mode}",
               lambda v: ops.batch_norm_leaky_relu_backward(d(x), d(g), d(b), d(dy), d(mean), d(rstd), training, slope,
                                                            variant=v), gref)
    ref = R.batch_norm_leaky_relu_forward(f64(x), None, None, None, None, True, 0.1, 1e-5, slope)
    ck.run("batch_norm", f"bn+lrelu {shape} forward plain",
           lambda v: ops.batch_norm_leaky_relu_forward(d(x), None, None, None, None, True, 0.1, 1e-5, slope, variant=v),
           ref)


def check_pointwise_and_losses(ck, rng, shape, rows, classes):
    ops, d = ck.ops, ck.dev
    x, dy = f32(rng, shape, 2.0), f32(rng, shape)
    ck.run("activation", f"leaky_relu {shape}", lambda v: (ops.leaky_relu_forward(d(x), 0.2, variant=v),
                                                          ops.leaky_relu_backward(d(x), d(dy), 0.2, variant=v)),
           (R.leaky_relu_forward(f64(x), 0.2), R.leaky_relu_backward(f64(x), f64(dy), 0.2)))
    for fn in ("tanh", "sigmoid"):
        fwd, bwd = getattr(R, fn + "_forward"), getattr(R, fn + "_backward")
        y = fwd(f64(x))
        ck.run("activation", f"{fn} {shape}",
               lambda v, fn=fn, y=y: (getattr(ops, fn + "_forward")(d(x), variant=v),
                                      getattr(ops, fn + "_backward")(d(y.astype(np.float32)), d(dy), variant=v)),
               (y, bwd(y.astype(np.float32).astype(np.float64), f64(dy))))
    logits, target = f32(rng, (rows,), 3.0), rng.random(rows).astype(np.float32)
    ck.run("loss", f"bce ({rows},)", lambda v: (ops.binary_cross_entropy_with_logits_forward(d(logits), d(target), variant=v),
                                               ops.binary_cross_entropy_with_logits_backward(d(logits), d(target), 1.0,
                                                                                             variant=v)),
           (R.binary_cross_entropy_with_logits_forward(f64(logits), f64(target)),
            R.binary_cross_entropy_with_logits_backward(f64(logits), f64(target), 1.0)))
    lg, labels = f32(rng, (rows, classes), 3.0), rng.integers(0, classes, rows)
    ck.run("loss", f"softmax_ce ({rows}, {classes})",
           lambda v: (ops.softmax_cross_entropy_forward(d(lg), d(labels), variant=v),
                      ops.softmax_cross_entropy_backward(d(lg), d(labels), 1.0, variant=v)),
           (R.softmax_cross_entropy_forward(f64(lg), labels), R.softmax_cross_entropy_backward(f64(lg), labels, 1.0)))


def check_optimizers(ck, rng, sizes):
    ops, d = ck.ops, ck.dev
    p, g = [f32(rng, (n,)) for n in sizes], [f32(rng, (n,)) for n in sizes]
    m, s2 = [f32(rng, (n,), 0.1) for n in sizes], [(rng.random(n) * 0.1).astype(np.float32) for n in sizes]
    hyper = (3, 1e-3, 0.9, 0.999, 1e-8, 0.01)

    def adam(v):
        state = [d([a.copy() for a in group]) for group in (p, m, s2)]
        ops.adam_step(state[0], d(g), state[1], state[2], *hyper, variant=v)
        return state[0] + state[1] + state[2]

    refs = [f64(p), f64(m), f64(s2)]
    R.adam_step(refs[0], f64(g), refs[1], refs[2], *hyper)
    ck.run("adam", f"adam {len(sizes)} tensors", adam, refs[0] + refs[1] + refs[2])

    def rmsprop(v):
        state = [d([a.copy() for a in group]) for group in (p, s2, m)]
        ops.rmsprop_step(state[0], d(g), state[1], state[2], [], 1e-3, 0.99, 1e-8, 0.0, 0.9, False, variant=v)
        return state[0] + state[1] + state[2]

    refs = [f64(p), f64(s2), f64(m)]
    R.rmsprop_step(refs[0], f64(g), refs[1], refs[2], [], 1e-3, 0.99, 1e-8, 0.0, 0.9, False)
    ck.run("rmsprop", f"rmsprop {len(sizes)} tensors", rmsprop, refs[0] + refs[1] + refs[2])


def check_others(ck, rng, n):
    ops, d = ck.ops, ck.dev
    x = f32(rng, (n, 3, 8, 8))
    y = R.avg_pool2d_forward(f64(x), 2, 2)
    dy = f32(rng, y.shape)
    ck.run("avg_pool2d", f"avg_pool2d {x.shape}", lambda v: (ops.avg_pool2d_forward(d(x), 2, 2, variant=v),
                                                            ops.avg_pool2d_backward(d(dy), x.shape, 2, 2, variant=v)),
           (y, R.avg_pool2d_backward(f64(dy), x.shape, 2, 2)))
    wt, idx = f32(rng, (10, 50)), rng.integers(0, 10, n)
    dye = f32(rng, (n, 50))
    ck.run("embedding", f"embedding ({n},) x (10, 50)",
           lambda v: (ops.embedding_forward(d(wt), d(idx), variant=v), ops.embedding_backward(d(dye), d(idx), 10, variant=v)),
           (R.embedding_forward(f64(wt), idx), R.embedding_backward(f64(dye), idx, 10)))
    xg, gg, bg = f32(rng, (n, 8, 5, 5)), f32(rng, (8,)), f32(rng, (8,))
    ref = R.group_norm_forward(f64(xg), f64(gg), f64(bg), 4, 1e-5)
    dyg = f32(rng, xg.shape)
    mean, rstd = ref[1].astype(np.float32), ref[2].astype(np.float32)
    ck.run("group_norm", f"group_norm {xg.shape} groups 4",
           lambda v: ops.group_norm_forward(d(xg), d(gg), d(bg), 4, 1e-5, variant=v)
           + ops.group_norm_backward(d(xg), d(gg), d(dyg), d(mean), d(rstd), 4, variant=v),
           ref + R.group_norm_backward(f64(xg), f64(gg), f64(dyg), f64(mean), f64(rstd), 4))
    xl, wl, bl = f32(rng, (n, 20)), f32(rng, (7, 20)), f32(rng, (7,))
    dyl = f32(rng, (n, 7))
    ck.run("conv2d", f"linear ({n}, 20) -> 7", lambda v: (ops.linear_forward(d(xl), d(wl), d(bl), variant=v),)
           + ops.linear_backward(d(xl), d(wl), d(dyl), True, variant=v),
           (R.linear_forward(f64(xl), f64(wl), f64(bl)),) + R.linear_backward(f64(xl), f64(wl), f64(dyl), True))


def small(ck, rng):
    check_conv(ck, rng, "conv s2", 2, 3, 9, 8, 4, 4, 2, 1)
    check_conv(ck, rng, "conv s1", 2, 5, 6, 6, 3, 3, 1, 1)
    check_conv(ck, rng, "convT s2", 2, 4, 4, 4, 3, 4, 2, 1, transpose=True)
    check_bn(ck, rng, (2, 3, 5, 5))
    check_bn(ck, rng, (2, 2, 48, 48))  # batch norm variant 3: two blocks per channel
    check_pointwise_and_losses(ck, rng, (3, 5, 7), 37, 10)
    check_optimizers(ck, rng, [5, 130, 1])
    check_others(ck, rng, 3)


def dcgan(ck, rng, batch):
    for name, c, h, o, k, s, p in [("D1", 3, 64, 64, 4, 2, 1), ("D2", 64, 32, 128, 4, 2, 1), ("D3", 128, 16, 256, 4, 2, 1),
                                   ("D4", 256, 8, 512, 4, 2, 1), ("D5", 512, 4, 1, 4, 1, 0)]:
        check_conv(ck, rng, f"{name} conv", batch, c, h, h, o, k, s, p)
    for name, c, h, o, k, s, p in [("G1", 100, 1, 512, 4, 1, 0), ("G2", 512, 4, 256, 4, 2, 1), ("G3", 256, 8, 128, 4, 2, 1),
                                   ("G4", 128, 16, 64, 4, 2, 1), ("G5", 64, 32, 3, 4, 2, 1)]:
        check_conv(ck, rng, f"{name} convT", batch, c, h, h, o, k, s, p, transpose=True)
    for shape in [(batch, 512, 4, 4), (batch, 256, 8, 8), (batch, 128, 16, 16), (batch, 64, 32, 32)]:
        check_bn(ck, rng, shape)
    check_pointwise_and_losses(ck, rng, (batch, 3, 64, 64), batch, 10)
    check_optimizers(ck, rng, [64 * 3 * 16, 128 * 64 * 16, 256 * 128 * 16, 512 * 256 * 16, 512 * 16, 64, 64])


def stream(ck, rng):
    if ck.backend != "cuda":
        ck.results.append(("stream", True, "skipped: needs CuPy and a GPU"))
        return
    cp, ops = ck.xp, ck.ops
    spin = cp.RawKernel(r"""
extern "C" __global__ void spin(long long cycles) {
  const long long t0 = clock64();
  while (clock64() - t0 < cycles) {}
}""", "spin")
    cycles = int(cp.cuda.Device().attributes["ClockRate"]) * 1000 // 2  # about half a second
    x, w = f32(rng, (8, 16, 32, 32)), f32(rng, (32, 16, 4, 4), 0.1)
    cases = {
        "tanh_forward": (lambda a, b: ops.tanh_forward(a), R.tanh_forward(f64(x))),
        "conv2d_forward": (lambda a, b: ops.conv2d_forward(a, b, None, 2, 1), R.conv2d_forward(f64(x), f64(w), None, 2, 1)),
    }
    for v in range(1, len(ck.variants["batch_norm"]) + 1):
        cases[f"batch_norm_forward v{v}"] = (
            lambda a, b, v=v: ops.batch_norm_forward(a, None, None, None, None, True, 0.1, 1e-5, variant=v)[0],
            R.batch_norm_forward(f64(x), None, None, None, None, True, 0.1, 1e-5)[0])
    xd, wd = cp.asarray(x), cp.asarray(w)
    cp.cuda.Device().synchronize()
    for name, (fn, ref) in cases.items():
        busy_stream = cp.cuda.Stream(non_blocking=True)
        other = cp.cuda.Stream(non_blocking=True)
        with busy_stream:
            spin((1,), (1,), (cycles,))
            out = fn(xd, wd)
            still_busy = not busy_stream.done
        with other:
            early = cp.asnumpy(out, stream=other)  # read while busy_stream is still spinning
        other.synchronize()
        busy_stream.synchronize()
        if not still_busy:
            ck.results.append((f"stream {name}", False, "the spin ended before the op was queued: inconclusive"))
            continue
        ready_early = bool(np.allclose(early, ref, atol=1e-3, rtol=1e-3))
        ck.results.append((f"stream {name}: queued behind the stream's work", not ready_early,
                           "the output was ready before the stream's earlier work finished" if ready_early else ""))
        ck.compare(f"stream {name}: result", out, ref, TOL)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["small", "dcgan", "stream"])
    ap.add_argument("--backend", default="cuda", choices=["cuda", "emulated"])
    ap.add_argument("--batch", type=int, default=128, help="dcgan: batch size of every layer")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    ck = Checker(args.backend)
    rng = np.random.default_rng(args.seed)
    {"small": lambda: small(ck, rng), "dcgan": lambda: dcgan(ck, rng, args.batch), "stream": lambda: stream(ck, rng)}[
        args.mode]()
    failed = [r for r in ck.results if not r[1]]
    for name, ok, detail in ck.results:
        print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else ""))
    print(f"\n{len(ck.results) - len(failed)} passed, {len(failed)} failed ({args.mode}, {args.backend})")
    for name, _, detail in failed:
        print(f"FAILED {name}: {detail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
