"""An exponential moving average of a model's weights (the "EMA generator").

Sampling from a running average of G's weights instead of the last iterate gives visibly cleaner
samples at no training cost (Karras et al. 2018; Yazici et al. 2019; BigGAN). After each G step:

    ema = d * ema + (1 - d) * weight,   d = min(decay, (1 + t) / (10 + t))

(a plain copy until step `start`; t counts the steps since). The warm-up of d (TensorFlow's
ExponentialMovingAverage with num_updates) matters: with a fixed 0.999 the average still holds
0.999^937 = 39% of the random initial weights after the first Fashion-MNIST epoch, and its
samples are grey blurs; with the warm-up the average spans about the last t/10 steps early on
and the last 1/(1 - decay) steps once t is large. `warmup=False` gives the plain formula.

BatchNorm running statistics are averaged the same way rather than recomputed for the averaged
weights: they are already moving averages of what G's layers see, averaging them costs nothing,
and recomputing would need extra forward passes over fresh z at every checkpoint. The
averaged model is sampled in eval mode, as G is. num_batches_tracked is copied.
"""

import numpy as np

from .autograd import no_grad


class ModelEMA:
    """Keeps `shadow`, a model of the same architecture whose state is the moving average of
    `model`'s parameters and floating-point buffers."""

    def __init__(self, model, shadow, decay=0.999, start=0, warmup=True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay must be in [0, 1), got {decay!r}")
        if not isinstance(start, int) or isinstance(start, bool) or start < 0:
            raise ValueError(f"ema start must be a non-negative integer step, got {start!r}")
        self.model, self.shadow, self.decay, self.start = model, shadow, float(decay), start
        self.warmup = bool(warmup)
        self.updates = 0
        src, dst = model.state_dict(), shadow.state_dict()
        if list(src) != list(dst) or any(src[k].shape != dst[k].shape for k in src):
            raise ValueError("ModelEMA: the shadow model must have the model's architecture")
        self.copy_from_model()
        shadow.eval()

    def copy_from_model(self):
        with no_grad():
            self.shadow.load_state_dict(self.model.state_dict())

    def update(self, step):
        """Average in the model's current weights; `step` is the training step just done."""
        self.updates += 1
        if step < self.start:
            self.copy_from_model()
            return
        decay = self.decay_at(step)
        src = self.model.state_dict()
        for name, t in self.shadow.state_dict().items():
            a, b = t.data, src[name].data
            if a.dtype.kind != "f":
                a[...] = b
                continue
            # a = decay * a + (1 - decay) * b, in place
            a *= decay
            a += (1.0 - decay) * b

    def decay_at(self, step):
        """The decay used by update(step): `decay`, or less early on with the warm-up."""
        if not self.warmup:
            return self.decay
        t = max(0, step - self.start)
        return min(self.decay, (1.0 + t) / (10.0 + t))

    def state_tensors(self, prefix):
        """The shadow's state as {prefix.name: array}, for checkpoints."""
        return {f"{prefix}.{name}": t.data for name, t in self.shadow.state_dict().items()}


def truncated_normal(rng, shape, psi, dtype=np.float32):
    """Standard normal samples with every component |z| <= psi, by redrawing the ones outside
    (the truncation trick, Brock et al. 2019). psi=None: no truncation."""
    if psi is None:
        return rng.standard_normal(shape).astype(dtype)
    psi = float(psi)
    if not psi > 0:
        raise ValueError(f"truncation psi must be positive, got {psi}")
    z = rng.standard_normal(shape)
    bad = np.abs(z) > psi
    while bad.any():  # P(|z| <= psi) >= 0.38 for psi >= 0.5: few rounds
        z[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(z) > psi
    return z.astype(dtype)

