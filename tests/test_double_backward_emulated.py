"""Second-order autograd through the CUDA kernels, run under host emulation (pygan._emu).

The registry is pointed at the emulated backend (as in test_emulated_models.py), so every registry
op of the forward pass, of the create_graph first gradient and of its backward runs the kernels in
csrc/ through pygan/ops/native.py. The kernels are float32, so instead of finite differences the
emulated results (first gradients and the second-order gradients in every input and in gy) are
compared with the same computation in float64 on the numpy reference, which test_double_backward.py
checks against finite differences. Tolerance: |emulated - reference| <= 1e-4 * max(|reference|, 1)
+ 1e-5 per array (float32 sums in other orders). Tiny sizes: every CUDA thread is a host thread.
"""

import numpy as np
import pytest

from pygan import ops
from pygan.autograd import Tensor, grad
from pygan.nn import functional as F
from pygan.ops import emulated

pytestmark = pytest.mark.skipif(not emulated.available(), reason="pygan._emu (host emulation) not built")


class Recording:
    """The emulated backend, noting which ops were called."""

    def __init__(self, inner):
        self.inner, self.used = inner, set()

    def __getattr__(self, name):
        self.used.add(name)
        return getattr(self.inner, name)


def second_order(fn, arrays, gy, ggxs, dtype):
    """[first gradients..., second-order gradients in each input..., in gy] as float64 arrays."""
    ts = [Tensor(a.astype(dtype), requires_grad=True) for a in arrays]
    tg = Tensor(gy.astype(dtype), requires_grad=True)
    firsts = grad(fn(*ts), ts, tg, create_graph=True)
    total = None
    for gx, ggx in zip(firsts, ggxs):
        term = (gx * Tensor(ggx.astype(dtype))).sum()
        total = term if total is None else total + term
    seconds = grad(total, ts + [tg], allow_unused=True)
    zeros = [np.zeros(a.shape) for a in arrays + [gy]]
    return [g.data.astype(np.float64) for g in firsts] + [
        z if s is None else s.data.astype(np.float64) for s, z in zip(seconds, zeros)
    ]


def check_against_reference(monkeypatch, fn, arrays, rng, expect_ops):
    arrays = [np.asarray(a, np.float32).astype(np.float64) for a in arrays]  # float32-representable
    out_shape = fn(*[Tensor(a) for a in arrays]).shape
    gy = rng.standard_normal(out_shape).astype(np.float32).astype(np.float64)
    ggxs = [rng.standard_normal(a.shape).astype(np.float32).astype(np.float64) for a in arrays]
    reference = second_order(fn, arrays, gy, ggxs, np.float64)
    backend = Recording(emulated.backend(poison=True))
    monkeypatch.setattr(ops, "backend_for", lambda array: backend)
    try:
        result = second_order(fn, arrays, gy, ggxs, np.float32)
    finally:
        monkeypatch.undo()
    missing = set(expect_ops) - backend.used
    assert not missing, f"these kernels were not run: {sorted(missing)} (ran {sorted(backend.used)})"
    for i, (a, b) in enumerate(zip(result, reference)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * max(np.abs(b).max(), 1.0) + 1e-5, err_msg=f"array {i}")


CONV_KERNELS = ["conv2d_forward", "conv_transpose2d_forward", "conv2d_backward_weight", "conv2d_backward_data",
                "conv_transpose2d_backward"]


@pytest.mark.parametrize(
    "shape, wshape, stride, padding, bias, squash",
    [
        ((2, 3, 7, 6), (4, 3, 3, 3), 2, 1, True, True),
        ((1, 2, 5, 6), (3, 2, 2, 3), (1, 2), (0, 1), False, False),
        ((2, 2, 8, 8), (3, 2, 4, 4), 2, 1, False, True),  # DCGAN's layer shape
    ],
)
def test_conv2d(monkeypatch, rng, shape, wshape, stride, padding, bias, squash):
    def fn(x, w, b=None):
        y = F.conv2d(x, w, b, stride, padding)
        return F.tanh(y) if squash else y

    arrays = [rng.standard_normal(shape), rng.standard_normal(wshape) * 0.5] + ([rng.standard_normal(wshape[0])] if bias else [])
    expect = CONV_KERNELS if squash else ["conv2d_forward", "conv_transpose2d_forward", "conv2d_backward_weight"]
    check_against_reference(monkeypatch, fn, arrays, rng, expect)


@pytest.mark.parametrize(
    "shape, wshape, stride, padding, output_padding, bias",
    [
        ((2, 3, 3, 4), (3, 2, 4, 4), 2, 1, 0, True),
        ((1, 2, 3, 3), (2, 3, 3, 2), (2, 3), (1, 0), (1, 2), False),
    ],
)
def test_conv_transpose2d(monkeypatch, rng, shape, wshape, stride, padding, output_padding, bias):
    def fn(x, w, b=None):
        y = F.conv_transpose2d(x, w, b, stride, padding, output_padding)
        return y * y

    arrays = [rng.standard_normal(shape), rng.standard_normal(wshape) * 0.5] + ([rng.standard_normal(wshape[1])] if bias else [])
    check_against_reference(monkeypatch, fn, arrays, rng, CONV_KERNELS)


@pytest.mark.parametrize("bias, squash", [(True, True), (False, False)])
def test_linear(monkeypatch, rng, bias, squash):
    def fn(x, w, b=None):
        y = F.linear(x, w, b)
        return F.sigmoid(y) if squash else y

    arrays = [rng.standard_normal((3, 5)), rng.standard_normal((4, 5))] + ([rng.standard_normal(4)] if bias else [])
    check_against_reference(monkeypatch, fn, arrays, rng, ["linear_forward", "linear_backward"])


@pytest.mark.parametrize("slope", [0.2, 0.0])
def test_leaky_relu(monkeypatch, rng, slope):
    x = rng.standard_normal((2, 3, 4, 5))
    x = np.sign(x) * (np.abs(x) + 0.1)
    check_against_reference(monkeypatch, lambda x: F.leaky_relu(x, slope) ** 2 * x, [x], rng,
                            ["leaky_relu_forward", "leaky_relu_backward"])


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm(monkeypatch, rng, training):
    c = 3
    rm, rv = rng.standard_normal(c) * 0.3, rng.uniform(0.5, 2.0, c)

    def fn(x, gamma, beta):
        # no running stats in training mode, so the reference and the emulated pass see the same state
        stats = (None, None) if training else (Tensor(rm.astype(x.dtype)), Tensor(rv.astype(x.dtype)))
        y = F.batch_norm(x, *stats, gamma, beta, training=training)
        return y * y

    arrays = [rng.standard_normal((4, c, 3, 3)) * 2 + 1, rng.uniform(0.5, 1.5, c), rng.standard_normal(c)]
    check_against_reference(monkeypatch, fn, arrays, rng, ["batch_norm_forward", "batch_norm_backward"])


def test_gradient_penalty_of_a_small_critic(monkeypatch, rng):
    """conv -> batch norm -> leaky ReLU -> conv -> linear: the penalty's gradients in every weight."""

    def critic(x, w1, gamma, beta, w2, wl):
        h = F.leaky_relu(F.batch_norm(F.conv2d(x, w1, None, 2, 1), None, None, gamma, beta, training=True), 0.2)
        h = F.leaky_relu(F.conv2d(h, w2, None, 2, 1), 0.2)
        return F.linear(h.reshape(h.shape[0], -1), wl)

    arrays = [rng.standard_normal((2, 1, 8, 8)), rng.standard_normal((3, 1, 4, 4)) * 0.5, rng.uniform(0.5, 1.5, 3),
              rng.standard_normal(3) * 0.1, rng.standard_normal((4, 3, 4, 4)) * 0.5, rng.standard_normal((1, 16)) * 0.5]
    check_against_reference(monkeypatch, critic, arrays, rng,
                            CONV_KERNELS + ["batch_norm_forward", "leaky_relu_backward", "linear_forward", "linear_backward"])
