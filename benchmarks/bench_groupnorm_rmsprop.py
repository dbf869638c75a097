"""group norm (forward, backward) at WGAN-GP critic shapes and one RMSprop step over DCGAN's
parameters: every pygan variant, against PyTorch when importable, and the numpy reference. Every
implementation is checked against the reference first. Memory-bound: GB/s counts the minimum
traffic (group norm forward: read x, write y; backward: read x and dy, write dx; RMSprop: read p,
g, v (+ buffer, + grad_avg), write p, v (+ buffer, + grad_avg)) against the device-to-device copy
bandwidth measured in the same run.

    python benchmarks/bench_groupnorm_rmsprop.py --device cuda [--out results.json]
    python benchmarks/bench_groupnorm_rmsprop.py --device cpu   # numpy-reference timings only
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_adam import dcgan_shapes  # noqa: E402
from harness import device_description, setup, torch_or_none  # noqa: E402

# critic activations of a DCGAN 64x64x3 D at batch 64: layer norm (G = 1), instance norm (G = C),
# and the usual 32 groups
GN_CASES = [
    ((64, 128, 16, 16), 1), ((64, 256, 8, 8), 1), ((64, 512, 4, 4), 1),
    ((64, 128, 16, 16), 128), ((64, 256, 8, 8), 256),
    ((64, 256, 8, 8), 32),
]
RMS_HYPERS = {
    "plain": dict(lr=5e-5, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False),
    "momentum+centered": dict(lr=5e-5, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.9, centered=True),
}
TOL = (1e-4, 1e-3)


def group_norm_cases(bench, args, ops, variants, torch, rng):
    from pygan.ops import reference as R

    for shape, groups in GN_CASES:
        if args.batch:
            shape = (args.batch, *shape[1:])
        c, numel = shape[1], int(np.prod(shape))
        sets_np = [(rng.standard_normal(shape).astype(np.float32), (rng.random(c) + 0.5).astype(np.float32),
                    rng.standard_normal(c).astype(np.float32), rng.standard_normal(shape).astype(np.float32))
                   for _ in range(bench.rotate)]
        label = f"{shape} G={groups}"
        x0, g0, b0, dy0 = (a.astype(np.float64) for a in sets_np[0])
        ref_fwd = R.group_norm_forward(x0, g0, b0, groups, 1e-5)
        ref_bwd = R.group_norm_backward(x0, g0, dy0, ref_fwd[1], ref_fwd[2], groups)
        mean0, rstd0 = ref_fwd[1].astype(np.float32), ref_fwd[2].astype(np.float32)
        fwd_bytes, bwd_bytes = 2 * 4 * numel, 3 * 4 * numel

        def cases(sets, impl, fns):
            for op, fn, ref, nb in fns:
                bench.case(op, label, impl, fn, sets, nbytes=nb, check=None if ref is None else (ref, *TOL))

        if args.device == "cuda":
            cp = bench.xp
            sets = [tuple(cp.asarray(a) for a in st) for st in sets_np]
            m0, s0 = cp.asarray(mean0), cp.asarray(rstd0)
            for v in variants:
                cases(sets, f"pygan v{v}", [
                    ("gn.forward", lambda x, g, b, dy: ops.group_norm_forward(x, g, b, groups, 1e-5, variant=v),
                     ref_fwd, fwd_bytes),
                    ("gn.backward", lambda x, g, b, dy: ops.group_norm_backward(x, g, dy, m0, s0, groups, variant=v),
                     ref_bwd, bwd_bytes),
                ])
            if torch is not None:
                tsets = [tuple(torch.from_numpy(a).cuda() for a in st) for st in sets_np]
                F = torch.nn.functional
                cases(tsets, "torch", [("gn.forward", lambda x, g, b, dy: F.group_norm(x, groups, g, b, 1e-5), None,
                                        fwd_bytes)])
        cases(sets_np, "numpy reference (CPU)", [
            ("gn.forward", lambda x, g, b, dy: R.group_norm_forward(x, g, b, groups, 1e-5), None, fwd_bytes),
            ("gn.backward", lambda x, g, b, dy: R.group_norm_backward(x, g, dy, mean0, rstd0, groups), None, bwd_bytes),
        ])


def rmsprop_cases(bench, args, ops, torch, rng):
    from pygan.ops import reference as R

    shapes = dcgan_shapes()
    n = sum(int(np.prod(s)) for s in shapes)
    label = f"DCGAN G+D, {len(shapes)} tensors, {n} params"
    for name, hyper in RMS_HYPERS.items():
        extra = int(hyper["momentum"] > 0) + int(hyper["centered"])
        nbytes = (5 + 2 * extra) * 4 * n

        def state(xp):
            p = [xp.asarray(rng.standard_normal(s).astype(np.float32) * 0.02) for s in shapes]
            g = [xp.asarray(rng.standard_normal(s).astype(np.float32)) for s in shapes]
            v = [xp.zeros(s, np.float32) for s in shapes]
            bufs = [xp.zeros(s, np.float32) for s in shapes] if hyper["momentum"] else []
            gas = [xp.zeros(s, np.float32) for s in shapes] if hyper["centered"] else []
            return p, g, v, bufs, gas

        def ref_check(run, xp_state):
            """Two steps against the reference on a host copy; True when every array matches."""
            host = [[bench.to_host(a) for a in group] for group in xp_state]
            for _ in range(2):
                run(*xp_state)
                R.rmsprop_step(*host, **hyper)
            return all(np.allclose(bench.to_host(d), h, rtol=1e-5, atol=1e-6)
                       for dg, hg in zip(xp_state, host) for d, h in zip(dg, hg))

        if args.device == "cuda":
            for v in range(1, len(ops.variants()["rmsprop"]) + 1):
                run = lambda p, g, sq, b, ga, v=v: ops.rmsprop_step(p, g, sq, b, ga, **hyper, variant=v)  # noqa: E731
                st = state(bench.xp)
                if not ref_check(run, st):
                    print(f"rmsprop.{name:<19} {label:<34} pygan v{v:<22} FAILED check; not timed")
                    continue
                bench.case(f"rmsprop.{name}", label, f"pygan v{v}", run, [st], nbytes=nbytes)
            if torch is not None:
                tp = [torch.randn(s, device="cuda", requires_grad=True) for s in shapes]
                for t in tp:
                    t.grad = torch.randn_like(t)
                opt = torch.optim.RMSprop(tp, **hyper, foreach=True)
                bench.case(f"rmsprop.{name}", label, "torch foreach", lambda: opt.step(), [()], nbytes=nbytes)
        bench.case(f"rmsprop.{name}", label, "numpy reference (CPU)",
                   lambda p, g, sq, b, ga: R.rmsprop_step(p, g, sq, b, ga, **hyper), [state(np)], nbytes=nbytes)


def main(argv=None):
    args, bench = setup("bench_groupnorm_rmsprop", __doc__, argv, batch=True)
    ops, variants, torch = None, [], None
    if args.device == "cuda":
        from pygan.ops import cuda

        ops = cuda.backend()
        variants = list(range(1, len(ops.variants()["group_norm"]) + 1))
        torch = None if args.no_torch else torch_or_none("cuda")
    rng = np.random.default_rng(0)
    group_norm_cases(bench, args, ops, variants, torch, rng)
    rmsprop_cases(bench, args, ops, torch, rng)
    if args.out:
        bench.write_json(args.out, dict(script="bench_groupnorm_rmsprop", device=device_description(args.device)))


if __name__ == "__main__":
    main()
