"""Second-order autograd (create_graph=True) for every differentiable op, in float64.

Each check is gradcheck.check_double_backward (Chainer's check_double_backward): the first gradient
G(x, gy) = d<gy, f(x)>/dx is computed with create_graph=True (and must equal the first-order
path's), then its gradient for a random cotangent is taken through that graph and compared with
central differences of G along a random direction (eps 1e-6; |analytic - numeric| <= 1e-6 +
1e-4 |numeric|). Shapes, strides, paddings and seeds are drawn by hypothesis. A linear op's first
gradient is linear in (x, gy) jointly only through its weight, so each layer is also checked
inside a nonlinearity (squared or tanh), which exercises the gradient Functions' own backward.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pygan
from pygan.autograd import Function, Tensor, grad
from pygan.gradcheck import check_backward, check_double_backward
from pygan.nn import functional as F

FAST = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

seeds = st.integers(0, 2**32 - 1)


def away_from_zero(rng, shape, margin=0.1):
    """Normal samples pushed at least `margin` from 0 (kinks of leaky ReLU stay out of the
    finite-difference steps)."""
    x = rng.standard_normal(shape)
    return np.sign(x) * (np.abs(x) + margin)


def check(fn, arrays, seed):
    check_double_backward(fn, arrays, rng=np.random.default_rng(seed))


# -- Tensor arithmetic, reductions and shape ops ----------------------------------------------------

TENSOR_OPS = {
    "add-broadcast": (lambda a, b: (a + b) * (a - b), [(3, 4), (4,)]),
    "sub-broadcast": (lambda a, b: (a - b) ** 2, [(2, 1, 3), (4, 1)]),
    "mul": (lambda a, b: a * b * a, [(3, 4), (3, 1)]),
    "div": (lambda a, b: a / b, [(5,), (1,)]),
    "rdiv-neg": (lambda a: -(3.0 / a) + a / 4.0, [(2, 3)]),
    "pow": (lambda a: a**3 + a**-2 + a**0.5, [(3, 4)]),
    "exp": (lambda a: (a * 0.5).exp(), [(4,)]),
    "log": (lambda a: (a * a + 1.0).log(), [(4,)]),
    "abs": (lambda a: abs(a) * a, [(5,)]),
    "matmul": (lambda a, b: (a @ b) ** 2, [(3, 4), (4, 2)]),
    "transpose": (lambda a: a.T * a.permute(1, 0) + a.transpose(0, 1) ** 2, [(3, 4)]),
    "sum": (lambda a: (a**2).sum(dim=(0, 2), keepdim=True) * a.sum(axis=1, keepdims=True), [(2, 3, 4)]),
    "sum-all": (lambda a: a.sum() * a, [(2, 3)]),
    "mean": (lambda a: a.mean() ** 2 + a.mean(axis=-1) ** 3, [(2, 3)]),
    "reshape": (lambda a: a.reshape(6, 2) ** 2 @ a.view(2, 6), [(3, 4)]),
    "getitem": (lambda a: a[1:, ::2] ** 2 + a[np.array([0, 0, 1])][:, :3], [(4, 5)]),
    "cat": (lambda a, b: pygan.cat([a, b * a[:, :2]], dim=1) ** 2, [(2, 3), (2, 2)]),
    "cat-negative-dim": (lambda a, b: pygan.cat([a * a, b], dim=-1), [(2, 3), (2, 2)]),
}


@pytest.mark.parametrize("name", sorted(TENSOR_OPS))
@FAST
@given(seed=seeds)
def test_tensor_op(name, seed):
    fn, shapes = TENSOR_OPS[name]
    rng = np.random.default_rng(seed)
    # magnitudes in [0.5, 2] (away from abs's kink and from 0 for /); positive for log and powers
    arrays = [rng.uniform(0.5, 2.0, size=s) for s in shapes]
    if name not in ("log", "pow", "div", "rdiv-neg"):
        arrays = [a * rng.choice([-1.0, 1.0], size=a.shape) for a in arrays]
    check(fn, arrays, seed)


# -- convolutions -----------------------------------------------------------------------------------


@st.composite
def conv_cases(draw, transpose=False, max_size=7):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1))
    n, cin, cout = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    if transpose:
        h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        oph, opw = draw(st.integers(0, sh - 1)), draw(st.integers(0, sw - 1))
        if (h - 1) * sh - 2 * ph + kh + oph <= 0 or (w - 1) * sw - 2 * pw + kw + opw <= 0:
            ph = pw = 0
        return dict(n=n, cin=cin, cout=cout, h=h, w=w, k=(kh, kw), stride=(sh, sw), padding=(ph, pw),
                    output_padding=(oph, opw), bias=draw(st.booleans()))
    h = draw(st.integers(max(kh - 2 * ph, 1), max_size))
    w = draw(st.integers(max(kw - 2 * pw, 1), max_size))
    return dict(n=n, cin=cin, cout=cout, h=h, w=w, k=(kh, kw), stride=(sh, sw), padding=(ph, pw), bias=draw(st.booleans()))


def _conv_arrays(c, rng, transpose):
    x = rng.standard_normal((c["n"], c["cin"], c["h"], c["w"]))
    wshape = (c["cin"], c["cout"]) + c["k"] if transpose else (c["cout"], c["cin"]) + c["k"]
    arrays = [x, rng.standard_normal(wshape) * 0.5]
    if c["bias"]:
        arrays.append(rng.standard_normal(c["cout"]))
    return arrays


@FAST
@given(c=conv_cases(), seed=seeds, squash=st.booleans())
def test_conv2d(c, seed, squash):
    def fn(x, w, b=None):
        y = F.conv2d(x, w, b, c["stride"], c["padding"])
        return F.tanh(y) if squash else y

    check(fn, _conv_arrays(c, np.random.default_rng(seed), False), seed)


@FAST
@given(c=conv_cases(transpose=True), seed=seeds, squash=st.booleans())
def test_conv_transpose2d(c, seed, squash):
    def fn(x, w, b=None):
        y = F.conv_transpose2d(x, w, b, c["stride"], c["padding"], c["output_padding"])
        return y * y if squash else y

    check(fn, _conv_arrays(c, np.random.default_rng(seed), True), seed)


@pytest.mark.slow
@SLOW
@given(c=conv_cases(max_size=9), t=conv_cases(transpose=True), seed=seeds)
def test_conv_many_shapes(c, t, seed):
    check(lambda x, w, b=None: F.tanh(F.conv2d(x, w, b, c["stride"], c["padding"])),
          _conv_arrays(c, np.random.default_rng(seed), False), seed)
    check(lambda x, w, b=None: F.tanh(F.conv_transpose2d(x, w, b, t["stride"], t["padding"], t["output_padding"])),
          _conv_arrays(t, np.random.default_rng(seed + 1), True), seed)


def test_conv2d_weight_grad_is_differentiable_three_times(rng):
    """Third order: Conv2dWeightGrad's backward_graph is itself convolutions."""
    x = Tensor(rng.standard_normal((2, 2, 5, 5)), requires_grad=True)
    w = Tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)

    def second(x, w):
        y = F.tanh(F.conv2d(x, w, None, 2, 1))
        gx, gw = grad((y * y).sum(), [x, w], create_graph=True)  # gw: a Conv2dWeightGrad node
        return (gx * gx).sum() + (gw * gw).sum()

    check_double_backward(lambda x, w: second(x, w), [x.data, w.data], rng=rng)


# -- linear, pooling ---------------------------------------------------------------------------------


@FAST
@given(n=st.integers(1, 4), i=st.integers(1, 5), o=st.integers(1, 4), bias=st.booleans(), squash=st.booleans(), seed=seeds)
def test_linear(n, i, o, bias, squash, seed):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal((n, i)), rng.standard_normal((o, i))] + ([rng.standard_normal(o)] if bias else [])

    def fn(x, w, b=None):
        y = F.linear(x, w, b)
        return F.sigmoid(y) if squash else y

    check(fn, arrays, seed)


@FAST
@given(kh=st.integers(1, 3), kw=st.integers(1, 3), sh=st.integers(1, 3), sw=st.integers(1, 3),
       extra_h=st.integers(0, 3), extra_w=st.integers(0, 3), squash=st.booleans(), seed=seeds)
def test_avg_pool2d(kh, kw, sh, sw, extra_h, extra_w, squash, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 2, kh + extra_h, kw + extra_w))

    def fn(x):
        y = F.avg_pool2d(x, (kh, kw), (sh, sw))
        return y * y if squash else y

    check(fn, [x], seed)


def test_global_avg_pool2d(rng):
    check_double_backward(lambda x: F.global_avg_pool2d(x) ** 2, [rng.standard_normal((2, 3, 4, 3))], rng=rng)


# -- pointwise -----------------------------------------------------------------------------------------


@FAST
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), slope=st.sampled_from([0.0, 0.01, 0.2, 1.5]), seed=seeds)
def test_leaky_relu(shape, slope, seed):
    rng = np.random.default_rng(seed)
    # the gradient is the slope mask times gy: linear in gy, so also check it inside a square
    check(lambda x: F.leaky_relu(x, slope) ** 2 * x, [away_from_zero(rng, shape)], seed)
    check(lambda x: F.leaky_relu(x, slope), [away_from_zero(rng, shape)], seed)


def test_relu(rng):
    check_double_backward(lambda x: F.relu(x) * x, [away_from_zero(rng, (3, 4))], rng=rng)


@FAST
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), seed=seeds)
def test_tanh_and_sigmoid(shape, seed):
    rng = np.random.default_rng(seed)
    check(F.tanh, [rng.standard_normal(shape)], seed)
    check(F.sigmoid, [rng.standard_normal(shape) * 2], seed)


# -- losses --------------------------------------------------------------------------------------------


@FAST
@given(n=st.integers(1, 6), reduction=st.sampled_from(["mean", "sum"]), seed=seeds)
def test_binary_cross_entropy_with_logits(n, reduction, seed):
    """Both the logits and a soft target that requires grad (d loss / d t = -x / N)."""
    rng = np.random.default_rng(seed)
    x, t = rng.standard_normal(n) * 2, rng.uniform(0, 1, n)
    check(lambda x, t: F.binary_cross_entropy_with_logits(x, t, reduction=reduction), [x, t], seed)


def test_bce_target_gradient_first_order_matches_finite_differences(rng):
    x, t = rng.standard_normal(7) * 2, rng.uniform(0, 1, 7)

    def forward(x, t):
        with pygan.no_grad():
            return F.binary_cross_entropy_with_logits(Tensor(x), Tensor(t)).data

    def backward(x, t, dy):
        tx, tt = Tensor(x, requires_grad=True), Tensor(t, requires_grad=True)
        F.binary_cross_entropy_with_logits(tx, tt).backward(dy)
        return tx.grad.data, tt.grad.data

    check_backward(forward, backward, [x, t], rng=rng)
    tx, tt = Tensor(x, requires_grad=True), Tensor(t, requires_grad=True)
    F.binary_cross_entropy_with_logits(tx, tt).backward()
    np.testing.assert_allclose(tt.grad.data, -x / 7, rtol=1e-12)
    # a target that does not require grad gets none, as before
    tt2 = Tensor(t)
    F.binary_cross_entropy_with_logits(Tensor(x, requires_grad=True), tt2).backward()
    assert tt2.grad is None


@FAST
@given(n=st.integers(1, 5), k=st.integers(2, 5), seed=seeds)
def test_cross_entropy(n, k, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    check(lambda x: F.cross_entropy(x, labels), [rng.standard_normal((n, k)) * 2], seed)


# -- batch norm ----------------------------------------------------------------------------------------


@FAST
@given(n=st.integers(2, 4), c=st.integers(1, 3), spatial=st.sampled_from([(), (3,), (2, 3)]),
       affine=st.booleans(), training=st.booleans(), seed=seeds)
def test_batch_norm(n, c, spatial, affine, training, seed):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal((n, c) + spatial) * 2 + 1]
    if affine:
        arrays += [rng.uniform(0.5, 1.5, c), rng.standard_normal(c)]
    rm, rv = Tensor(rng.standard_normal(c) * 0.3), Tensor(rng.uniform(0.5, 2.0, c))

    def fn(x, gamma=None, beta=None):
        # running statistics only in evaluation mode, so the training check does not change them
        return F.batch_norm(x, None if training else rm, None if training else rv, gamma, beta, training=training, eps=1e-3)

    check(fn, arrays, seed)
    check(lambda *a: fn(*a) ** 2, arrays, seed)


# -- group norm (layer norm G = 1, instance norm G = C): the WGAN-GP critic's normalisation ----------


@FAST
@given(n=st.integers(1, 3), groups=st.integers(1, 3), per_group=st.integers(1, 2),
       spatial=st.sampled_from([(2,), (2, 3), (3, 1)]), affine=st.booleans(), seed=seeds)
def test_group_norm(n, groups, per_group, spatial, affine, seed):
    rng = np.random.default_rng(seed)
    c = groups * per_group
    arrays = [rng.standard_normal((n, c) + spatial) * 2 + 1]
    if affine:
        arrays += [rng.uniform(0.5, 1.5, c), rng.standard_normal(c)]

    def fn(x, gamma=None, beta=None):
        return F.group_norm(x, groups, gamma, beta, eps=1e-3)

    check(fn, arrays, seed)
    check(lambda *a: fn(*a) ** 2, arrays, seed)


# -- the engine ------------------------------------------------------------------------------------------


def test_grad_returns_gradients_and_leaves_dot_grad_alone(rng):
    x = Tensor(rng.standard_normal(4), requires_grad=True)
    w = Tensor(rng.standard_normal(4), requires_grad=True)
    y = (x * x * w).sum()
    gx, gw = grad(y, [x, w], retain_graph=True)
    np.testing.assert_allclose(gx.data, 2 * x.data * w.data)
    np.testing.assert_allclose(gw.data, x.data**2)
    assert x.grad is None and w.grad is None and not gx.requires_grad
    (gx2,) = pygan.grad(y, x)  # retained: a second pass works
    np.testing.assert_allclose(gx2.data, gx.data)


def test_create_graph_gradient_is_differentiable(rng):
    x = Tensor(rng.standard_normal(5), requires_grad=True)
    (g,) = grad((x**3).sum(), x, create_graph=True)
    assert g.requires_grad and g.grad_fn is not None
    np.testing.assert_allclose(g.data, 3 * x.data**2)
    (h,) = grad(g.sum(), x)
    np.testing.assert_allclose(h.data, 6 * x.data)


def test_backward_create_graph_fills_grad_with_a_graph(rng):
    x = Tensor(rng.standard_normal(3), requires_grad=True)
    (x.exp() * x).sum().backward(create_graph=True)
    g = x.grad
    assert g.requires_grad
    x.grad = None
    g.sum().backward()
    np.testing.assert_allclose(x.grad.data, np.exp(x.data) * (x.data + 2))


def test_grad_with_respect_to_an_intermediate_and_several_outputs(rng):
    x = Tensor(rng.standard_normal(3), requires_grad=True)
    h = x * 2.0
    y1, y2 = (h * h).sum(), h.sum()
    gh, gx = grad([y1, y2], [h, x], grad_outputs=[None, Tensor(np.array(3.0))])
    np.testing.assert_allclose(gh.data, 2 * h.data + 3)
    np.testing.assert_allclose(gx.data, 2 * (2 * h.data + 3))


def test_grad_outputs_that_require_grad_are_differentiated(rng):
    x = Tensor(rng.standard_normal(3), requires_grad=True)
    v = Tensor(rng.standard_normal(3), requires_grad=True)
    (g,) = grad(x * x, x, grad_outputs=v, create_graph=True)  # g = 2 x v
    gx, gv = grad(g.sum(), [x, v])
    np.testing.assert_allclose(gx.data, 2 * v.data)
    np.testing.assert_allclose(gv.data, 2 * x.data)


def test_gradient_penalty_step_reaches_the_parameters(rng):
    """The WGAN-GP pattern: the penalty's backward reaches D's weights through the gradient graph."""
    w = Tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)
    x = Tensor(rng.standard_normal((2, 2, 5, 5)), requires_grad=True)
    (g,) = grad(F.leaky_relu(F.conv2d(x, w, None, 1, 1), 0.2).sum(), x, create_graph=True)
    ((g * g).sum()).backward()
    assert w.grad is not None and np.abs(w.grad.data).sum() > 0
    assert x.grad is None  # slope-mask gradient of a linear-in-x function: x gets none through g


def test_errors_are_clear(rng):
    x = Tensor(rng.standard_normal(3), requires_grad=True)
    y = x * 2.0
    with pytest.raises(ValueError, match="scalar output"):
        grad(y, x)
    with pytest.raises(RuntimeError, match=r"inputs\[1\].*does not require grad"):
        grad(y.sum(), [x, Tensor(np.ones(3))])
    z = Tensor(rng.standard_normal(3), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"inputs\[1\].*not reached.*allow_unused"):
        grad(y.sum(), [x, z], retain_graph=True)
    gx, gz = grad(y.sum(), [x, z], allow_unused=True)
    assert gz is None and gx is not None
    with pytest.raises(RuntimeError, match="second time"):
        grad(y.sum(), x)
    with pytest.raises(RuntimeError, match=r"outputs\[0\] does not require grad"):
        grad(Tensor(np.ones(())), x)
    with pytest.raises(ValueError, match=r"gradient has shape \(2,\)"):
        grad(x * 2.0, x, grad_outputs=np.ones(2))


def test_second_backward_through_a_freed_graph(rng):
    x = Tensor(rng.standard_normal(3), requires_grad=True)
    (g,) = grad((x * x * x).sum(), x, create_graph=True, retain_graph=False)
    with pytest.raises(RuntimeError, match="second time"):
        g.sum().backward()  # g's graph goes through the freed forward graph (x*x)


def test_double_backward_not_implemented_names_the_op(rng):
    class Cube(Function):
        def forward(self, a):
            self.saved = a
            return a**3

        def backward(self, g):
            return 3 * g * self.saved**2

    x = Tensor(rng.standard_normal(3), requires_grad=True)
    y = Cube()(x).sum()
    (g,) = grad(y, x, retain_graph=True)  # first order is fine
    np.testing.assert_allclose(g.data, 3 * x.data**2)
    with pytest.raises(NotImplementedError, match="double backward of Cube"):
        grad(y, x, create_graph=True)


def test_first_order_path_builds_no_graph(rng):
    x = Tensor(rng.standard_normal((2, 2, 4, 4)), requires_grad=True)
    w = Tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)
    F.conv2d(x, w).sum().backward()
    assert not x.grad.requires_grad and x.grad.grad_fn is None and w.grad.grad_fn is None


def test_grad_prunes_to_what_the_inputs_need(rng):
    """grad(D(x), x) runs no weight-gradient Function: only paths to the inputs are walked."""
    from pygan.nn.functional import Conv2dWeightGrad

    calls = []
    original = Conv2dWeightGrad.forward

    def spy(self, *a):
        calls.append(1)
        return original(self, *a)

    x = Tensor(rng.standard_normal((2, 2, 5, 5)), requires_grad=True)
    w = Tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)
    Conv2dWeightGrad.forward = spy
    try:
        (g,) = grad(F.tanh(F.conv2d(x, w, None, 1, 1)).sum(), x, create_graph=True)
        assert not calls
        (g * g).sum().backward()
    finally:
        Conv2dWeightGrad.forward = original
    assert w.grad is not None
