"""conv2d (forward, backward-data, backward-weight): every pygan variant at every DCGAN
discriminator layer shape, against PyTorch/cuDNN (cudnn.benchmark on; TF32 off and on) when
importable. Every implementation is checked against the float64 numpy reference first; the
reference itself is timed only with --device cpu (or --time-reference).

    python benchmarks/bench_conv.py --device cuda [--variants 3 8 9] [--out results.json]
    python benchmarks/bench_conv.py --device cpu   # numpy-reference timings only (no GPU needed)

Models: DCGAN 64x64x3 and 32x32x1 (ndf = ngf = 64, nz = 100), each at batch 64 and 128
(--batches; --batch N for one batch). The TF32 variants (5, 9) run with pygan.backends.tf32 on,
as the opt-in would run them. At the end: per pygan variant, the geometric mean over every
(computation, shape) of its time over cuDNN's, with TF32 off and with TF32 on (the fair baseline
of an FP32 variant is cuDNN FP32, of a TF32 variant cuDNN TF32).
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from harness import conv_out, device_description, setup, torch_or_none  # noqa: E402

# (name, n, c, h, w, o, k, stride, padding): the conv2d layers of D
CONV_LAYERS = {
    "dcgan64": [
        ("D1", 128, 3, 64, 64, 64, 4, 2, 1),
        ("D2", 128, 64, 32, 32, 128, 4, 2, 1),
        ("D3", 128, 128, 16, 16, 256, 4, 2, 1),
        ("D4", 128, 256, 8, 8, 512, 4, 2, 1),
        ("D5", 128, 512, 4, 4, 1, 4, 1, 0),
    ],
    "dcgan32x1": [
        ("D1", 64, 1, 32, 32, 64, 4, 2, 1),
        ("D2", 64, 64, 16, 16, 128, 4, 2, 1),
        ("D3", 64, 128, 8, 8, 256, 4, 2, 1),
        ("D4", 64, 256, 4, 4, 1, 4, 1, 0),
    ],
}
COMPUTATIONS = ("forward", "backward_data", "backward_weight")
# (atol relative to max(max|ref|, 1), rtol); the opt-in TF32 pygan variant (10-bit mantissa) gets
# the same looser check as cuDNN with TF32
CHECK_TOL = {"pygan": (1e-4, 1e-3), "pygan-tf32": (5e-3, 1e-2), "torch": (1e-4, 1e-3), "torch-tf32": (5e-3, 1e-2)}


def conv_problem(n, c, h, w, o, k, s, p):
    """x, w, dy shapes and the MAC count (same for all three computations)."""
    oh, ow = conv_out(h, k, s, p), conv_out(w, k, s, p)
    return (n, c, h, w), (o, c, k, k), (n, o, oh, ow), 2 * n * o * oh * ow * c * k * k


def reference_fns(R, xs, ws, ys, s, p, transpose=False):
    """numpy reference of each computation, as f(*inputs) with inputs (x, w, dy) as numpy arrays."""
    if not transpose:
        return {
            "forward": lambda x, w, dy: R.conv2d_forward(x, w, None, s, p),
            "backward_data": lambda x, w, dy: R.conv2d_backward_data(dy, w, xs, s, p),
            "backward_weight": lambda x, w, dy: R.conv2d_backward_weight(x, dy, ws, s, p),
        }
    return {
        "forward": lambda x, w, dy: R.conv_transpose2d_forward(x, w, None, s, p, 0),
        "backward_data": lambda x, w, dy: R.conv_transpose2d_backward(x, w, dy, s, p, 0, False)[0],
        "backward_weight": lambda x, w, dy: R.conv_transpose2d_backward(x, w, dy, s, p, 0, False)[1],
    }


def pygan_fns(ops, xs, ws, s, p, v, transpose=False):
    if not transpose:
        return {
            "forward": lambda x, w, dy: ops.conv2d_forward(x, w, None, s, p, variant=v),
            "backward_data": lambda x, w, dy: ops.conv2d_backward_data(dy, w, xs, s, p, variant=v),
            "backward_weight": lambda x, w, dy: ops.conv2d_backward_weight(x, dy, ws, s, p, variant=v),
        }
    # conv_transpose2d: forward is conv backward-data; backward-data is conv forward;
    # backward-weight is conv backward-weight with x and dy swapped (native_conv_bn.py)
    return {
        "forward": lambda x, w, dy: ops.conv_transpose2d_forward(x, w, None, s, p, 0, variant=v),
        "backward_data": lambda x, w, dy: ops.conv2d_forward(dy, w, None, s, p, variant=v),
        "backward_weight": lambda x, w, dy: ops.conv2d_backward_weight(dy, x, ws, s, p, variant=v),
    }


def torch_fns(torch, xs, ws, s, p, transpose=False):
    F = torch.nn.functional
    cb = torch.ops.aten.convolution_backward
    if not transpose:
        return {
            "forward": lambda x, w, dy: F.conv2d(x, w, None, s, p),
            "backward_data": lambda x, w, dy: cb(dy, x, w, None, [s, s], [p, p], [1, 1], False, [0, 0], 1,
                                                 [True, False, False])[0],
            "backward_weight": lambda x, w, dy: cb(dy, x, w, None, [s, s], [p, p], [1, 1], False, [0, 0], 1,
                                                   [False, True, False])[1],
        }
    return {
        "forward": lambda x, w, dy: F.conv_transpose2d(x, w, None, s, p),
        "backward_data": lambda x, w, dy: cb(dy, x, w, None, [s, s], [p, p], [1, 1], True, [0, 0], 1,
                                             [True, False, False])[0],
        "backward_weight": lambda x, w, dy: cb(dy, x, w, None, [s, s], [p, p], [1, 1], True, [0, 0], 1,
                                               [False, True, False])[1],
    }


def run(bench, layers, transpose, no_torch=False, only=None, chosen=None, time_reference=False):
    import pygan
    from pygan.ops import reference as R

    device = bench.device
    ops = None
    variants, tf32 = [], set()
    if device == "cuda":
        from pygan.ops import cuda

        ops = cuda.backend()
        names = ops.variants()["conv2d"]
        variants = [v for v in range(1, len(names) + 1) if not chosen or v in chosen]
        tf32 = {v for v, name in enumerate(names, 1) if "tf32" in name.lower()}
    torch = None if (no_torch or device != "cuda") else torch_or_none(device)
    if torch is not None:
        torch.backends.cudnn.benchmark = True
    rng = np.random.default_rng(0)
    op_name = "conv_transpose2d" if transpose else "conv2d"
    for model, layer_list in layers.items():
        for name, n, c, h, w, o, k, s, p in layer_list:
            if transpose:  # (name, n, cin, h, w, cout, k, s, p): x (n,cin,h,w), w (cin,cout,k,k), dy = y's shape
                oh, ow = conv_size_for_transpose(h, w, k, s, p)
                xs, ws, dys, flops = (n, c, h, w), (c, o, k, k), (n, o, oh, ow), 2 * n * c * h * w * o * k * k
            else:
                xs, ws, dys, flops = conv_problem(n, c, h, w, o, k, s, p)
            sets_np = [
                (rng.standard_normal(xs).astype(np.float32),
                 (rng.standard_normal(ws) / np.sqrt(np.prod(ws[1:]))).astype(np.float32),
                 rng.standard_normal(dys).astype(np.float32))
                for _ in range(bench.rotate)
            ]
            shape = f"{model}:{name} x{xs} w{ws} s{s} p{p}"
            ref_fns = reference_fns(R, xs, ws, dys, s, p, transpose)
            for comp in COMPUTATIONS:
                if only and comp not in only:
                    continue
                ref_out = ref_fns[comp](*[a.astype(np.float64) for a in sets_np[0]]) if device == "cuda" else None
                if device == "cuda":
                    sets = [tuple(bench.to_device(a) for a in st) for st in sets_np]
                    for v in variants:
                        fns = pygan_fns(ops, xs, ws, s, p, v, transpose)
                        impl, tol = (f"pygan v{v} tf32", "pygan-tf32") if v in tf32 else (f"pygan v{v}", "pygan")
                        pygan.backends.tf32 = v in tf32  # the TF32 variants as the opt-in runs them
                        try:
                            bench.case(f"{op_name}.{comp}", shape, impl, fns[comp], sets, flops=flops,
                                       check=(ref_out, *CHECK_TOL[tol]))
                        finally:
                            pygan.backends.tf32 = False
                    if torch is not None:
                        tsets = [tuple(torch.from_numpy(a).cuda() for a in st) for st in sets_np]
                        fns = torch_fns(torch, xs, ws, s, p, transpose)
                        for tf32 in (False, True):
                            torch.backends.cudnn.allow_tf32 = tf32
                            impl = "torch cudnn" + (" tf32" if tf32 else "")
                            tol = CHECK_TOL["torch-tf32" if tf32 else "torch"]
                            bench.case(f"{op_name}.{comp}", shape, impl, fns[comp], tsets, flops=flops,
                                       check=(ref_out, *tol))
                        torch.backends.cudnn.allow_tf32 = False
                if device != "cuda" or time_reference:
                    bench.case(f"{op_name}.{comp}", shape, "numpy reference (CPU)", ref_fns[comp], sets_np, flops=flops)


def geomean_ratios(rows):
    """{pygan impl: {"cudnn": ratio, "cudnn tf32": ratio, "cases": n}}: the geometric mean over every
    (op, shape) both ran of pygan's time over cuDNN's (TF32 off, and on). Below 1: pygan is faster."""
    times = {}
    for r in rows:
        if not r.get("failed") and "ms" in r:
            times.setdefault((r["op"], r["shape"]), {})[r["impl"]] = r["ms"]
    out = {}
    impls = sorted({i for t in times.values() for i in t if i.startswith("pygan")},
                   key=lambda i: (len(i.split()[1]), i))
    for impl in impls:
        res = {}
        for base in ("torch cudnn", "torch cudnn tf32"):
            logs = [np.log(t[impl] / t[base]) for t in times.values() if impl in t and base in t and t[base] > 0]
            if logs:
                res[base.replace("torch ", "")] = float(np.exp(np.mean(logs)))
                res["cases"] = len(logs)
        if res:
            out[impl] = res
    return out


def print_geomeans(bench, op_name):
    ratios = geomean_ratios(bench.rows)
    if not ratios:
        return ratios
    print(f"\n{op_name}: geo-mean of time / cuDNN's over every (computation, shape); below 1 is faster")
    print(f"{'impl':<16} {'vs cuDNN FP32':>14} {'vs cuDNN TF32':>14} {'cases':>6}")
    for impl, r in ratios.items():
        fmt = lambda key: f"{r[key]:14.3f}" if key in r else f"{'-':>14}"  # noqa: E731
        print(f"{impl:<16} {fmt('cudnn')} {fmt('cudnn tf32')} {r.get('cases', 0):6d}"
              + ("   (fair baseline: TF32)" if "tf32" in impl else "   (fair baseline: FP32)"))
    return ratios


def conv_size_for_transpose(h, w, k, s, p):
    """Output size (OH, OW) of conv_transpose2d for input (h, w): the conv it transposes has this input."""
    return (h - 1) * s - 2 * p + k, (w - 1) * s - 2 * p + k


def add_arguments(ap, batches):
    ap.add_argument("--only", nargs="*", choices=COMPUTATIONS, help="only these computations")
    ap.add_argument("--variants", nargs="*", type=int, default=None, help="only these pygan conv2d variants")
    ap.add_argument("--batches", nargs="*", type=int, default=batches,
                    help="run every model at each of these batch sizes (default: %(default)s; "
                         "none: each model's own batch)")
    ap.add_argument("--time-reference", action="store_true", help="also time the numpy reference with --device cuda")


def main(argv=None, transpose=False, layers=None, batches=(64, 128)):
    name = "bench_conv_transpose" if transpose else "bench_conv"
    args, bench = setup(name, __doc__, argv, reps=20, batch=True,
                        add_arguments=lambda ap: add_arguments(ap, list(batches or [])))
    layers = layers or CONV_LAYERS
    if args.batch:
        layers = {m: [(l[0], args.batch, *l[2:]) for l in ls] for m, ls in layers.items()}
    elif args.batches:
        layers = {f"{m}/b{b}": [(l[0], b, *l[2:]) for l in ls] for m, ls in layers.items() for b in args.batches}
    run(bench, layers, transpose, args.no_torch, args.only, args.variants, args.time_reference)
    ratios = print_geomeans(bench, "conv_transpose2d" if transpose else "conv2d")
    if args.out:
        bench.write_json(args.out, dict(script=name, device=device_description(args.device), geomean_vs_cudnn=ratios))


if __name__ == "__main__":
    main()
