"""Autograd: every Tensor operation's backward against finite differences, accumulation, no_grad."""

import numpy as np
import pytest

import pygan
from pygan.autograd import Tensor
from pygan.gradcheck import check_backward


def autograd_pair(fn):
    """(forward, backward) over raw arrays for check_backward, running `fn` through autograd."""

    def forward(*xs):
        with pygan.no_grad():
            return fn(*[Tensor(x) for x in xs]).data

    def backward(*args):
        *xs, dy = args
        ts = [Tensor(x.copy(), requires_grad=True) for x in xs]
        fn(*ts).backward(dy)
        return tuple(t.grad.data for t in ts)

    return forward, backward


def gradcheck(fn, *arrays, rng):
    forward, backward = autograd_pair(fn)
    check_backward(forward, backward, arrays, rng=rng)


@pytest.mark.parametrize(
    "fn, shapes",
    [
        (lambda a, b: a + b, [(3, 4), (4,)]),
        (lambda a, b: a - b, [(2, 1, 3), (4, 1)]),
        (lambda a, b: a * b, [(3, 4), (3, 1)]),
        (lambda a, b: a / b, [(5,), (1,)]),
        (lambda a, b: a @ b, [(3, 4), (4, 2)]),
        (lambda a: -a * 2.0 + 1.5, [(3,)]),
        (lambda a: 3.0 / a - a / 4.0, [(2, 3)]),
        (lambda a: (a**3).sum(axis=1), [(3, 4)]),
        (lambda a: a.sum(dim=(0, 2), keepdim=True), [(2, 3, 4)]),
        (lambda a: a.mean(), [(2, 3, 4)]),
        (lambda a: a.mean(axis=-1, keepdims=True), [(2, 3)]),
        (lambda a: a.reshape(6, 2) * 2.0, [(3, 4)]),
        (lambda a: a.view(-1), [(3, 4)]),
        (lambda a: a[1:, ::2] * 3.0, [(4, 5)]),
        (lambda a: a[:, 0], [(4, 5)]),
        (lambda a: a.exp(), [(4,)]),
        (lambda a: (a * a + 1.0).log(), [(4,)]),
        (lambda a, b: pygan.cat([a, b], dim=1), [(2, 3), (2, 2)]),
        (lambda a: a * a + a, [(5,)]),  # a used twice in one graph
    ],
)
def test_backward_matches_finite_differences(fn, shapes, rng):
    arrays = [rng.uniform(0.5, 2.0, size=s) for s in shapes]  # positive: safe for / and log
    gradcheck(fn, *arrays, rng=rng)


def test_gradients_accumulate_when_a_tensor_is_used_twice(rng):
    x = pygan.tensor(rng.standard_normal(5), requires_grad=True)
    (x * x + x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy() + 1, rtol=1e-6)


def test_gradients_accumulate_across_backward_calls(rng):
    """Like a discriminator step: two losses, two backward() calls, one .grad."""
    w = pygan.tensor(rng.standard_normal(3), requires_grad=True)
    (w * 2.0).sum().backward()
    (w * 3.0).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), np.full(3, 5.0))


def test_no_grad_builds_no_graph(rng):
    x = pygan.tensor(rng.standard_normal(3), requires_grad=True)
    with pygan.no_grad():
        y = x * 2.0
    assert not y.requires_grad and y.grad_fn is None
    assert pygan.is_grad_enabled()


def test_detach_cuts_the_graph(rng):
    x = pygan.tensor(rng.standard_normal(3), requires_grad=True)
    y = (x * 2.0).detach() * x
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy(), rtol=1e-6)


def test_backward_twice_needs_retain_graph(rng):
    x = pygan.tensor(rng.standard_normal(3), requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 4 * x.numpy(), rtol=1e-6)
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_float32_stays_float32(rng):
    x = pygan.tensor(rng.standard_normal(4).astype(np.float32), requires_grad=True)
    y = (x * 0.5 + 1.0) / 3.0
    y.sum().backward()
    assert y.dtype == np.float32 and x.grad.dtype == np.float32


def test_constructors_follow_pytorch():
    assert pygan.tensor([1.0, 2.0]).dtype == np.float32
    assert pygan.tensor([1, 2]).dtype == np.int64
    assert pygan.tensor(np.zeros(2)).dtype == np.float64
    assert pygan.zeros(2, 3).shape == (2, 3) and pygan.zeros(2, 3).numpy().sum() == 0
    assert pygan.ones((2, 3)).numpy().sum() == 6
    assert pygan.randn(4, 5).dtype == np.float32
    t = pygan.tensor([3.0], requires_grad=True)
    assert t.requires_grad and t.is_leaf and t.device == "cpu" and t.item() == 3.0


def test_manual_seed_makes_randn_reproducible():
    pygan.manual_seed(123)
    a = pygan.randn(3, 4).numpy()
    state = pygan.get_rng_state()
    b = pygan.randn(3, 4).numpy()
    pygan.manual_seed(123)
    np.testing.assert_array_equal(a, pygan.randn(3, 4).numpy())
    pygan.set_rng_state(state)
    np.testing.assert_array_equal(b, pygan.randn(3, 4).numpy())
    assert not np.array_equal(a, b)


def test_backward_without_gradient_needs_a_scalar(rng):
    x = pygan.tensor(rng.standard_normal(3), requires_grad=True)
    with pytest.raises(ValueError, match="scalar"):
        (x * 2.0).backward()


def test_backward_with_gradient_of_wrong_shape(rng):
    x = pygan.tensor(rng.standard_normal(3), requires_grad=True)
    with pytest.raises(ValueError, match=r"gradient has shape \(4,\), expected \(3,\)"):
        (x * 2.0).backward(np.ones(4))


def test_cuda_request_without_gpu_is_a_clear_error():
    if pygan.cuda_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="(?i)cuda|cupy|gpu"):
        pygan.zeros(2, device="cuda")
    with pytest.raises(ValueError, match="device must be"):
        pygan.zeros(2, device="tpu")


def test_nan_propagates(rng):
    x = pygan.tensor(np.array([1.0, np.nan, 2.0]), requires_grad=True)
    y = (x * 2.0).sum()
    assert np.isnan(y.item())
    y.backward()
    assert np.isfinite(x.grad.numpy()).all()  # d(sum 2x)/dx is 2 everywhere, NaN or not
