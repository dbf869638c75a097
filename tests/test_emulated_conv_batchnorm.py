"""Issue 5 kernels (csrc/conv2d.cu, csrc/batchnorm.cu) under host emulation, against the reference.

Every variant of every computation runs in pygan._emu (the CUDA sources compiled by g++ with
csrc/emu/cuda_emu.h) through the same wrapper code the CUDA backend uses
(pygan/ops/native_conv_bn.py), on float32 inputs; the reference runs in float64 on the same
values. Emulation runs one std::thread per CUDA thread, so shapes stay small (N <= 2, C <= 5,
H, W <= 9).

Tolerances (|out - ref| <= atol + rtol * |ref|):
  conv2d / conv_transpose2d, all three computations: atol 1e-4, rtol 1e-4 (float32 sums of at
      most a few hundred products of N(0, 1) values); every variant but the TF32 tensor-core ones:
      5 (wmma) cannot be emulated (tests/test_cuda_conv_batchnorm.py checks it on a GPU), 9
      (mma.sync) is checked at its TF32 tolerance in tests/test_emulated_conv_fast.py;
  batch norm (+ leaky ReLU): atol 1e-4, rtol 1e-4 on y, mean, rstd, running stats, dx, dgamma, dbeta.
"""

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pygan.ops import reference as R  # noqa: E402

emu = pytest.importorskip("pygan._emu", reason="pygan._emu (host-emulation module) not built")
from pygan.ops.native_conv_bn import Native  # noqa: E402

ATOL = RTOL = 1e-4
CONV_NAMES = emu.conv2d_variants()
# tensor-core (TF32) variants, tested at their own tolerance: 5 (wmma) is nvcc only (selecting it
# under emulation raises ValueError); 9 (mma.sync) runs emulated, in tests/test_emulated_conv_fast.py
TF32_VARIANTS = [v for v, name in enumerate(CONV_NAMES, 1) if "tf32" in name.lower()]
TF32_SKIP = {5: "variant 5 (tf32, wmma) needs a GPU: its tensor-core instructions are not emulated",
             9: "variant 9 (tf32, mma.sync) is checked at the TF32 tolerance in test_emulated_conv_fast.py"}
CONV_VARIANTS = [
    pytest.param(v, marks=pytest.mark.skip(reason=TF32_SKIP[v])) if v in TF32_VARIANTS else v
    for v in range(1, len(CONV_NAMES) + 1)
]
EMULATED_CONV_VARIANTS = [v for v in range(1, len(CONV_NAMES) + 1) if v not in TF32_VARIANTS]
BN_VARIANTS = list(range(1, len(emu.batch_norm_variants()) + 1))
SETTINGS = dict(deadline=None, derandomize=False, suppress_health_check=[HealthCheck.too_slow])


def backend(conv=0, bn=0):
    """Outputs and workspaces poisoned (NaN) before every kernel call: an unwritten element fails."""
    return Native(emu, np, variants={"conv2d": conv, "batch_norm": bn}, poison=True)


def close(out, ref, what):
    assert out is not None and ref is not None, what
    assert out.shape == ref.shape, f"{what}: shape {out.shape} != {ref.shape}"
    assert out.dtype == np.float32, f"{what}: dtype {out.dtype}"
    err = np.abs(out.astype(np.float64) - ref)
    bad = ~(err <= ATOL + RTOL * np.abs(ref))  # NaN (an unwritten, poisoned element) is bad
    assert not bad.any(), f"{what}: max error {np.nanmax(err, initial=np.inf):.3g} at {np.argwhere(bad)[0]}"


def f32(rng, shape, scale=1.0, shift=0.0):
    return (rng.standard_normal(shape) * scale + shift).astype(np.float32)


# -- conv2d ------------------------------------------------------------------------------------------


def check_conv(rng, variant, n, c, h, w, o, kh, kw, stride, padding, bias=True):
    x, wt = f32(rng, (n, c, h, w)), f32(rng, (o, c, kh, kw))
    b = f32(rng, (o,)) if bias else None
    be = backend(conv=variant)
    x64, w64 = x.astype(np.float64), wt.astype(np.float64)
    b64 = None if b is None else b.astype(np.float64)
    tag = f"variant {variant} x{x.shape} w{wt.shape} s{stride} p{padding}"
    y_ref = R.conv2d_forward(x64, w64, b64, stride, padding)
    close(be.conv2d_forward(x, wt, b, stride, padding), y_ref, "conv2d_forward " + tag)
    dy = f32(rng, y_ref.shape)
    dx_ref, dw_ref, db_ref = R.conv2d_backward(x64, w64, dy.astype(np.float64), stride, padding, bias)
    dx, dw, db = be.conv2d_backward(x, wt, dy, stride, padding, bias)
    close(dx, dx_ref, "conv2d dx " + tag)
    close(dw, dw_ref, "conv2d dw " + tag)
    if bias:
        close(db, db_ref, "conv2d db " + tag)
    else:
        assert db is None
    close(be.conv2d_backward_data(dy, wt, x.shape, stride, padding), dx_ref, "conv2d_backward_data " + tag)
    close(be.conv2d_backward_weight(x, dy, wt.shape, stride, padding), dw_ref, "conv2d_backward_weight " + tag)


def check_conv_transpose(rng, variant, n, cin, h, w, cout, kh, kw, stride, padding, output_padding, bias=True):
    x, wt = f32(rng, (n, cin, h, w)), f32(rng, (cin, cout, kh, kw))
    b = f32(rng, (cout,)) if bias else None
    be = backend(conv=variant)
    x64, w64 = x.astype(np.float64), wt.astype(np.float64)
    b64 = None if b is None else b.astype(np.float64)
    tag = f"variant {variant} x{x.shape} w{wt.shape} s{stride} p{padding} op{output_padding}"
    y_ref = R.conv_transpose2d_forward(x64, w64, b64, stride, padding, output_padding)
    close(be.conv_transpose2d_forward(x, wt, b, stride, padding, output_padding), y_ref, "convT forward " + tag)
    dy = f32(rng, y_ref.shape)
    refs = R.conv_transpose2d_backward(x64, w64, dy.astype(np.float64), stride, padding, output_padding, bias)
    outs = be.conv_transpose2d_backward(x, wt, dy, stride, padding, output_padding, bias)
    for name, out, ref in zip(("dx", "dw", "db"), outs, refs):
        if ref is None:
            assert out is None
        else:
            close(out, ref, f"convT {name} " + tag)


@st.composite
def conv_cases(draw):
    n = draw(st.integers(1, 2))
    c = draw(st.sampled_from([1, 2, 3, 5]))
    o = draw(st.integers(1, 5))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    kh = draw(st.integers(1, min(5, h + 2 * ph)))
    kw = draw(st.integers(1, min(5, w + 2 * pw)))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return n, c, h, w, o, kh, kw, (sh, sw), (ph, pw)


@pytest.mark.parametrize("variant", CONV_VARIANTS)
@settings(max_examples=10, **SETTINGS)
@given(case=conv_cases(), seed=st.integers(0, 2**32 - 1), bias=st.booleans())
def test_conv2d_hypothesis(variant, case, seed, bias):
    check_conv(np.random.default_rng(seed), variant, *case, bias=bias)


@st.composite
def conv_transpose_cases(draw):
    n = draw(st.integers(1, 2))
    cin = draw(st.integers(1, 5))
    cout = draw(st.sampled_from([1, 3, 4]))
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1))
    oph, opw = draw(st.integers(0, sh - 1)), draw(st.integers(0, sw - 1))
    # the output must be positive and the conv it transposes must be valid
    if (h - 1) * sh - 2 * ph + kh + oph <= 0 or (w - 1) * sw - 2 * pw + kw + opw <= 0:
        ph = pw = 0
    return n, cin, h, w, cout, kh, kw, (sh, sw), (ph, pw), (oph, opw)


@pytest.mark.parametrize("variant", CONV_VARIANTS)
@settings(max_examples=8, **SETTINGS)
@given(case=conv_transpose_cases(), seed=st.integers(0, 2**32 - 1), bias=st.booleans())
def test_conv_transpose2d_hypothesis(variant, case, seed, bias):
    check_conv_transpose(np.random.default_rng(seed), variant, *case, bias=bias)


CONV_EDGE_CASES = {
    # n, c, h, w, o, kh, kw, stride, padding
    "kernel-equals-padded-input": (2, 3, 3, 4, 2, 5, 6, (1, 1), (1, 1)),
    "non-square-everything": (1, 2, 7, 4, 3, 3, 2, (2, 1), (0, 1)),
    "stride-greater-than-kernel": (2, 2, 9, 8, 3, 2, 1, (3, 4), (1, 0)),
    "one-channel-dcgan-edge": (2, 1, 8, 8, 4, 4, 4, (2, 2), (1, 1)),
    "three-channels-dcgan-edge": (1, 3, 8, 8, 5, 4, 4, (2, 2), (1, 1)),
    "dcgan-last-d-layer-4x4-s1-p0": (2, 5, 4, 4, 1, 4, 4, (1, 1), (0, 0)),
    "m-over-16-uses-64x64-tiles": (2, 3, 6, 6, 20, 3, 3, (1, 1), (1, 1)),
    "split-k-backward-weight": (2, 2, 9, 9, 3, 3, 3, (1, 1), (1, 1)),
    # contiguous, 16-byte-aligned runs of 4 along K and N: the float4 path of variant 4
    "pointwise-1x1-float4-loads": (2, 4, 8, 8, 20, 1, 1, (1, 1), (0, 0)),
    "2x2-s1-float4-loads": (2, 2, 8, 8, 6, 2, 2, (1, 1), (0, 0)),
}


@pytest.mark.parametrize("variant", CONV_VARIANTS)
@pytest.mark.parametrize("case", list(CONV_EDGE_CASES), ids=list(CONV_EDGE_CASES))
def test_conv2d_edge_cases(rng, variant, case):
    check_conv(rng, variant, *CONV_EDGE_CASES[case])


CONVT_EDGE_CASES = {
    # n, cin, h, w, cout, kh, kw, stride, padding, output_padding
    "dcgan-first-g-layer-1x1-to-4x4": (2, 5, 1, 1, 4, 4, 4, (1, 1), (0, 0), (0, 0)),
    "dcgan-g-4x4-s2-p1-to-3-channels": (1, 4, 4, 4, 3, 4, 4, (2, 2), (1, 1), (0, 0)),
    "dcgan-g-to-1-channel": (2, 3, 4, 4, 1, 4, 4, (2, 2), (1, 1), (0, 0)),
    "output-padding-non-square": (1, 2, 3, 4, 3, 3, 2, (3, 2), (1, 0), (2, 1)),
    "m-over-16": (1, 2, 3, 3, 17, 3, 3, (2, 2), (1, 1), (1, 1)),
}


@pytest.mark.parametrize("variant", CONV_VARIANTS)
@pytest.mark.parametrize("case", list(CONVT_EDGE_CASES), ids=list(CONVT_EDGE_CASES))
def test_conv_transpose2d_edge_cases(rng, variant, case):
    check_conv_transpose(rng, variant, *CONVT_EDGE_CASES[case])


# Variant 6 (stride-aware backward-data) at DCGAN's geometry: 4x4 kernels, stride 2, padding 1 for
# every up/down-sampling layer, stride 1 padding 0 for G's first and D's last layer; the spatial sizes
# of a 64x64 DCGAN, channels and batch cut down so that emulation stays fast.
STRIDE_AWARE = [v for v, name in enumerate(CONV_NAMES, 1) if "stride-aware" in name]
DCGAN_G_LAYERS = {  # conv_transpose2d: n, cin, h, w, cout  (4x4 kernels)
    "g1-1x1-to-4x4-s1-p0": (2, 8, 1, 1, 6, (1, 1), (0, 0)),
    "g2-4x4-to-8x8": (2, 6, 4, 4, 5, (2, 2), (1, 1)),
    "g3-8x8-to-16x16": (2, 5, 8, 8, 4, (2, 2), (1, 1)),
    "g4-16x16-to-32x32": (1, 4, 16, 16, 4, (2, 2), (1, 1)),
    "g5-32x32-to-64x64-rgb": (1, 4, 32, 32, 3, (2, 2), (1, 1)),
}
DCGAN_D_LAYERS = {  # conv2d (its input gradient is backward-data): n, c, h, w, o
    "d1-rgb-64x64-to-32x32": (1, 3, 64, 64, 4, (2, 2), (1, 1)),
    "d2-32x32-to-16x16": (1, 4, 32, 32, 5, (2, 2), (1, 1)),
    "d4-8x8-to-4x4": (2, 6, 8, 8, 8, (2, 2), (1, 1)),
    "d5-4x4-to-1x1-s1-p0": (2, 8, 4, 4, 1, (1, 1), (0, 0)),
}


def test_the_stride_aware_variant_is_not_the_default(rng):
    """At stride 2 the default (variant 0 = 3) runs backward-data as one GEMM over all positions,
    variant 6 as four (one per phase); both give the reference's dx (poisoned before each call)."""
    assert len(STRIDE_AWARE) == 1
    wt, dy = f32(rng, (2, 3, 4, 4)), f32(rng, (2, 2, 4, 4))
    ref = R.conv2d_backward_data(dy.astype(np.float64), wt.astype(np.float64), (2, 3, 8, 8), (2, 2), (1, 1))
    for variant, launches in ((0, 1), (STRIDE_AWARE[0], 4)):
        dx = np.full((2, 3, 8, 8), np.nan, np.float32)
        before = emu._emulation_launches()
        emu.conv2d_backward_data(dy, wt, dx, (2, 2), (1, 1), variant, 0)
        assert emu._emulation_launches() - before == launches, variant
        close(dx, ref, f"backward-data variant {variant}")


@pytest.mark.parametrize("layer", list(DCGAN_G_LAYERS), ids=list(DCGAN_G_LAYERS))
def test_stride_aware_conv_transpose_at_dcgan_generator_shapes(rng, layer):
    n, cin, h, w, cout, stride, padding = DCGAN_G_LAYERS[layer]
    check_conv_transpose(rng, STRIDE_AWARE[0], n, cin, h, w, cout, 4, 4, stride, padding, (0, 0), bias=False)


@pytest.mark.parametrize("layer", list(DCGAN_D_LAYERS), ids=list(DCGAN_D_LAYERS))
def test_stride_aware_backward_data_at_dcgan_discriminator_shapes(rng, layer):
    n, c, h, w, o, stride, padding = DCGAN_D_LAYERS[layer]
    check_conv(rng, STRIDE_AWARE[0], n, c, h, w, o, 4, 4, stride, padding, bias=False)


@pytest.mark.parametrize(
    "shape, stride, padding, phases",
    [
        # x (n, c, h, w), w (o, c, kh, kw); phases: sh*sw less those with no output position
        (((2, 3, 8, 8), (4, 3, 4, 4)), (2, 2), (1, 1), 4),
        (((1, 2, 7, 5), (3, 2, 3, 2)), (3, 2), (1, 0), 6),
        (((1, 2, 9, 8), (3, 2, 2, 1)), (3, 4), (1, 0), 12),  # kw < sw: phases no tap reaches (dx = 0)
        (((1, 2, 2, 1), (2, 2, 1, 1)), (3, 3), (0, 0), 2),  # h, w < stride: empty phases launch nothing
        (((2, 2, 5, 5), (2, 2, 3, 3)), (1, 1), (1, 1), 1),
    ],
)
def test_stride_aware_backward_data_one_gemm_per_phase(rng, shape, stride, padding, phases):
    """dx from one launch per output phase, each against the float64 reference with dx poisoned
    (NaN) first: every phase's GEMM writes its own positions (those no tap reaches as 0)."""
    (xs, ws) = shape
    wt = f32(rng, ws)
    y = R.conv2d_forward(np.zeros(xs), wt.astype(np.float64), None, stride, padding)
    dy = f32(rng, y.shape)
    ref = R.conv2d_backward_data(dy.astype(np.float64), wt.astype(np.float64), xs, stride, padding)
    dx = np.full(xs, np.nan, np.float32)
    before = emu._emulation_launches()
    emu.conv2d_backward_data(dy, wt, dx, stride, padding, STRIDE_AWARE[0], 0)
    assert emu._emulation_launches() - before == phases
    close(dx, ref, f"stride-aware backward-data x{xs} w{ws} s{stride} p{padding}")


# Variant 7: variant 6 plus one block per output element (a fixed-order block reduction over K) when
# the output is small and K long: fewer GEMM tiles than SMs (4 under emulation), at most 32 outputs
# per SM, K >= 256. _emulation_recent_launches() says which kernel ran.
SMALL_OUTPUT = [v for v, name in enumerate(CONV_NAMES, 1) if "one block per output" in name]


def last_kernel():
    return emu._emulation_recent_launches()[-1]


def test_small_output_variant_at_dcgan_discriminator_last_layer(rng):
    """D's last layer (4x4 kernel over a 4x4 map, one output channel; 64 input channels here, 512 in
    DCGAN): the forward runs as one block per output (2 here, the batch), against the float64
    reference with y poisoned, bitwise the same run to run; variant 3 runs one GEMM tile instead."""
    assert len(SMALL_OUTPUT) == 1
    v = SMALL_OUTPUT[0]
    x, wt, b = f32(rng, (2, 64, 4, 4)), f32(rng, (1, 64, 4, 4)), f32(rng, (1,))
    ref = R.conv2d_forward(x.astype(np.float64), wt.astype(np.float64), b.astype(np.float64), 1, 0)
    be = backend(conv=v)
    y = be.conv2d_forward(x, wt, b, 1, 0)
    assert last_kernel() == ("dot_per_block<P>", 2)
    close(y, ref, "variant 7 forward, D's last layer")
    assert np.array_equal(be.conv2d_forward(x, wt, b, 1, 0), y)
    close(backend(conv=3).conv2d_forward(x, wt, b, 1, 0), ref, "variant 3 forward, D's last layer")
    assert last_kernel() == ("kern", 1)
    check_conv(rng, v, 2, 64, 4, 4, 1, 4, 4, (1, 1), (0, 0))  # and the rest of its backward


def test_small_output_variant_backward_data_and_the_rule(rng):
    """Backward-data of a small input (2 channels of 2x2) under 64 output channels (K = 256) runs
    one block per dx element; a short K (27) or a large output keeps the tiled GEMM."""
    v = SMALL_OUTPUT[0]
    wt, dy = f32(rng, (64, 2, 2, 2)), f32(rng, (1, 64, 1, 1))
    ref = R.conv2d_backward_data(dy.astype(np.float64), wt.astype(np.float64), (1, 2, 2, 2), 1, 0)
    dx = np.full((1, 2, 2, 2), np.nan, np.float32)
    emu.conv2d_backward_data(dy, wt, dx, (1, 1), (0, 0), v, 0)
    assert last_kernel() == ("dot_per_block<P>", 8)
    close(dx, ref, "variant 7 backward-data, small dx")
    for xs, ws in (((2, 3, 8, 8), (20, 3, 3, 3)),  # K = 27
                   ((2, 64, 12, 12), (1, 64, 4, 4))):  # 2 * 81 outputs > 32 per SM
        x, wt = f32(rng, xs), f32(rng, ws)
        y = np.full((xs[0], ws[0], xs[2] - ws[2] + 1, xs[3] - ws[3] + 1), np.nan, np.float32)
        emu.conv2d_forward(x, wt, None, y, (1, 1), (0, 0), v, 0)
        assert last_kernel()[0] == "kern", (xs, ws)
        close(y, R.conv2d_forward(x.astype(np.float64), wt.astype(np.float64), None, 1, 0), f"variant 7 {xs} {ws}")


@pytest.mark.parametrize("variant", CONV_VARIANTS)
def test_conv2d_backward_weight_is_deterministic(rng, variant):
    x, dy = f32(rng, (2, 2, 9, 9)), f32(rng, (2, 3, 9, 9))
    n_ws = emu.conv2d_backward_weight_workspace_size(x.shape, (3, 2, 3, 3), (1, 1), (1, 1), variant)
    if variant > 1:
        assert n_ws > 0, "this shape is meant to exercise the split-K path"
    be = backend(conv=variant)
    a = be.conv2d_backward_weight(x, dy, (3, 2, 3, 3), (1, 1), (1, 1))
    b = be.conv2d_backward_weight(x, dy, (3, 2, 3, 3), (1, 1), (1, 1))
    assert np.array_equal(a, b)


@pytest.mark.parametrize("variant", [2, 3, 4])
@pytest.mark.parametrize("k", [2**31 - 2, 2**31 - 100, 2**31 - 129])
def test_conv2d_split_plan_within_128_of_2_to_the_31(variant, k):
    """Backward-weight's split-K plan for a reduction K = N*OH*OW within 128 of 2^31 (x of shape
    (1, 1, 1, K), a 1x1 kernel: no array is allocated). 256 / one tile wants 64 splits: chunks of
    ceil(ceil(K / 64) / 16) * 16, and ceil(K / chunk) splits of one weight each. With 32-bit
    ceil_div, K + 63 wrapped and the plan came out as no split at all (workspace 0)."""
    chunk = -(-(-(-k // 64)) // 16) * 16
    splits = -(-k // chunk)
    assert 1 < splits <= 64
    assert emu.conv2d_backward_weight_workspace_size([1, 1, 1, k], [1, 1, 1, 1], 1, 0, variant) == splits


def test_conv2d_variant_names_and_bad_variant():
    assert len(emu.conv2d_variants()) == len(CONV_VARIANTS) >= 5
    assert TF32_VARIANTS == [5, 9]
    assert emu.variants()["conv2d"] == emu.conv2d_variants()
    x, w = np.ones((1, 1, 3, 3), np.float32), np.ones((1, 1, 2, 2), np.float32)
    y = np.empty((1, 1, 2, 2), np.float32)
    with pytest.raises(ValueError, match="variant"):
        emu.conv2d_forward(x, w, None, y, (1, 1), (0, 0), 99, 0)


def test_conv2d_tf32_variant_refused_under_emulation():
    x, w = np.ones((1, 1, 3, 3), np.float32), np.ones((1, 1, 2, 2), np.float32)
    y = np.empty((1, 1, 2, 2), np.float32)
    msg = r"variant 5 \(tf32\) needs a GPU: tensor-core instructions are not emulated"
    with pytest.raises(ValueError, match=msg):
        emu.conv2d_forward(x, w, None, y, (1, 1), (0, 0), 5, 0)
    with pytest.raises(ValueError, match=msg):
        emu.conv2d_backward_data(y, w, np.empty_like(x), (1, 1), (0, 0), 5, 0)
    with pytest.raises(ValueError, match=msg):
        emu.conv2d_backward_weight_workspace_size(x.shape, w.shape, (1, 1), (0, 0), 5)
    with pytest.raises(ValueError, match=msg):
        backend(conv=5).conv2d_backward_weight(x, y, w.shape, (1, 1), (0, 0))


def test_conv2d_bindings_validate_shapes():
    x, w = np.ones((1, 2, 5, 5), np.float32), np.ones((3, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="y"):
        emu.conv2d_forward(x, w, None, np.empty((1, 3, 4, 4), np.float32), (1, 1), (0, 0), 0, 0)
    with pytest.raises(ValueError, match="w"):
        emu.conv2d_forward(x, np.ones((3, 1, 3, 3), np.float32), None, np.empty((1, 3, 3, 3), np.float32), 1, 0, 0, 0)
    with pytest.raises(ValueError, match="float32"):
        emu.conv2d_forward(x.astype(np.float64), w, None, np.empty((1, 3, 3, 3), np.float32), 1, 0, 0, 0)
    with pytest.raises(ValueError, match="b"):
        emu.conv2d_forward(x, w, np.ones(2, np.float32), np.empty((1, 3, 3, 3), np.float32), 1, 0, 0, 0)
    with pytest.raises(ValueError, match="workspace"):
        emu.conv2d_backward_weight(np.ones((2, 2, 9, 9), np.float32), np.ones((2, 3, 9, 9), np.float32),
                                   np.empty((3, 2, 3, 3), np.float32), None, 1, 1, 3, 0)


# -- batch norm -----------------------------------------------------------------------------------


def check_bn(rng, variant, shape, training, affine, running, fused, slope=0.2, momentum=0.1, eps=1e-5):
    c = shape[1]
    x = f32(rng, shape, scale=2.0, shift=0.5)
    gamma = f32(rng, (c,), 0.5, 1.0) if affine else None
    beta = f32(rng, (c,)) if affine else None
    rm = f32(rng, (c,)) if running else None
    rv = (rng.random(c) + 0.5).astype(np.float32) if running else None
    to64 = lambda a: None if a is None else a.astype(np.float64)  # noqa: E731
    rm64, rv64 = to64(rm), to64(rv)
    be = backend(bn=variant)
    tag = f"variant {variant} {shape} training={training} affine={affine} running={running} fused={fused}"
    if fused:
        outs = be.batch_norm_leaky_relu_forward(x, gamma, beta, rm, rv, training, momentum, eps, slope)
        refs = R.batch_norm_leaky_relu_forward(to64(x), to64(gamma), to64(beta), rm64, rv64, training, momentum, eps, slope)
    else:
        outs = be.batch_norm_forward(x, gamma, beta, rm, rv, training, momentum, eps)
        refs = R.batch_norm_forward(to64(x), to64(gamma), to64(beta), rm64, rv64, training, momentum, eps)
    for name, out, ref in zip(("y", "mean", "rstd"), outs, refs):
        close(out, ref, f"bn forward {name} " + tag)
    if running:
        close(rm, rm64, "running_mean " + tag)
        close(rv, rv64, "running_var " + tag)
    dy = f32(rng, shape)
    mean, rstd = outs[1], outs[2]
    if fused:
        gouts = be.batch_norm_leaky_relu_backward(x, gamma, beta, dy, mean, rstd, training, slope)
        grefs = R.batch_norm_leaky_relu_backward(to64(x), to64(gamma), to64(beta), to64(dy), to64(mean),
                                                 to64(rstd), training, slope)
    else:
        gouts = be.batch_norm_backward(x, gamma, dy, mean, rstd, training)
        grefs = R.batch_norm_backward(to64(x), to64(gamma), to64(dy), to64(mean), to64(rstd), training)
    for name, out, ref in zip(("dx", "dgamma", "dbeta"), gouts, grefs):
        if ref is None:
            assert out is None, f"{name} should be None " + tag
        else:
            close(out, ref, f"bn backward {name} " + tag)


@st.composite
def bn_cases(draw):
    n = draw(st.integers(1, 3))
    c = draw(st.integers(1, 5))
    spatial = draw(st.lists(st.integers(1, 6), min_size=0, max_size=2))
    shape = (n, c, *spatial)
    training = draw(st.booleans())
    if training and n * int(np.prod(spatial, dtype=int)) < 2:
        shape = (2, c, *spatial)
    running = draw(st.booleans()) or not training
    return shape, training, draw(st.booleans()), running, draw(st.booleans())


@pytest.mark.parametrize("variant", BN_VARIANTS)
@settings(max_examples=15, **SETTINGS)
@given(case=bn_cases(), seed=st.integers(0, 2**32 - 1), slope=st.sampled_from([0.0, 0.2]))
def test_batch_norm_hypothesis(variant, case, seed, slope):
    check_bn(np.random.default_rng(seed), variant, *case, slope=slope)


@pytest.mark.parametrize("variant", BN_VARIANTS)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("fused", [False, True], ids=["bn", "bn+lrelu"])
def test_batch_norm_grid(rng, variant, training, affine, fused):
    # M = 16 (float4 path of variant 2) and a batch of 2; running stats present
    check_bn(rng, variant, (2, 3, 4, 4), training, affine, True, fused)
    if training:  # and without running stats, odd M (scalar path)
        check_bn(rng, variant, (2, 2, 3, 3), training, affine, False, fused, slope=0.0)


def test_batch_norm_bindings_validate():
    x = np.ones((2, 3, 4), np.float32)
    out = lambda *s: np.empty(s, np.float32)  # noqa: E731
    with pytest.raises(ValueError, match="running"):
        emu.batch_norm_forward(x, None, None, None, None, out(2, 3, 4), out(3), out(3), False, 0.1, 1e-5)
    with pytest.raises(ValueError, match="gamma"):
        emu.batch_norm_forward(x, out(4), None, None, None, out(2, 3, 4), out(3), out(3), True, 0.1, 1e-5)
    with pytest.raises(ValueError, match="y"):
        emu.batch_norm_forward(x, None, None, None, None, out(2, 3, 5), out(3), out(3), True, 0.1, 1e-5)
    with pytest.raises(ValueError, match="variant"):
        emu.batch_norm_forward(x, None, None, None, None, out(2, 3, 4), out(3), out(3), True, 0.1, 1e-5, 0, 0.0, 7)


def test_through_shared_native_ops_wrappers(rng):
    """The NativeOps methods (pygan/ops/native.py, as the CUDA backend uses them) with variant=."""
    from pygan.ops import emulated

    ops = emulated.backend(poison=True)
    x, w, b = f32(rng, (2, 3, 6, 5)), f32(rng, (4, 3, 4, 4)), f32(rng, (4,))
    ref = R.conv2d_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), 2, 1)
    for v in EMULATED_CONV_VARIANTS:
        close(ops.conv2d_forward(x, w, b, 2, 1, variant=v), ref, f"NativeOps conv2d_forward variant {v}")
    xt = f32(rng, (2, 4, 3, 3))
    ref = R.conv_transpose2d_forward(xt.astype(np.float64), w.astype(np.float64), None, 2, 1, 1)
    close(ops.conv_transpose2d_forward(xt, w, None, 2, 1, 1, variant=0), ref, "NativeOps convT forward")
    xb = f32(rng, (2, 3, 4, 4))
    y, mean, rstd = ops.batch_norm_leaky_relu_forward(xb, None, None, None, None, True, 0.1, 1e-5, 0.0, variant=1)
    yr, mr, sr = R.batch_norm_leaky_relu_forward(xb.astype(np.float64), None, None, None, None, True, 0.1, 1e-5, 0.0)
    close(y, yr, "NativeOps fused bn y")
