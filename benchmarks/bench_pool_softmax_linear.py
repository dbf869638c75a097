"""avg_pool2d, softmax cross-entropy and linear (the evaluation classifier's ops): every pygan
variant at the classifier's shapes and a few larger ones, checked against the numpy reference
(float64) first, then timed; PyTorch alongside when importable. avg_pool2d and softmax
cross-entropy are memory-bound (GB/s: the minimum traffic, against the device-to-device copy
measured in the same run); linear runs on the conv2d kernels as 1x1 convolutions (GFLOP/s against
an fp32 matmul measured in the same run; its variants are conv2d's).

    python benchmarks/bench_pool_softmax_linear.py --device cuda [--out results.json]
    python benchmarks/bench_pool_softmax_linear.py --device cpu   # numpy-reference timings only
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from harness import device_description, setup, torch_or_none  # noqa: E402

POOL = [  # x shape, kernel_size, stride
    ((128, 32, 32, 32), 2, 2),  # the classifier's three poolings (batch 128)
    ((128, 64, 16, 16), 2, 2),
    ((128, 64, 8, 8), 2, 2),
    ((128, 256, 8, 8), 8, 8),  # a global pool (nn.GlobalAvgPool2d)
    ((128, 64, 32, 32), 3, 2),  # overlapping windows
]
SOFTMAX = [(128, 10), (4096, 10), (65536, 10), (4096, 1000)]  # rows, classes
LINEAR = [(128, 1024, 64), (128, 64, 10), (256, 4096, 1000)]  # batch, in, out: the classifier's two, a large one
TOL = (1e-4, 1e-4)  # atol (times max(|ref|, 1)), rtol (times max|ref|): harness.Bench.case
LINEAR_TOL, TF32_TOL = (1e-3, 1e-3), (2e-2, 2e-2)


def main(argv=None):
    args, bench = setup("bench_pool_softmax_linear", __doc__, argv)
    from pygan.ops import reference as R

    gpu = torch = None
    if args.device == "cuda":
        from pygan.ops import cuda

        gpu = cuda.backend()
        torch = None if args.no_torch else torch_or_none("cuda")
    cp = bench.xp if args.device == "cuda" else None
    rng = np.random.default_rng(0)

    def sets(make):
        host = [make() for _ in range(bench.rotate)]
        dev = [tuple(cp.asarray(a) for a in s) for s in host] if cp is not None else host
        return host, dev

    def torch_sets(host):
        return [tuple(torch.from_numpy(np.ascontiguousarray(a)).cuda() for a in s) for s in host]

    # -- avg_pool2d --------------------------------------------------------------------------------
    for x_shape, k, s in POOL:
        host, dev = sets(lambda: (rng.standard_normal(x_shape).astype(np.float32),))
        y_ref = R.avg_pool2d_forward(host[0][0].astype(np.float64), k, s)
        y_shape = y_ref.shape
        dy_host = [rng.standard_normal(y_shape).astype(np.float32) for _ in range(bench.rotate)]
        dx_ref = R.avg_pool2d_backward(dy_host[0].astype(np.float64), x_shape, k, s)
        label = f"{x_shape} k{k} s{s}"
        fwd_bytes = 4 * (int(np.prod(x_shape)) + int(np.prod(y_shape)))
        bwd_bytes = fwd_bytes  # read dy, write dx: the same two tensors
        dy_sets = [(cp.asarray(d),) for d in dy_host] if cp is not None else [(d,) for d in dy_host]
        if gpu is not None:
            for v in range(1, len(gpu.variants()["avg_pool2d"]) + 1):
                bench.case("avg_pool2d.forward", label, f"pygan v{v}",
                           lambda x: gpu.avg_pool2d_forward(x, k, s, variant=v), dev, nbytes=fwd_bytes,
                           check=(y_ref, *TOL))
                bench.case("avg_pool2d.backward", label, f"pygan v{v}",
                           lambda dy: gpu.avg_pool2d_backward(dy, x_shape, k, s, variant=v), dy_sets,
                           nbytes=bwd_bytes, check=(dx_ref, *TOL))
            if torch is not None:
                bench.case("avg_pool2d.forward", label, "torch", lambda x: torch.nn.functional.avg_pool2d(x, k, s),
                           torch_sets(host), nbytes=fwd_bytes, check=(y_ref, *TOL))
        else:
            bench.case("avg_pool2d.forward", label, "numpy reference (CPU)", lambda x: R.avg_pool2d_forward(x, k, s),
                       host, nbytes=fwd_bytes)
            bench.case("avg_pool2d.backward", label, "numpy reference (CPU)",
                       lambda dy: R.avg_pool2d_backward(dy, x_shape, k, s), dy_sets, nbytes=bwd_bytes)

    # -- softmax cross-entropy ------------------------------------------------------------------------
    for rows, classes in SOFTMAX:
        host, dev = sets(lambda: ((rng.standard_normal((rows, classes)) * 3).astype(np.float32),
                                  rng.integers(0, classes, rows)))
        x0, l0 = host[0][0].astype(np.float64), host[0][1]
        loss_ref = R.softmax_cross_entropy_forward(x0, l0)
        g_ref = R.softmax_cross_entropy_backward(x0, l0, 1.0)
        label = f"({rows}, {classes})"
        fwd_bytes = 4 * rows * classes + 8 * rows
        bwd_bytes = 8 * rows * classes + 8 * rows
        if gpu is not None:
            one = cp.asarray(1.0, cp.float32)
            for v in range(1, len(gpu.variants()["loss"]) + 1):
                bench.case("softmax_ce.forward", label, f"pygan v{v}",
                           lambda x, lab: gpu.softmax_cross_entropy_forward(x, lab, variant=v), dev,
                           nbytes=fwd_bytes, check=(loss_ref, *TOL))
                bench.case("softmax_ce.backward", label, f"pygan v{v}",
                           lambda x, lab: gpu.softmax_cross_entropy_backward(x, lab, one, variant=v), dev,
                           nbytes=bwd_bytes, check=(g_ref, *TOL))
            if torch is not None:
                bench.case("softmax_ce.forward", label, "torch", lambda x, lab: torch.nn.functional.cross_entropy(x, lab),
                           torch_sets(host), nbytes=fwd_bytes, check=(loss_ref, *TOL))
        else:
            bench.case("softmax_ce.forward", label, "numpy reference (CPU)",
                       lambda x, lab: R.softmax_cross_entropy_forward(x, lab), host, nbytes=fwd_bytes)
            bench.case("softmax_ce.backward", label, "numpy reference (CPU)",
                       lambda x, lab: R.softmax_cross_entropy_backward(x, lab, 1.0), host, nbytes=bwd_bytes)

    # -- linear ---------------------------------------------------------------------------------------
    for n, k, o in LINEAR:
        host, dev = sets(lambda: (rng.standard_normal((n, k)).astype(np.float32),
                                  (rng.standard_normal((o, k)) / np.sqrt(k)).astype(np.float32),
                                  rng.standard_normal(o).astype(np.float32),
                                  rng.standard_normal((n, o)).astype(np.float32)))
        x0, w0, b0, dy0 = (a.astype(np.float64) for a in host[0])
        y_ref = R.linear_forward(x0, w0, b0)
        grads_ref = R.linear_backward(x0, w0, dy0, True)
        label = f"({n}, {k}) -> {o}"
        flops = 2 * n * k * o
        if gpu is not None:
            for v, name in enumerate(gpu.variants()["conv2d"], 1):
                tol = TF32_TOL if "tf32" in name.lower() else LINEAR_TOL
                bench.case("linear.forward", label, f"pygan conv2d v{v}",
                           lambda x, w, b, dy: gpu.linear_forward(x, w, b, variant=v), dev, flops=flops,
                           check=(y_ref, *tol))
                bench.case("linear.backward", label, f"pygan conv2d v{v}",
                           lambda x, w, b, dy: gpu.linear_backward(x, w, dy, True, variant=v), dev, flops=2 * flops,
                           check=(grads_ref, *tol))
            if torch is not None:
                bench.case("linear.forward", label, "torch",
                           lambda x, w, b, dy: torch.nn.functional.linear(x, w, b), torch_sets(host), flops=flops,
                           check=(y_ref, *LINEAR_TOL))
        else:
            bench.case("linear.forward", label, "numpy reference (CPU)",
                       lambda x, w, b, dy: R.linear_forward(x, w, b), host, flops=flops)
            bench.case("linear.backward", label, "numpy reference (CPU)",
                       lambda x, w, b, dy: R.linear_backward(x, w, dy, True), host, flops=2 * flops)
    if args.out:
        bench.write_json(args.out, dict(script="bench_pool_softmax_linear", device=device_description(args.device)))


if __name__ == "__main__":
    main()
