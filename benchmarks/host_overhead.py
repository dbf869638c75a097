"""Per-call host overhead of pygan's kernel wrappers (issue 13): the time one small op spends on the
host (argument checks, array interfaces, output allocation, the launcher) with no kernel running.

On a machine without a GPU it runs the emulation module with PYGAN_EMU_SKIP_LAUNCH=1, so every
launch returns at once and only host work is timed: the same bindings.cpp validation and the same
Python wrappers (pygan/ops/native.py, native_conv_bn.py) the CUDA backend runs, minus CuPy and the
CUDA driver (the pointer check and the launch itself are not in these numbers). Compared with:
  * a bare numpy ufunc on the same tiny array (the host floor of "one elementwise op"),
  * the binding called directly with preallocated outputs (no Python wrapper).
Each figure is the best of 7 runs (--runs) of N calls (--calls), in microseconds per call.

    python benchmarks/host_overhead.py [--out results.json] [--calls 5000]
"""

import argparse
import json
import os
import platform
import sys
import time

os.environ["PYGAN_EMU_SKIP_LAUNCH"] = "1"  # before the module's first launch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402


def cpu_name():
    model, avx512 = platform.processor() or "unknown", False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("unknown", "x86_64", ""):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    avx512 = " avx512f" in line
    except OSError:
        pass
    return model, avx512


def best_us(fn, calls, runs=7):
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e6


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=5000)
    p.add_argument("--runs", type=int, default=7, help="best of this many runs of --calls calls")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    import pygan.ops as registry
    from pygan import _emu
    from pygan.ops import emulated

    ops = emulated.backend()
    f32 = np.float32
    x, y = np.ones((4, 8), f32), np.empty((4, 8), f32)
    xb, g, b = np.ones((2, 4, 3, 3), f32), np.ones(4, f32), np.zeros(4, f32)
    rm, rv = np.zeros(4, f32), np.ones(4, f32)
    yb, mb, sb = np.empty_like(xb), np.empty(4, f32), np.empty(4, f32)
    w = np.ones((5, 4, 3, 3), f32)
    yc = np.empty((2, 5, 3, 3), f32)
    cases = {
        "numpy ufunc np.tanh(x, out=y), x (4, 8)": lambda: np.tanh(x, out=y),
        "binding _emu.tanh_forward (2 arrays)": lambda: _emu.tanh_forward(x, y, 0.0, 0, 0),
        "wrapper tanh_forward (2 arrays)": lambda: ops.tanh_forward(x),
        "binding _emu.conv2d_forward (3 arrays)": lambda: _emu.conv2d_forward(xb, w, None, yc, 1, 1, 0, 0),
        "wrapper conv2d_forward (3 arrays)": lambda: ops.conv2d_forward(xb, w, None, 1, 1),
        "binding _emu.batch_norm_forward (8 arrays)": lambda: _emu.batch_norm_forward(
            xb, g, b, rm, rv, yb, mb, sb, True, 0.1, 1e-5, 0, 0.0, 0, 0),
        "wrapper batch_norm_forward (8 arrays)": lambda: ops.batch_norm_forward(xb, g, b, rm, rv, True, 0.1, 1e-5),
        "wrapper batch_norm_leaky_relu_backward (9 arrays)": lambda: ops.batch_norm_leaky_relu_backward(
            xb, g, b, xb, mb, sb, True, 0.2),
        "registry checks of batch_norm (5 arrays, pygan.ops)": lambda: registry._check_batch_norm(xb, g, b, rm, rv),
    }
    results = {}
    for name, fn in cases.items():
        fn()  # warm up (first-call imports, caches)
        results[name] = round(best_us(fn, args.calls, args.runs), 3)
        print(f"{name:52s} {results[name]:8.2f} us")
    model, avx512 = cpu_name()
    report = dict(script="host_overhead", cpu=model, avx512f=avx512, cores=os.cpu_count(),
                  python=platform.python_version(), numpy=np.__version__, calls_per_run=args.calls,
                  unit=f"microseconds per call, best of {args.runs} runs", emulation_skip_launch=True, results=results)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
