"""The truncation trick's trade-off on one checkpoint: `pygan eval --truncation PSI` for each PSI,
one JSON of the scores and a precision-vs-recall plot.

    python benchmarks/truncation_sweep.py --checkpoint runs/cond/checkpoint.safetensors \\
        --out benchmarks/results/truncation.json --plot docs/truncation_precision_recall.png

Truncation (Brock et al. 2019) redraws every z component beyond PSI: smaller PSI gives samples
nearer the modes (precision up) at the price of variety (recall down). Every PSI is scored on
the same z seed and the same number of samples; "none" is the untruncated normal.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_train_step import machine_description  # noqa: E402

METRICS = ("frechet_distance", "precision", "recall", "density", "coverage", "class_kl_to_uniform",
           "inception_score", "class_accuracy", "intra_fd")


def parse_psi(text):
    out = []
    for item in text.split(","):
        item = item.strip().lower()
        if item == "none":
            out.append(None)
            continue
        value = float(item)
        if not value > 0:
            raise SystemExit(f"--psi: every PSI must be positive (or 'none'), got {item}")
        out.append(value)
    return out


def plot(points, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    xs = [p["recall"] for p in points]
    ys = [p["precision"] for p in points]
    ax.plot(xs, ys, "-o", lw=2, color="tab:blue")
    for p, x, y in zip(points, xs, ys):
        ax.annotate("none" if p["psi"] is None else f"{p['psi']:g}", (x, y), textcoords="offset points",
                    xytext=(6, 4))
    ax.set_xlabel("recall (variety)")
    ax.set_ylabel("precision (fidelity)")
    ax.set_title(title, fontsize=8, wrap=True)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--psi", default="0.5,0.75,1.0,none", help="comma-separated PSI values ('none': no truncation)")
    p.add_argument("--n", type=int, default=10000, help="samples per PSI")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-ema", action="store_true", help="sweep the trained G, not the EMA generator")
    p.add_argument("--out", default="benchmarks/results/truncation.json")
    p.add_argument("--plot", default="docs/truncation_precision_recall.png")
    args = p.parse_args(argv)

    points = []
    with tempfile.TemporaryDirectory() as tmp:
        for psi in parse_psi(args.psi):
            out = os.path.join(tmp, "eval.json")
            cmd = [sys.executable, "-m", "pygan", "eval", "--checkpoint", args.checkpoint, "--dataset", args.dataset,
                   "--n", str(args.n), "--device", args.device, "--no-floor", "--out", out]
            cmd += [] if psi is None else ["--truncation", str(psi)]
            cmd += ["--no-ema"] if args.no_ema else []
            print("$", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
            with open(out) as f:
                ev = json.load(f)
            points.append({"psi": psi, **{k: ev.get(k) for k in METRICS}, "source": ev.get("source")})
            print(json.dumps(points[-1]), flush=True)
    result = {"machine": machine_description(), "checkpoint": os.path.basename(args.checkpoint),
              "dataset": args.dataset, "n": args.n, "ema": not args.no_ema, "points": points}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    which = "G" if args.no_ema else "EMA generator"
    plot(points, args.plot, f"truncation trick on {args.dataset}\n{which}, {args.n} samples per PSI")
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
