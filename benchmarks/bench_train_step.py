"""Time one DCGAN D+G training step with pygan and, when importable, PyTorch's same model.

    python benchmarks/bench_train_step.py [--device cpu|cuda] [--repeats 10] [--out results.json]

Shapes: 1x32x32 batch 64 (Fashion-MNIST) and 3x64x64 batch 64 (PyTorch's dcgan example); with
--device cuda also 3x64x64 batch 128. Both libraries run in the same process, interleaved, and the
ratio pygan/PyTorch is printed: on these noisy machines only ratios taken together mean much.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pygan.bench import STANDARD_SHAPES, format_results, machine_description, time_train_step  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    p.add_argument("--cpu-backends", default="numba,reference",
                   help="CPU backends timed against each other (and PyTorch), the first reported as 'pygan'")
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
    shapes = [(size, nc, 64) for size, nc in STANDARD_SHAPES] + ([(64, 3, 128)] if device == "cuda" else [])
    backends = [b.strip() for b in args.cpu_backends.split(",") if b.strip()]
    print(f"machine: {machine_description()}")
    results = []
    for size, nc, batch in shapes:
        r = time_train_step(size, nc, batch, device=device, repeats=args.repeats, with_torch=not args.no_torch,
                            cpu_backends=backends)
        print(format_results(r), flush=True)
        results.append(r)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"machine": machine_description(), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
