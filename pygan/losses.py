"""The GAN losses, one small function per paper.

`real` and `fake` are D's raw outputs (logits or critic scores, shape (N,)) on real images and on
G(z). Every function returns a 0-d Tensor to minimise: D minimises the `*_d_loss`, G the `*_g_loss`.

    non-saturating, minimax   Goodfellow et al. 2014 (BCE with logits; the non-saturating G loss
                              -log D(G(z)) is the one that trains, the minimax log(1 - D(G(z))) is
                              the game as written)
    lsgan                     Mao et al. 2017: least squares with targets a=0 (fake), b=1 (real), c=1
    hinge                     Lim & Ye 2017; Miyato et al. 2018 (SNGAN)
    wgan, wgan-gp             Arjovsky et al. 2017 (critic, weight clipping); Gulrajani et al. 2017
                              (the same critic loss plus a gradient penalty at interpolates)
    r1_penalty                Mescheder et al. 2018: gamma/2 * E ||grad D(x)||^2 on real data

The penalties differentiate a gradient, so they go through `pygan.autograd.grad(create_graph=True)`.
"""

import numpy as np

from .autograd import Tensor, array_module
from .nn import functional as F

LOSSES = ("non-saturating", "minimax", "lsgan", "hinge", "wgan", "wgan-gp")
# losses whose D targets are labels, so label smoothing and label flipping mean something
LABEL_LOSSES = ("non-saturating", "minimax", "lsgan")


def _full(like, value):
    data = like.data
    return Tensor(array_module(data).full(data.shape, value, dtype=data.dtype))


def _check(name, t):
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a pygan Tensor, got {type(t).__name__}")


# -- Goodfellow et al. 2014 ----------------------------------------------------------------------


def bce_d_loss(real, fake, real_target=1.0, fake_target=0.0):
    """-log D(x) - log(1 - D(G(z))) with D = sigmoid(logits); targets may be smoothed or flipped
    (a float, or a Tensor of per-sample targets)."""
    _check("real", real)
    _check("fake", fake)
    rt = real_target if isinstance(real_target, Tensor) else _full(real, real_target)
    ft = fake_target if isinstance(fake_target, Tensor) else _full(fake, fake_target)
    return F.binary_cross_entropy_with_logits(real, rt) + F.binary_cross_entropy_with_logits(fake, ft)


def non_saturating_g_loss(fake):
    """-log D(G(z)): strong gradients while D still wins (Goodfellow et al.'s practical choice)."""
    _check("fake", fake)
    return F.binary_cross_entropy_with_logits(fake, _full(fake, 1.0))


def minimax_g_loss(fake):
    """log(1 - D(G(z))): the minimax game as written; its gradient vanishes when D wins."""
    _check("fake", fake)
    return -F.binary_cross_entropy_with_logits(fake, _full(fake, 0.0))


# -- Mao et al. 2017 -----------------------------------------------------------------------------


def lsgan_d_loss(real, fake, real_target=1.0, fake_target=0.0):
    """1/2 E (D(x) - b)^2 + 1/2 E (D(G(z)) - a)^2 on D's raw output, b = 1, a = 0 by default."""
    _check("real", real)
    _check("fake", fake)
    return ((real - real_target) ** 2).mean() * 0.5 + ((fake - fake_target) ** 2).mean() * 0.5


def lsgan_g_loss(fake, target=1.0):
    """1/2 E (D(G(z)) - c)^2, c = 1."""
    _check("fake", fake)
    return ((fake - target) ** 2).mean() * 0.5


# -- Lim & Ye 2017; Miyato et al. 2018 -----------------------------------------------------------


def hinge_d_loss(real, fake):
    """E relu(1 - D(x)) + E relu(1 + D(G(z)))."""
    _check("real", real)
    _check("fake", fake)
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def hinge_g_loss(fake):
    """-E D(G(z))."""
    _check("fake", fake)
    return -fake.mean()


# -- Arjovsky et al. 2017; Gulrajani et al. 2017 -------------------------------------------------


def wasserstein_d_loss(real, fake):
    """E D(G(z)) - E D(x): the critic's estimate of minus the Wasserstein-1 distance."""
    _check("real", real)
    _check("fake", fake)
    return fake.mean() - real.mean()


def wasserstein_g_loss(fake):
    """-E D(G(z))."""
    _check("fake", fake)
    return -fake.mean()


def _per_sample_norm(g):
    """The L2 norm of each sample's gradient, (N,), differentiable (eps keeps sqrt smooth at 0)."""
    sq = (g * g).reshape(g.shape[0], -1).sum(axis=1)
    return (sq + 1e-12) ** 0.5


def gradient_penalty(D, real, fake, rng=None):
    """E (||grad_x D(x_hat)||_2 - 1)^2 at x_hat = e x + (1 - e) G(z), e ~ U[0, 1] per sample.

    Gulrajani et al. 2017, eq. 3 (multiply by lambda = 10 yourself). `fake` should be detached
    for the critic step; `rng` is a numpy Generator (default: pygan's global generator).
    """
    from .autograd import grad
    from .random import default_generator

    _check("real", real)
    _check("fake", fake)
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty: real {real.shape} and fake {fake.shape} must have one shape")
    rng = default_generator() if rng is None else rng
    xp = array_module(real.data)
    e = rng.random((real.shape[0],) + (1,) * (real.ndim - 1)).astype(real.dtype)
    e = xp.asarray(e)
    x_hat = Tensor(e * real.data + (1 - e) * fake.data, requires_grad=True)
    (g,) = grad(D(x_hat).sum(), x_hat, create_graph=True)
    return ((_per_sample_norm(g) - 1.0) ** 2).mean()


# -- Mescheder et al. 2018 -----------------------------------------------------------------------


def r1_penalty(D, real):
    """E ||grad_x D(x)||^2 on real data (multiply by gamma / 2 yourself)."""
    from .autograd import grad

    _check("real", real)
    x = Tensor(real.data, requires_grad=True)
    (g,) = grad(D(x).sum(), x, create_graph=True)
    return (g * g).reshape(g.shape[0], -1).sum(axis=1).mean()


# -- by name -------------------------------------------------------------------------------------


def d_loss(name, real, fake, real_target=1.0, fake_target=0.0):
    """D's loss `name` (one of LOSSES) on D(x) = real and D(G(z)) = fake, without any penalty."""
    if name in ("non-saturating", "minimax"):
        return bce_d_loss(real, fake, real_target, fake_target)
    if name == "lsgan":
        return lsgan_d_loss(real, fake, real_target, fake_target)
    if name == "hinge":
        return hinge_d_loss(real, fake)
    if name in ("wgan", "wgan-gp"):
        return wasserstein_d_loss(real, fake)
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {name!r}")


def g_loss(name, fake):
    """G's loss `name` (one of LOSSES) on D(G(z)) = fake."""
    if name == "non-saturating":
        return non_saturating_g_loss(fake)
    if name == "minimax":
        return minimax_g_loss(fake)
    if name == "lsgan":
        return lsgan_g_loss(fake)
    if name == "hinge":
        return hinge_g_loss(fake)
    if name in ("wgan", "wgan-gp"):
        return wasserstein_g_loss(fake)
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {name!r}")


def flip_labels(n, real_target, fake_target, p, rng):
    """Per-sample (real, fake) target arrays where each pair is swapped with probability p."""
    flip = rng.random(n) < p
    real = np.where(flip, fake_target, real_target).astype(np.float32)
    fake = np.where(flip, real_target, fake_target).astype(np.float32)
    return real, fake
