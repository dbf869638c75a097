"""pygan._cpu, the CPU backend's own GEMM (csrc/cpu/gemm.cpp), against float64 numpy.

Every micro-kernel this CPU can run (generic, avx2, avx512) is checked, on shapes drawn by
hypothesis that cover partial tiles in both directions, K of 0, 1 and more than one KC slice (256),
the flip to C^T for narrow outputs, transposed operands, accumulation, and 1-3 threads. Outputs
start as NaN, so an element the GEMM forgets to write fails. The convolution entry points are
checked against an explicit im2col (the reference's algorithm). Tolerance: |err| <= 1e-5 sqrt(K)
(float32 products of N(0, 1) values summed in a different order than float64's).
"""

import numpy as np
import pytest

_cpu = pytest.importorskip("pygan._cpu", reason="pygan._cpu is not built")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ISAS = _cpu.supported_isas()
SETTINGS = dict(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def f32(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def check(got, want, k, what):
    err = np.abs(got.astype(np.float64) - want)
    bound = 1e-5 * np.sqrt(max(k, 1)) * (1 + np.abs(want))
    assert not (~(err <= bound)).any(), f"{what}: max error {np.nanmax(err):.3g}"  # NaN counts as bad


def test_the_best_isa_is_supported():
    assert _cpu.best_isa() in ISAS and "generic" in ISAS


@pytest.mark.parametrize("isa", ISAS)
@given(m=st.integers(1, 70), n=st.integers(1, 80), k=st.sampled_from([0, 1, 3, 16, 17, 100, 255, 256, 257, 600]),
       trans_a=st.booleans(), trans_b=st.booleans(), accumulate=st.booleans(), threads=st.integers(1, 3),
       seed=st.integers(0, 2**32 - 1))
@settings(**SETTINGS)
def test_gemm_matches_float64(isa, m, n, k, trans_a, trans_b, accumulate, threads, seed):
    rng = np.random.default_rng(seed)
    a = f32(rng, (k, m) if trans_a else (m, k))
    b = f32(rng, (n, k) if trans_b else (k, n))
    out = f32(rng, (m, n)) if accumulate else np.full((m, n), np.nan, np.float32)
    want = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
    if accumulate:
        want += out
    _cpu.gemm(a, b, out, trans_a, trans_b, accumulate, threads=threads, isa=isa)
    check(out, want, k, f"{isa} m={m} n={n} k={k} trans_a={trans_a} trans_b={trans_b} acc={accumulate}")


@pytest.mark.parametrize("isa", ISAS)
def test_gemm_large_blocks(isa):
    """More than one row block, column block and K slice of every kernel (MC <= 168, NC <= 3072)."""
    rng = np.random.default_rng(0)
    a, b = f32(rng, (700, 530)), f32(rng, (530, 3100))
    out = np.full((700, 3100), np.nan, np.float32)
    _cpu.gemm(a, b, out, threads=2, isa=isa)
    check(out, a.astype(np.float64) @ b, 530, isa)


@pytest.mark.parametrize("isa", ISAS)
def test_results_do_not_depend_on_the_thread_count(isa):
    rng = np.random.default_rng(1)
    a, b = f32(rng, (333, 700)), f32(rng, (700, 129))
    outs = []
    for threads in (1, 2, 3):
        out = np.empty((333, 129), np.float32)
        _cpu.gemm(a, b, out, threads=threads, isa=isa)
        outs.append(out)
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])


def im2col(xpad, kh, kw, sh, sw, oh, ow):
    n, _, _, c = xpad.shape
    cols = np.empty((n, oh, ow, kh, kw, c), xpad.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j, :] = xpad[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :]
    return cols.reshape(n * oh * ow, kh * kw * c)


conv_cases = st.tuples(
    st.integers(1, 3), st.integers(1, 20), st.integers(1, 9), st.integers(1, 9),  # n, c, hp, wp
    st.integers(1, 40), st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3),  # o, kh, kw, sh, sw
)


@pytest.mark.parametrize("isa", ISAS)
@given(case=conv_cases, threads=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
@settings(**SETTINGS)
def test_conv_entry_points_match_an_explicit_im2col(isa, case, threads, seed):
    n, c, hp, wp, o, kh, kw, sh, sw = case
    if kh > hp or kw > wp:
        return
    oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    rng = np.random.default_rng(seed)
    xpad, wk = f32(rng, (n, hp, wp, c)), f32(rng, (o, kh * kw * c))
    cols = im2col(xpad, kh, kw, sh, sw, oh, ow).astype(np.float64)
    out = np.full((n * oh * ow, o), np.nan, np.float32)
    _cpu.conv_forward(xpad, wk, out, (kh, kw), (sh, sw), (oh, ow), threads=threads, isa=isa)
    check(out, cols @ wk.T, cols.shape[1], f"{isa} conv_forward {case}")
    dym = f32(rng, (n * oh * ow, o))
    dw = np.full((o, kh * kw * c), np.nan, np.float32)
    _cpu.conv_weight_grad(dym, xpad, dw, (kh, kw), (sh, sw), (oh, ow), threads=threads, isa=isa)
    check(dw, dym.T.astype(np.float64) @ cols, cols.shape[0], f"{isa} conv_weight_grad {case}")


def test_dcgan_shapes(rng=np.random.default_rng(2)):
    """A 4x4 stride-2 layer with 64 channels (patch rows are runs of 256: the transposing pack)."""
    xpad, wk = f32(rng, (2, 18, 18, 64)), f32(rng, (128, 4 * 4 * 64))
    cols = im2col(xpad, 4, 4, 2, 2, 8, 8).astype(np.float64)
    out = np.full((128, 128), np.nan, np.float32)
    _cpu.conv_forward(xpad, wk, out, (4, 4), (2, 2), (8, 8), threads=2)
    check(out, cols @ wk.T, cols.shape[1], "conv_forward")
    dym = f32(rng, (128, 128))
    dw = np.full((128, 1024), np.nan, np.float32)
    _cpu.conv_weight_grad(dym, xpad, dw, (4, 4), (2, 2), (8, 8), threads=2)
    check(dw, dym.T.astype(np.float64) @ cols, 128, "conv_weight_grad")


# -- bad input: ValueError naming the argument, never a crash -------------------------------------

A = np.ones((4, 5), np.float32)
B = np.ones((5, 3), np.float32)
SQ = np.ones((4, 4), np.float32)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: _cpu.gemm(A.astype(np.float64), B, np.empty((4, 3), np.float32)), "a must be float32"),
        (lambda: _cpu.gemm(A, B[:, :2], np.empty((4, 2), np.float32)), "b must be C-contiguous"),
        (lambda: _cpu.gemm(A, B, np.empty((4, 4), np.float32)), "out must be (4, 3)"),
        (lambda: _cpu.gemm(A, B.T.copy(), np.empty((4, 3), np.float32)), "b has 3 rows"),
        (lambda: _cpu.gemm(A, B, np.empty(12, np.float32)), "out must be 2-D"),
        (lambda: _cpu.gemm(A, B, np.empty((4, 3), np.float32), isa="sse9"), "isa must be"),
        (lambda: _cpu.gemm(A, B, np.empty((4, 3), np.float32), threads=0), "threads must be >= 1"),
        (lambda: _cpu.gemm(SQ, np.ones((4, 4), np.float32), SQ), "out must not overlap a"),
        (lambda: _cpu.conv_forward(np.ones((1, 4, 4), np.float32), np.ones((2, 4), np.float32),
                                   np.empty((1, 2), np.float32), (2, 2), (1, 1), (3, 3)), "xpad must be 4-D"),
        (lambda: _cpu.conv_forward(np.ones((1, 4, 4, 1), np.float32), np.ones((2, 4), np.float32),
                                   np.empty((9, 2), np.float32), (2, 2), (1, 1), (4, 4)), "out_hw (4, 4) does not fit"),
        (lambda: _cpu.conv_forward(np.ones((1, 4, 4, 1), np.float32), np.ones((2, 5), np.float32),
                                   np.empty((9, 2), np.float32), (2, 2), (1, 1), (3, 3)), "wk must have kh*kw*C = 4"),
        (lambda: _cpu.conv_forward(np.ones((1, 4, 4, 1), np.float32), np.ones((2, 4), np.float32),
                                   np.empty((9, 2), np.float32), (2, 2), (0, 1), (3, 3)), "stride must be positive"),
        (lambda: _cpu.conv_weight_grad(np.ones((8, 2), np.float32), np.ones((1, 4, 4, 1), np.float32),
                                       np.empty((2, 4), np.float32), (2, 2), (1, 1), (3, 3)), "dym must have N*OH*OW = 9"),
    ],
)
def test_bad_input_names_the_argument(call, words):
    with pytest.raises(ValueError) as info:
        call()
    assert words in str(info.value), str(info.value)


def test_read_only_output_is_refused():
    out = np.empty((4, 3), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writable"):
        _cpu.gemm(A, B, out)


# -- the layout moves around the GEMMs -------------------------------------------------------------


@pytest.mark.parametrize("isa", ISAS)
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 40), st.integers(1, 20), st.integers(1, 20)),
       padding=st.tuples(st.integers(0, 2), st.integers(0, 2)), bias=st.booleans(), threads=st.integers(1, 3),
       seed=st.integers(0, 2**32 - 1))
@settings(**SETTINGS)
def test_layout_moves_match_numpy(isa, shape, padding, bias, threads, seed):
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    (ph, pw) = padding
    x = f32(rng, shape)
    out = np.full((n, h + 2 * ph, w + 2 * pw, c), np.nan, np.float32)
    _cpu.nchw_to_nhwc(x, out, padding, threads=threads, isa=isa)
    want = np.zeros_like(out)
    want[:, ph:ph + h, pw:pw + w, :] = x.transpose(0, 2, 3, 1)
    assert np.array_equal(out, want)
    ym = f32(rng, (n * h * w, c))
    b = f32(rng, (c,)) if bias else None
    y = np.full((n, c, h, w), np.nan, np.float32)
    _cpu.nhwc_to_nchw(ym, y, b, threads=threads, isa=isa)
    want = ym.reshape(n, h, w, c).transpose(0, 3, 1, 2) + (0 if b is None else b.reshape(c, 1, 1))
    assert np.array_equal(y, want)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: _cpu.nchw_to_nhwc(np.ones((1, 2, 3, 3), np.float32), np.empty((1, 3, 3, 3), np.float32)),
         "out must be (N, H + 2ph, W + 2pw, C) = (1, 3, 3, 2)"),
        (lambda: _cpu.nchw_to_nhwc(np.ones((1, 2, 3, 3), np.float32), np.empty((1, 3, 3, 2), np.float32), (-1, 0)),
         "padding must be >= 0"),
        (lambda: _cpu.nhwc_to_nchw(np.ones((9, 2), np.float32), np.empty((1, 2, 3, 3), np.float32),
                                   np.ones(3, np.float32)), "bias must be (2,)"),
        (lambda: _cpu.nhwc_to_nchw(np.ones((8, 2), np.float32), np.empty((1, 2, 3, 3), np.float32)),
         "ym must be (N*OH*OW, O) = (9, 2)"),
    ],
)
def test_layout_bad_input_names_the_argument(call, words):
    with pytest.raises(ValueError) as info:
        call()
    assert words in str(info.value), str(info.value)


# -- the input gradient by parity classes (no col2im) -----------------------------------------------

from pygan.ops import reference as R  # noqa: E402

grad_cases = st.tuples(
    st.integers(1, 3), st.integers(1, 40), st.integers(1, 9), st.integers(1, 9),  # n, c, h, w
    st.integers(1, 20), st.integers(1, 5), st.integers(1, 5),  # o, kh, kw
    st.integers(1, 3), st.integers(1, 3), st.integers(0, 2), st.integers(0, 2),  # stride, padding
)


@pytest.mark.parametrize("isa", ISAS)
@given(case=grad_cases, threads=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
@settings(**SETTINGS)
def test_conv_backward_data_matches_the_reference(isa, case, threads, seed):
    """Every geometry, kernels smaller than the stride (classes with no taps: zeros) included."""
    n, c, h, w, o, kh, kw, sh, sw, ph, pw = case
    if kh > h + 2 * ph or kw > w + 2 * pw:
        return
    rng = np.random.default_rng(seed)
    x_shape = (n, c, h, w)
    wt = f32(rng, (o, c, kh, kw))
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    dy = f32(rng, (n, o, oh, ow))
    out = np.full(x_shape, np.nan, np.float32)
    _cpu.conv_backward_data(dy, wt, out, (sh, sw), (ph, pw), threads=threads, isa=isa)
    want = R.conv2d_backward_data(dy.astype(np.float64), wt.astype(np.float64), x_shape, (sh, sw), (ph, pw))
    check(out, want, o * kh * kw, f"{isa} {case}")


def test_conv_backward_data_dcgan_layer_in_chunks():
    """A 64-image 32x32x64 gradient: processed a few images at a time (the cache-sized chunks)."""
    rng = np.random.default_rng(3)
    wt, dy = f32(rng, (128, 64, 4, 4)), f32(rng, (64, 128, 16, 16))
    out = np.full((64, 64, 32, 32), np.nan, np.float32)
    _cpu.conv_backward_data(dy, wt, out, (2, 2), (1, 1), threads=2)
    want = R.conv2d_backward_data(dy.astype(np.float64), wt.astype(np.float64), out.shape, (2, 2), (1, 1))
    check(out, want, 128 * 16, "dcgan layer")


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: _cpu.conv_backward_data(np.ones((1, 2, 3, 3), np.float32), np.ones((3, 1, 2, 2), np.float32),
                                         np.empty((1, 1, 4, 4), np.float32), (1, 1), (0, 0)), "w must be (O, C, kh, kw)"),
        (lambda: _cpu.conv_backward_data(np.ones((1, 2, 2, 2), np.float32), np.ones((2, 1, 2, 2), np.float32),
                                         np.empty((1, 1, 4, 4), np.float32), (1, 1), (0, 0)),
         "is not the output of a convolution"),
        (lambda: _cpu.conv_backward_data(np.ones((1, 2, 3, 3), np.float32), np.ones((2, 1, 2, 2), np.float32),
                                         np.empty((1, 1, 4, 4), np.float32), (0, 1), (0, 0)), "stride must be positive"),
        (lambda: _cpu.conv_backward_data(np.ones((2, 2, 3, 3), np.float32), np.ones((2, 1, 2, 2), np.float32),
                                         np.empty((1, 1, 4, 4), np.float32), (1, 1), (0, 0)), "dy must have out's batch"),
    ],
)
def test_conv_backward_data_bad_input_names_the_argument(call, words):
    with pytest.raises(ValueError) as info:
        call()
    assert words in str(info.value), str(info.value)
