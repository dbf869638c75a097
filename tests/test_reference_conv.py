"""conv2d and conv_transpose2d in pygan.ops.reference: the spec, checked against plain loops.

Forward results are compared with a direct nested-loop definition in float64 at atol 1e-12; every
backward is checked with pygan.gradcheck.check_backward in float64 (eps 1e-6, atol 1e-6, rtol 1e-4)
on shapes, strides, paddings and kernel sizes drawn by hypothesis.
"""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pygan.gradcheck import check_backward
from pygan.ops import reference as R

SETTINGS = settings(max_examples=25, deadline=None)


# -- the definitions, written plainly ------------------------------------------------------------


def conv2d_loops(x, w, b, stride, padding):
    """y[n,o,p,q] = b[o] + sum over c,i,j of x[n, c, p*sh - ph + i, q*sw - pw + j] * w[o,c,i,j]
    (terms outside x are zero)."""
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape
    (sh, sw), (ph, pw) = stride, padding
    OH, OW = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    y = np.zeros((N, O, OH, OW), x.dtype)
    for n in range(N):
        for o in range(O):
            for p in range(OH):
                for q in range(OW):
                    acc = 0.0 if b is None else b[o]
                    for c in range(C):
                        for i in range(kh):
                            for j in range(kw):
                                h, v = p * sh - ph + i, q * sw - pw + j
                                if 0 <= h < H and 0 <= v < W:
                                    acc += x[n, c, h, v] * w[o, c, i, j]
                    y[n, o, p, q] = acc
    return y


def conv_transpose2d_loops(x, w, b, stride, padding, output_padding):
    """Each input pixel x[n,c,h,v] adds x * w[c,o,i,j] to y[n, o, h*sh - ph + i, v*sw - pw + j]
    (targets outside y are dropped); y has PyTorch's size, then b[o] is added everywhere."""
    N, Cin, H, W = x.shape
    _, Cout, kh, kw = w.shape
    (sh, sw), (ph, pw), (oph, opw) = stride, padding, output_padding
    OH, OW = (H - 1) * sh - 2 * ph + kh + oph, (W - 1) * sw - 2 * pw + kw + opw
    y = np.zeros((N, Cout, OH, OW), x.dtype)
    for n in range(N):
        for c in range(Cin):
            for h in range(H):
                for v in range(W):
                    for o in range(Cout):
                        for i in range(kh):
                            for j in range(kw):
                                p, q = h * sh - ph + i, v * sw - pw + j
                                if 0 <= p < OH and 0 <= q < OW:
                                    y[n, o, p, q] += x[n, c, h, v] * w[c, o, i, j]
    if b is not None:
        y += b.reshape(-1, 1, 1)
    return y


# -- strategies -----------------------------------------------------------------------------------


@st.composite
def conv_geometry(draw, max_size=6):
    """A valid conv2d geometry: kernel, stride, padding per axis, and an input size >= kernel - 2*pad."""
    axes = []
    for _ in range(2):
        k = draw(st.integers(1, 4))
        s = draw(st.integers(1, 3))
        p = draw(st.integers(0, 2))
        size = draw(st.integers(max(1, k - 2 * p), max(max_size, k - 2 * p)))
        axes.append((k, s, p, size))
    (kh, sh, ph, H), (kw, sw, pw, W) = axes
    return dict(
        N=draw(st.integers(1, 3)),
        C=draw(st.integers(1, 3)),
        O=draw(st.integers(1, 3)),
        H=H,
        W=W,
        k=(kh, kw),
        stride=(sh, sw),
        padding=(ph, pw),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@st.composite
def conv_transpose_geometry(draw, max_size=4):
    """A valid conv_transpose2d geometry, output_padding < stride and a positive output size."""
    axes = []
    for _ in range(2):
        k = draw(st.integers(1, 4))
        s = draw(st.integers(1, 3))
        p = draw(st.integers(0, 2))
        op = draw(st.integers(0, s - 1))
        # output size (size-1)*s - 2p + k + op must be >= 1
        smallest = 1
        while (smallest - 1) * s - 2 * p + k + op < 1:
            smallest += 1
        size = draw(st.integers(smallest, max(smallest, max_size)))
        axes.append((k, s, p, op, size))
    (kh, sh, ph, oph, H), (kw, sw, pw, opw, W) = axes
    return dict(
        N=draw(st.integers(1, 3)),
        Cin=draw(st.integers(1, 3)),
        Cout=draw(st.integers(1, 3)),
        H=H,
        W=W,
        k=(kh, kw),
        stride=(sh, sw),
        padding=(ph, pw),
        output_padding=(oph, opw),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def conv_inputs(g, dtype=np.float64):
    rng = np.random.default_rng(g["seed"])
    x = rng.standard_normal((g["N"], g["C"], g["H"], g["W"])).astype(dtype)
    w = rng.standard_normal((g["O"], g["C"], *g["k"])).astype(dtype)
    b = rng.standard_normal(g["O"]).astype(dtype)
    return rng, x, w, b


def conv_transpose_inputs(g, dtype=np.float64):
    rng = np.random.default_rng(g["seed"])
    x = rng.standard_normal((g["N"], g["Cin"], g["H"], g["W"])).astype(dtype)
    w = rng.standard_normal((g["Cin"], g["Cout"], *g["k"])).astype(dtype)
    b = rng.standard_normal(g["Cout"]).astype(dtype)
    return rng, x, w, b


# -- forward against the loops --------------------------------------------------------------------


@SETTINGS
@given(g=conv_geometry(), bias=st.booleans())
def test_conv2d_forward_matches_loops(g, bias):
    """conv2d_forward == conv2d_loops to atol 1e-12 (float64)."""
    _, x, w, b = conv_inputs(g)
    b = b if bias else None
    y = R.conv2d_forward(x, w, b, g["stride"], g["padding"])
    np.testing.assert_allclose(y, conv2d_loops(x, w, b, g["stride"], g["padding"]), rtol=0, atol=1e-12)
    assert y.flags.c_contiguous and y.dtype == np.float64


@pytest.mark.parametrize(
    "x_shape, w_shape, stride, padding",
    [
        ((2, 3, 5, 5), (4, 3, 5, 5), 1, 0),  # kernel == input: one output pixel
        ((2, 2, 3, 4), (3, 2, 5, 6), (1, 1), (1, 1)),  # kernel == padded input
        ((1, 2, 7, 5), (2, 2, 3, 1), (2, 3), (0, 1)),  # non-square kernel, stride, padding
        ((2, 1, 8, 8), (3, 1, 4, 4), 2, 1),  # DCGAN-style 4x4 s2 p1
        ((1, 2, 2, 2), (1, 2, 1, 1), 1, 3),  # padding larger than the kernel
    ],
)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_forward_matches_loops_edge_shapes(x_shape, w_shape, stride, padding, bias):
    """Hand-picked edge geometries, atol 1e-12 (float64); plain ints are accepted for pairs."""
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0]) if bias else None
    y = R.conv2d_forward(x, w, b, stride, padding)
    expected = conv2d_loops(x, w, b, R._pair(stride), R._pair(padding))
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-12)


@SETTINGS
@given(g=conv_transpose_geometry(), bias=st.booleans())
def test_conv_transpose2d_forward_matches_loops(g, bias):
    """conv_transpose2d_forward == conv_transpose2d_loops to atol 1e-12 (float64), incl. output_padding."""
    _, x, w, b = conv_transpose_inputs(g)
    b = b if bias else None
    y = R.conv_transpose2d_forward(x, w, b, g["stride"], g["padding"], g["output_padding"])
    expected = conv_transpose2d_loops(x, w, b, g["stride"], g["padding"], g["output_padding"])
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-12)
    assert y.flags.c_contiguous


def test_conv_transpose2d_dcgan_first_layer_matches_loops():
    """The generator's first layer: 1x1 noise to 4x4, stride 1, padding 0 (atol 1e-12)."""
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((2, 5, 1, 1)), rng.standard_normal((5, 3, 4, 4)), rng.standard_normal(3)
    y = R.conv_transpose2d_forward(x, w, b, 1, 0, 0)
    np.testing.assert_allclose(y, conv_transpose2d_loops(x, w, b, (1, 1), (0, 0), (0, 0)), rtol=0, atol=1e-12)


# -- adjointness ----------------------------------------------------------------------------------


@SETTINGS
@given(g=conv_geometry())
def test_conv_transpose2d_is_adjoint_of_conv2d(g):
    """<conv2d(x, w), y> == <x, conv_transpose2d(y, w)> with output_padding chosen so the
    transpose lands on x's shape (rtol 1e-10, float64)."""
    rng, x, w, _ = conv_inputs(g)
    y = rng.standard_normal(R.conv2d_forward(x, w, None, g["stride"], g["padding"]).shape)
    (sh, sw), (ph, pw), (kh, kw) = g["stride"], g["padding"], g["k"]
    OH, OW = y.shape[2:]
    output_padding = (g["H"] - ((OH - 1) * sh - 2 * ph + kh), g["W"] - ((OW - 1) * sw - 2 * pw + kw))
    assert all(0 <= op < s for op, s in zip(output_padding, g["stride"]))
    xt = R.conv_transpose2d_forward(y, w, None, g["stride"], g["padding"], output_padding)
    assert xt.shape == x.shape
    lhs = np.vdot(R.conv2d_forward(x, w, None, g["stride"], g["padding"]), y)
    rhs = np.vdot(x, xt)
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-10)


# -- backward against check_backward --------------------------------------------------------------


@SETTINGS
@given(g=conv_geometry(), bias=st.booleans())
def test_conv2d_backward_gradcheck(g, bias):
    """conv2d_backward's (dx, dw, db) pass check_backward (float64, atol 1e-6, rtol 1e-4)."""
    rng, x, w, b = conv_inputs(g)
    s, p = g["stride"], g["padding"]
    if bias:
        check_backward(
            lambda x, w, b: R.conv2d_forward(x, w, b, s, p),
            lambda x, w, b, dy: R.conv2d_backward(x, w, dy, s, p, True),
            (x, w, b),
            rng=rng,
        )
    else:
        check_backward(
            lambda x, w: R.conv2d_forward(x, w, None, s, p),
            lambda x, w, dy: R.conv2d_backward(x, w, dy, s, p, False)[:2],
            (x, w),
            rng=rng,
        )


@SETTINGS
@given(g=conv_geometry())
def test_conv2d_backward_data_and_weight_compose_backward(g):
    """conv2d_backward == (conv2d_backward_data, conv2d_backward_weight, dy.sum((0,2,3))), atol 1e-12."""
    rng, x, w, _ = conv_inputs(g)
    s, p = g["stride"], g["padding"]
    dy = rng.standard_normal(R.conv2d_forward(x, w, None, s, p).shape)
    dx, dw, db = R.conv2d_backward(x, w, dy, s, p, True)
    np.testing.assert_allclose(dx, R.conv2d_backward_data(dy, w, x.shape, s, p), rtol=0, atol=1e-12)
    np.testing.assert_allclose(dw, R.conv2d_backward_weight(x, dy, w.shape, s, p), rtol=0, atol=1e-12)
    np.testing.assert_allclose(db, dy.sum((0, 2, 3)), rtol=0, atol=1e-12)
    assert R.conv2d_backward(x, w, dy, s, p, False)[2] is None


@SETTINGS
@given(g=conv_transpose_geometry(), bias=st.booleans())
def test_conv_transpose2d_backward_gradcheck(g, bias):
    """conv_transpose2d_backward incl. output_padding passes check_backward (float64, atol 1e-6, rtol 1e-4)."""
    rng, x, w, b = conv_transpose_inputs(g)
    s, p, op = g["stride"], g["padding"], g["output_padding"]
    if bias:
        check_backward(
            lambda x, w, b: R.conv_transpose2d_forward(x, w, b, s, p, op),
            lambda x, w, b, dy: R.conv_transpose2d_backward(x, w, dy, s, p, op, True),
            (x, w, b),
            rng=rng,
        )
    else:
        check_backward(
            lambda x, w: R.conv_transpose2d_forward(x, w, None, s, p, op),
            lambda x, w, dy: R.conv_transpose2d_backward(x, w, dy, s, p, op, False)[:2],
            (x, w),
            rng=rng,
        )
        assert R.conv_transpose2d_backward(x, w, x_like_dy(x, w, s, p, op, rng), s, p, op, False)[2] is None


def x_like_dy(x, w, s, p, op, rng):
    return rng.standard_normal(R.conv_transpose2d_forward(x, w, None, s, p, op).shape)


def test_conv_transpose2d_backward_is_conv_computations():
    """convT's backward-data is conv2d_forward(dy, w) and backward-weight is
    conv2d_backward_weight(dy, x, w.shape), roles swapped (atol 1e-12)."""
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((3, 2, 4, 3))
    s, p, op = (2, 3), (1, 0), (1, 2)
    dy = x_like_dy(x, w, s, p, op, rng)
    dx, dw, db = R.conv_transpose2d_backward(x, w, dy, s, p, op, True)
    np.testing.assert_allclose(dx, R.conv2d_forward(dy, w, None, s, p), rtol=0, atol=1e-12)
    np.testing.assert_allclose(dw, R.conv2d_backward_weight(dy, x, w.shape, s, p), rtol=0, atol=1e-12)
    np.testing.assert_allclose(db, dy.sum((0, 2, 3)), rtol=0, atol=1e-12)


# -- dtypes, freshness, NaN -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_dtypes_preserved_and_outputs_fresh(dtype):
    """float32 in -> float32 out, float64 -> float64; outputs C-contiguous, not views of inputs."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 6, 6)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    y = R.conv2d_forward(x, w, b, 2, 1)
    dy = rng.standard_normal(y.shape).astype(dtype)
    outs = [y, *R.conv2d_backward(x, w, dy, 2, 1, True)]
    outs += [R.conv2d_backward_data(dy, w, x.shape, 2, 1), R.conv2d_backward_weight(x, dy, w.shape, 2, 1)]
    wt = rng.standard_normal((3, 4, 3, 3)).astype(dtype)
    yt = R.conv_transpose2d_forward(x, wt, b, 2, 1, 1)
    dyt = rng.standard_normal(yt.shape).astype(dtype)
    outs += [yt, *R.conv_transpose2d_backward(x, wt, dyt, 2, 1, 1, True)]
    for out in outs:
        assert out.dtype == dtype
        assert out.flags.c_contiguous
        for a in (x, w, b, dy, wt, dyt):
            assert not np.shares_memory(out, a)


def test_conv_float32_close_to_float64():
    """float32 conv at a DCGAN-like shape agrees with float64 to rtol 1e-4 / atol 1e-4."""
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((4, 16, 8, 8)), rng.standard_normal((8, 16, 4, 4)) * 0.1
    y64 = R.conv2d_forward(x, w, None, 2, 1)
    y32 = R.conv2d_forward(x.astype(np.float32), w.astype(np.float32), None, 2, 1)
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-4)


def test_nan_propagates_through_conv():
    """A NaN input pixel makes exactly the outputs whose window covers it NaN (no silent clipping),
    and a NaN in dy reaches dx and dw."""
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((1, 2, 6, 6)), rng.standard_normal((3, 2, 3, 3))
    x[0, 1, 2, 3] = np.nan
    y = R.conv2d_forward(x, w, None, 1, 0)
    covered = np.zeros(y.shape[2:], bool)
    covered[0:3, 1:4] = True  # output (p, q) sees input (p..p+2, q..q+2)
    assert np.isnan(y[:, :, covered]).all()
    assert not np.isnan(y[:, :, ~covered]).any()
    dy = rng.standard_normal(y.shape)
    dy[0, 0, 1, 1] = np.nan
    dx, dw, _ = R.conv2d_backward(np.nan_to_num(x), w, dy, 1, 0, False)
    assert np.isnan(dx).any() and np.isnan(dw).any()
    yt = R.conv_transpose2d_forward(x, rng.standard_normal((2, 3, 3, 3)), None, 1, 0, 0)
    assert np.isnan(yt).any()


def test_conv_no_warnings():
    """The conv ops emit no warnings on ordinary input."""
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((2, 3, 8, 8)).astype(np.float32), rng.standard_normal((4, 3, 4, 4)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = R.conv2d_forward(x, w, None, 2, 1)
        R.conv2d_backward(x, w, y, 2, 1, True)


# -- optional cross-check against PyTorch ---------------------------------------------------------


def test_conv_against_torch_dcgan_shapes():
    """Forward and backward of conv2d (64,64,16,16) w (128,64,4,4) s2 p1 and conv_transpose2d
    (64,256,4,4) w (256,128,4,4) s2 p1 match PyTorch in float64 (rtol 1e-9, atol 1e-9)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    f = torch.nn.functional

    def T(a):
        return torch.tensor(a, requires_grad=True)

    x, w, b = rng.standard_normal((64, 64, 16, 16)), rng.standard_normal((128, 64, 4, 4)), rng.standard_normal(128)
    y = R.conv2d_forward(x, w, b, 2, 1)
    dy = rng.standard_normal(y.shape)
    tx, tw, tb = T(x), T(w), T(b)
    ty = f.conv2d(tx, tw, tb, 2, 1)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-9, atol=1e-9)
    for ours, theirs in zip(R.conv2d_backward(x, w, dy, 2, 1, True), (tx.grad, tw.grad, tb.grad)):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-9, atol=1e-9)

    x, w, b = rng.standard_normal((64, 256, 4, 4)), rng.standard_normal((256, 128, 4, 4)), rng.standard_normal(128)
    y = R.conv_transpose2d_forward(x, w, b, 2, 1, 0)
    dy = rng.standard_normal(y.shape)
    tx, tw, tb = T(x), T(w), T(b)
    ty = f.conv_transpose2d(tx, tw, tb, 2, 1, 0)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-9, atol=1e-9)
    for ours, theirs in zip(R.conv_transpose2d_backward(x, w, dy, 2, 1, 0, True), (tx.grad, tw.grad, tb.grad)):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-9, atol=1e-9)


def test_conv_transpose_against_torch_output_padding_and_noise_layer():
    """conv_transpose2d with output_padding (3,2) stride (3,4), and the 1x1 -> 4x4 noise layer,
    match PyTorch in float64 (rtol 1e-9, atol 1e-9)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    for x_shape, w_shape, s, p, op in [((3, 4, 5, 3), (4, 2, 4, 5), (4, 3), (1, 2), (3, 2)), ((8, 100, 1, 1), (100, 16, 4, 4), 1, 0, 0)]:
        x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[1])
        tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
        ty = torch.nn.functional.conv_transpose2d(tx, tw, tb, s, p, op)
        y = R.conv_transpose2d_forward(x, w, b, s, p, op)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-9, atol=1e-9)
        dy = rng.standard_normal(y.shape)
        ty.backward(torch.tensor(dy))
        for ours, theirs in zip(R.conv_transpose2d_backward(x, w, dy, s, p, op, True), (tx.grad, tw.grad, tb.grad)):
            np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-9, atol=1e-9)
