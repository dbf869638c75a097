"""Wall time of the `make demo` run (DCGAN, Fashion-MNIST 32x32, 5 epochs, batch 64) with pygan and
with PyTorch running the same recipe, on the CPU.

    python benchmarks/demo_wall_time.py [--niter 5] [--threads 1] [--parallel] [--out results.json]

pygan: `python -m pygan train --dataset fashion-mnist --niter N --imageSize 32 --device cpu
--manualSeed 1` (the demo's command on the CPU), in a fresh process, timed from start to exit.
PyTorch: this script with --torch-run in a fresh process: the same model and initialisation
(pygan.bench.torch_dcgan), data (pygan.data's Fashion-MNIST at 32x32, the same shuffling), losses
(BCE with logits, non-saturating G loss), Adam 2e-4 (0.5, 0.999), D frozen in G's step, and per
epoch what `pygan train` writes that costs time: a checkpoint and a grid of 64 samples.
Both get the same thread count (OMP_NUM_THREADS). --parallel runs the two at once (one core each
on a 2-core machine: then they also share memory bandwidth and cache), which halves the time the
measurement takes; by default they run one after the other. With --eval, `pygan eval` scores
pygan's final checkpoint (sample quality).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def torch_run(niter, outf, seed=1):
    """The PyTorch side: train, then print the wall seconds of the whole process's training."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from pygan.bench import torch_dcgan
    from pygan.data import DataLoader, load_dataset, save_image_grid

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    data = load_dataset("fashion-mnist", image_size=32)
    loader = DataLoader(data, batch_size=64, shuffle=True, drop_last=True, seed=seed)
    G, D = torch_dcgan(32, 1)
    optG = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optD = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    fixed = torch.randn(64, 100, 1, 1)
    ones, zeros = torch.ones(64), torch.zeros(64)
    steps = 0
    for epoch in range(niter):
        for batch in loader.iter_epoch(epoch):
            real = torch.from_numpy(batch)
            z = torch.randn(real.shape[0], 100, 1, 1)
            D.zero_grad()
            fake = G(z)
            err_d = (F.binary_cross_entropy_with_logits(D(real).view(-1), ones)
                     + F.binary_cross_entropy_with_logits(D(fake.detach()).view(-1), zeros))
            err_d.backward()
            optD.step()
            G.zero_grad()
            D.requires_grad_(False)
            err_g = F.binary_cross_entropy_with_logits(D(fake).view(-1), ones)
            err_g.backward()
            D.requires_grad_(True)
            optG.step()
            steps += 1
        with torch.no_grad():
            G.eval()
            save_image_grid(G(fixed).numpy(), os.path.join(outf, f"fake_epoch_{epoch:03d}.png"))
            G.train()
        torch.save({"G": G.state_dict(), "D": D.state_dict(), "optG": optG.state_dict(), "optD": optD.state_dict()},
                   os.path.join(outf, "checkpoint.pt"))
    print(json.dumps({"seconds": time.perf_counter() - t0, "steps": steps,
                      "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "final_losses": [err_d.item(), err_g.item()], "finite": bool(np.isfinite(err_g.item()))}))


def launch(which, niter, outf, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=ROOT)
    if which == "pygan":
        cmd = [sys.executable, "-m", "pygan", "train", "--dataset", "fashion-mnist", "--niter", str(niter),
               "--imageSize", "32", "--device", "cpu", "--manualSeed", "1", "--outf", outf, "--no-progress",
               "--overwrite"]
    else:
        cmd = [sys.executable, os.path.abspath(__file__), "--torch-run", "--niter", str(niter), "--outf", outf]
    os.makedirs(outf, exist_ok=True)
    log = open(os.path.join(outf, "stdout.txt"), "w")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), time.perf_counter(), log


def finish(proc, t0, log, which):
    rc = proc.wait()
    seconds = time.perf_counter() - t0
    return check(rc, log, which, seconds)


def check(rc, log, which, seconds):
    log.close()
    if rc != 0:
        with open(log.name) as f:
            raise SystemExit(f"{which} failed (exit {rc}):\n{f.read()[-3000:]}")
    return seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--niter", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--parallel", action="store_true", help="run pygan and PyTorch at the same time")
    ap.add_argument("--eval", action="store_true", help="score pygan's final checkpoint with pygan eval")
    ap.add_argument("--workdir", default=None, help="where the runs write (default: a temporary folder)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--torch-run", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--outf", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.niter < 1 or args.threads < 1:
        ap.error("--niter and --threads must be >= 1")
    if args.torch_run:
        return torch_run(args.niter, args.outf)

    from pygan.bench import machine_description

    work = args.workdir or tempfile.mkdtemp(prefix="pygan-demo-")
    loads = [os.getloadavg()[0]]
    times = {}
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # what the runs get, for machine_description()
    if args.parallel:
        running = {w: launch(w, args.niter, os.path.join(work, w), args.threads) for w in ("pygan", "torch")}
        while running:  # each run's own end time: poll, do not wait on one while the other ends
            for w, (proc, t0, log) in list(running.items()):
                rc = proc.poll()
                if rc is not None:
                    times[w] = check(rc, log, w, time.perf_counter() - t0)
                    del running[w]
            time.sleep(0.2)
    else:
        for w in ("pygan", "torch"):
            times[w] = finish(*launch(w, args.niter, os.path.join(work, w), args.threads), w)
            loads.append(os.getloadavg()[0])
    loads.append(os.getloadavg()[0])
    with open(os.path.join(work, "torch", "stdout.txt")) as f:
        torch_info = json.loads(f.read().strip().splitlines()[-1])
    report = {
        "command": "python benchmarks/demo_wall_time.py " + " ".join(sys.argv[1:]),
        "machine": machine_description(),
        "python": platform.python_version(),
        "threads": args.threads,
        "parallel": args.parallel,
        "niter": args.niter,
        "load_average_samples": loads,
        "pygan_seconds": round(times["pygan"], 1),
        "torch_seconds": round(times["torch"], 1),
        "torch_training_seconds": round(torch_info["seconds"], 1),
        "torch": torch_info,
        "ratio_pygan_over_torch": round(times["pygan"] / times["torch"], 3),
    }
    print(f"{args.niter} epochs, {args.threads} thread(s){' each, run at the same time' if args.parallel else ''}: "
          f"pygan train {times['pygan'] / 60:.1f} min, PyTorch {times['torch'] / 60:.1f} min, "
          f"ratio {report['ratio_pygan_over_torch']:.2f}x")
    if args.eval:
        ck = os.path.join(work, "pygan", "checkpoint.safetensors")
        ev = os.path.join(work, "pygan", "eval.json")
        env = dict(os.environ, OMP_NUM_THREADS=str(max(args.threads, 1)), PYTHONPATH=ROOT)
        subprocess.run([sys.executable, "-m", "pygan", "eval", "--checkpoint", ck, "--device", "cpu", "--out", ev],
                       cwd=ROOT, env=env, check=True)
        with open(ev) as f:
            report["pygan_eval"] = json.load(f)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
