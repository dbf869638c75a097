"""pygan.gradcheck.check_backward: passes correct gradients, catches wrong ones, leaves inputs alone."""

import numpy as np
import pytest

from pygan.gradcheck import check_backward


def test_accepts_a_correct_gradient_with_two_inputs_and_a_non_array_argument():
    """f(x, w, k) = k * x @ w: both gradients right; the int k is passed through untouched."""
    rng = np.random.default_rng(31)
    x, w = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    analytic, numeric = check_backward(
        lambda x, w, k: k * x @ w,
        lambda x, w, k, dy: (k * dy @ w.T, k * x.T @ dy, None),
        (x, w, 3),
        rng=rng,
    )
    assert analytic == pytest.approx(numeric, rel=1e-8)


def test_rejects_a_wrong_gradient_and_shows_both_numbers():
    rng = np.random.default_rng(32)
    x = rng.standard_normal(5)
    with pytest.raises(AssertionError, match=r"analytic .* vs numeric .*atol"):
        check_backward(np.sin, lambda x, dy: (dy * np.cos(x) * 1.01,), (x,), rng=rng)


def test_rejects_a_gradient_of_the_wrong_shape():
    rng = np.random.default_rng(33)
    with pytest.raises(AssertionError, match="shape"):
        check_backward(np.sin, lambda x, dy: ((dy * np.cos(x)).ravel(),), (np.ones((2, 2)) * 0.3,), rng=rng)


def test_rejects_a_wrong_gradient_for_one_of_several_inputs():
    """A single direction over all inputs still sees an error confined to one input."""
    rng = np.random.default_rng(34)
    x, y = rng.standard_normal(4), rng.standard_normal(4)
    with pytest.raises(AssertionError):
        check_backward(lambda x, y: x * y, lambda x, y, dy: (dy * y, dy * x * 0.5), (x, y), rng=rng)


def test_tuple_outputs_and_given_cotangents():
    """forward may return a tuple; dy may be given, with None leaving an output out."""
    rng = np.random.default_rng(35)
    x = rng.standard_normal(3)
    check_backward(
        lambda x: (x**2, np.exp(x)),
        lambda x, dys: (2 * x * dys[0] + (0 if dys[1] is None else np.exp(x) * dys[1]),),
        (x,),
        rng=rng,
    )
    check_backward(
        lambda x: (x**2, np.exp(x)),
        lambda x, dys: (2 * x * dys[0],),
        (x,),
        rng=rng,
        dy=(np.ones(3), None),
    )


def test_does_not_mutate_inputs_and_works_in_float64():
    """Float32 inputs are checked in float64 copies; forward mutating its arguments (as batch_norm
    does with running stats) affects neither the caller's arrays nor later evaluations."""
    rng = np.random.default_rng(36)
    x = rng.standard_normal(4).astype(np.float32)
    state = np.zeros(4, np.float32)
    x0, state0 = x.copy(), state.copy()
    seen = []

    def forward(x, s):
        seen.append((x.dtype, s.copy()))
        s += 1.0  # in-place side effect
        return x * 2.0 + s

    check_backward(forward, lambda x, s, dy: (2.0 * dy, None), (x, state), rng=rng)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(state, state0)
    assert all(dtype == np.float64 for dtype, _ in seen)
    assert all((s == 0).all() for _, s in seen)


def test_requires_at_least_one_gradient():
    rng = np.random.default_rng(37)
    with pytest.raises(ValueError):
        check_backward(np.sin, lambda x, dy: (None,), (np.ones(2),), rng=rng)
