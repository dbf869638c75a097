"""Where a CPU DCGAN D+G step spends its time: per op, and per phase inside the convolutions.

    python benchmarks/profile_cpu_step.py [--repeats 8] [--out benchmarks/results/cpu_profile]

For 1x32x32 batch 64 and 3x64x64 batch 64, the step of pygan/bench.py runs on the fast CPU backend
(pygan/ops/cpu.py, "numba") and on the numpy reference ("reference"), interleaved step by step.
Every registry op (pygan.ops.<name>) is wrapped with a timer, and so are the phases inside the
convolutions: the GEMM (with pygan's own GEMM, which gathers the patches while packing, the
convolutions' GEMMs are labelled "conv GEMM, implicit im2col" and no im2col is written), im2col, col2im, the NCHW->NHWC copies, the weight reorder, and each numba
kernel. Times are exclusive (a phase's time is not also counted in its op), medians over the
rounds of each label's total per step. "outside the ops" is the step's wall time minus all op
time: the autograd graph (Function objects, topological sort, gradient accumulation with +),
module and optimiser bookkeeping, drawing z. Allocation shows up as minor page faults (fresh
pages the kernel has to zero and map), counted per op with getrusage.

Writes <out>.json and <out>.md (the tables, the machine, the thread setup, the load average).
"""

import argparse
import collections
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pygan.bench import machine_description  # noqa: E402

from pygan import ops  # noqa: E402
from pygan.bench import _pygan_step_fn  # noqa: E402
from pygan.ops import cpu, cpu_runtime  # noqa: E402
from pygan.ops import reference as R  # noqa: E402

# the issue's phases, for the summary table
PHASE_OF = {
    "GEMM (BLAS)": "GEMM",
    "GEMM": "GEMM",
    "conv GEMM, implicit im2col": "GEMM",
    "conv input grad, no col2im": "GEMM",
    "GEMM + output reorder": "GEMM",
    "im2col": "im2col/col2im",
    "col2im": "im2col/col2im",
    "NCHW->NHWC copy": "layout copies",
    "weight reorder": "layout copies",
}


class Profiler:
    """Exclusive wall time and minor page faults per label, for the step being recorded."""

    def __init__(self):
        self.stack = []
        self.time = collections.defaultdict(float)
        self.faults = collections.defaultdict(int)
        self.calls = collections.defaultdict(int)

    def reset(self):
        self.time.clear()
        self.faults.clear()
        self.calls.clear()

    def wrap(self, label, fn):
        prof = self

        def timed(*args, **kwargs):
            now, flt = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            if prof.stack:  # charge the parent up to here
                parent, t0, f0 = prof.stack[-1]
                prof.time[parent] += now - t0
                prof.faults[parent] += flt - f0
            prof.stack.append([label, now, flt])
            try:
                return fn(*args, **kwargs)
            finally:
                now, flt = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                _, t0, f0 = prof.stack.pop()
                prof.time[label] += now - t0
                prof.faults[label] += flt - f0
                prof.calls[label] += 1
                if prof.stack:
                    prof.stack[-1][1], prof.stack[-1][2] = now, flt

        timed.__wrapped__ = fn
        if hasattr(fn, "name"):  # cpu_runtime.Gemm: cpu.setup() reports it
            timed.name = fn.name
        return timed


def instrument(prof):
    """Wrap the registry ops and the conv phases of both CPU backends (module globals)."""
    for name in ops.OPS:
        setattr(ops, name, prof.wrap(name, getattr(ops, name)))
    cpu.setup()
    gemm = cpu._gemm
    if gemm.implicit:  # pygan's GEMM: its conv entry points pack the patches themselves
        cpu._gemm = prof.wrap("GEMM", gemm)
        cpu._gemm.conv_forward = prof.wrap("conv GEMM, implicit im2col", gemm.conv_forward)
        cpu._gemm.conv_weight_grad = prof.wrap("conv GEMM, implicit im2col", gemm.conv_weight_grad)
        cpu._gemm.conv_backward_data = prof.wrap("conv input grad, no col2im", gemm.conv_backward_data)
    else:
        cpu._gemm = prof.wrap("GEMM (BLAS)", gemm)
    for mod, attr, label in (
        (cpu, "_im2col_padded", "im2col"), (cpu, "_col2im", "col2im"), (cpu, "_nhwc", "NCHW->NHWC copy"),
        (cpu, "_weight_matrix", "weight reorder"),
        (R, "_im2col", "im2col"), (R, "_col2im", "col2im"), (R, "_nhwc_matrix", "NCHW->NHWC copy"),
        (R, "_weight_matrix", "weight reorder"),
        # the reference's GEMMs are inline `@`; these three are the GEMM and the reorder of its output
        (R, "_forward_from_cols", "GEMM + output reorder"), (R, "_backward_data_from_matrix", "GEMM + output reorder"),
        (R, "_backward_weight_from_cols", "GEMM + output reorder"),
    ):
        setattr(mod, attr, prof.wrap(label, getattr(mod, attr)))
    if cpu.K is not None:
        for kname in ("bn_stats", "bn_act_forward", "bn_act_backward", "leaky_relu_forward", "leaky_relu_backward", "adam"):
            setattr(cpu.K, kname, prof.wrap(f"numba {kname}", getattr(cpu.K, kname)))


def profile_shape(prof, size, nc, batch, backends, repeats, warmup):
    steps = {}
    for name in backends:
        ops.set_cpu_backend(name)
        steps[name] = _pygan_step_fn(size, nc, batch, "cpu")
    rows = {name: [] for name in backends}  # per round: (wall, cpu, faults, {label: (time, faults, calls)})
    for k in range(warmup + repeats):
        for name in backends:
            ops.set_cpu_backend(name)
            prof.reset()
            t0, c0 = time.perf_counter(), time.process_time()
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            steps[name]()
            wall, cput = time.perf_counter() - t0, time.process_time() - c0
            flt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
            if k >= warmup:
                labels = {lab: (prof.time[lab], prof.faults[lab], prof.calls[lab]) for lab in prof.time}
                rows[name].append((wall, cput, flt, labels))
    ops.set_cpu_backend(None)
    out = {}
    for name, rs in rows.items():
        labels = sorted({lab for r in rs for lab in r[3]})
        per_label = {}
        for lab in labels:
            ts = [r[3].get(lab, (0.0, 0, 0))[0] for r in rs]
            per_label[lab] = {
                "ms": 1e3 * statistics.median(ts),
                "faults": statistics.median(r[3].get(lab, (0, 0, 0))[1] for r in rs),
                "calls": rs[0][3].get(lab, (0, 0, 0))[2],
            }
        outside = [r[0] - sum(v[0] for v in r[3].values()) for r in rs]
        out[name] = {
            "step_ms": 1e3 * statistics.median(r[0] for r in rs),
            "step_ms_quartiles": [1e3 * q for q in _quartiles([r[0] for r in rs])],
            "step_cpu_ms": 1e3 * statistics.median(r[1] for r in rs),
            "step_faults": statistics.median(r[2] for r in rs),
            "outside_ops_ms": 1e3 * statistics.median(outside),
            "labels": per_label,
        }
    if len(backends) == 2:
        a, b = backends
        ratios = [ra[0] / rb[0] for ra, rb in zip(rows[a], rows[b])]
        out["ratio"] = {"of": f"{a}/{b}", "median": statistics.median(ratios), "quartiles": list(_quartiles(ratios))}
    return out


def _quartiles(values):
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return q[0], q[2]


def phase_summary(res):
    """The issue's phases: GEMM, im2col/col2im, layout copies, BN, activation, Adam, rest of ops, outside."""
    phases = collections.defaultdict(float)
    for lab, v in res["labels"].items():
        if lab in PHASE_OF:
            phase = PHASE_OF[lab]
        elif "bn_" in lab or lab.startswith("batch_norm"):
            phase = "batch norm"
        elif "leaky_relu" in lab or lab.startswith(("tanh", "sigmoid")):
            phase = "activation"
        elif "adam" in lab:
            phase = "Adam"
        elif lab.startswith("conv"):
            phase = "conv glue (bias, NCHW outputs)"
        elif lab.startswith("binary_cross_entropy"):
            phase = "BCE"
        else:
            phase = "other ops"
        phases[phase] += v["ms"]
    phases["outside the ops (autograd, modules, z)"] = res["outside_ops_ms"]
    return dict(phases)


def markdown(report):
    lines = [f"# CPU step profile ({report['date']})", "", f"Machine: {report['machine']}.", "",
             f"Command: `{report['command']}`. Threads: {report['threads']}. GEMM: {report['gemm']}. "
             f"Load average at start {report['load_start']}, at end {report['load_end']} "
             f"({report['cores']} cores{'; the machine was shared with other jobs' if report['shared'] else ''}). "
             f"Medians of {report['repeats']} rounds, backends interleaved step by step; times are "
             "exclusive (a phase is not counted again in its op), so each column adds up to the step.", ""]
    for shape, res in report["shapes"].items():
        backends = [b for b in res if b != "ratio"]
        lines += [f"## {shape}", ""]
        hdr = " | ".join(f"{b} ms | {b} %" for b in backends)
        lines += [f"| phase | {hdr} |", "|---" * (1 + 2 * len(backends)) + "|"]
        summaries = {b: phase_summary(res[b]) for b in backends}
        phases = sorted({p for s in summaries.values() for p in s}, key=lambda p: -summaries[backends[0]].get(p, 0))
        for p in phases:
            cells = " | ".join(f"{summaries[b].get(p, 0):.1f} | {100 * summaries[b].get(p, 0) / res[b]['step_ms']:.0f}" for b in backends)
            lines.append(f"| {p} | {cells} |")
        cells = " | ".join(f"**{res[b]['step_ms']:.1f}** (quartiles {res[b]['step_ms_quartiles'][0]:.0f}-"
                           f"{res[b]['step_ms_quartiles'][1]:.0f}) | 100" for b in backends)
        lines.append(f"| step (wall) | {cells} |")
        lines.append("| minor page faults per step | " + " | ".join(f"{res[b]['step_faults']:.0f} | " for b in backends) + " |")
        if "ratio" in res:
            r = res["ratio"]
            lines += ["", f"Step ratio {r['of']}: {r['median']:.2f}x (quartiles {r['quartiles'][0]:.2f}-{r['quartiles'][1]:.2f}), "
                      "the median of per-round ratios."]
        lines += ["", "Per label (exclusive ms per step, calls per step, minor page faults per step):", ""]
        lines += ["| label | " + " | ".join(f"{b} ms | calls | faults" for b in backends) + " |",
                  "|---" * (1 + 3 * len(backends)) + "|"]
        labels = sorted({lab for b in backends for lab in res[b]["labels"]}, key=lambda lab: -res[backends[0]]["labels"].get(lab, {"ms": 0})["ms"])
        for lab in labels:
            cells = []
            for b in backends:
                v = res[b]["labels"].get(lab)
                cells.append("- | - | -" if v is None else f"{v['ms']:.1f} | {v['calls']} | {v['faults']:.0f}")
            lines.append(f"| {lab} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", default=None, help="write <out>.json and <out>.md")
    args = p.parse_args(argv)
    backends = ["numba", "reference"] if cpu.AVAILABLE else ["reference"]
    prof = Profiler()
    instrument(prof)
    load_start = os.getloadavg()[0]
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_description(),
        "cores": cpu_runtime.available_cores(),
        "command": "python benchmarks/profile_cpu_step.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "repeats": args.repeats,
        "load_start": round(load_start, 1),
        "shapes": {},
    }
    for size, nc, batch in ((32, 1, 64), (64, 3, 64)):
        shape = f"{nc}x{size}x{size} batch {batch}"
        report["shapes"][shape] = profile_shape(prof, size, nc, batch, backends, args.repeats, args.warmup)
        for b in backends:
            r = report["shapes"][shape][b]
            print(f"{shape} [{b}]: step {r['step_ms']:.1f} ms, outside the ops {r['outside_ops_ms']:.1f} ms; "
                  + ", ".join(f"{k} {v:.1f}" for k, v in sorted(phase_summary(r).items(), key=lambda kv: -kv[1])), flush=True)
    setup = cpu.setup()
    report["threads"] = f"numba {setup['numba_threads']}, BLAS {setup['blas_threads']} ({setup['why']})"
    report["gemm"] = setup["gemm"]
    report["load_end"] = round(os.getloadavg()[0], 1)
    report["shared"] = max(report["load_start"], report["load_end"]) >= 0.5
    if args.out:
        with open(args.out + ".json", "w") as f:
            json.dump(report, f, indent=1)
        with open(args.out + ".md", "w") as f:
            f.write(markdown(report) + "\n")
    else:
        print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
