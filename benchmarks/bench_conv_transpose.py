"""conv_transpose2d (forward, backward-data, backward-weight): every pygan variant at every DCGAN
generator layer shape, against PyTorch/cuDNN (cudnn.benchmark on; TF32 off and on) when
importable, and the numpy reference. Every implementation is checked against the reference first.

    python benchmarks/bench_conv_transpose.py --device cuda [--out results.json]
    python benchmarks/bench_conv_transpose.py --device cpu   # numpy-reference timings only

pygan runs conv_transpose2d on the conv2d kernels: forward = conv backward-data, backward-data =
conv forward, backward-weight = conv backward-weight with x and dy swapped.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_conv import main  # noqa: E402

# (name, n, cin, h, w, cout, k, stride, padding): the conv_transpose2d layers of G (nz = 100, ngf = 64)
CONVT_LAYERS = {
    "dcgan64": [
        ("G1", 128, 100, 1, 1, 512, 4, 1, 0),
        ("G2", 128, 512, 4, 4, 256, 4, 2, 1),
        ("G3", 128, 256, 8, 8, 128, 4, 2, 1),
        ("G4", 128, 128, 16, 16, 64, 4, 2, 1),
        ("G5", 128, 64, 32, 32, 3, 4, 2, 1),
    ],
    "dcgan32x1": [
        ("G1", 64, 100, 1, 1, 256, 4, 1, 0),
        ("G2", 64, 256, 4, 4, 128, 4, 2, 1),
        ("G3", 64, 128, 8, 8, 64, 4, 2, 1),
        ("G4", 64, 64, 16, 16, 1, 4, 2, 1),
    ],
}

if __name__ == "__main__":
    main(transpose=True, layers=CONVT_LAYERS, batches=None)  # each model at its own batch (--batches to change)
