"""Linear, average pooling and softmax cross-entropy in pygan.ops.reference (the eval classifier's ops).

Gradients: check_backward in float64 (eps 1e-6, atol 1e-6, rtol 1e-4). Values against plain loops,
exactly or to float64 rounding (rtol 1e-12).
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pygan import ops
from pygan.gradcheck import check_backward
from pygan.ops import reference as R

SETTINGS = settings(max_examples=20, deadline=None)
seeds = st.integers(0, 2**32 - 1)


# -- linear ---------------------------------------------------------------------------------------


def test_linear_forward_is_a_sum_over_input_features():
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((3, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5)
    expected = np.array([[sum(x[n, i] * w[o, i] for i in range(4)) + b[o] for o in range(5)] for n in range(3)])
    np.testing.assert_allclose(R.linear_forward(x, w, b), expected, rtol=1e-12)
    np.testing.assert_allclose(R.linear_forward(x, w, None), expected - b, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(n=st.integers(1, 5), fin=st.integers(1, 6), fout=st.integers(1, 6), bias=st.booleans(), seed=seeds)
def test_linear_gradcheck(n, fin, fout, bias, seed):
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((n, fin)), rng.standard_normal((fout, fin))
    b = rng.standard_normal(fout) if bias else None
    check_backward(
        lambda x, w, b: R.linear_forward(x, w, b),
        lambda x, w, b, dy: R.linear_backward(x, w, dy, b is not None),
        (x, w, b),
        rng=rng,
    )


def test_linear_rejects_mismatched_features():
    x, w = np.zeros((2, 3), np.float32), np.zeros((4, 5), np.float32)
    with pytest.raises(ValueError, match="input has 3 features but weight expects 5"):
        ops.linear_forward(x, w, None)
    with pytest.raises(ValueError, match="bias must have shape"):
        ops.linear_forward(x, np.zeros((4, 3), np.float32), np.zeros(3, np.float32))


# -- average pooling ------------------------------------------------------------------------------


def _avg_pool_loops(x, k, s):
    n, c, h, w = x.shape
    oh, ow = (h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            y[:, :, i, j] = x[:, :, i * s[0] : i * s[0] + k[0], j * s[1] : j * s[1] + k[1]].mean(axis=(2, 3))
    return y


@pytest.mark.parametrize(
    "shape,k,s",
    [((2, 3, 8, 8), (2, 2), (2, 2)), ((1, 2, 7, 5), (3, 2), (2, 1)), ((2, 1, 6, 6), (3, 3), (1, 1)),
     ((3, 4, 5, 7), (5, 7), (1, 1)), ((1, 1, 9, 9), (2, 2), (3, 3))],
)
def test_avg_pool_forward_is_the_window_mean(shape, k, s):
    """Overlapping (stride < kernel), gapped (stride > kernel), non-square and global windows."""
    x = np.random.default_rng(2).standard_normal(shape)
    np.testing.assert_allclose(R.avg_pool2d_forward(x, k, s), _avg_pool_loops(x, k, s), rtol=1e-12, atol=1e-15)


@SETTINGS
@given(h=st.integers(1, 7), w=st.integers(1, 7), kh=st.integers(1, 3), kw=st.integers(1, 3),
       sh=st.integers(1, 3), sw=st.integers(1, 3), seed=seeds)
def test_avg_pool_gradcheck(h, w, kh, kw, sh, sw, seed):
    kh, kw = min(kh, h), min(kw, w)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, h, w))
    check_backward(
        lambda x: R.avg_pool2d_forward(x, (kh, kw), (sh, sw)),
        lambda x, dy: (R.avg_pool2d_backward(dy, x.shape, (kh, kw), (sh, sw)),),
        (x,),
        rng=rng,
    )


def test_avg_pool_backward_leaves_uncovered_pixels_at_zero():
    """A 2x2 window with stride 3 over 5x5 never covers row/column 2: their gradient is 0."""
    dx = R.avg_pool2d_backward(np.ones((1, 1, 2, 2)), (1, 1, 5, 5), 2, 3)
    assert (dx[0, 0, 2, :] == 0).all() and (dx[0, 0, :, 2] == 0).all()
    assert dx.sum() == pytest.approx(4.0)


def test_avg_pool_rejects_a_kernel_larger_than_the_input():
    with pytest.raises(ValueError, match="kernel_size .* is larger than the input 3x3"):
        ops.avg_pool2d_forward(np.zeros((1, 1, 3, 3), np.float32), 4, 1)
    with pytest.raises(ValueError, match="4-D"):
        ops.avg_pool2d_forward(np.zeros((3, 3), np.float32), 2, 2)


# -- softmax cross-entropy ------------------------------------------------------------------------


def test_softmax_cross_entropy_definition():
    rng = np.random.default_rng(3)
    x, labels = rng.standard_normal((4, 6)), np.array([0, 5, 2, 2])
    expected = np.mean([-math.log(math.exp(x[n, labels[n]]) / sum(math.exp(v) for v in x[n])) for n in range(4)])
    assert float(R.softmax_cross_entropy_forward(x, labels)) == pytest.approx(expected, rel=1e-12)


@SETTINGS
@given(n=st.integers(1, 6), k=st.integers(1, 7), seed=seeds)
def test_softmax_cross_entropy_gradcheck(n, k, seed):
    rng = np.random.default_rng(seed)
    x, labels = rng.standard_normal((n, k)) * 3, rng.integers(0, k, n)
    dloss = rng.standard_normal()
    check_backward(
        lambda x: R.softmax_cross_entropy_forward(x, labels),
        lambda x, dy: (R.softmax_cross_entropy_backward(x, labels, dy),),
        (x,),
        rng=rng,
        dy=np.array(dloss),
    )


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    """A shifted log-sum-exp: logits of 1e4 neither overflow nor lose the answer."""
    x = np.array([[1e4, 0.0, -1e4], [1e4, 1e4, 0.0]], np.float32)
    loss = R.softmax_cross_entropy_forward(x, np.array([1, 0]))
    assert np.isfinite(loss) and float(loss) == pytest.approx((1e4 + math.log(2)) / 2, rel=1e-6)
    g = R.softmax_cross_entropy_backward(x, np.array([1, 0]), np.float32(1.0))
    assert np.isfinite(g).all() and abs(g.sum()) < 1e-6


def test_softmax_cross_entropy_rejects_bad_labels():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\), got values from 0 to 3"):
        ops.softmax_cross_entropy_forward(x, np.array([0, 3]))
    with pytest.raises(TypeError, match="labels must be an integer array"):
        ops.softmax_cross_entropy_forward(x, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        ops.softmax_cross_entropy_forward(x, np.array([0, 1, 2]))


def test_torch_agrees_on_all_three_ops():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x, w, b = rng.standard_normal((5, 8)), rng.standard_normal((3, 8)), rng.standard_normal(3)
    labels = np.array([0, 2, 1, 1, 0])
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    logits = torch.nn.functional.linear(tx, tw, tb)
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(labels))
    loss.backward()
    y = R.linear_forward(x, w, b)
    np.testing.assert_allclose(y, logits.detach().numpy(), rtol=1e-12)
    assert float(R.softmax_cross_entropy_forward(y, labels)) == pytest.approx(loss.item(), rel=1e-12)
    dy = R.softmax_cross_entropy_backward(y, labels, 1.0)
    dx, dw, db = R.linear_backward(x, w, dy, True)
    for ours, theirs in ((dx, tx), (dw, tw), (db, tb)):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-10, atol=1e-14)
    img = rng.standard_normal((2, 3, 7, 6))
    expected = torch.nn.functional.avg_pool2d(torch.tensor(img), (3, 2), (2, 2)).numpy()
    np.testing.assert_allclose(R.avg_pool2d_forward(img, (3, 2), (2, 2)), expected, rtol=1e-12)
