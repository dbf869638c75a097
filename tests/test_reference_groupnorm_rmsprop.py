"""group_norm and rmsprop_step in pygan.ops.reference (issue 11), and their registry checks.

group norm: gradients by check_backward in float64 (eps 1e-6, atol 1e-6, rtol 1e-4); the layer-norm
(G = 1) and instance-norm (G = C) ends against direct numpy formulas (rtol 1e-12); forward and
backward against torch.nn.functional.group_norm in float64 (rtol 1e-9, atol 1e-9; skipped without
torch). RMSprop: a hand-computed scalar step (rtol 1e-12) and several steps of torch.optim.RMSprop
in float64 for every combination of momentum, centered and weight decay (rtol 1e-10, atol 1e-12).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pygan import ops
from pygan.gradcheck import check_backward
from pygan.ops import reference as R

SETTINGS = settings(max_examples=25, deadline=None)


@st.composite
def gn_cases(draw):
    n = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    c = groups * draw(st.integers(1, 3))
    spatial = draw(st.lists(st.integers(1, 4), min_size=0, max_size=2))
    if c // groups * int(np.prod(spatial, dtype=int)) < 2:  # one value per group: xhat is 0, rstd huge
        spatial = [2] + spatial
    return (n, c, *spatial), groups


def gn_inputs(shape, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * rng.uniform(0.5, 3.0) + rng.standard_normal()).astype(dtype)
    c = shape[1]
    return rng, x, rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)


@SETTINGS
@given(case=gn_cases(), affine=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_group_norm_gradcheck(case, affine, seed):
    shape, groups = case
    rng, x, gamma, beta = gn_inputs(shape, seed)

    def forward(x, g, b):
        return R.group_norm_forward(x, g, b, groups, 1e-5)[0]

    def backward(x, g, b, dy):
        _, mean, rstd = R.group_norm_forward(x, g, b, groups, 1e-5)
        return R.group_norm_backward(x, g, dy, mean, rstd, groups)

    if affine:
        check_backward(forward, backward, (x, gamma, beta), rng=rng)
    else:
        check_backward(lambda x: forward(x, None, None), lambda x, dy: backward(x, None, None, dy)[:1], (x,), rng=rng)
        assert backward(x, None, None, rng.standard_normal(x.shape))[1:] == (None, None)


def test_layer_norm_and_instance_norm_ends():
    """G = 1 normalises each sample over (C, H, W); G = C each (sample, channel) over (H, W)."""
    rng, x, gamma, beta = gn_inputs((3, 4, 5, 2), 1)
    b = (1, 4, 1, 1)
    y, mean, rstd = R.group_norm_forward(x, gamma, beta, 1, 1e-5)
    m, v = x.mean(axis=(1, 2, 3), keepdims=True), x.var(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(y, (x - m) / np.sqrt(v + 1e-5) * gamma.reshape(b) + beta.reshape(b), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mean, m.reshape(3, 1), rtol=1e-12)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(v.reshape(3, 1) + 1e-5), rtol=1e-12)
    y, mean, rstd = R.group_norm_forward(x, None, None, 4, 1e-3)
    m, v = x.mean(axis=(2, 3), keepdims=True), x.var(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(y, (x - m) / np.sqrt(v + 1e-3), rtol=1e-12, atol=1e-12)
    assert mean.shape == rstd.shape == (3, 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_group_norm_dtypes_and_shapes(dtype):
    rng, x, gamma, beta = gn_inputs((2, 6, 3), 2, dtype)
    y, mean, rstd = R.group_norm_forward(x, gamma, beta, 3, 1e-5)
    grads = R.group_norm_backward(x, gamma, rng.standard_normal(x.shape).astype(dtype), mean, rstd, 3)
    for out in (y, mean, rstd, *grads):
        assert out.dtype == dtype and out.flags.c_contiguous
    assert y.shape == x.shape and mean.shape == (2, 3) and grads[1].shape == grads[2].shape == (6,)


@pytest.mark.parametrize("shape,groups", [((8, 64, 8, 8), 1), ((4, 32, 5, 3), 8), ((4, 16, 6, 6), 16), ((3, 6, 7), 2)])
def test_group_norm_against_torch(shape, groups):
    torch = pytest.importorskip("torch")
    rng, x, gamma, beta = gn_inputs(shape, 3)
    tx, tg, tb = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    ty = torch.nn.functional.group_norm(tx, groups, tg, tb, 1e-5)
    y, mean, rstd = R.group_norm_forward(x, gamma, beta, groups, 1e-5)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-9, atol=1e-9)
    dy = rng.standard_normal(shape)
    ty.backward(torch.tensor(dy))
    for ours, theirs in zip(R.group_norm_backward(x, gamma, dy, mean, rstd, groups), (tx.grad, tg.grad, tb.grad)):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-9, atol=1e-9)


def test_group_norm_registry_checks():
    x = np.ones((2, 6, 3), np.float32)
    with pytest.raises(ValueError, match="num_groups 4 must divide the 6 channels"):
        ops.group_norm_forward(x, None, None, 4, 1e-5)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="num_groups must be an int >= 1"):
            ops.group_norm_forward(x, None, None, bad, 1e-5)
    with pytest.raises(ValueError, match="eps must be positive"):
        ops.group_norm_forward(x, None, None, 2, 0.0)
    with pytest.raises(ValueError, match=r"weight must have shape \(6,\)"):
        ops.group_norm_forward(x, np.ones(3, np.float32), None, 2, 1e-5)
    with pytest.raises(ValueError, match=r"bias must have shape \(6,\)"):
        ops.group_norm_forward(x, None, np.ones(7, np.float32), 2, 1e-5)
    with pytest.raises(ValueError, match="at least 2-D"):
        ops.group_norm_forward(np.ones(6, np.float32), None, None, 2, 1e-5)
    with pytest.raises(ValueError, match="no values per group"):
        ops.group_norm_forward(np.ones((2, 6, 0), np.float32), None, None, 2, 1e-5)
    with pytest.raises(TypeError, match="float64 but input is float32"):
        ops.group_norm_forward(x, np.ones(6), None, 2, 1e-5)
    y, mean, rstd = ops.group_norm_forward(x, None, None, 2, 1e-5)
    with pytest.raises(ValueError, match=r"mean has shape \(2, 3\), expected \(2, 2\)"):
        ops.group_norm_backward(x, None, y, np.ones((2, 3), np.float32), rstd, 2)
    with pytest.raises(ValueError, match="grad_output has shape"):
        ops.group_norm_backward(x, None, y[:1], mean, rstd, 2)
    # an empty batch is fine: empty outputs
    e = np.ones((0, 6, 3), np.float32)
    ye, me, re = ops.group_norm_forward(e, None, None, 3, 1e-5)
    assert ye.shape == e.shape and me.shape == re.shape == (0, 3)


# -- RMSprop -------------------------------------------------------------------------------------


def test_rmsprop_one_step_by_hand():
    """p=1, g=0.5, v=0, alpha=0.9, eps=1e-8, lr=0.1, wd=0.1: g'=0.6, v=0.1*0.36=0.036;
    centered ga=0.06, avg=sqrt(0.036-0.0036)+eps; momentum 0.5: buf = g'/avg, p -= lr*buf."""
    for centered in (False, True):
        for momentum in (0.0, 0.5):
            p, g, v = np.array([1.0]), np.array([0.5]), np.array([0.0])
            bufs = [np.array([0.0])] if momentum else []
            gas = [np.array([0.0])] if centered else []
            R.rmsprop_step([p], [g], [v], bufs, gas, 0.1, 0.9, 1e-8, 0.1, momentum, centered)
            avg = np.sqrt(0.036 - (0.0036 if centered else 0.0)) + 1e-8
            np.testing.assert_allclose(v, [0.036], rtol=1e-12)
            np.testing.assert_allclose(p, [1.0 - 0.1 * 0.6 / avg], rtol=1e-12)
            if momentum:
                np.testing.assert_allclose(bufs[0], [0.6 / avg], rtol=1e-12)
            if centered:
                np.testing.assert_allclose(gas[0], [0.06], rtol=1e-12)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_rmsprop_against_torch(rng, momentum, centered, weight_decay):
    torch = pytest.importorskip("torch")
    shapes = [(3, 4), (5,), (2, 1, 3)]
    params = [rng.standard_normal(s) for s in shapes]
    tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    hyper = dict(lr=1e-2, alpha=0.95, eps=1e-6, weight_decay=weight_decay, momentum=momentum, centered=centered)
    opt = torch.optim.RMSprop(tparams, **hyper)
    v = [np.zeros_like(p) for p in params]
    bufs = [np.zeros_like(p) for p in params] if momentum else []
    gas = [np.zeros_like(p) for p in params] if centered else []
    for _ in range(5):
        grads = [rng.standard_normal(p.shape) for p in params]
        for t, g in zip(tparams, grads):
            t.grad = torch.tensor(g)
        opt.step()
        R.rmsprop_step(params, grads, v, bufs, gas, **hyper)
        for ours, theirs in zip(params, tparams):
            np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)
        for i, t in enumerate(tparams):
            np.testing.assert_allclose(v[i], opt.state[t]["square_avg"].numpy(), rtol=1e-10, atol=1e-14)


def test_rmsprop_registry_checks():
    p = [np.ones(3, np.float32)]
    g = [np.ones(3, np.float32)]
    v = [np.zeros(3, np.float32)]
    with pytest.raises(ValueError, match="momentum_buffers must be empty unless momentum > 0"):
        ops.rmsprop_step(p, g, v, [np.zeros(3, np.float32)], [], 0.1, 0.9, 1e-8, 0, 0, False)
    with pytest.raises(ValueError, match="momentum_buffers has 0 arrays, params has 1"):
        ops.rmsprop_step(p, g, v, [], [], 0.1, 0.9, 1e-8, 0, 0.5, False)
    with pytest.raises(ValueError, match="grad_avgs has 0 arrays, params has 1"):
        ops.rmsprop_step(p, g, v, [], [], 0.1, 0.9, 1e-8, 0, 0, True)
    with pytest.raises(ValueError, match="grad_avgs must be empty unless centered"):
        ops.rmsprop_step(p, g, v, [], [np.zeros(3, np.float32)], 0.1, 0.9, 1e-8, 0, 0, False)
    with pytest.raises(ValueError, match=r"square_avgs\[0\] has shape \(4,\)"):
        ops.rmsprop_step(p, g, [np.zeros(4, np.float32)], [], [], 0.1, 0.9, 1e-8, 0, 0, False)
    for name, kw in (("lr", dict(lr=-1)), ("alpha", dict(alpha=-0.1)), ("eps", dict(eps=-1)),
                     ("weight_decay", dict(weight_decay=-1)), ("momentum", dict(momentum=-0.5))):
        args = dict(lr=0.1, alpha=0.9, eps=1e-8, weight_decay=0, momentum=0, centered=False) | kw
        bufs = []
        with pytest.raises(ValueError, match=f"{name} must be >= 0"):
            ops.rmsprop_step(p, g, v, bufs, [], **args)
    ops.rmsprop_step([], [], [], [], [], 0.1, 0.9, 1e-8, 0, 0, False)  # nothing to do
