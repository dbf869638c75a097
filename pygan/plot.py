"""The loss plot: loss_D and loss_G per step, and D(x), D(G(z)) below, from the training log.

Each series is drawn twice: the raw per-step values as a thin, light line behind, and an
exponential moving average (bias-corrected, as TensorBoard's smoothing) as a thick line in front,
so the trend reads at a glance while the noise stays visible.
"""

import csv
import math

from .checkpoint import atomic_write

COLOURS = {"loss_D": "tab:blue", "loss_G": "tab:orange", "D_x": "tab:green", "D_G_z1": "tab:red", "D_G_z2": "tab:purple"}
LABELS = {"loss_D": "loss D", "loss_G": "loss G", "D_x": "D(x)", "D_G_z1": "D(G(z)) before the G step",
          "D_G_z2": "D(G(z)) after the G step"}


def read_log(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _series(rows, key):
    xs, ys = [], []
    for r in rows:
        value = r.get(key)
        if value in (None, "") or not (r.get("step") or "").isdigit():
            continue
        try:
            y = float(value)
        except ValueError:
            continue
        if math.isfinite(y):
            xs.append(int(r["step"]))
            ys.append(y)
    return xs, ys


def ema_weight(n):
    """The smoothing weight for n points: about n/20 points of memory, none below 10 points."""
    if n < 10:
        return 0.0
    return min(0.99, 1.0 - 1.0 / max(2.0, n / 20))


def ema(ys, weight):
    """Exponential moving average with bias correction (the first values are not pulled to 0)."""
    out, acc, norm = [], 0.0, 0.0
    for y in ys:
        acc = weight * acc + (1 - weight) * y
        norm = weight * norm + (1 - weight)
        out.append(acc / norm)
    return out


def _draw(ax, xs, ys, key, weight):
    colour = COLOURS[key]
    if weight > 0:
        ax.plot(xs, ys, color=colour, alpha=0.3, linewidth=1.0)
        ax.plot(xs, ema(ys, weight), color=colour, linewidth=2.4, label=f"{LABELS[key]} (smoothed)")
    else:
        ax.plot(xs, ys, color=colour, linewidth=2.4, marker="o" if len(xs) < 3 else None, label=LABELS[key])


def plot_log(log_path, out_path):
    """Write a PNG of the training curves (atomically); returns out_path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = read_log(log_path)
    weight = ema_weight(len(rows))
    with plt.rc_context({"font.size": 12, "axes.titlesize": 13, "axes.labelsize": 12, "legend.fontsize": 10}):
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 7.5), sharex=True)
        for key in ("loss_D", "loss_G"):
            xs, ys = _series(rows, key)
            if xs:
                _draw(ax1, xs, ys, key, weight)
        ax1.set_ylabel("loss")
        ax1.set_title("training losses" + (f"  (thick: moving average, weight {weight:.2f}; light: each step)" if weight else ""))
        for key in ("D_x", "D_G_z1", "D_G_z2"):
            xs, ys = _series(rows, key)
            if xs:
                _draw(ax2, xs, ys, key, weight)
        ax2.axhline(0.5, color="grey", linewidth=1.0, linestyle="--")
        ax2.set_xlabel("step (discriminator updates)")
        ax2.set_ylabel("mean D output")
        ax2.set_ylim(0, 1)
        ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
        for ax in (ax1, ax2):
            ax.grid(True, alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)  # beside, not over, the curves
        fig.tight_layout()
        try:
            with atomic_write(out_path) as f:
                fig.savefig(f, dpi=100, format="png")
        finally:
            plt.close(fig)
    return out_path
