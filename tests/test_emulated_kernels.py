"""The CUDA kernels, every variant, checked against the reference on the CPU through host emulation.

pygan._emu is built from the same csrc/*.cu and bindings.cpp as pygan._C (see csrc/emu/cuda_emu.h):
each CUDA thread is a host thread, so arrays stay small (a few blocks). Inputs go through the same
wrappers as on CUDA (pygan/ops/native.py), or straight into the module for validation tests.

Tolerances (|out - ref| <= atol + rtol*|ref|): TOL (rtol 1e-5, atol 1e-6) for float32 kernels
against the float32 reference: tanhf/expf/log1pf differ from numpy by a few ulp, and the GPU may
fuse multiply-adds; leaky ReLU is exact.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pygan.ops import emulated, reference

pytestmark = pytest.mark.skipif(not emulated.available(), reason="pygan._emu (host emulation) not built")

TOL = dict(rtol=1e-5, atol=1e-6)
HYP = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Sizes that hit the edges: 1, below/above a float4, not divisible by 4, around a 256-thread block.
EDGE_SIZES = [1, 2, 3, 4, 5, 7, 255, 256, 257, 1023, 1029]
# 0-d arrays are tested on their own (test_zero_dim): the reference's sigmoid fails on them.
shapes = st.lists(st.integers(1, 11), min_size=1, max_size=4).filter(lambda s: int(np.prod(s)) <= 3000)


@pytest.fixture(scope="module")
def emu():
    return emulated.backend(poison=True)  # every output and workspace NaN before its kernel runs


def variants(family):
    if not emulated.available():
        return []
    return list(range(1, len(emulated.backend().variants()[family]) + 1))


def randn(rng, shape, scale=3.0):
    return np.asarray(rng.standard_normal(shape) * scale, dtype=np.float32)


def check(out, ref, tol=TOL):
    assert out.dtype == np.float32 and out.shape == ref.shape
    np.testing.assert_allclose(out, ref, equal_nan=True, **tol)


POINTWISE = {  # name: (forward args after x, backward from "x" or "y", tolerance)
    "leaky_relu": ((0.2,), "x", dict(rtol=0, atol=0)),
    "relu": ((0.0,), "x", dict(rtol=0, atol=0)),
    "leaky_relu_steep": ((1.7,), "x", dict(rtol=0, atol=0)),
    "tanh": ((), "y", TOL),
    "sigmoid": ((), "y", TOL),
}


def op_name(kind):
    return "leaky_relu" if kind.startswith(("leaky", "relu")) else kind


def run_pointwise(emu, kind, x, dy, variant):
    name, (extra, source, tol) = op_name(kind), POINTWISE[kind]
    y = getattr(emu, f"{name}_forward")(x, *extra, variant=variant)
    y_ref = getattr(reference, f"{name}_forward")(x, *extra)
    check(y, y_ref, tol)
    src = x if source == "x" else y_ref
    dx = getattr(emu, f"{name}_backward")(src, dy, *extra, variant=variant)
    check(dx, getattr(reference, f"{name}_backward")(src, dy, *extra), tol)


def test_every_family_lists_variants(emu):
    v = emu.variants()
    for family in ("activation", "loss", "adam"):
        assert len(v[family]) >= 1 and all(isinstance(s, str) and s for s in v[family])


@pytest.mark.parametrize("variant", variants("activation"))
@pytest.mark.parametrize("kind", sorted(POINTWISE))
def test_pointwise_edge_sizes(emu, rng, kind, variant):
    for n in EDGE_SIZES:
        run_pointwise(emu, kind, randn(rng, n), randn(rng, n, 1.0), variant)


@pytest.mark.parametrize("variant", variants("activation"))
@pytest.mark.parametrize("kind", sorted(POINTWISE))
@HYP
@given(shape=shapes, seed=st.integers(0, 2**32 - 1))
def test_pointwise_random_shapes(emu, kind, variant, shape, seed):
    rng = np.random.default_rng(seed)
    run_pointwise(emu, kind, randn(rng, shape), randn(rng, shape, 1.0), variant)


@pytest.mark.parametrize("variant", variants("activation"))
@pytest.mark.parametrize("kind", sorted(POINTWISE))
def test_pointwise_misaligned_views(emu, rng, kind, variant):
    """A contiguous view at a 4-byte offset: the float4 variant must fall back, not misread."""
    n = 517
    x, dy = randn(rng, n + 1)[1:], randn(rng, n + 1, 1.0)[1:]
    assert x.ctypes.data % 16 != 0
    run_pointwise(emu, kind, x, dy, variant)


@pytest.mark.parametrize("variant", variants("activation"))
@pytest.mark.parametrize("kind", sorted(POINTWISE))
def test_pointwise_nan_inf_extremes(emu, rng, kind, variant):
    x = randn(rng, 37)
    x[[0, 5, 9, 17]] = [np.nan, np.inf, -np.inf, 0.0]
    x[[20, 21, 30]] = [1e4, -1e4, -0.0]
    dy = randn(rng, 37, 1.0)
    dy[3] = np.nan
    with np.errstate(invalid="ignore", over="ignore"):
        run_pointwise(emu, kind, x, dy, variant)


def test_zero_dim(emu, rng):
    """0-d arrays keep their shape; values as for the same one element in a 1-d array."""
    x, dy, t = randn(rng, ()), randn(rng, ()), np.asarray(rng.random(), np.float32)
    assert x.shape == ()
    for name in ("leaky_relu", "tanh", "sigmoid"):
        extra = (0.1,) if name == "leaky_relu" else ()
        y = getattr(emu, f"{name}_forward")(x, *extra)
        dx = getattr(emu, f"{name}_backward")(x, dy, *extra)
        assert y.shape == () and dx.shape == ()
        check(y.reshape(1), getattr(reference, f"{name}_forward")(x.reshape(1), *extra))
        check(dx.reshape(1), getattr(reference, f"{name}_backward")(x.reshape(1), dy.reshape(1), *extra))
    dx = emu.binary_cross_entropy_with_logits_backward(x, t, 1.5)
    assert dx.shape == ()
    check(dx.reshape(1), reference.binary_cross_entropy_with_logits_backward(x.reshape(1), t.reshape(1), 1.5))
    check(emu.binary_cross_entropy_with_logits_forward(x, t),
          reference.binary_cross_entropy_with_logits_forward(x.reshape(1), t.reshape(1)))


def test_pointwise_empty(emu):
    x = np.empty((0, 3), np.float32)
    assert emu.tanh_forward(x).shape == (0, 3)
    assert emu.leaky_relu_backward(x, x, 0.2).shape == (0, 3)


# -- binary cross-entropy with logits ----------------------------------------------------------


def bce_inputs(rng, shape, scale=4.0):
    return randn(rng, shape, scale), rng.random(shape).astype(np.float32)


def run_bce(emu, x, t, variant, dloss=0.7):
    loss = emu.binary_cross_entropy_with_logits_forward(x, t, variant=variant)
    assert loss.shape == () and loss.dtype == np.float32
    check(loss, reference.binary_cross_entropy_with_logits_forward(x, t))
    dx = emu.binary_cross_entropy_with_logits_backward(x, t, np.float32(dloss), variant=variant)
    check(dx, reference.binary_cross_entropy_with_logits_backward(x, t, dloss))
    return loss, dx


@pytest.mark.parametrize("variant", variants("loss"))
def test_bce_edge_sizes(emu, rng, variant):
    for n in EDGE_SIZES + [2048, 4097, 5000]:  # > 2048: several partial sums in variant 2
        run_bce(emu, *bce_inputs(rng, n), variant)


@pytest.mark.parametrize("variant", variants("loss"))
@HYP
@given(shape=shapes.filter(lambda s: int(np.prod(s)) > 0), seed=st.integers(0, 2**32 - 1),
       dloss=st.floats(-3, 3, width=32))
def test_bce_random_shapes(emu, variant, shape, seed, dloss):
    rng = np.random.default_rng(seed)
    run_bce(emu, *bce_inputs(rng, shape), variant, dloss)


@pytest.mark.parametrize("variant", variants("loss"))
def test_bce_huge_logits_finite(emu, rng, variant):
    x = np.array([1e4, -1e4, 1e4, -1e4, 88.0, -88.0, 0.0], np.float32)
    t = np.array([0.0, 1.0, 1.0, 0.0, 0.5, 0.5, 1.0], np.float32)
    loss, dx = run_bce(emu, x, t, variant)
    assert np.isfinite(loss) and np.all(np.isfinite(dx))
    assert float(loss) > 1000  # two terms of 1e4 in the mean of 7


@pytest.mark.parametrize("variant", variants("loss"))
def test_bce_nan_propagates(emu, rng, variant):
    x, t = bce_inputs(rng, 300)
    for arr in (x, t):
        a, b = x.copy(), t.copy()
        (a if arr is x else b)[123] = np.nan
        loss, dx = run_bce(emu, a, b, variant)
        assert np.isnan(loss) and np.isnan(dx[123]) and np.isfinite(np.delete(dx, 123)).all()


def test_bce_dloss_on_device_array(emu, rng):
    x, t = bce_inputs(rng, (4, 5))
    dx = emu.binary_cross_entropy_with_logits_backward(x, t, np.array(2.5, np.float32))
    check(dx, reference.binary_cross_entropy_with_logits_backward(x, t, 2.5))


# -- Adam --------------------------------------------------------------------------------------

HYPERS = [
    dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0),
    dict(lr=2e-4, beta1=0.5, beta2=0.999, eps=1e-8, weight_decay=0.0),  # DCGAN's
    dict(lr=1e-2, beta1=0.8, beta2=0.9, eps=1e-6, weight_decay=0.05),
]


def adam_state(rng, sizes, misaligned=()):
    def arr(n, i, scale):
        if i in misaligned:  # a contiguous view at a 4-byte offset: not 16-byte aligned
            return randn(rng, n + 1, scale)[1:]
        return randn(rng, n, scale)

    params = [arr(n, i, 1.0) for i, n in enumerate(sizes)]
    m = [arr(n, i, 0.1) for i, n in enumerate(sizes)]
    v = [np.abs(arr(n, i, 0.1)) for i, n in enumerate(sizes)]
    return params, m, v


def run_adam(emu, rng, sizes, hyper, variant, steps=4, misaligned=()):
    params, m, v = adam_state(rng, sizes, misaligned)
    ref = [[a.copy() for a in group] for group in (params, m, v)]
    for step in range(1, steps + 1):
        grads = [randn(rng, a.shape, 1.0) for a in params]
        emu.adam_step(params, grads, m, v, step, **hyper, variant=variant)
        reference.adam_step(ref[0], grads, ref[1], ref[2], step, **hyper)
        for got, want in zip(params + m + v, ref[0] + ref[1] + ref[2]):
            check(got, want)


@pytest.mark.parametrize("variant", variants("adam"))
@pytest.mark.parametrize("hyper", HYPERS, ids=["default", "dcgan", "weight_decay"])
def test_adam_multi_tensor(emu, rng, variant, hyper):
    # sizes: 1, odd, not divisible by 4, > one 2048-element chunk, 2-D; tensor 2 misaligned
    run_adam(emu, rng, [1, 3, 257, 2049, 4100, 6], hyper, variant, misaligned=(2, 5))


@pytest.mark.parametrize("variant", variants("adam"))
def test_adam_more_tensors_than_one_launch_holds(emu, rng, variant):
    run_adam(emu, rng, [(i % 7) + 1 for i in range(70)], HYPERS[2], variant, steps=2)


@pytest.mark.parametrize("variant", variants("adam"))
@HYP
@given(sizes=st.lists(st.integers(1, 600), min_size=1, max_size=5), seed=st.integers(0, 2**32 - 1))
def test_adam_random_sizes(emu, variant, sizes, seed):
    run_adam(emu, np.random.default_rng(seed), sizes, HYPERS[0], variant, steps=2)


def test_adam_shapes_kept_and_empty_list(emu, rng):
    p = randn(rng, (3, 4, 5))
    m, v = np.zeros_like(p), np.zeros_like(p)
    emu.adam_step([p], [randn(rng, p.shape)], [m], [v], 1, 1e-3, 0.9, 0.999, 1e-8, 0.0)
    assert p.shape == (3, 4, 5) and np.abs(m).sum() > 0
    emu.adam_step([], [], [], [], 1, 1e-3, 0.9, 0.999, 1e-8, 0.0)


# -- validation: bad input is a ValueError naming the argument, before any kernel runs ---------


@pytest.fixture(scope="module")
def mod():
    from pygan import _emu

    return _emu


def f32(*shape):
    return np.ones(shape, np.float32)


def test_bad_dtype(mod):
    with pytest.raises(ValueError, match=r"tanh_forward: x must be float32, got float64"):
        mod.tanh_forward(np.ones(4), f32(4))
    with pytest.raises(ValueError, match=r"y must be float32, got int32"):
        mod.tanh_forward(f32(4), np.ones(4, np.int32))
    with pytest.raises(ValueError, match=r"leaky_relu_backward: dy must be float32"):
        mod.leaky_relu_backward(f32(4), np.ones(4, np.float16), f32(4), 0.1)


def test_not_an_array(mod):
    with pytest.raises(ValueError, match=r"x must be a numpy array"):
        mod.sigmoid_forward([1.0, 2.0], f32(2))
    with pytest.raises(ValueError, match=r"x must be a numpy array"):
        mod.sigmoid_forward(np.float32(1.0), f32())
    with pytest.raises(ValueError, match=r"y must be a numpy array"):
        mod.sigmoid_forward(f32(2), None)


def test_non_contiguous(mod):
    with pytest.raises(ValueError, match=r"x must be C-contiguous"):
        mod.tanh_forward(f32(8)[::2], f32(4))
    with pytest.raises(ValueError, match=r"dx must be C-contiguous"):
        mod.tanh_backward(f32(3, 4), f32(3, 4), f32(4, 3).T)
    y = np.full((1, 5), np.nan, np.float32)
    mod.tanh_forward(f32(1, 5)[:, :], y)  # size-1 dimensions: contiguous whatever the stride
    np.testing.assert_allclose(y, np.tanh(f32(1, 5)), rtol=1e-6)


def test_wrong_shape(mod):
    with pytest.raises(ValueError, match=r"y has shape \(4, 3\) but x has shape \(3, 4\)"):
        mod.tanh_forward(f32(3, 4), f32(4, 3))
    with pytest.raises(ValueError, match=r"sigmoid_backward: dy has shape"):
        mod.sigmoid_backward(f32(5), f32(6), f32(5))


def test_read_only_output(mod):
    y = f32(4)
    y.flags.writeable = False
    with pytest.raises(ValueError, match=r"y is read-only"):
        mod.tanh_forward(f32(4), y)


def test_bad_variant(mod):
    with pytest.raises(ValueError, match=r"variant 7"):
        mod.tanh_forward(f32(4), f32(4), 0.0, 7)
    with pytest.raises(ValueError, match=r"variant -1"):
        emulated.backend().adam_step([f32(2)], [f32(2)], [f32(2)], [f32(2)], 1, 0.1, 0.9, 0.9, 1e-8, 0.0, variant=-1)


def test_bce_bad_inputs(mod):
    op = mod.binary_cross_entropy_with_logits_forward
    ws = f32(mod.bce_workspace_size(10, 0))
    with pytest.raises(ValueError, match=r"target has shape \(11,\)"):
        op(f32(10), f32(11), ws, f32())
    with pytest.raises(ValueError, match=r"loss must have exactly one element"):
        op(f32(10), f32(10), ws, f32(2))
    with pytest.raises(ValueError, match=r"workspace must be a numpy array"):
        op(f32(10), f32(10), None, f32(), 2)
    with pytest.raises(ValueError, match=r"logits is empty"):
        op(f32(0), f32(0), ws, f32(), 1)
    with pytest.raises(ValueError, match=r"dloss must have exactly one element"):
        mod.binary_cross_entropy_with_logits_backward(f32(3), f32(3), f32(2), f32(3))
    with pytest.raises(ValueError, match=r"target must be float32"):
        mod.binary_cross_entropy_with_logits_backward(f32(3), np.ones(3), f32(1), f32(3))


def test_bce_workspace_too_small(mod):
    n = 5000
    need = mod.bce_workspace_size(n, 2)
    assert need > 1 and mod.bce_workspace_size(n, 1) == 0
    with pytest.raises(ValueError, match=rf"workspace has {need - 1} elements, needs {need}"):
        mod.binary_cross_entropy_with_logits_forward(f32(n), f32(n), f32(need - 1), f32(), 2)


def test_adam_bad_inputs(mod):
    hyper = (1, 1e-3, 0.9, 0.999, 1e-8, 0.0)
    p = [f32(3), f32(5)]
    with pytest.raises(ValueError, match=r"adam_step: grads has 1 arrays but params has 2"):
        mod.adam_step(p, [f32(3)], [f32(3), f32(5)], [f32(3), f32(5)], *hyper)
    with pytest.raises(ValueError, match=r"grads\[1\] has shape \(4,\) but params\[1\] has shape \(5,\)"):
        mod.adam_step(p, [f32(3), f32(4)], [f32(3), f32(5)], [f32(3), f32(5)], *hyper)
    with pytest.raises(ValueError, match=r"exp_avgs\[0\] must be float32, got float64"):
        mod.adam_step(p, [f32(3), f32(5)], [np.ones(3), f32(5)], [f32(3), f32(5)], *hyper)
    with pytest.raises(ValueError, match=r"params\[0\] must be C-contiguous"):
        emulated.backend().adam_step([f32(6)[::2]], [f32(3)], [f32(3)], [f32(3)], *hyper)
    with pytest.raises(ValueError, match=r"step must be >= 1"):
        mod.adam_step(p, [f32(3), f32(5)], [f32(3), f32(5)], [f32(3), f32(5)], 0, *hyper[1:])


def test_validation_happens_before_anything_runs(mod):
    """A bad later argument leaves earlier outputs untouched."""
    p = [np.zeros(4, np.float32), np.zeros(4, np.float32)]
    with pytest.raises(ValueError, match=r"exp_avg_sqs\[1\]"):
        mod.adam_step(p, [f32(4), f32(4)], [f32(4), f32(4)], [f32(4), np.ones(4)], 1, 1.0, 0.9, 0.999, 1e-8, 0.0)
    assert not p[0].any()


def test_emulation_selftest(mod):
    """The emulation header itself: shuffles, votes, barriers with early exits, indices, limits."""
    results = mod._emulation_selftest()
    assert len(results) >= 10
    assert [name for name, ok in results if not ok] == []


def test_emulation_module_facts(mod):
    assert mod.emulation is True and mod.cuda_compiled is False and mod.cuda_device_count() == 0
