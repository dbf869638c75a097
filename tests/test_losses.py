"""Each GAN loss against a hand computation on small tensors (pygan.losses)."""

import math

import numpy as np
import pytest

import pygan
from pygan import losses

REAL = [2.0, -1.0, 0.5]
FAKE = [-3.0, 0.25, 1.5]


def t(values, requires_grad=False):
    return pygan.tensor(np.array(values, dtype=np.float64), requires_grad=requires_grad)


def softplus(x):
    return math.log1p(math.exp(-abs(x))) + max(x, 0.0)


def mean(values):
    return sum(values) / len(values)


def test_bce_d_loss_is_minus_log_d_real_minus_log_one_minus_d_fake():
    # -log sigmoid(r) = softplus(-r); -log(1 - sigmoid(f)) = softplus(f)
    expected = mean([softplus(-r) for r in REAL]) + mean([softplus(f) for f in FAKE])
    assert losses.d_loss("non-saturating", t(REAL), t(FAKE)).item() == pytest.approx(expected, rel=1e-12)


def test_bce_d_loss_with_smoothed_real_target():
    s = 0.9
    expected = mean([s * softplus(-r) + (1 - s) * softplus(r) for r in REAL]) + mean([softplus(f) for f in FAKE])
    assert losses.bce_d_loss(t(REAL), t(FAKE), real_target=s).item() == pytest.approx(expected, rel=1e-12)


def test_generator_bce_losses():
    assert losses.g_loss("non-saturating", t(FAKE)).item() == pytest.approx(mean([softplus(-f) for f in FAKE]), rel=1e-12)
    # log(1 - sigmoid(f)) = -softplus(f)
    assert losses.g_loss("minimax", t(FAKE)).item() == pytest.approx(-mean([softplus(f) for f in FAKE]), rel=1e-12)


def test_lsgan():
    d = 0.5 * mean([(r - 1) ** 2 for r in REAL]) + 0.5 * mean([f**2 for f in FAKE])
    g = 0.5 * mean([(f - 1) ** 2 for f in FAKE])
    assert losses.d_loss("lsgan", t(REAL), t(FAKE)).item() == pytest.approx(d, rel=1e-12)
    assert losses.g_loss("lsgan", t(FAKE)).item() == pytest.approx(g, rel=1e-12)


def test_hinge():
    d = mean([max(0.0, 1 - r) for r in REAL]) + mean([max(0.0, 1 + f) for f in FAKE])
    assert losses.d_loss("hinge", t(REAL), t(FAKE)).item() == pytest.approx(d, rel=1e-12)
    assert losses.g_loss("hinge", t(FAKE)).item() == pytest.approx(-mean(FAKE), rel=1e-12)


def test_hinge_gradient_is_zero_where_the_margin_is_met():
    real, fake = t(REAL, True), t(FAKE, True)
    losses.hinge_d_loss(real, fake).backward()
    # d/dr relu(1 - r)/3 = -1/3 where r < 1; d/df relu(1 + f)/3 = 1/3 where f > -1
    np.testing.assert_allclose(real.grad.numpy(), [0.0, -1 / 3, -1 / 3])
    np.testing.assert_allclose(fake.grad.numpy(), [0.0, 1 / 3, 1 / 3])


@pytest.mark.parametrize("name", ["wgan", "wgan-gp"])
def test_wasserstein(name):
    assert losses.d_loss(name, t(REAL), t(FAKE)).item() == pytest.approx(mean(FAKE) - mean(REAL), rel=1e-12)
    assert losses.g_loss(name, t(FAKE)).item() == pytest.approx(-mean(FAKE), rel=1e-12)


def test_unknown_loss_is_a_clear_error():
    with pytest.raises(ValueError, match="loss must be one of .*'wasserstein'"):
        losses.d_loss("wasserstein", t(REAL), t(FAKE))
    with pytest.raises(ValueError, match="loss must be one of"):
        losses.g_loss("bce", t(FAKE))
    with pytest.raises(TypeError, match="fake must be a pygan Tensor"):
        losses.hinge_g_loss(np.zeros(3))


def test_flip_labels_swaps_pairs_with_probability_p():
    rng = np.random.default_rng(0)
    real, fake = losses.flip_labels(20000, 0.9, 0.0, 0.25, rng)
    flipped = real == 0.0
    assert abs(flipped.mean() - 0.25) < 0.01
    assert np.all(fake[flipped] == np.float32(0.9)) and np.all(fake[~flipped] == 0.0)
    assert np.all(real[~flipped] == np.float32(0.9))
