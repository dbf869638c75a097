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

Inside a CUDA graph (`pygan train --cuda-graph`) the update splits as the optimiser's step does:
`stage(step)` on the host before each replay (the count, and that step's decay uploaded as float32
[d, 1 - d] into a small device array) and `average_staged()` in the captured body (the same two
in-place operations per tensor, their factors read from that array), bitwise `update(step)`.
Only averaging steps stage: a copy step (before `start`) is a host decision, made eagerly.
"""

import numpy as np

from .autograd import array_module, no_grad, write_host_values


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
        self._factors = None  # stage/average_staged: [decay, 1 - decay] in the shadow's memory
        self._make_factors()

    def _make_factors(self):
        first = next(iter(self.shadow.state_dict().values()), None)
        xp = np if first is None else array_module(first.data)
        if self._factors is None or array_module(self._factors) is not xp:
            self._factors = xp.zeros(2, dtype=np.float32)

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

    def stage(self, step):
        """The host half of update(step) for a captured average_staged(): the count, and the decay
        d as float32 [d, 1 - d] (what update's in-place operations round it to) on the device."""
        if step < self.start:
            raise ValueError(f"ModelEMA.stage: step {step} is before start {self.start}: a copy step, use update()")
        self._make_factors()
        self.updates += 1
        decay = self.decay_at(step)
        write_host_values(self._factors, (decay, 1.0 - decay))

    def average_staged(self):
        """The device half: shadow = d * shadow + (1 - d) * model with d from the array stage() wrote,
        read when the operations run (a captured body). Nothing is allocated but temporaries."""
        src = self.model.state_dict()
        decay, rest = self._factors[0:1].reshape(()), self._factors[1:2].reshape(())
        for name, t in self.shadow.state_dict().items():
            a, b = t.data, src[name].data
            if array_module(a) is not array_module(self._factors):
                raise RuntimeError("ModelEMA.average_staged: the shadow moved to another device since stage()")
            if a.dtype.kind != "f":
                a[...] = b
                continue
            a *= decay
            a += rest * b

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

