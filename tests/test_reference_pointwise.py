"""Pointwise ops, BCE-with-logits and Adam in pygan.ops.reference.

Gradients: check_backward in float64 (eps 1e-6, atol 1e-6, rtol 1e-4). Values: stated per test.
"""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pygan.gradcheck import check_backward
from pygan.ops import reference as R

SETTINGS = settings(max_examples=25, deadline=None)

small_shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)
seeds = st.integers(0, 2**32 - 1)


def away_from_zero(rng, shape, margin=1e-3):
    """Normal samples with |x| > margin, so finite differences never straddle a kink at 0."""
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < margin, np.copysign(margin, x) * 10, x)


# -- leaky ReLU -----------------------------------------------------------------------------------


@pytest.mark.parametrize("slope", [0.0, 0.01, 0.2, 1.0, 1.5, -0.3])
def test_leaky_relu_forward_definition(slope):
    """y = x if x > 0 else slope * x, exactly (slope 0 is ReLU)."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((4, 5, 3))
    expected = np.array([v if v > 0 else slope * v for v in x.ravel()]).reshape(x.shape)
    np.testing.assert_array_equal(R.leaky_relu_forward(x, slope), expected)
    dy = rng.standard_normal(x.shape)
    expected_dx = np.array([d if v > 0 else slope * d for v, d in zip(x.ravel(), dy.ravel())]).reshape(x.shape)
    np.testing.assert_array_equal(R.leaky_relu_backward(x, dy, slope), expected_dx)


@SETTINGS
@given(shape=small_shapes, slope=st.sampled_from([0.0, 0.01, 0.2, 1.0, 2.0]), seed=seeds)
def test_leaky_relu_gradcheck(shape, slope, seed):
    rng = np.random.default_rng(seed)
    x = away_from_zero(rng, shape)
    check_backward(
        lambda x: R.leaky_relu_forward(x, slope),
        lambda x, dy: (R.leaky_relu_backward(x, dy, slope),),
        (x,),
        rng=rng,
    )


@pytest.mark.parametrize("slope", [0.0, 0.2, 2.0])
def test_nan_propagates_through_leaky_relu(slope):
    """NaN in x gives NaN in y, at every slope including 0 (no silent clipping to 0)."""
    x = np.array([np.nan, -1.0, 1.0, np.nan], np.float32)
    y = R.leaky_relu_forward(x, slope)
    assert np.isnan(y[[0, 3]]).all() and np.isfinite(y[[1, 2]]).all()


def test_leaky_relu_at_zero_uses_the_negative_side():
    """x == 0 is on the slope side: y = 0, dx = slope * dy (the gradient uses x > 0)."""
    x = np.zeros(3)
    dy = np.array([1.0, -2.0, 3.0])
    np.testing.assert_array_equal(R.leaky_relu_forward(x, 0.2), 0.0)
    np.testing.assert_array_equal(R.leaky_relu_backward(x, dy, 0.2), 0.2 * dy)


# -- tanh, sigmoid --------------------------------------------------------------------------------


@SETTINGS
@given(shape=small_shapes, seed=seeds)
def test_tanh_gradcheck_from_output(shape, seed):
    """tanh_backward(y, dy) takes the OUTPUT y."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2
    check_backward(R.tanh_forward, lambda x, dy: (R.tanh_backward(R.tanh_forward(x), dy),), (x,), rng=rng)


@SETTINGS
@given(shape=small_shapes, seed=seeds)
def test_sigmoid_gradcheck_from_output(shape, seed):
    """sigmoid_backward(y, dy) takes the OUTPUT y."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 4
    check_backward(R.sigmoid_forward, lambda x, dy: (R.sigmoid_backward(R.sigmoid_forward(x), dy),), (x,), rng=rng)


def test_sigmoid_values_and_extremes_are_warning_free():
    """sigmoid = 1/(1+exp(-x)) (rtol 1e-14 for |x| <= 30); at |x| = 1e4 it is exactly 0 or 1,
    in float32 and float64, with no RuntimeWarning (overflow) raised."""
    x = np.linspace(-30, 30, 121)
    np.testing.assert_allclose(R.sigmoid_forward(x), 1 / (1 + np.exp(-x)), rtol=1e-14)
    for dtype in (np.float32, np.float64):
        big = np.array([-1e4, -800.0, -100.0, 0.0, 100.0, 800.0, 1e4], dtype)
        with warnings.catch_warnings(), np.errstate(all="warn"):
            warnings.simplefilter("error")
            y = R.sigmoid_forward(big)
            dx = R.sigmoid_backward(y, np.ones_like(big))
        assert y.dtype == dtype and np.isfinite(y).all() and np.isfinite(dx).all()
        assert y[0] == 0 and y[-1] == 1 and y[3] == 0.5


def test_tanh_values():
    """tanh_forward is np.tanh (exact); extremes saturate to +-1 without warnings."""
    x = np.array([-1e4, -3.0, 0.0, 0.5, 1e4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(R.tanh_forward(x), np.tanh(x))


# -- BCE with logits ------------------------------------------------------------------------------


def bce_naive(x, t):
    s = 1 / (1 + np.exp(-x))
    return np.mean(-(t * np.log(s) + (1 - t) * np.log(1 - s)))


@SETTINGS
@given(shape=small_shapes, seed=seeds)
def test_bce_with_logits_matches_naive_formula(shape, seed):
    """For moderate logits (|x| <= 8) the stable form equals -mean(t log s + (1-t) log(1-s)),
    rtol 1e-10 (float64); targets anywhere in [0, 1] (soft labels too)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-8, 8, shape)
    t = rng.uniform(0, 1, shape)
    loss = R.binary_cross_entropy_with_logits_forward(x, t)
    assert isinstance(loss, np.ndarray) and loss.shape == ()
    assert float(loss) == pytest.approx(bce_naive(x, t), rel=1e-10)


@SETTINGS
@given(shape=small_shapes, seed=seeds, dloss=st.floats(0.1, 3.0))
def test_bce_with_logits_gradcheck(shape, seed, dloss):
    """Gradient w.r.t. logits, with a scalar cotangent drawn by hypothesis and hard 0/1 targets."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 3
    t = rng.integers(0, 2, shape).astype(np.float64)
    check_backward(
        lambda x: R.binary_cross_entropy_with_logits_forward(x, t),
        lambda x, dy: (R.binary_cross_entropy_with_logits_backward(x, t, dy),),
        (x,),
        rng=rng,
        dy=np.array(dloss),
    )


def test_bce_with_logits_backward_formula_and_scalar_dloss():
    """dlogits = (sigmoid(x) - t) * dloss / numel; dloss as a Python float or a 0-d array (rtol 1e-14)."""
    rng = np.random.default_rng(22)
    x, t = rng.standard_normal((3, 4)), rng.integers(0, 2, (3, 4)).astype(np.float64)
    expected = (1 / (1 + np.exp(-x)) - t) * 2.5 / 12
    np.testing.assert_allclose(R.binary_cross_entropy_with_logits_backward(x, t, 2.5), expected, rtol=1e-14)
    np.testing.assert_allclose(R.binary_cross_entropy_with_logits_backward(x, t, np.array(2.5)), expected, rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_with_logits_extreme_logits_are_finite_and_warning_free(dtype):
    """At logits +-1e4: loss is finite (|x| for the wrong sign, 0 for the right one), gradient is
    finite, and nothing warns (overflow in exp would)."""
    x = np.array([1e4, -1e4, 1e4, -1e4], dtype)
    t = np.array([1.0, 0.0, 0.0, 1.0], dtype)
    with warnings.catch_warnings(), np.errstate(all="warn"):
        warnings.simplefilter("error")
        loss = R.binary_cross_entropy_with_logits_forward(x, t)
        grad = R.binary_cross_entropy_with_logits_backward(x, t, np.array(1.0, dtype))
        right = R.binary_cross_entropy_with_logits_forward(x[:2], t[:2])
    assert np.isfinite(loss) and float(loss) == pytest.approx(1e4 / 2, rel=1e-6)
    assert float(right) == 0.0
    assert np.isfinite(grad).all()
    np.testing.assert_allclose(grad, [0.0, 0.0, 0.25, -0.25])
    assert loss.dtype == dtype and grad.dtype == dtype


# -- dtypes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pointwise_dtypes_preserved(dtype):
    """Every pointwise op returns the input's dtype, also with Python-float and numpy-float64
    scalar hyper-parameters (which must not promote float32)."""
    rng = np.random.default_rng(23)
    x = rng.standard_normal((3, 4)).astype(dtype)
    dy = rng.standard_normal((3, 4)).astype(dtype)
    t = rng.integers(0, 2, (3, 4)).astype(dtype)
    outs = [
        R.leaky_relu_forward(x, 0.2),
        R.leaky_relu_forward(x, np.float64(0.2)),
        R.leaky_relu_forward(x, 0.0),
        R.leaky_relu_forward(x, 2.0),
        R.leaky_relu_backward(x, dy, np.float64(0.2)),
        R.leaky_relu_backward(x, dy, 0.0),
        R.tanh_forward(x),
        R.tanh_backward(x, dy),
        R.sigmoid_forward(x),
        R.sigmoid_backward(x, dy),
        R.binary_cross_entropy_with_logits_forward(x, t),
        R.binary_cross_entropy_with_logits_backward(x, t, np.float64(1.0)),
    ]
    for out in outs:
        assert out.dtype == dtype
        assert not np.shares_memory(out, x) and not np.shares_memory(out, dy)


# -- Adam -----------------------------------------------------------------------------------------


def adam_scalar_loop(p, grads_per_step, lr, b1, b2, eps, wd):
    """torch.optim.Adam (amsgrad=False) for one scalar parameter, written from the paper + PyTorch docs."""
    m = v = 0.0
    for t, g in enumerate(grads_per_step, start=1):
        g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        p = p - lr * m_hat / (math.sqrt(v_hat) + eps)
    return p, m, v


@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_adam_matches_scalar_loop(wd):
    """Five steps over two parameter arrays, in place, equal the scalar loop element by element
    (float64, rtol 1e-12). Note lr*m_hat/(sqrt(v_hat)+eps) is PyTorch's formula rearranged."""
    rng = np.random.default_rng(24)
    lr, b1, b2, eps = 2e-4, 0.5, 0.999, 1e-8
    params = [rng.standard_normal((3, 2)), rng.standard_normal(4)]
    start = [p.copy() for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    grads = [[rng.standard_normal(p.shape) for p in params] for _ in range(5)]
    ids = [id(a) for a in params + m + v]
    for step, g in enumerate(grads, start=1):
        assert R.adam_step(params, g, m, v, step, lr, b1, b2, eps, wd) is None
    assert [id(a) for a in params + m + v] == ids
    for k, p in enumerate(params):
        for idx in np.ndindex(p.shape):
            ep, em, ev = adam_scalar_loop(start[k][idx], [g[k][idx] for g in grads], lr, b1, b2, eps, wd)
            assert p[idx] == pytest.approx(ep, rel=1e-12)
            assert m[k][idx] == pytest.approx(em, rel=1e-12)
            assert v[k][idx] == pytest.approx(ev, rel=1e-12)


def test_adam_does_not_modify_grads_and_keeps_float32():
    """Weight decay must not write into the gradient arrays; float32 state stays float32."""
    rng = np.random.default_rng(25)
    p = rng.standard_normal(5).astype(np.float32)
    g = rng.standard_normal(5).astype(np.float32)
    g0 = g.copy()
    m, v = np.zeros(5, np.float32), np.zeros(5, np.float32)
    R.adam_step([p], [g], [m], [v], 1, np.float64(1e-3), 0.9, 0.999, 1e-8, 0.1)
    np.testing.assert_array_equal(g, g0)
    assert p.dtype == m.dtype == v.dtype == np.float32


def test_adam_against_torch():
    """Three steps with weight decay match torch.optim.Adam in float64 (rtol 1e-12)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(26)
    p0 = rng.standard_normal((4, 3))
    tp = torch.tensor(p0.copy(), requires_grad=True)
    opt = torch.optim.Adam([tp], lr=1e-3, betas=(0.5, 0.999), eps=1e-8, weight_decay=0.01)
    p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    for step in range(1, 4):
        g = rng.standard_normal(p0.shape)
        tp.grad = torch.tensor(g.copy())
        opt.step()
        R.adam_step([p], [g], [m], [v], step, 1e-3, 0.5, 0.999, 1e-8, 0.01)
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12)


def test_zero_dimensional_inputs_work():
    """A 0-d logit (a single score) goes through sigmoid and BCE like any other shape."""
    x, t = np.array(-3.0, dtype=np.float32), np.array(1.0, dtype=np.float32)
    assert R.sigmoid_forward(x).shape == () and np.isclose(R.sigmoid_forward(x), 1 / (1 + np.exp(3.0)))
    assert np.isclose(R.binary_cross_entropy_with_logits_forward(x, t), np.log1p(np.exp(3.0)), rtol=1e-6)
    assert R.binary_cross_entropy_with_logits_backward(x, t, np.float32(1.0)).shape == ()
