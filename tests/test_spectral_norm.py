"""Spectral normalisation (pygan.nn.utils.spectral_norm) with PyTorch's semantics."""

import numpy as np
import pytest

import pygan
from pygan import nn
from pygan.nn.utils import remove_spectral_norm, spectral_norm


def weight_matrix(w, dim):
    return np.swapaxes(w, 0, dim).reshape(w.shape[dim], -1)


@pytest.mark.parametrize("make, dim", [
    (lambda: nn.Conv2d(3, 8, 4, 2, 1), 0),
    (lambda: nn.ConvTranspose2d(8, 5, 4, 2, 1), 1),
    (lambda: nn.Linear(6, 7), 0),
])
def test_sigma_converges_to_the_largest_singular_value(make, dim):
    pygan.manual_seed(0)
    m = spectral_norm(make(), n_power_iterations=1)
    m.train()
    x_shape = {nn.Conv2d: (2, 3, 8, 8), nn.ConvTranspose2d: (2, 8, 3, 3), nn.Linear: (2, 6)}[type(m)]
    x = pygan.randn(*x_shape)
    for _ in range(200):  # each forward refines u and v by one power step
        m(x)
    w_orig = m.weight_orig.numpy()
    sigma = np.linalg.svd(weight_matrix(w_orig, dim), compute_uv=False)[0]
    np.testing.assert_allclose(m.weight.numpy(), w_orig / sigma, rtol=1e-4)
    # the normalised weight has spectral norm 1
    assert np.linalg.svd(weight_matrix(m.weight.numpy(), dim), compute_uv=False)[0] == pytest.approx(1.0, rel=1e-4)


def test_state_dict_holds_orig_u_v_and_eval_does_not_update():
    pygan.manual_seed(1)
    m = spectral_norm(nn.Conv2d(2, 4, 3))
    assert set(m.state_dict()) == {"weight_orig", "bias", "weight_u", "weight_v"}
    assert sorted(name for name, _ in m.named_parameters()) == ["bias", "weight_orig"]
    x = pygan.randn(1, 2, 5, 5)
    m.eval()
    u = m.weight_u.numpy().copy()
    y1 = m(x).numpy()
    np.testing.assert_array_equal(m.weight_u.numpy(), u)
    m.train()
    m(x)
    assert not np.array_equal(m.weight_u.numpy(), u)
    # loading the saved state restores the power iteration's vectors: same output in eval
    saved = {k: v.numpy().copy() for k, v in m.state_dict().items()}
    m2 = spectral_norm(nn.Conv2d(2, 4, 3))
    m2.load_state_dict(saved)
    m.eval(), m2.eval()
    np.testing.assert_array_equal(m(x).numpy(), m2(x).numpy())
    assert y1.shape == (1, 4, 3, 3)


def test_gradient_flows_to_weight_orig_through_sigma():
    """d/dW of sum(f(W / sigma(W))) by central differences (float64, eval mode so u, v are fixed)."""
    pygan.manual_seed(2)
    m = spectral_norm(nn.Linear(4, 3, bias=False))
    m.train()
    m(pygan.randn(1, 4))  # one power step
    m.eval()
    m.weight_orig.data = m.weight_orig.data.astype(np.float64)
    m.weight_u.data = m.weight_u.data.astype(np.float64)
    m.weight_v.data = m.weight_v.data.astype(np.float64)
    x = pygan.tensor(np.random.default_rng(0).standard_normal((5, 4)), dtype=np.float64)
    c = np.random.default_rng(1).standard_normal((5, 3))
    loss = lambda: (m(x) * pygan.tensor(c, dtype=np.float64)).sum()
    m.zero_grad()
    loss().backward()
    analytic = m.weight_orig.grad.numpy()
    numeric = np.zeros_like(analytic)
    w = m.weight_orig.data
    for i in np.ndindex(w.shape):
        old = w[i]
        w[i] = old + 1e-6
        up = loss().item()
        w[i] = old - 1e-6
        down = loss().item()
        w[i] = old
        numeric[i] = (up - down) / 2e-6
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_matches_torch_spectral_norm():
    torch = pytest.importorskip("torch")
    pygan.manual_seed(3)
    m = spectral_norm(nn.Conv2d(3, 6, 4, 2, 1, bias=False))
    t = torch.nn.utils.spectral_norm(torch.nn.Conv2d(3, 6, 4, 2, 1, bias=False))
    with torch.no_grad():
        t.weight_orig.copy_(torch.from_numpy(m.weight_orig.numpy()))
        t.weight_u.copy_(torch.from_numpy(m.weight_u.numpy()))
        t.weight_v.copy_(torch.from_numpy(m.weight_v.numpy()))
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    for _ in range(3):
        y = m(pygan.tensor(x))
        ty = t(torch.from_numpy(x))
        np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m.weight_u.numpy(), t.weight_u.numpy(), rtol=1e-4, atol=1e-6)


def test_remove_spectral_norm_keeps_the_normalised_weight():
    pygan.manual_seed(4)
    m = spectral_norm(nn.Linear(3, 3))
    m.eval()
    x = pygan.randn(2, 3)
    y = m(x).numpy()
    remove_spectral_norm(m)
    assert sorted(m.state_dict()) == ["bias", "weight"]
    np.testing.assert_allclose(m(x).numpy(), y, rtol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="has no parameter 'kernel'"):
        spectral_norm(nn.Linear(2, 2), name="kernel")
    with pytest.raises(ValueError, match="n_power_iterations must be a non-negative int"):
        spectral_norm(nn.Linear(2, 2), n_power_iterations=-1)
    with pytest.raises(TypeError, match="module must be a pygan nn.Module"):
        spectral_norm(object())
    m = spectral_norm(nn.Linear(2, 2))
    with pytest.raises(RuntimeError, match="already spectrally normalised"):
        spectral_norm(m)
