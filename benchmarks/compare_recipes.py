"""Train every --recipe on one data set for the same budget, score each with `pygan eval`, and
write one JSON (and one sample grid per recipe) so the variants compare on one scale.

    python benchmarks/compare_recipes.py --niter 2 --out benchmarks/results/recipes.json --grids docs

Every recipe gets the same seed, the same data order and the same number of epochs (so the same
number of D steps: recipes with 5 critic steps make a fifth of the G steps). The scores are
pygan eval's (10000 samples, the shipped classifier), next to the real-vs-real floor. Each run also
keeps an EMA of G's weights (--ema-decay; it does not change training), and both generators are
scored at the same step: "metrics" is the trained G, "metrics_ema" the EMA generator.
"""

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_train_step import machine_description  # noqa: E402

from pygan.recipes import RECIPES  # noqa: E402

METRICS = ("frechet_distance", "precision", "recall", "density", "coverage", "class_kl_to_uniform", "inception_score")


def run(cmd):
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated recipe names")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--niter", type=int, default=2, help="epochs per recipe")
    p.add_argument("--max-steps", type=int, default=None, help="D steps per recipe instead of whole epochs")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--ema-decay", type=float, default=0.999, help="the EMA generator scored beside G (0: none)")
    p.add_argument("--reuse", action="store_true",
                   help="continue (--resume) a recipe's run that its folder already holds instead of starting afresh")
    p.add_argument("--work", default="runs/recipes", help="training folders (one per recipe)")
    p.add_argument("--out", default="benchmarks/results/recipes.json")
    p.add_argument("--grids", default="docs", help="where to copy each recipe's last sample grid")
    args = p.parse_args(argv)

    results = {"machine": machine_description(), "dataset": args.dataset, "niter": args.niter,
               "max_steps": args.max_steps, "seed": args.seed, "ema_decay": args.ema_decay, "device": args.device, "recipes": {}}
    for name in args.recipes.split(","):
        outf = os.path.join(args.work, name)
        started = time.perf_counter()
        cmd = [sys.executable, "-m", "pygan", "train", "--dataset", args.dataset, "--imageSize", "32",
               "--niter", str(args.niter), "--manualSeed", str(args.seed), "--device", args.device, "--recipe", name,
               "--outf", outf, "--no-progress", "--eval-every", "0", "--ema-decay", str(args.ema_decay)]
        if args.max_steps:
            cmd += ["--max-steps", str(args.max_steps)]
        reuse = args.reuse and os.path.exists(os.path.join(outf, "checkpoint.safetensors"))
        run(cmd + (["--resume"] if reuse else ["--overwrite"]))
        wall_seconds = time.perf_counter() - started
        ckpt = os.path.join(outf, "checkpoint.safetensors")
        eval_json = os.path.join(outf, "eval.json")
        run([sys.executable, "-m", "pygan", "eval", "--checkpoint", ckpt, "--dataset", args.dataset,
             "--device", args.device, "--out", eval_json, "--no-ema"])
        with open(eval_json) as f:
            ev = json.load(f)
        ev_ema = None
        if args.ema_decay:
            ema_json = os.path.join(outf, "eval_ema.json")
            run([sys.executable, "-m", "pygan", "eval", "--checkpoint", ckpt, "--dataset", args.dataset,
                 "--device", args.device, "--out", ema_json, "--no-floor"])
            with open(ema_json) as f:
                ev_ema = json.load(f)
        with open(os.path.join(outf, "log.csv"), newline="") as f:
            log = list(csv.DictReader(f))
        steps = len(log)
        step_seconds = sum(float(r["seconds"]) for r in log)  # the training steps' own time, across resumes
        grids = sorted(g for g in os.listdir(outf) if g.startswith("fake_samples_epoch_"))
        grid = None
        if grids and args.grids:
            os.makedirs(args.grids, exist_ok=True)
            grid = os.path.join(args.grids, f"recipe_{name}.png")
            shutil.copyfile(os.path.join(outf, grids[-1]), grid)
        results["recipes"][name] = {
            "d_steps_done": steps, "step_seconds": round(step_seconds, 1), "wall_seconds_this_call": round(wall_seconds, 1),
            "resumed": reuse, "grid": grid,
            "metrics": {k: ev.get(k) for k in METRICS}, "classifier": ev.get("metric_prefix"),
            "metrics_ema": None if ev_ema is None else {k: ev_ema.get(k) for k in METRICS},
        }
        results["floor"] = {k: (ev.get("floor") or {}).get(k) for k in METRICS}
        print(json.dumps(results["recipes"][name]), flush=True)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:  # rewritten after every recipe: a cut-short run keeps what it measured
            json.dump(results, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
