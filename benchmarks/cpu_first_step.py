"""The JIT's cost: latency of the first CPU D+G step with a cold and a warm numba cache.

    python benchmarks/cpu_first_step.py [--rounds 3] [--size 32] [--out benchmarks/results/cpu_first_step.json]

Each measurement is a fresh Python process that imports pygan, builds the DCGAN pair and runs
one D+G step at 1x32x32 batch 64 (or --size 64: 3x64x64): "cold" with an empty NUMBA_CACHE_DIR
(every kernel compiles), "warm" with the cache that a cold run just filled (kernels load from
disk), and "reference" with PYGAN_CPU_BACKEND=reference (no numba at all). Rounds interleave the
three. Reported: the process's time to the end of the first step (import included), the first
step alone, and the second step for scale.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from pygan.bench import _pygan_step_fn
size, nc = int(sys.argv[1]), int(sys.argv[2])
step = _pygan_step_fn(size, nc, 64, "cpu")
t1 = time.perf_counter()
step()
t2 = time.perf_counter()
step()
t3 = time.perf_counter()
from pygan import ops
print(json.dumps({"to_first_step_end_s": t2 - t0, "first_step_s": t2 - t1, "second_step_s": t3 - t2,
                  "backend": ops.cpu_backend().__name__}))
"""


def run(env, size, nc):
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    out = subprocess.run([sys.executable, "-c", CHILD, str(size), str(nc)], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=root, **env), check=True, timeout=1200)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    from pygan.bench import machine_description

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--size", type=int, default=32, choices=(32, 64))
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    nc = 1 if args.size == 32 else 3
    env = {k: v for k, v in os.environ.items() if k not in ("PYGAN_CPU_BACKEND", "NUMBA_CACHE_DIR")}
    os.environ.clear()
    os.environ.update(env)
    results = {"cold": [], "warm": [], "reference": []}
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as cache:
            results["cold"].append(run({"NUMBA_CACHE_DIR": cache}, args.size, nc))
            results["warm"].append(run({"NUMBA_CACHE_DIR": cache}, args.size, nc))
        results["reference"].append(run({"PYGAN_CPU_BACKEND": "reference"}, args.size, nc))
    report = {"machine": machine_description(), "shape": f"{nc}x{args.size}x{args.size} batch 64", "rounds": args.rounds}
    print("machine:", report["machine"])
    for kind, rs in results.items():
        report[kind] = {key: statistics.median(r[key] for r in rs) for key in ("to_first_step_end_s", "first_step_s", "second_step_s")}
        report[kind]["all"] = rs
        print(f"{report['shape']} {kind:9s}: process start to end of first step {report[kind]['to_first_step_end_s']:.2f} s, "
              f"first step {report[kind]['first_step_s']:.2f} s, second step {report[kind]['second_step_s']:.2f} s "
              f"(medians of {args.rounds})", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
