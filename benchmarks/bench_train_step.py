"""Time one DCGAN D+G training step with pygan and, when importable, PyTorch's same model.

    python benchmarks/bench_train_step.py [--device cpu|cuda] [--repeats 10] [--out results.json]

Shapes: 1x32x32 batch 64 (Fashion-MNIST) and 3x64x64 batch 64 (PyTorch's dcgan example); with
--device cuda also 3x64x64 batch 128. Both libraries run in the same process, interleaved, and the
ratio pygan/PyTorch is printed: on these noisy machines only ratios taken together mean much.
"""

import argparse
import json
import os
import platform
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pygan.bench import format_results, time_train_step  # noqa: E402


def machine_description():
    import numpy as np

    cpu, flags = platform.processor() or platform.machine(), ""
    try:
        info = {}
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())  # every CPU repeats the same entries
        cpu, flags = info.get("model name", cpu), info.get("flags", "")
    except OSError:
        pass
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{blas['name']} {blas.get('version', '')}".strip()
    except Exception:  # the layout of show_config differs between numpy versions
        blas = "unknown BLAS"
    return (
        f"{cpu} ({simd}), {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"numpy {np.__version__} with {blas}"
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    from pygan.autograd import normalise_device

    try:
        device = normalise_device(args.device)
        if device == "cuda":
            from pygan.backend import require_cupy

            require_cupy()
    except (ValueError, RuntimeError) as exc:
        print(f"bench_train_step: {exc}")
        return 0 if args.device == "cuda" else 2
    shapes = [(32, 1, 64), (64, 3, 64)] + ([(64, 3, 128)] if device == "cuda" else [])
    print(f"machine: {machine_description()}")
    results = []
    for size, nc, batch in shapes:
        r = time_train_step(size, nc, batch, device=device, repeats=args.repeats, with_torch=not args.no_torch)
        print(format_results(r), flush=True)
        results.append(r)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"machine": machine_description(), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
