"""Issue 6 ops under host emulation, every variant, against the reference: avg_pool2d (csrc/pool.cu),
softmax cross-entropy (csrc/loss.cu, the "loss" family's variants) and linear (the conv2d kernels as
1x1 convolutions, pygan/ops/native_conv_bn.py), plus the bindings' input validation.

Kernels run in float32 through the same wrappers the CUDA backend uses (pygan/ops/native.py); the
reference runs in float64 on the same float32 values (so the tolerance measures the kernel's
float32 error, not numpy's). Emulation runs one host thread per CUDA thread: shapes stay small.

Tolerances (|out - ref| <= atol + rtol * |ref|):
  avg_pool2d forward and backward: rtol 1e-5, atol 1e-6 (float32 sums of at most 256 N(0, 1)
      values, then one division);
  softmax cross-entropy: loss rtol 1e-5, atol 1e-6; dlogits rtol 1e-5, atol 1e-6 * |dloss| / N
      (softmax - onehot cancels to ~1 ulp of 1 where p ~ 1, scaled by dloss / N);
  linear (all emulated conv2d variants; TF32 cannot be emulated): rtol 1e-4, atol 1e-4, as the
      conv2d tests (float32 sums of up to 40 products).
"""

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pygan.ops import emulated  # noqa: E402
from pygan.ops import reference as R  # noqa: E402

emu = pytest.importorskip("pygan._emu", reason="pygan._emu (host-emulation module) not built")

POOL_TOL = dict(rtol=1e-5, atol=1e-6)
LOSS_TOL = dict(rtol=1e-5, atol=1e-6)
LINEAR_TOL = dict(rtol=1e-4, atol=1e-4)
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

POOL_VARIANTS = list(range(1, len(emu.avg_pool2d_variants()) + 1))
LOSS_VARIANTS = list(range(1, len(emu.loss_variants()) + 1))
CONV_VARIANTS = [v for v, name in enumerate(emu.conv2d_variants(), 1) if "tf32" not in name.lower()]


@pytest.fixture(scope="module")
def ops():
    return emulated.backend(poison=True)  # every output and workspace NaN before its kernel runs


def f32(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def close(out, ref, what, rtol, atol):
    assert out is not None and ref is not None, what
    assert out.shape == ref.shape, f"{what}: shape {out.shape} != {ref.shape}"
    assert out.dtype == np.float32, f"{what}: dtype {out.dtype}"
    err = np.abs(out.astype(np.float64) - ref)
    bad = ~(err <= atol + rtol * np.abs(ref)) & ~(np.isnan(out) & np.isnan(ref))
    assert not bad.any(), f"{what}: max error {np.nanmax(err):.3g} at {np.argwhere(bad)[0]}"


# -- avg_pool2d --------------------------------------------------------------------------------------


def check_pool(ops, rng, variant, x_shape, kernel_size, stride):
    x = f32(rng, x_shape)
    tag = f"variant {variant} x{x_shape} k{kernel_size} s{stride}"
    y_ref = R.avg_pool2d_forward(x.astype(np.float64), kernel_size, stride)
    y = ops.avg_pool2d_forward(x, kernel_size, stride, variant=variant)
    close(y, y_ref, "avg_pool2d_forward " + tag, **POOL_TOL)
    dy = f32(rng, y_ref.shape)
    dx_ref = R.avg_pool2d_backward(dy.astype(np.float64), x_shape, kernel_size, stride)
    dx = ops.avg_pool2d_backward(dy, x_shape, kernel_size, stride, variant=variant)
    close(dx, dx_ref, "avg_pool2d_backward " + tag, **POOL_TOL)
    return y, dx


POOL_CASES = {
    # x shape, kernel_size, stride
    "classifier-global-8x8": ((2, 3, 8, 8), 8, 8),
    "global-by-kernel-stride-1": ((2, 3, 8, 8), 8, 1),
    "global-non-square": ((1, 3, 5, 7), (5, 7), (5, 7)),
    "global-256-per-plane": ((2, 2, 16, 16), 16, 16),  # each lane sums 8 elements
    "global-1x1-image": ((3, 4, 1, 1), 1, 1),
    "global-many-planes-grid-stride": ((2, 550, 2, 2), 2, 2),  # 1100 planes > 128 blocks * 8 warps
    "2x2-s2": ((2, 3, 8, 8), 2, 2),
    "overlap-3x3-s1": ((2, 2, 7, 6), 3, 1),
    "overlap-3x3-s2": ((2, 2, 9, 8), 3, 2),
    "stride-greater-than-kernel": ((1, 2, 9, 10), 2, 3),  # rows/columns no window covers: dx = 0
    "non-square-everything": ((2, 2, 7, 5), (3, 2), (2, 1)),
    "window-one-row": ((1, 3, 6, 9), (1, 4), (1, 2)),
    "identity-1x1": ((2, 3, 4, 5), 1, 1),
}


@pytest.mark.parametrize("variant", POOL_VARIANTS)
@pytest.mark.parametrize("case", list(POOL_CASES), ids=list(POOL_CASES))
def test_avg_pool2d_cases(ops, rng, variant, case):
    check_pool(ops, rng, variant, *POOL_CASES[case])


@pytest.mark.parametrize("variant", POOL_VARIANTS)
def test_avg_pool2d_grid_stride(ops, rng, variant):
    # 34848 outputs / inputs: more than the emulated grid cap (4 SMs * 32 blocks * 256 threads)
    check_pool(ops, rng, variant, (4, 8, 33, 33), 1, 1)


@st.composite
def pool_cases(draw):
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    kh, kw = draw(st.integers(1, h)), draw(st.integers(1, w))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return (n, c, h, w), (kh, kw), (sh, sw)


@pytest.mark.parametrize("variant", POOL_VARIANTS)
@settings(max_examples=25, **SETTINGS)
@given(case=pool_cases(), seed=st.integers(0, 2**32 - 1))
def test_avg_pool2d_hypothesis(ops, variant, case, seed):
    check_pool(ops, np.random.default_rng(seed), variant, *case)


def test_avg_pool2d_uncovered_rows_get_zero(ops, rng):
    x_shape = (1, 1, 7, 7)
    for v in POOL_VARIANTS:
        dx = ops.avg_pool2d_backward(f32(rng, (1, 1, 2, 2)), x_shape, 2, 4, variant=v)  # windows at 0 and 4
        assert not dx[..., 2:4, :].any() and not dx[..., :, 2:4].any() and not dx[..., 6, :].any()


def test_avg_pool2d_empty_batch_and_views(ops, rng):
    y = ops.avg_pool2d_forward(np.empty((0, 3, 4, 4), np.float32), 2, 2)
    assert y.shape == (0, 3, 2, 2)
    assert ops.avg_pool2d_backward(np.empty((0, 3, 2, 2), np.float32), (0, 3, 4, 4), 2, 2).shape == (0, 3, 4, 4)
    x = f32(rng, (2, 6, 8, 8))[:, ::2]  # not contiguous: the wrapper copies
    close(ops.avg_pool2d_forward(x, 8, 8), R.avg_pool2d_forward(x.astype(np.float64), 8, 8), "view", **POOL_TOL)


# -- softmax cross-entropy ---------------------------------------------------------------------------


def check_ce(ops, rng, variant, rows, classes, scale=3.0, dloss=0.7, labels=None, logits=None):
    x = f32(rng, (rows, classes), scale) if logits is None else logits
    if labels is None:
        labels = rng.integers(0, classes, rows)
    tag = f"variant {variant} logits{x.shape} scale {scale} labels {labels.dtype}"
    x64 = x.astype(np.float64)
    loss = ops.softmax_cross_entropy_forward(x, labels, variant=variant)
    assert loss.shape == () and loss.dtype == np.float32, tag
    close(loss, R.softmax_cross_entropy_forward(x64, labels), "softmax CE loss " + tag, **LOSS_TOL)
    g = ops.softmax_cross_entropy_backward(x, labels, dloss, variant=variant)
    atol = LOSS_TOL["atol"] * abs(float(dloss)) / rows
    close(g, R.softmax_cross_entropy_backward(x64, labels, float(dloss)), "softmax CE dlogits " + tag,
          rtol=LOSS_TOL["rtol"], atol=atol)
    return loss, g


CE_SHAPES = [(1, 1), (1, 10), (3, 2), (37, 10), (64, 10), (5, 33), (3, 100), (300, 7), (40, 64)]


@pytest.mark.parametrize("variant", LOSS_VARIANTS)
@pytest.mark.parametrize("shape", CE_SHAPES, ids=[f"{r}x{c}" for r, c in CE_SHAPES])
def test_softmax_ce_shapes(ops, rng, variant, shape):
    check_ce(ops, rng, variant, *shape)


@pytest.mark.parametrize("variant", LOSS_VARIANTS)
@pytest.mark.parametrize("scale", [1e3, 1e4])
def test_softmax_ce_large_logits_stable(ops, rng, variant, scale):
    loss, g = check_ce(ops, rng, variant, 33, 10, scale=scale)
    assert np.isfinite(loss) and np.isfinite(g).all()
    x = np.array([[1e3, -1e3, 0.0], [-1e3, 1e3, 1e3], [88.0, 89.0, -np.inf]], np.float32)
    loss, g = check_ce(ops, rng, variant, 3, 3, logits=x, labels=np.array([1, 2, 0]))
    assert np.isfinite(loss) and np.isfinite(g).all() and float(loss) > 600  # (2000 + log 2 + 1.31) / 3


@pytest.mark.parametrize("variant", LOSS_VARIANTS)
def test_softmax_ce_many_partials(ops, rng, variant):
    # variant 2: 700 rows / 32 rows per block = 22 partial sums
    check_ce(ops, rng, variant, 700, 3)


@pytest.mark.parametrize("variant", LOSS_VARIANTS)
@settings(max_examples=12, **SETTINGS)
@given(rows=st.integers(1, 70), classes=st.integers(1, 70), seed=st.integers(0, 2**32 - 1),
       # |dloss| >= 1e-3 or 0: a subnormal dloss would make the scaled atol subnormal too
       dloss=st.floats(-3, 3, width=32).filter(lambda d: d == 0 or abs(d) >= 1e-3),
       scale=st.sampled_from([0.1, 3.0, 50.0]))
def test_softmax_ce_hypothesis(ops, variant, rows, classes, seed, dloss, scale):
    check_ce(ops, np.random.default_rng(seed), variant, rows, classes, scale=scale, dloss=dloss)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.int16])
def test_softmax_ce_label_dtypes(ops, rng, dtype):
    """The wrapper converts any integer labels to int64 (the kernels' type)."""
    labels = rng.integers(0, 10, 21).astype(dtype)
    check_ce(ops, rng, 0, 21, 10, labels=labels)
    check_ce(ops, rng, 0, 21, 10, labels=np.repeat(labels, 2)[::2])  # a strided view


def test_softmax_ce_dloss_forms(ops, rng):
    x, labels = f32(rng, (6, 4)), rng.integers(0, 4, 6)
    ref = R.softmax_cross_entropy_backward(x.astype(np.float64), labels, -1.5)
    for dloss in (-1.5, np.float32(-1.5), np.array(-1.5, np.float32), np.array([-1.5])):
        close(ops.softmax_cross_entropy_backward(x, labels, dloss), ref, f"dloss {dloss!r}", rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("variant", LOSS_VARIANTS)
def test_softmax_ce_nan_row(ops, rng, variant):
    x, labels = f32(rng, (40, 5)), rng.integers(0, 5, 40)
    x[17, 3] = np.nan
    loss, g = check_ce(ops, rng, variant, 40, 5, logits=x, labels=labels)
    assert np.isnan(loss) and np.isnan(g[17]).all() and np.isfinite(np.delete(g, 17, axis=0)).all()


@pytest.mark.parametrize("variant", LOSS_VARIANTS)
def test_softmax_ce_deterministic(ops, rng, variant):
    x, labels = f32(rng, (200, 7)), rng.integers(0, 7, 200)
    first = ops.softmax_cross_entropy_forward(x, labels, variant=variant)
    assert ops.softmax_cross_entropy_forward(x, labels, variant=variant) == first  # bitwise


@pytest.mark.parametrize("variant", LOSS_VARIANTS)
def test_softmax_ce_out_of_range_labels_direct_call(rng, variant):
    """The registry rejects them; a direct call must not read out of bounds: NaN rows instead."""
    x = f32(rng, (6, 4))
    labels = np.array([0, -1, 3, 4, 2**40, 1], np.int64)
    # NaN is the expected answer, so the outputs are poisoned with a finite sentinel instead, afresh
    # before every call: a kernel that writes nothing leaves 7.0 and fails.
    n_ws = max(emu.softmax_cross_entropy_workspace_size(6, variant), 1)
    ws, loss = np.full(n_ws, np.nan, np.float32), np.full((), 7.0, np.float32)
    emu.softmax_cross_entropy_forward(x, labels, ws, loss, variant)
    assert np.isnan(loss)
    for bad_label in (-1, 4, 2**40, -(2**63)):  # each alone in an otherwise valid batch
        one = np.array([0, 1, bad_label, 2, 3, 1], np.int64)
        ws, loss = np.full(n_ws, np.nan, np.float32), np.full((), 7.0, np.float32)
        emu.softmax_cross_entropy_forward(x, one, ws, loss, variant)
        assert np.isnan(loss), bad_label
    g = np.full_like(x, 7.0)
    emu.softmax_cross_entropy_backward(x, labels, np.ones(1, np.float32), g, variant)
    bad = [1, 3, 4]
    assert np.isnan(g[bad]).all()
    good = [0, 2, 5]
    ref = R.softmax_cross_entropy_backward(x[good].astype(np.float64), labels[good], len(good) / 6)
    close(g[good], ref, "valid rows", rtol=1e-5, atol=1e-7)


# -- linear (conv2d kernels, 1x1) -------------------------------------------------------------------


def check_linear(rng, variant, n, k, o, bias):
    from pygan.ops.native_conv_bn import Native

    ops = Native(emu, np, variants={"conv2d": variant})
    x, w = f32(rng, (n, k)), f32(rng, (o, k))
    b = f32(rng, (o,)) if bias else None
    tag = f"variant {variant} x{x.shape} w{w.shape} bias={bias}"
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    y_ref = R.linear_forward(x64, w64, None if b is None else b.astype(np.float64))
    close(ops.linear_forward(x, w, b), y_ref, "linear_forward " + tag, **LINEAR_TOL)
    dy = f32(rng, y_ref.shape)
    refs = R.linear_backward(x64, w64, dy.astype(np.float64), bias)
    outs = ops.linear_backward(x, w, dy, bias)
    for name, out, ref in zip(("dx", "dw", "db"), outs, refs):
        if ref is None:
            assert out is None, f"{name} should be None " + tag
        else:
            close(out, ref, f"linear {name} " + tag, **LINEAR_TOL)


LINEAR_CASES = {
    # n, in_features, out_features
    "classifier-head-256-to-10": (4, 40, 10),
    "one-sample": (1, 7, 3),
    "one-feature-one-output": (5, 1, 1),
    "out-over-16-64x64-tiles": (9, 13, 20),
    "float4-multiples": (8, 16, 8),
    "split-k-batch": (300, 3, 2),  # backward-weight K = batch: several split-K slices
}


@pytest.mark.parametrize("variant", CONV_VARIANTS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("case", list(LINEAR_CASES), ids=list(LINEAR_CASES))
def test_linear_cases(rng, variant, bias, case):
    check_linear(rng, variant, *LINEAR_CASES[case], bias)


@pytest.mark.parametrize("variant", CONV_VARIANTS)
@settings(max_examples=8, **SETTINGS)
@given(n=st.integers(1, 12), k=st.integers(1, 40), o=st.integers(1, 24), bias=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_linear_hypothesis(variant, n, k, o, bias, seed):
    check_linear(np.random.default_rng(seed), variant, n, k, o, bias)


def test_linear_through_native_ops_and_float64(ops, rng):
    """NativeOps methods with variant=; float64 in, float64 out (computed in float32, like conv2d)."""
    x, w, b = f32(rng, (3, 5)), f32(rng, (4, 5)), f32(rng, (4,))
    ref = R.linear_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64))
    for v in CONV_VARIANTS:
        close(ops.linear_forward(x, w, b, variant=v), ref, f"NativeOps linear variant {v}", **LINEAR_TOL)
    y64 = ops.linear_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64))
    assert y64.dtype == np.float64 and np.allclose(y64, ref, **LINEAR_TOL)
    dx, dw, db = ops.linear_backward(x, w, f32(rng, (3, 4)), False)
    assert dx.shape == (3, 5) and dw.shape == (4, 5) and db is None


# -- variant tables and binding validation -----------------------------------------------------------


def test_variant_tables():
    v = emu.variants()
    assert v["avg_pool2d"] == emu.avg_pool2d_variants() and len(v["avg_pool2d"]) == 2
    assert v["loss"] == emu.loss_variants() and len(v["loss"]) == 2
    assert emu.softmax_cross_entropy_workspace_size(100, 1) == 0
    assert emu.softmax_cross_entropy_workspace_size(100, 2) == 4  # ceil(100 / 32)
    assert emu.softmax_cross_entropy_workspace_size(10**7, 0) == 1024  # capped


def out(*shape):
    return np.empty(shape, np.float32)


def test_avg_pool2d_bindings_validate():
    x = np.ones((2, 3, 8, 8), np.float32)
    with pytest.raises(ValueError, match=r"avg_pool2d_forward: x must be 4-D"):
        emu.avg_pool2d_forward(np.ones((3, 8, 8), np.float32), out(3, 1, 1), 8, 8)
    with pytest.raises(ValueError, match=r"avg_pool2d_forward: x must be float32, got float64"):
        emu.avg_pool2d_forward(np.ones((2, 3, 8, 8)), out(2, 3, 1, 1), 8, 8)
    with pytest.raises(ValueError, match=r"y has shape \(2, 3, 2, 2\), expected \(2, 3, 1, 1\)"):
        emu.avg_pool2d_forward(x, out(2, 3, 2, 2), 8, 8)
    with pytest.raises(ValueError, match=r"kernel_size \(9, 9\) is larger than the input"):
        emu.avg_pool2d_forward(x, out(2, 3, 1, 1), 9, 1)
    with pytest.raises(ValueError, match=r"stride must be >= 1"):
        emu.avg_pool2d_forward(x, out(2, 3, 1, 1), 8, 0)
    with pytest.raises(ValueError, match=r"kernel_size must be >= 1"):
        emu.avg_pool2d_forward(x, out(2, 3, 1, 1), (0, 2), 1)
    with pytest.raises(ValueError, match=r"avg_pool2d_forward: kernel_size must be"):
        emu.avg_pool2d_forward(x, out(2, 3, 1, 1), "a", 1)
    with pytest.raises(ValueError, match=r"x must be C-contiguous"):
        emu.avg_pool2d_forward(np.ones((2, 3, 8, 16), np.float32)[..., ::2], out(2, 3, 1, 1), 8, 8)
    with pytest.raises(ValueError, match=r"variant 3"):
        emu.avg_pool2d_forward(x, out(2, 3, 1, 1), 8, 8, 3)
    dx = out(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"avg_pool2d_backward: dy has shape \(2, 3, 2, 2\), expected \(2, 3, 4, 4\)"):
        emu.avg_pool2d_backward(out(2, 3, 2, 2), dx, 2, 2)
    dx.flags.writeable = False
    with pytest.raises(ValueError, match=r"dx is read-only"):
        emu.avg_pool2d_backward(out(2, 3, 4, 4), dx, 2, 2)


def test_softmax_ce_bindings_validate():
    fwd, bwd = emu.softmax_cross_entropy_forward, emu.softmax_cross_entropy_backward
    x, labels, ws, loss = np.ones((6, 4), np.float32), np.zeros(6, np.int64), out(1), out()
    with pytest.raises(ValueError, match=r"softmax_cross_entropy_forward: labels must be int64, got int32"):
        fwd(x, labels.astype(np.int32), ws, loss)
    with pytest.raises(ValueError, match=r"labels must be int64, got float32"):
        fwd(x, labels.astype(np.float32), ws, loss)
    with pytest.raises(ValueError, match=r"labels must have shape \(6,\), got \(5,\)"):
        fwd(x, labels[:5], ws, loss)
    with pytest.raises(ValueError, match=r"labels must be C-contiguous"):
        fwd(x, np.zeros(12, np.int64)[::2], ws, loss)
    with pytest.raises(ValueError, match=r"logits must be 2-D"):
        fwd(np.ones(6, np.float32), labels, ws, loss)
    with pytest.raises(ValueError, match=r"logits is empty"):
        fwd(np.ones((6, 0), np.float32), labels, ws, loss)
    with pytest.raises(ValueError, match=r"logits must be float32, got float64"):
        fwd(x.astype(np.float64), labels, ws, loss)
    with pytest.raises(ValueError, match=r"loss must have exactly one element"):
        fwd(x, labels, ws, out(2))
    with pytest.raises(ValueError, match=r"workspace must be a numpy array"):
        fwd(x, labels, None, loss, 2)
    need = emu.softmax_cross_entropy_workspace_size(5000, 2)
    with pytest.raises(ValueError, match=rf"workspace has {need - 1} elements, needs {need}"):
        fwd(np.ones((5000, 2), np.float32), np.zeros(5000, np.int64), out(need - 1), loss, 2)
    fwd(x, labels, None, loss, 1)  # variant 1 needs no workspace
    assert np.isclose(loss, np.log(4))
    with pytest.raises(ValueError, match=r"dloss must have exactly one element"):
        bwd(x, labels, out(2), out(6, 4))
    with pytest.raises(ValueError, match=r"dlogits has shape \(4, 6\) but logits has shape \(6, 4\)"):
        bwd(x, labels, out(1), out(4, 6))
    with pytest.raises(ValueError, match=r"softmax_cross_entropy_backward: labels must be int64"):
        bwd(x, labels.astype(np.uint8), out(1), out(6, 4))
    with pytest.raises(ValueError, match=r"variant 5"):
        bwd(x, labels, np.ones(1, np.float32), out(6, 4), 5)
