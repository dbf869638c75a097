"""EMA of G's weights (pygan.ema.ModelEMA) and the truncation trick (pygan.ema.truncated_normal)."""

import numpy as np
import pytest

import pygan
from pygan.ema import ModelEMA, truncated_normal
from pygan.models import Generator


def make_pair(seed=0):
    pygan.manual_seed(seed)
    return Generator(nz=4, ngf=2, nc=1, image_size=32), Generator(nz=4, ngf=2, nc=1, image_size=32)


def test_ema_is_the_exponential_moving_average_of_every_float_state():
    G, shadow = make_pair()
    ema = ModelEMA(G, shadow, decay=0.9, warmup=False)
    expected = {k: v.numpy().astype(np.float64) for k, v in G.state_dict().items()}
    rng = np.random.default_rng(0)
    for step in range(1, 4):
        for name, t in G.state_dict().items():
            if t.dtype.kind == "f":
                t.data[...] = rng.standard_normal(t.shape)
            else:
                t.data[...] = step
        ema.update(step)
        for name, t in G.state_dict().items():
            if t.dtype.kind == "f":
                expected[name] = 0.9 * expected[name] + 0.1 * t.numpy()
            else:
                expected[name] = t.numpy()
    for name, t in shadow.state_dict().items():
        np.testing.assert_allclose(t.numpy(), expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert not shadow.training


def test_the_warm_up_lowers_the_decay_early_and_reaches_decay_later():
    G, shadow = make_pair()
    ema = ModelEMA(G, shadow, decay=0.999, start=100)
    assert ema.decay_at(100) == pytest.approx(0.1) and ema.decay_at(50) == pytest.approx(0.1)
    assert ema.decay_at(110) == pytest.approx(11 / 20)
    assert ema.decay_at(100 + 10**6) == 0.999
    decays = [ema.decay_at(s) for s in range(100, 20000, 50)]
    assert decays == sorted(decays)
    # after one Fashion-MNIST epoch (937 steps) the initial weights are all but forgotten
    weight_of_init = np.prod([ema.decay_at(100 + t) for t in range(937)])
    assert weight_of_init < 1e-3
    assert ModelEMA(G, shadow, decay=0.999, warmup=False).decay_at(5) == 0.999


def test_before_start_the_shadow_copies_the_model():
    G, shadow = make_pair(1)
    ema = ModelEMA(G, shadow, decay=0.99, start=5)
    G.main[0].weight.data[...] = 3.0
    ema.update(step=2)
    np.testing.assert_array_equal(shadow.main[0].weight.numpy(), 3.0)


def test_bad_arguments():
    G, shadow = make_pair()
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\)"):
        ModelEMA(G, shadow, decay=1.0)
    with pytest.raises(ValueError, match="start must be a non-negative integer"):
        ModelEMA(G, shadow, start=-1)
    with pytest.raises(ValueError, match="architecture"):
        ModelEMA(G, Generator(nz=4, ngf=4, nc=1, image_size=32))


@pytest.mark.parametrize("psi", [0.1, 0.5, 1.0, 2.0])
def test_truncation_never_yields_a_component_beyond_psi(psi):
    z = truncated_normal(np.random.default_rng(0), (500, 16), psi)
    assert z.dtype == np.float32 and z.shape == (500, 16)
    assert np.abs(z).max() <= psi
    # still spread over the interval, not collapsed to 0
    assert np.abs(z).mean() > psi / 3


def test_truncation_none_is_the_plain_normal_and_bad_psi_is_an_error():
    a = truncated_normal(np.random.default_rng(3), (4, 5), None)
    np.testing.assert_array_equal(a, np.random.default_rng(3).standard_normal((4, 5)).astype(np.float32))
    for psi in (0, -1.0):
        with pytest.raises(ValueError, match="psi must be positive"):
            truncated_normal(np.random.default_rng(0), (2,), psi)
