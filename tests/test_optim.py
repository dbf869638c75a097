"""Adam with PyTorch's semantics, checked against a trajectory computed by hand."""

import math

import numpy as np
import pytest

import pygan
from pygan import nn, optim


def adam_by_hand(p, grads, lr, b1, b2, eps, wd):
    """Scalar Adam as in PyTorch's documentation (L2 decay added to the gradient)."""
    m = v = 0.0
    out = []
    for t, g in enumerate(grads, start=1):
        g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        p = p - lr * m_hat / (math.sqrt(v_hat) + eps)
        out.append(p)
    return out


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adam_matches_hand_computed_trajectory(wd, rng):
    p0 = rng.standard_normal(4)
    grads = [rng.standard_normal(4) for _ in range(5)]
    p = nn.Parameter(p0.copy())
    opt = optim.Adam([p], lr=2e-2, betas=(0.5, 0.999), eps=1e-8, weight_decay=wd)
    expected = [adam_by_hand(p0[i], [g[i] for g in grads], 2e-2, 0.5, 0.999, 1e-8, wd) for i in range(4)]
    for t, g in enumerate(grads):
        p.grad = pygan.tensor(g)
        opt.step()
        np.testing.assert_allclose(p.numpy(), [e[t] for e in expected], rtol=1e-12, atol=1e-12)


def test_adam_skips_parameters_without_gradients(rng):
    a, b = nn.Parameter(rng.standard_normal(3)), nn.Parameter(rng.standard_normal(3))
    b0 = b.numpy().copy()
    opt = optim.Adam([a, b])
    a.grad = pygan.tensor(rng.standard_normal(3))
    opt.step()
    np.testing.assert_array_equal(b.numpy(), b0)


def test_adam_state_dict_resumes_exactly(rng):
    p0 = rng.standard_normal(5).astype(np.float32)
    grads = [rng.standard_normal(5).astype(np.float32) for _ in range(6)]

    straight = nn.Parameter(p0.copy())
    opt = optim.Adam([straight], lr=1e-2, betas=(0.5, 0.999))
    for g in grads:
        straight.grad = pygan.tensor(g)
        opt.step()

    first = nn.Parameter(p0.copy())
    opt1 = optim.Adam([first], lr=1e-2, betas=(0.5, 0.999))
    for g in grads[:3]:
        first.grad = pygan.tensor(g)
        opt1.step()
    resumed = nn.Parameter(first.numpy().copy())
    opt2 = optim.Adam([resumed], lr=0.5)  # hyper-parameters come back from the state dict too
    opt2.load_state_dict(opt1.state_dict())
    for g in grads[3:]:
        resumed.grad = pygan.tensor(g)
        opt2.step()
    np.testing.assert_array_equal(straight.numpy(), resumed.numpy())
    assert opt2.param_groups[0]["lr"] == 1e-2


def test_zero_grad_clears(rng):
    p = nn.Parameter(rng.standard_normal(2))
    opt = optim.Adam([p])
    p.grad = pygan.tensor(np.ones(2))
    opt.zero_grad()
    assert p.grad is None


@pytest.mark.parametrize(
    "kwargs, word", [({"lr": -1.0}, "lr"), ({"betas": (0.5, 1.0)}, "betas"), ({"eps": -1.0}, "eps"), ({"weight_decay": -1.0}, "weight_decay")]
)
def test_bad_hyper_parameters_are_named(kwargs, word):
    with pytest.raises(ValueError, match=word):
        optim.Adam([nn.Parameter(np.ones(2))], **kwargs)
