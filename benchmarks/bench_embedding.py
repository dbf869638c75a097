"""The class embedding (csrc/embedding.cu, issue 12): every pygan variant at conditional-GAN shapes
and a few larger ones, checked against the numpy reference (float64) first, then timed; PyTorch's
F.embedding alongside when importable. Memory-bound: GB/s of the minimum traffic (forward: read the
indices and the named rows, write y; backward: read dy and the indices, write dweight), against the
device-to-device copy measured in the same run.

    python benchmarks/bench_embedding.py --device cuda [--out results.json]
    python benchmarks/bench_embedding.py --device cpu   # numpy-reference timings only
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from harness import device_description, setup, torch_or_none  # noqa: E402

CASES = [  # num_classes, dim, batch
    (10, 100, 128),  # cGAN on MNIST / Fashion-MNIST: 10 labels, a 100-d embedding
    (10, 128, 1024),
    (1000, 128, 256),  # ImageNet-sized label set
    (1000, 512, 4096),
    (10, 64, 65536),  # many repeats per class: the backward's contention / scan length
]
TOL = (1e-4, 1e-4)  # atol (times max(|ref|, 1)), rtol (times max|ref|): harness.Bench.case


def main(argv=None):
    args, bench = setup("bench_embedding", __doc__, argv)
    from pygan.ops import reference as R

    gpu = torch = None
    if args.device == "cuda":
        from pygan.ops import cuda

        gpu = cuda.backend()
        torch = None if args.no_torch else torch_or_none("cuda")
    cp = bench.xp if args.device == "cuda" else None
    rng = np.random.default_rng(0)

    for num_classes, dim, batch in CASES:
        host = [(rng.standard_normal((num_classes, dim)).astype(np.float32), rng.integers(0, num_classes, batch),
                 rng.standard_normal((batch, dim)).astype(np.float32)) for _ in range(bench.rotate)]
        dev = [tuple(cp.asarray(a) for a in s) for s in host] if cp is not None else host
        w0, i0, dy0 = host[0]
        y_ref = R.embedding_forward(w0.astype(np.float64), i0)
        dw_ref = R.embedding_backward(dy0.astype(np.float64), i0, num_classes)
        label = f"{num_classes} x {dim}, batch {batch}"
        fwd_bytes = 8 * batch + 4 * 2 * batch * dim
        bwd_bytes = 8 * batch + 4 * batch * dim + 4 * num_classes * dim
        if gpu is not None:
            for v in range(1, len(gpu.variants()["embedding"]) + 1):
                bench.case("embedding.forward", label, f"pygan v{v}",
                           lambda w, i, dy: gpu.embedding_forward(w, i, variant=v), dev, nbytes=fwd_bytes,
                           check=(y_ref, *TOL))
                bench.case("embedding.backward", label, f"pygan v{v}",
                           lambda w, i, dy: gpu.embedding_backward(dy, i, num_classes, variant=v), dev,
                           nbytes=bwd_bytes, check=(dw_ref, *TOL))
            if torch is not None:
                tsets = [tuple(torch.from_numpy(np.ascontiguousarray(a)).cuda() for a in s) for s in host]
                bench.case("embedding.forward", label, "torch", lambda w, i, dy: torch.nn.functional.embedding(i, w),
                           tsets, nbytes=fwd_bytes, check=(y_ref, *TOL))
        else:
            bench.case("embedding.forward", label, "numpy reference (CPU)",
                       lambda w, i, dy: R.embedding_forward(w, i), host, nbytes=fwd_bytes)
            bench.case("embedding.backward", label, "numpy reference (CPU)",
                       lambda w, i, dy: R.embedding_backward(dy, i, num_classes), host, nbytes=bwd_bytes)
    if args.out:
        bench.write_json(args.out, dict(script="bench_embedding", device=device_description(args.device)))


if __name__ == "__main__":
    main()
