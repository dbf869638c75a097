"""Benchmark harness: CHECK, then time. Shared by benchmarks/bench_*.py.

    bench = Bench(device)          # "cpu" (numpy, time.perf_counter) or "cuda" (CuPy, CUDA events)
    bench.ceilings()               # measured in this run: copy bandwidth, and a large matmul
    bench.case(op, shape, impl, fn, make_inputs, flops=, bytes=, check=(ref, atol, rtol))

A case first runs `fn` once on the first input set and compares its outputs with `check`'s
reference (|out - ref| <= atol + rtol * max|ref|): a mismatch is printed as FAILED and the case is
not timed. Then: warm-up runs, then `reps` timed runs, each on the next input set (inputs rotate
over `rotate` sets, so no run sees the previous run's data in cache), with the L2 cache flushed
between runs on the GPU (a write of a buffer twice the L2 size, outside the timed region). Each run
is timed alone (CUDA events around it on the GPU); the median is reported, with GFLOP/s or GB/s and
the fraction of the matching ceiling measured in the same process: device-to-device copy bandwidth
(GB/s counted as read + write) and an fp32 matmul (PyTorch when importable on the GPU; numpy's
BLAS on the CPU). Never print a GPU figure you did not measure: every number here comes from this
run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np


class NoGPU(RuntimeError):
    pass


def require_device(device):
    """'cpu' or 'cuda'; for cuda, CuPy and a GPU (NoGPU with a message otherwise)."""
    if device == "cpu":
        return None
    if device != "cuda":
        raise ValueError(f"--device must be cpu or cuda, got {device!r}")
    try:
        import cupy
    except ImportError as exc:
        raise NoGPU(f"CuPy is not importable ({exc}); install pygan[cuda] on a GPU machine") from None
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise NoGPU("no CUDA GPU visible")
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        raise NoGPU(f"no usable CUDA GPU ({exc})") from None
    return cupy


def exit_without_gpu(name, device):
    """For the scripts: return the cupy module (or None on cpu); exit 0 with a message without a GPU."""
    try:
        return require_device(device)
    except NoGPU as exc:
        print(f"{name}: --device cuda but {exc}; nothing timed (use --device cpu for numpy-reference timings)")
        sys.exit(0)


def torch_or_none(device):
    try:
        import torch
    except ImportError:
        return None
    if device == "cuda" and not torch.cuda.is_available():
        return None
    return torch


def max_rel_error(out, ref):
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    scale = max(float(np.abs(ref).max()) if ref.size else 0.0, 1e-30)
    return float(np.abs(out - ref).max()) / scale if ref.size else 0.0


class Bench:
    def __init__(self, device="cpu", reps=20, warmup=3, rotate=3, budget_s=2.0, out=sys.stdout):
        self.device = device
        self.xp = require_device(device) or np
        self.reps, self.warmup, self.rotate, self.budget_s = reps, warmup, rotate, budget_s
        self.out = out
        self.rows = []
        self.ceiling = {}
        self._flush_buf = None
        if device == "cuda":
            cp = self.xp
            l2 = cp.cuda.Device().attributes.get("L2CacheSize", 50 * 2**20)
            self._flush_buf = cp.empty(max(2 * l2, 64 * 2**20) // 4, dtype=cp.float32)

    # -- plumbing -----------------------------------------------------------------------------
    def to_host(self, a):
        if a is None:
            return None
        if hasattr(a, "detach"):  # a torch tensor
            return a.detach().cpu().numpy()
        return self.xp.asnumpy(a) if self.device == "cuda" else np.asarray(a)

    def to_device(self, a):
        return self.xp.asarray(a) if self.device == "cuda" else a

    def sync(self):
        if self.device == "cuda":
            self.xp.cuda.get_current_stream().synchronize()

    def flush(self):
        if self._flush_buf is not None:
            self._flush_buf.fill(1.0)  # writes 2x L2: evicts the previous run's data

    def _time_once(self, fn, args):
        if self.device == "cuda":
            cp = self.xp
            self.flush()
            start, stop = cp.cuda.Event(), cp.cuda.Event()
            start.record()
            fn(*args)
            stop.record()
            stop.synchronize()
            return cp.cuda.get_elapsed_time(start, stop)
        t0 = time.perf_counter()
        fn(*args)
        return (time.perf_counter() - t0) * 1e3

    def time(self, fn, input_sets):
        """Median ms over reps (after warm-up), rotating over input_sets; fewer reps when slow."""
        first = self._time_once(fn, input_sets[0])
        for i in range(self.warmup - 1):
            self._time_once(fn, input_sets[(i + 1) % len(input_sets)])
        reps = max(3, min(self.reps, int(self.budget_s * 1e3 / max(first, 1e-3))))
        times = [self._time_once(fn, input_sets[i % len(input_sets)]) for i in range(reps)]
        return statistics.median(times), reps

    # -- ceilings -----------------------------------------------------------------------------
    def ceilings(self):
        xp = self.xp
        n = 64 * 2**20 // 4 if self.device == "cuda" else 16 * 2**20 // 4
        src, dst = xp.ones(n, xp.float32), xp.empty(n, xp.float32)
        ms, _ = self.time(lambda a, b: b.__setitem__(Ellipsis, a), [(src, dst)])
        self.ceiling["GB/s"] = 2 * n * 4 / (ms * 1e6)
        what = "device-to-device copy" if self.device == "cuda" else "host memcpy (numpy)"
        self._say(f"ceiling: {what} {self.ceiling['GB/s']:.1f} GB/s (read + write)")
        m = 4096 if self.device == "cuda" else 1024
        torch = torch_or_none(self.device) if self.device == "cuda" else None
        if torch is not None:
            a = torch.randn(m, m, device="cuda")
            b = torch.randn(m, m, device="cuda")
            for tf32 in (False, True):
                torch.backends.cuda.matmul.allow_tf32 = tf32
                ms, _ = self.time(lambda x, y: torch.matmul(x, y), [(a, b)])
                key = "GFLOP/s" if not tf32 else "GFLOP/s tf32"
                self.ceiling[key] = 2 * m**3 / (ms * 1e6)
                self._say(f"ceiling: torch fp32 matmul {m}^3 (TF32 {'on' if tf32 else 'off'}) {self.ceiling[key]:.0f} GFLOP/s")
            torch.backends.cuda.matmul.allow_tf32 = False
        elif self.device == "cuda":
            a, b = xp.random.standard_normal((m, m), dtype=xp.float32), xp.random.standard_normal((m, m), dtype=xp.float32)
            ms, _ = self.time(lambda x, y: x @ y, [(a, b)])
            self.ceiling["GFLOP/s"] = 2 * m**3 / (ms * 1e6)
            self._say(f"ceiling: CuPy (cuBLAS) fp32 matmul {m}^3 {self.ceiling['GFLOP/s']:.0f} GFLOP/s (no PyTorch)")
        else:
            a = np.random.default_rng(0).standard_normal((m, m)).astype(np.float32)
            ms, _ = self.time(lambda x, y: x @ y, [(a, a.T.copy())])
            self.ceiling["GFLOP/s"] = 2 * m**3 / (ms * 1e6)
            self._say(f"ceiling: numpy fp32 matmul {m}^3 {self.ceiling['GFLOP/s']:.1f} GFLOP/s")
        return self.ceiling

    # -- one case -----------------------------------------------------------------------------
    def case(self, op, shape, impl, fn, input_sets, flops=None, nbytes=None, check=None):
        """Check fn(*input_sets[0]) against check = (reference outputs, atol, rtol) (outputs a tuple or
        one array; None entries skipped), then time it. Returns the row dict (or None if it failed)."""
        if check is not None:
            ref, atol, rtol = check
            got = fn(*input_sets[0])
            got = got if isinstance(got, tuple) else (got,)
            ref = ref if isinstance(ref, tuple) else (ref,)
            for k, (g, r) in enumerate(zip(got, ref)):
                if r is None:
                    continue
                g = self.to_host(g)
                scale = float(np.abs(r).max()) if r.size else 0.0
                err = float(np.abs(g.astype(np.float64) - r).max()) if r.size else 0.0
                if g.shape != r.shape or not err <= atol * max(scale, 1.0) + rtol * scale:
                    self._say(f"{op:<24} {shape:<34} {impl:<28} FAILED check (output {k}: max error {err:.3g}, "
                              f"max |ref| {scale:.3g}); not timed")
                    self.rows.append(dict(op=op, shape=shape, impl=impl, failed=True, error=err))
                    return None
        ms, reps = self.time(fn, input_sets)
        row = dict(op=op, shape=shape, impl=impl, ms=ms, reps=reps, device=self.device)
        extra = ""
        if flops:
            row["GFLOP/s"] = flops / (ms * 1e6)
            extra = f"{row['GFLOP/s']:9.1f} GFLOP/s"
            if "GFLOP/s" in self.ceiling:
                row["frac_matmul"] = row["GFLOP/s"] / self.ceiling["GFLOP/s"]
                extra += f" {100 * row['frac_matmul']:5.1f}% of matmul"
        if nbytes:
            row["GB/s"] = nbytes / (ms * 1e6)
            extra += f"{row['GB/s']:9.1f} GB/s"
            if "GB/s" in self.ceiling:
                row["frac_copy"] = row["GB/s"] / self.ceiling["GB/s"]
                extra += f" {100 * row['frac_copy']:5.1f}% of copy"
        self._say(f"{op:<24} {shape:<34} {impl:<28} {ms:10.3f} ms  {extra}")
        self.rows.append(row)
        return row

    def _say(self, line):
        print(line, file=self.out, flush=True)

    def write_json(self, path, meta=None):
        with open(path, "w") as f:
            json.dump(dict(meta=meta or {}, ceilings=self.ceiling, rows=self.rows), f, indent=1)


def setup(name, doc, argv=None, reps=30, batch=False, add_arguments=None):
    """The options every op benchmark takes (--device --reps --budget [--batch] --no-torch --out,
    plus `add_arguments(parser)`), then its Bench, announced and with its ceilings measured.
    Exits (exit_without_gpu) when --device cuda finds no GPU. Returns (args, bench)."""
    ap = argparse.ArgumentParser(description=(doc or "").splitlines()[0] if doc else None)
    ap.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    ap.add_argument("--reps", type=int, default=reps)
    ap.add_argument("--budget", type=float, default=1.0, help="seconds of timed runs per case, at most")
    if batch:
        ap.add_argument("--batch", type=int, default=None, help="override every case's batch size")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--out", default=None, help="write JSON results here")
    if add_arguments is not None:
        add_arguments(ap)
    args = ap.parse_args(argv)
    exit_without_gpu(name, args.device)
    bench = Bench(args.device, reps=args.reps, budget_s=args.budget)
    print(f"{name}: {device_description(args.device)}")
    if args.device == "cpu":
        print(f"{name}: --device cpu: numpy-reference timings only (no GPU figures)")
    bench.ceilings()
    return args, bench


def device_description(device):
    if device == "cuda":
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return f"{name} (CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()})"
    import os
    import platform

    return f"CPU {platform.machine()} x{os.cpu_count()}, numpy {np.__version__}"


def conv_out(size, k, s, p):
    return (size + 2 * p - k) // s + 1
