"""batch norm (training forward, eval forward, backward; plain and fused with leaky ReLU): every
pygan variant at every DCGAN batch-norm shape, against PyTorch/cuDNN when importable, and the numpy
reference. Every implementation is checked against the reference first. Memory-bound: GB/s counts
the minimum traffic (forward: read x, write y; backward: read x and dy, write dx) against the
device-to-device copy bandwidth measured in the same run. Variant 3 (several blocks per channel,
issue 13) is timed with the others; (128, 64, 32, 32) is the shape where one block per channel
leaves half of a 132-SM GPU idle.

    python benchmarks/bench_batchnorm.py --device cuda [--out results.json]
    python benchmarks/bench_batchnorm.py --device cpu   # numpy-reference timings only
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from harness import device_description, setup, torch_or_none  # noqa: E402

# batch-norm inputs of DCGAN 64x64x3 batch 128 (G and D) and 32x32x1 batch 64
BN_SHAPES = {
    "dcgan64": [(128, 512, 4, 4), (128, 256, 8, 8), (128, 128, 16, 16), (128, 64, 32, 32)],
    "dcgan32x1": [(64, 256, 4, 4), (64, 128, 8, 8), (64, 64, 16, 16), (64, 128, 16, 16)],
}
SLOPE = 0.2
TOL = (1e-4, 1e-3)


def main(argv=None):
    args, bench = setup("bench_batchnorm", __doc__, argv, batch=True)
    from pygan.ops import reference as R

    ops, variants, torch = None, [], None
    if args.device == "cuda":
        from pygan.ops import cuda

        ops = cuda.backend()
        variants = list(range(1, len(ops.variants()["batch_norm"]) + 1))
        torch = None if args.no_torch else torch_or_none("cuda")
        if torch is not None:
            torch.backends.cudnn.benchmark = True
    rng = np.random.default_rng(0)
    for model, shapes in BN_SHAPES.items():
        for shape in shapes:
            if args.batch:
                shape = (args.batch, *shape[1:])
            c, numel = shape[1], int(np.prod(shape))
            sets_np = [
                (rng.standard_normal(shape).astype(np.float32), (rng.random(c) + 0.5).astype(np.float32),
                 rng.standard_normal(c).astype(np.float32), rng.standard_normal(shape).astype(np.float32))
                for _ in range(bench.rotate)
            ]
            label = f"{model} {shape}"
            x0, g0, b0, dy0 = (a.astype(np.float64) for a in sets_np[0])
            # references (float64) from input set 0; running stats start at (0, 1) for every call
            run0 = lambda: (np.zeros(c), np.ones(c))  # noqa: E731
            ref_train = R.batch_norm_forward(x0, g0, b0, *run0(), True, 0.1, 1e-5)
            ref_eval = R.batch_norm_forward(x0, g0, b0, *run0(), False, 0.1, 1e-5)
            ref_bwd = R.batch_norm_backward(x0, g0, dy0, ref_train[1], ref_train[2], True)
            ref_ftrain = R.batch_norm_leaky_relu_forward(x0, g0, b0, *run0(), True, 0.1, 1e-5, SLOPE)
            ref_fbwd = R.batch_norm_leaky_relu_backward(x0, g0, b0, dy0, ref_train[1], ref_train[2], True, SLOPE)
            fwd_bytes, bwd_bytes = 2 * 4 * numel, 3 * 4 * numel

            def np_cases(xp_sets, impl, fns):
                for op, fn, ref, nb in fns:
                    bench.case(op, label, impl, fn, xp_sets, nbytes=nb, check=None if ref is None else (ref, *TOL))

            mean0 = ref_train[1].astype(np.float32)
            rstd0 = ref_train[2].astype(np.float32)
            if args.device == "cuda":
                cp = bench.xp
                sets = [tuple(cp.asarray(a) for a in st) for st in sets_np]
                rm, rv = cp.zeros(c, cp.float32), cp.ones(c, cp.float32)
                m0, s0 = cp.asarray(mean0), cp.asarray(rstd0)

                def reset():
                    rm.fill(0)
                    rv.fill(1)

                for v in variants:
                    fns = [
                        ("bn.forward.train", lambda x, g, b, dy: (reset(), ops.batch_norm_forward(
                            x, g, b, rm, rv, True, 0.1, 1e-5, variant=v))[1], ref_train, fwd_bytes),
                        ("bn.forward.eval", lambda x, g, b, dy: (reset(), ops.batch_norm_forward(
                            x, g, b, rm, rv, False, 0.1, 1e-5, variant=v))[1], ref_eval, fwd_bytes),
                        ("bn.backward", lambda x, g, b, dy: ops.batch_norm_backward(
                            x, g, dy, m0, s0, True, variant=v), ref_bwd, bwd_bytes),
                        ("bn+lrelu.forward.train", lambda x, g, b, dy: (reset(), ops.batch_norm_leaky_relu_forward(
                            x, g, b, rm, rv, True, 0.1, 1e-5, SLOPE, variant=v))[1], ref_ftrain, fwd_bytes),
                        ("bn+lrelu.backward", lambda x, g, b, dy: ops.batch_norm_leaky_relu_backward(
                            x, g, b, dy, m0, s0, True, SLOPE, variant=v), ref_fbwd, bwd_bytes),
                    ]
                    np_cases(sets, f"pygan v{v}", fns)
                if torch is not None:
                    tsets = [tuple(torch.from_numpy(a).cuda() for a in st) for st in sets_np]
                    F = torch.nn.functional
                    trm, trv = torch.zeros(c, device="cuda"), torch.ones(c, device="cuda")
                    fns = [
                        ("bn.forward.train", lambda x, g, b, dy: F.batch_norm(x, trm, trv, g, b, True, 0.1, 1e-5),
                         None, fwd_bytes),
                        ("bn.forward.eval", lambda x, g, b, dy: F.batch_norm(x, trm, trv, g, b, False, 0.1, 1e-5),
                         None, fwd_bytes),
                    ]
                    np_cases(tsets, "torch cudnn", fns)
            np_sets = sets_np
            fns = [
                ("bn.forward.train", lambda x, g, b, dy: R.batch_norm_forward(x, g, b, np.zeros(c, np.float32),
                                                                             np.ones(c, np.float32), True, 0.1, 1e-5),
                 None, fwd_bytes),
                ("bn.backward", lambda x, g, b, dy: R.batch_norm_backward(x, g, dy, mean0, rstd0, True), None,
                 bwd_bytes),
            ]
            np_cases(np_sets, "numpy reference (CPU)", fns)
    if args.out:
        bench.write_json(args.out, dict(script="bench_batchnorm", device=device_description(args.device)))


if __name__ == "__main__":
    main()
