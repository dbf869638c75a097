"""The loss plot: loss_D and loss_G per step, and D(x), D(G(z)) below, from the training log."""

import csv

from .checkpoint import atomic_write


def read_log(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _series(rows, key):
    xs, ys = [], []
    for r in rows:
        if r.get(key) not in (None, ""):
            xs.append(int(r["step"]))
            ys.append(float(r[key]))
    return xs, ys


def _smooth(ys, window):
    if len(ys) < window:
        return ys
    import numpy as np

    kernel = np.ones(window) / window
    return np.convolve(ys, kernel, mode="valid").tolist()


def plot_log(log_path, out_path):
    """Write a PNG of the training curves (atomically); returns out_path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log_path)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    window = max(1, len(rows) // 100)
    for key, colour in (("loss_D", "tab:blue"), ("loss_G", "tab:orange")):
        xs, ys = _series(rows, key)
        ax1.plot(xs, ys, color=colour, alpha=0.25, linewidth=0.8)
        if window > 1:
            ax1.plot(xs[window - 1 :], _smooth(ys, window), color=colour, label=f"{key} (mean of {window})")
        else:
            ax1.lines[-1].set_label(key)
    ax1.set_ylabel("loss")
    ax1.legend(loc="upper right")
    for key, label in (("D_x", "D(x)"), ("D_G_z1", "D(G(z)) before G step"), ("D_G_z2", "D(G(z)) after")):
        xs, ys = _series(rows, key)
        if window > 1 and len(ys) >= window:
            xs, ys = xs[window - 1 :], _smooth(ys, window)
        ax2.plot(xs, ys, label=label)
    ax2.set_xlabel("step")
    ax2.set_ylabel("mean D output")
    ax2.set_ylim(0, 1)
    ax2.legend(loc="upper right")
    fig.tight_layout()
    try:
        with atomic_write(out_path) as f:
            fig.savefig(f, dpi=100, format="png")
    finally:
        plt.close(fig)
    return out_path
