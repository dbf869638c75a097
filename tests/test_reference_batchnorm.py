"""batch_norm in pygan.ops.reference: statistics, running-stat updates (PyTorch semantics), eval
mode, and gradients (check_backward in float64: eps 1e-6, atol 1e-6, rtol 1e-4)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pygan.gradcheck import check_backward
from pygan.ops import reference as R

SETTINGS = settings(max_examples=25, deadline=None)

shapes = st.one_of(
    st.tuples(st.integers(2, 6), st.integers(1, 4)),  # (N, C): BatchNorm1d
    st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(2, 4)),  # (N, C, H, W)
    st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(2, 5)),  # (N, C, L)
)


def bn_inputs(shape, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = (rng.standard_normal(shape) * rng.uniform(0.5, 3.0, size=(1, c) + (1,) * (len(shape) - 2))
         + rng.standard_normal((1, c) + (1,) * (len(shape) - 2))).astype(dtype)
    gamma = rng.standard_normal(c).astype(dtype)
    beta = rng.standard_normal(c).astype(dtype)
    running_mean = rng.standard_normal(c).astype(dtype)
    running_var = rng.uniform(0.5, 2.0, c).astype(dtype)
    return rng, x, gamma, beta, running_mean, running_var


@SETTINGS
@given(shape=shapes, affine=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_batch_norm_training_gradcheck(shape, affine, seed):
    """Training mode: the full batch-statistics gradient for x (and gamma, beta when affine)."""
    rng, x, gamma, beta, _, _ = bn_inputs(shape, seed)
    if affine:
        check_backward(
            lambda x, g, b: R.batch_norm_forward(x, g, b, None, None, True, 0.1, 1e-5)[0],
            lambda x, g, b, dy: R.batch_norm_backward(x, g, dy, *R.batch_norm_forward(x, g, b, None, None, True, 0.1, 1e-5)[1:], True),
            (x, gamma, beta),
            rng=rng,
        )
    else:
        check_backward(
            lambda x: R.batch_norm_forward(x, None, None, None, None, True, 0.1, 1e-5)[0],
            lambda x, dy: R.batch_norm_backward(x, None, dy, *R.batch_norm_forward(x, None, None, None, None, True, 0.1, 1e-5)[1:], True)[:1],
            (x,),
            rng=rng,
        )


@SETTINGS
@given(shape=shapes, affine=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_batch_norm_eval_gradcheck(shape, affine, seed):
    """Eval mode: running statistics are constants, so dx = dy * gamma * rstd."""
    rng, x, gamma, beta, rm, rv = bn_inputs(shape, seed)

    def forward(x, g, b):
        return R.batch_norm_forward(x, g, b, rm.copy(), rv.copy(), False, 0.1, 1e-5)[0]

    def backward(x, g, b, dy):
        _, mean, rstd = R.batch_norm_forward(x, g, b, rm.copy(), rv.copy(), False, 0.1, 1e-5)
        return R.batch_norm_backward(x, g, dy, mean, rstd, False)

    if affine:
        check_backward(forward, backward, (x, gamma, beta), rng=rng)
    else:
        check_backward(lambda x: forward(x, None, None), lambda x, dy: backward(x, None, None, dy)[:1], (x,), rng=rng)
        dy = rng.standard_normal(x.shape)
        dx, dg, db = backward(x, None, None, dy)
        assert dg is None and db is None
        np.testing.assert_allclose(dx, dy / np.sqrt(rv + 1e-5).reshape((1, -1) + (1,) * (x.ndim - 2)), rtol=1e-12)


def test_batch_norm_running_stats_update_explicit_numbers():
    """momentum 0.1, unbiased variance: one channel holding [1, 2, 3, 6] (mean 3, biased var 3.5,
    unbiased 14/3) moves running_mean 0 -> 0.3 and running_var 1 -> 0.9 + 0.1 * 14/3 (rtol 1e-12)."""
    x = np.array([[1.0, 10.0], [2.0, 10.0], [3.0, 10.0], [6.0, 14.0]])  # (N=4, C=2)
    running_mean, running_var = np.zeros(2), np.ones(2)
    y, mean, rstd = R.batch_norm_forward(x, None, None, running_mean, running_var, True, 0.1, 1e-5)
    np.testing.assert_allclose(mean, [3.0, 11.0], rtol=1e-12)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(np.array([3.5, 3.0]) + 1e-5), rtol=1e-12)
    np.testing.assert_allclose(running_mean, [0.3, 1.1], rtol=1e-12)
    np.testing.assert_allclose(running_var, [0.9 + 0.1 * 14 / 3, 0.9 + 0.1 * 4.0], rtol=1e-12)
    np.testing.assert_allclose(y[:, 0], (x[:, 0] - 3.0) / np.sqrt(3.5 + 1e-5), rtol=1e-12)
    # a second step compounds: running = 0.9 * running + 0.1 * stat
    R.batch_norm_forward(x, None, None, running_mean, running_var, True, 0.1, 1e-5)
    np.testing.assert_allclose(running_mean, [0.9 * 0.3 + 0.3, 0.9 * 1.1 + 1.1], rtol=1e-12)


def test_batch_norm_running_stats_4d_numbers():
    """(N,C,H,W): statistics over N, H, W per channel; running_var uses n/(n-1), n = N*H*W (rtol 1e-12)."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 2, 2, 3)) * 2 + 1
    rm, rv = np.array([0.5, -0.5]), np.array([2.0, 0.5])
    R.batch_norm_forward(x, None, None, rm, rv, True, 0.25, 1e-5)
    per_channel = x.transpose(1, 0, 2, 3).reshape(2, -1)
    np.testing.assert_allclose(rm, 0.75 * np.array([0.5, -0.5]) + 0.25 * per_channel.mean(1), rtol=1e-12)
    np.testing.assert_allclose(rv, 0.75 * np.array([2.0, 0.5]) + 0.25 * per_channel.var(1, ddof=1), rtol=1e-12)


def test_batch_norm_eval_uses_running_stats_and_updates_nothing():
    """Eval: y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta; stats unchanged (rtol 1e-12)."""
    rng, x, gamma, beta, rm, rv = bn_inputs((5, 3, 2, 2), 12)
    rm0, rv0 = rm.copy(), rv.copy()
    y, mean, rstd = R.batch_norm_forward(x, gamma, beta, rm, rv, False, 0.1, 1e-3)
    b = (1, 3, 1, 1)
    expected = (x - rm0.reshape(b)) / np.sqrt(rv0.reshape(b) + 1e-3) * gamma.reshape(b) + beta.reshape(b)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(rm, rm0)
    np.testing.assert_array_equal(rv, rv0)
    np.testing.assert_allclose(mean, rm0, rtol=0)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(rv0 + 1e-3), rtol=1e-12)
    assert not np.shares_memory(mean, rm) and not np.shares_memory(rstd, rv)


@pytest.mark.parametrize("shape", [(16, 4), (8, 3, 5, 5), (4, 2, 7)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_training_output_is_normalised(shape, dtype):
    """Without affine, training output has per-channel mean ~0 (atol 1e-5) and biased variance ~1
    (rtol 1e-3, eps 1e-5 shrinks it slightly); gamma/beta then scale and shift it."""
    rng, x, gamma, beta, _, _ = bn_inputs(shape, 13, dtype)
    axes = (0,) + tuple(range(2, len(shape)))
    y, _, _ = R.batch_norm_forward(x, None, None, None, None, True, 0.1, 1e-5)
    np.testing.assert_allclose(y.mean(axes), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axes), 1, rtol=1e-3)
    ya, _, _ = R.batch_norm_forward(x, gamma, beta, None, None, True, 0.1, 1e-5)
    b = (1, -1) + (1,) * (len(shape) - 2)
    np.testing.assert_allclose(ya, y * gamma.reshape(b) + beta.reshape(b), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_dtypes(dtype, training):
    """float32 in -> float32 everywhere (y, mean, rstd, dx, dgamma, dbeta); float64 likewise."""
    rng, x, gamma, beta, rm, rv = bn_inputs((4, 3, 2, 2), 14, dtype)
    y, mean, rstd = R.batch_norm_forward(x, gamma, beta, rm, rv, training, 0.1, 1e-5)
    grads = R.batch_norm_backward(x, gamma, rng.standard_normal(x.shape).astype(dtype), mean, rstd, training)
    for out in (y, mean, rstd, *grads):
        assert out.dtype == dtype
        assert out.flags.c_contiguous
    assert rm.dtype == dtype and rv.dtype == dtype
    assert mean.shape == rstd.shape == (3,)


def test_batch_norm_one_value_per_channel_in_training_is_an_error():
    """Like PyTorch: training statistics need more than one value per channel."""
    with pytest.raises(ValueError, match="more than 1 value"):
        R.batch_norm_forward(np.ones((1, 3)), None, None, None, None, True, 0.1, 1e-5)


def test_nan_propagates_through_batch_norm():
    """A NaN in a channel makes that channel's outputs NaN (its statistics are NaN) and leaves the
    other channels finite; in eval only the NaN element is NaN."""
    rng, x, gamma, beta, rm, rv = bn_inputs((4, 2, 3, 3), 15)
    x[1, 0, 2, 2] = np.nan
    y, mean, rstd = R.batch_norm_forward(x, gamma, beta, None, None, True, 0.1, 1e-5)
    assert np.isnan(y[:, 0]).all() and np.isfinite(y[:, 1]).all()
    assert np.isnan(mean[0])
    ye, _, _ = R.batch_norm_forward(x, gamma, beta, rm, rv, False, 0.1, 1e-5)
    assert np.isnan(ye).sum() == 1


def test_batch_norm_against_torch():
    """Training and eval forward, running stats and backward match torch's batch_norm in float64
    at a DCGAN shape (64, 128, 8, 8) (rtol 1e-9, atol 1e-9)."""
    torch = pytest.importorskip("torch")
    rng, x, gamma, beta, rm, rv = bn_inputs((64, 128, 8, 8), 16)
    for training in (True, False):
        trm, trv = torch.tensor(rm), torch.tensor(rv)
        tx, tg, tb = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
        ty = torch.nn.functional.batch_norm(tx, trm, trv, tg, tb, training, 0.1, 1e-5)
        y, mean, rstd = R.batch_norm_forward(x, gamma, beta, rm, rv, training, 0.1, 1e-5)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(rm, trm.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(rv, trv.numpy(), rtol=1e-9, atol=1e-12)
        dy = rng.standard_normal(x.shape)
        ty.backward(torch.tensor(dy))
        for ours, theirs in zip(R.batch_norm_backward(x, gamma, dy, mean, rstd, training), (tx.grad, tg.grad, tb.grad)):
            np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-9, atol=1e-9)
