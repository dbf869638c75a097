"""Conv2d's variants 8 (pipelined FP32 implicit GEMM) and 9 (TF32 mma.sync on the same tiling) under
host emulation, against the float64 reference, and the emulated mma.sync instruction itself.

Variant 9 runs here because the emulator implements mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32
exactly as the PTX ISA lays out its fragments (csrc/emu/cuda_emu.h, csrc/ptx.cuh): a layout mistake in
the kernel or in the emulator gives wrong products, which these tests see.

Every output and workspace is poisoned (NaN) before each kernel runs (Native(..., poison=True)), and
every call gets a fresh one. Emulation runs one host thread per CUDA thread (256 per block), so the
DCGAN layer geometries (kernel 4, stride 2, padding 1; the 4x4 -> 1 last layer; the 1- and 3-channel
edge layers) run at batch 1-2 and a quarter of DCGAN's channels or fewer; a few layers also run at
their real channel counts (K up to 8192), for variant 9 only in the `slow` runs (minutes each).

Tolerances (|out - ref| per element):
  variant 8 (float32 throughout): atol 1e-4 + rtol 1e-4 * |ref|, the other variants' tolerance.
  variant 9 (TF32): (2^-10 + (K + 64) * 2^-24) * mag + 1e-6, where mag = sum over the reduction of
      |a| * |b| (the reference run on absolute values) and K the reduction length. Why: cvt.rna
      rounds each operand to a 10-bit mantissa, a relative error of at most 2^-11 each, so each
      product is off by at most (2 * 2^-11 + 2^-22) |a||b| <= 2^-10 |a||b| (the product of two TF32
      values is exact in float32); the float32 accumulation of K terms (plus up to 64 split-K
      partial sums and the bias) adds at most (K + 64) * 2^-24 * mag. This is the worst case, not a
      fudge factor; the typical error is ~sqrt(K) smaller. A separate test checks that variant 9's
      error is really TF32's (far above float32's), so the bound cannot pass an FP32 kernel by
      mistake for the TF32 one.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pygan
from pygan.ops import reference as R

emu = pytest.importorskip("pygan._emu", reason="pygan._emu (host-emulation module) not built")
from pygan.ops.native_conv_bn import Native  # noqa: E402

NAMES = emu.conv2d_variants()
FP32, TF32 = 8, 9
ATOL = RTOL = 1e-4


def backend(variant):
    return Native(emu, np, variants={"conv2d": variant}, poison=True)


def f32(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def close_fp32(out, ref, what):
    assert out.shape == ref.shape and out.dtype == np.float32, what
    err = np.abs(out.astype(np.float64) - ref)
    bad = ~(err <= ATOL + RTOL * np.abs(ref))  # NaN (unwritten, poisoned) is bad
    assert not bad.any(), f"{what}: max error {np.nanmax(err, initial=np.inf):.3g} at {np.argwhere(bad)[0]}"


def close_tf32(out, ref, mag, k, what):
    assert out.shape == ref.shape and out.dtype == np.float32, what
    err = np.abs(out.astype(np.float64) - ref)
    bound = (2.0**-10 + (k + 64) * 2.0**-24) * mag + 1e-6
    bad = ~(err <= bound)
    assert not bad.any(), (f"{what}: error {np.nanmax(err, initial=np.inf):.3g} beyond the TF32 bound at "
                           f"{np.argwhere(bad)[0]} (bound there {bound[tuple(np.argwhere(bad)[0])]:.3g})")
    return float(np.nanmax(err / np.maximum(mag, 1e-30)))


# (name, x shape, w shape, stride, padding): conv2d layers (D's), and odd sizes that leave partial
# tiles in M, N and K (128x128 tiles, 32x256 when M <= 32; K steps of 8).
CONV_CASES = [
    ("D64 layer 1: 3->16 ch, 64x64 -> 32x32 (C=3 edge)", (2, 3, 64, 64), (16, 3, 4, 4), 2, 1),
    ("D64 layer 2: 16->32 ch, 32x32 -> 16x16", (2, 16, 32, 32), (32, 16, 4, 4), 2, 1),
    ("D64 layer 4: 64->128 ch, 8x8 -> 4x4", (1, 64, 8, 8), (128, 64, 4, 4), 2, 1),
    ("D last layer: 128->1 ch, 4x4 -> 1x1", (2, 128, 4, 4), (1, 128, 4, 4), 1, 0),
    ("D64 layer 4, real channels: 256->512, 8x8 -> 4x4", (1, 256, 8, 8), (512, 256, 4, 4), 2, 1),
    ("D last layer, real channels: 512->1, 4x4 -> 1x1", (2, 512, 4, 4), (1, 512, 4, 4), 1, 0),
    ("D32 layer 1 (MNIST): 1->16 ch, 32x32 -> 16x16 (C=1 edge)", (2, 1, 32, 32), (16, 1, 4, 4), 2, 1),
    ("odd: M=37, N=189, K=45, k3 s1 p1", (3, 5, 7, 9), (37, 5, 3, 3), 1, 1),
    ("odd: M=130 (two row tiles), K=63, k3 s2 p0", (2, 7, 11, 10), (130, 7, 3, 3), 2, 0),
    ("odd: M=33 (just past the 32-row tile), k4 s2 p0", (2, 3, 13, 11), (33, 3, 4, 4), 2, 0),
    ("odd: C=1, K=9, k3 s1 p0", (2, 1, 10, 12), (5, 1, 3, 3), 1, 0),
    ("odd: k4 s1 p1 (even kernel, stride 1)", (1, 4, 6, 6), (8, 4, 4, 4), 1, 1),
    ("odd: stride (2, 1), padding (1, 0), k (3, 4)", (2, 3, 9, 8), (6, 3, 3, 4), (2, 1), (1, 0)),
    # kernel narrower than the stride: backward-data phases no tap reaches (K = 0, dx = 0 there)
    ("odd: k (5, 1) s4 p (1, 0): phases no tap reaches", (1, 3, 5, 3), (1, 3, 5, 1), 4, (1, 0)),
    ("odd: k 1 s 2: three of four phases empty", (2, 4, 6, 5), (3, 4, 1, 1), 2, 0),
]
# (name, x shape, w shape (cin, cout, kh, kw), stride, padding, output padding): G's layers.
CONVT_CASES = [
    ("G64 first: z 100 -> 64 ch, 1x1 -> 4x4", (2, 100, 1, 1), (100, 64, 4, 4), 1, 0, 0),
    ("G64 layer 2: 128->64 ch, 4x4 -> 8x8", (1, 128, 4, 4), (128, 64, 4, 4), 2, 1, 0),
    ("G64 layer 2, real channels: 512->256, 4x4 -> 8x8", (1, 512, 4, 4), (512, 256, 4, 4), 2, 1, 0),
    ("G64 layer 4: 32->16 ch, 16x16 -> 32x32", (1, 32, 16, 16), (32, 16, 4, 4), 2, 1, 0),
    ("G64 last: 16->3 ch, 32x32 -> 64x64 (C=3 edge)", (1, 16, 32, 32), (16, 3, 4, 4), 2, 1, 0),
    ("G32 last (MNIST): 16->1 ch, 16x16 -> 32x32 (C=1 edge)", (2, 16, 16, 16), (16, 1, 4, 4), 2, 1, 0),
    ("odd: k3 s2 p1 output padding 1", (2, 5, 5, 7), (5, 35, 3, 3), 2, 1, 1),
]


def conv_refs(x, w, b, dy, stride, padding):
    """float64 reference outputs and magnitudes (the same sums over |a| |b|) of the three computations."""
    x64, w64, dy64, b64 = (a.astype(np.float64) for a in (x, w, dy, b))
    ax, aw, ady = np.abs(x64), np.abs(w64), np.abs(dy64)
    return {
        "forward": (R.conv2d_forward(x64, w64, b64, stride, padding),
                    R.conv2d_forward(ax, aw, np.abs(b64), stride, padding)),
        "backward_data": (R.conv2d_backward_data(dy64, w64, x.shape, stride, padding),
                          R.conv2d_backward_data(ady, aw, x.shape, stride, padding)),
        "backward_weight": (R.conv2d_backward_weight(x64, dy64, w.shape, stride, padding),
                            R.conv2d_backward_weight(ax, ady, w.shape, stride, padding)),
    }


def reduction_lengths(x_shape, w_shape, y_shape):
    n, c, _, _ = x_shape
    o, _, kh, kw = w_shape
    return {"forward": c * kh * kw, "backward_data": o * kh * kw, "backward_weight": n * y_shape[2] * y_shape[3]}


def params(cases, variant):
    """The real-channel layers are `slow` for variant 9 (each emulated mma.sync is a 32-thread
    exchange between two barriers: minutes at K = 4096); their quarter-channel versions run always."""
    return [pytest.param(c, marks=pytest.mark.slow, id=c[0]) if variant == TF32 and "real channels" in c[0]
            else pytest.param(c, id=c[0]) for c in cases]


def run_conv(be, x, w, b, dy, stride, padding):
    return {
        "forward": be.conv2d_forward(x, w, b, stride, padding),
        "backward_data": be.conv2d_backward_data(dy, w, x.shape, stride, padding),
        "backward_weight": be.conv2d_backward_weight(x, dy, w.shape, stride, padding),
    }


def conv_inputs(rng, xs, ws, stride, padding):
    x, w, b = f32(rng, xs), f32(rng, ws), f32(rng, ws[:1])
    y_shape = R.conv2d_forward(x[:, :, :, :], w, None, stride, padding).shape
    return x, w, b, f32(rng, y_shape)


def test_variants_8_and_9_are_listed_and_not_default():
    assert len(NAMES) == 9
    assert "tf32" not in NAMES[FP32 - 1].lower() and "cp.async" in NAMES[FP32 - 1]
    assert "tf32" in NAMES[TF32 - 1].lower() and "mma.sync" in NAMES[TF32 - 1]
    # variant 0 stays variant 3 (the launch grid of a 64x64-tiled GEMM, not a 128x128 one)
    x, w = np.ones((1, 2, 10, 10), np.float32), np.ones((40, 2, 1, 1), np.float32)
    y = np.full((1, 40, 10, 10), np.nan, np.float32)
    emu.conv2d_forward(x, w, None, y, (1, 1), (0, 0), 0, 0)
    assert emu._emulation_recent_launches()[-1] == ("kern", 2)  # ceil(100 / 64) tiles of variant 3
    assert (y == 2.0).all()


@pytest.mark.parametrize("case", params(CONV_CASES, FP32))
def test_variant_8_conv2d(rng, case):
    name, xs, ws, stride, padding = case
    x, w, b, dy = conv_inputs(rng, xs, ws, stride, padding)
    refs = conv_refs(x, w, b, dy, stride, padding)
    outs = run_conv(backend(FP32), x, w, b, dy, stride, padding)
    for comp, out in outs.items():
        close_fp32(out, refs[comp][0], f"variant 8 {comp}, {name}")


@pytest.mark.parametrize("case", params(CONV_CASES, TF32))
def test_variant_9_conv2d(rng, case):
    name, xs, ws, stride, padding = case
    x, w, b, dy = conv_inputs(rng, xs, ws, stride, padding)
    refs = conv_refs(x, w, b, dy, stride, padding)
    ks = reduction_lengths(xs, ws, dy.shape)
    outs = run_conv(backend(TF32), x, w, b, dy, stride, padding)
    for comp, out in outs.items():
        close_tf32(out, *refs[comp], ks[comp], f"variant 9 {comp}, {name}")


@pytest.mark.parametrize("case", params(CONVT_CASES, FP32))
def test_variant_8_conv_transpose2d(rng, case):
    check_conv_transpose(rng, case, FP32)


@pytest.mark.parametrize("case", params(CONVT_CASES, TF32))
def test_variant_9_conv_transpose2d(rng, case):
    check_conv_transpose(rng, case, TF32)


def check_conv_transpose(rng, case, variant):
    """G's layers: conv_transpose2d's forward is conv backward-data (the stride-aware phases), its
    backward-data conv forward, its backward-weight conv backward-weight with x and dy swapped."""
    name, xs, ws, stride, padding, out_pad = case
    x, w, b = f32(rng, xs), f32(rng, ws), f32(rng, ws[1:2])
    x64, w64, b64 = x.astype(np.float64), w.astype(np.float64), b.astype(np.float64)
    y_ref = R.conv_transpose2d_forward(x64, w64, b64, stride, padding, out_pad)
    dy = f32(rng, y_ref.shape)
    dx_ref, dw_ref, db_ref = R.conv_transpose2d_backward(x64, w64, dy.astype(np.float64), stride, padding, out_pad, True)
    be = backend(variant)
    y = be.conv_transpose2d_forward(x, w, b, stride, padding, out_pad)
    dx, dw, db = be.conv_transpose2d_backward(x, w, dy, stride, padding, out_pad, True)
    if variant == FP32:
        for what, out, ref in (("forward", y, y_ref), ("dx", dx, dx_ref), ("dw", dw, dw_ref), ("db", db, db_ref)):
            close_fp32(out, ref, f"variant 8 convT {what}, {name}")
        return
    ax, aw, ady = np.abs(x64), np.abs(w64), np.abs(dy.astype(np.float64))
    cin, cout, kh, kw = ws
    mags = {
        "forward": (y_ref, R.conv_transpose2d_forward(ax, aw, np.abs(b64), stride, padding, out_pad), cin * kh * kw),
        "dx": (dx_ref, R.conv_transpose2d_backward(ax, aw, ady, stride, padding, out_pad, False)[0], cout * kh * kw),
        "dw": (dw_ref, R.conv_transpose2d_backward(ax, aw, ady, stride, padding, out_pad, False)[1],
               xs[0] * xs[2] * xs[3]),
    }
    for what, out in (("forward", y), ("dx", dx), ("dw", dw)):
        close_tf32(out, *mags[what], f"variant 9 convT {what}, {name}")
    close_fp32(db, db_ref, f"variant 9 convT db (an fp32 reduction), {name}")


def test_variant_9_error_is_tf32s_and_variant_8s_is_float32s(rng):
    """Variant 9 really multiplies TF32-rounded operands (its error is orders above float32's, and
    near the 2^-11 scale), variant 8 really is float32: neither bound could pass the other's kernel."""
    x, w, b, dy = conv_inputs(rng, (2, 16, 8, 8), (40, 16, 3, 3), 1, 1)
    y_ref, mag = conv_refs(x, w, b, dy, 1, 1)["forward"]
    e8 = np.max(np.abs(backend(FP32).conv2d_forward(x, w, b, 1, 1) - y_ref) / mag)
    e9 = np.max(np.abs(backend(TF32).conv2d_forward(x, w, b, 1, 1) - y_ref) / mag)
    assert e8 < 2e-6, e8
    assert 2.0**-16 < e9 < 2.0**-10, e9


def test_tile_shapes_and_split_k_workspace(rng):
    """The launch grids of variant 8/9's tiles (128x128; 32x256 when M <= 32), and a backward-weight
    that splits K over a (poisoned) workspace, against the reference."""
    x, w, b, dy = conv_inputs(rng, (3, 5, 7, 9), (37, 5, 3, 3), 1, 1)  # M = 37, N = 189
    y_ref = conv_refs(x, w, b, dy, 1, 1)["forward"][0]
    close_fp32(backend(FP32).conv2d_forward(x, w, b, 1, 1), y_ref, "variant 8, 128x128 tiles")
    assert emu._emulation_recent_launches()[-1] == ("kern", 2)  # ceil(189 / 128) x ceil(37 / 128)
    x, w, b, dy = conv_inputs(rng, (2, 3, 16, 16), (8, 3, 3, 3), 1, 1)  # M = 8: the 32x256 tile
    refs = conv_refs(x, w, b, dy, 1, 1)
    close_fp32(backend(FP32).conv2d_forward(x, w, b, 1, 1), refs["forward"][0], "variant 8, 32x256 tiles")
    assert emu._emulation_recent_launches()[-1] == ("kern", 2)  # ceil(512 / 256)
    for v in (FP32, TF32):  # backward-weight: M = 8, N = 27, K = 512 split in chunks of 64
        assert emu.conv2d_backward_weight_workspace_size(x.shape, w.shape, (1, 1), (1, 1), v) == 8 * 8 * 27
        dw = backend(v).conv2d_backward_weight(x, dy, w.shape, 1, 1)
        assert [k for k, _ in emu._emulation_recent_launches()[-2:]] == ["kern", "sum_splits"]
        if v == FP32:
            close_fp32(dw, refs["backward_weight"][0], "variant 8 split-K backward-weight")
        else:
            close_tf32(dw, *refs["backward_weight"], 512, "variant 9 split-K backward-weight")


@pytest.mark.parametrize("variant", [FP32, TF32])
def test_bitwise_repeatable_under_two_block_orders(rng, variant):
    """Fixed-order sums: the same bits whatever order the blocks run in (two PYGAN_EMU_SEED values)."""
    x, w, b, dy = conv_inputs(rng, (2, 6, 12, 12), (40, 6, 4, 4), 2, 1)
    refs = conv_refs(x, w, b, dy, 2, 1)
    runs = []
    seed = emu._emulation_seed()
    try:
        for s in (11, 987654321):
            emu._emulation_set_seed(s)
            runs.append(run_conv(backend(variant), x, w, b, dy, 2, 1))
    finally:
        emu._emulation_set_seed(seed)
    ks = reduction_lengths(x.shape, w.shape, dy.shape)
    for comp in runs[0]:
        assert np.array_equal(runs[0][comp], runs[1][comp]), comp
        if variant == FP32:
            close_fp32(runs[0][comp], refs[comp][0], f"variant 8 {comp}")
        else:
            close_tf32(runs[0][comp], *refs[comp], ks[comp], f"variant 9 {comp}")


# -- the emulated mma.sync itself (pygan._emu._emulation_mma_tf32: 32 threads place A, B, C by the
# PTX ISA's fragment formulas, one mma.sync, D written back by them) ---------------------------------


def tf32_rna(a):
    """cvt.rna.tf32.f32 in numpy: round the float32 bits to 10 mantissa bits, ties away from zero."""
    bits = np.asarray(a, np.float32).view(np.uint32).astype(np.uint64)
    return (((bits + 0x1000) & ~np.uint64(0x1FFF)) & 0xFFFFFFFF).astype(np.uint32).view(np.float32)


def mma(a, b, c):
    d = np.full((16, 8), np.nan, np.float32)
    emu._emulation_mma_tf32(a, b, c, d)
    return d


def test_emulated_mma_layout_with_structured_operands():
    """A(m, k) = 1 + m + 16k, B(k, n) = 1 + k + 8n, C(m, n) = 1000m + n: distinct small integers, so
    D = A @ B + C is exact, and a transposed or swapped fragment register (a1 <-> a2, B read as
    row-major, C's column pairs) gives a different D."""
    m, k, n = np.arange(16)[:, None], np.arange(8)[None, :], np.arange(8)[None, :]
    a = (1 + m + 16 * k).astype(np.float32)
    b = (1 + np.arange(8)[:, None] + 8 * n).astype(np.float32)
    c = (1000 * m + n).astype(np.float32)
    d = mma(a, b, c)
    want = a.astype(np.float64) @ b + c
    assert np.array_equal(d, want)
    # what a few plausible layout mistakes would give instead: none matches
    swapped_a = a.copy()
    swapped_a[8:, :4], swapped_a[:8, 4:] = a[:8, 4:], a[8:, :4]  # a1 <-> a2
    assert not np.array_equal(d, swapped_a.astype(np.float64) @ b + c)
    assert not np.array_equal(d, a.astype(np.float64) @ b.T + c)


def test_emulated_mma_random_operands_against_float64(rng):
    """Random fragments: D equals the float64 product of the TF32-rounded (cvt.rna) A and B plus C,
    to float32 accumulation (9 terms)."""
    for _ in range(5):
        a, b, c = f32(rng, (16, 8)), f32(rng, (8, 8)), f32(rng, (16, 8))
        d = mma(a, b, c)
        ar, br = tf32_rna(a).astype(np.float64), tf32_rna(b).astype(np.float64)
        want = ar @ br + c
        mag = np.abs(ar) @ np.abs(br) + np.abs(c)
        assert np.all(np.abs(d - want) <= 2 * 9 * 2.0**-24 * mag)
        # and not the float32 product of the unrounded operands (the rounding happened)
        assert np.max(np.abs(d - (a.astype(np.float64) @ b + c)) / mag) > 1e-6


def test_tf32_rounding_ties_away_from_zero():
    """The rounding the kernel's cvt.rna.tf32.f32 and the emulated mma apply: 1 + 2^-11 is halfway
    between 1 and 1 + 2^-10 and goes away from zero (round-to-nearest-even would give 1)."""
    h = 2.0**-11
    a = np.zeros((16, 8), np.float32)
    a[0, 0], a[1, 0], a[2, 0] = 1 + h, -(1 + h), 1 + h - 2.0**-23
    b = np.zeros((8, 8), np.float32)
    b[0, 0] = 1.0
    d = mma(a, b, np.zeros((16, 8), np.float32))
    assert d[0, 0] == np.float32(1 + 2 * h) and d[1, 0] == np.float32(-(1 + 2 * h)) and d[2, 0] == 1.0
    assert np.array_equal(tf32_rna(a[:3, 0]), d[:3, 0])


def test_emulated_mma_needs_all_32_lanes():
    with pytest.raises(RuntimeError, match=r"mma_missing_lane.*all 32 lanes must execute it"):
        emu._emulation_faulty_kernel("mma_missing_lane", np.zeros(64, np.float32)[:64])
    with pytest.raises(ValueError, match=r"_emulation_mma_tf32: b must have shape \(8, 8\)"):
        emu._emulation_mma_tf32(np.zeros((16, 8), np.float32), np.zeros((8, 4), np.float32),
                                np.zeros((16, 8), np.float32), np.zeros((16, 8), np.float32))


# -- the TF32 opt-in ----------------------------------------------------------------------------------


def test_tf32_arch_guard_names_variant_9():
    msg = emu._tf32_arch_problem(80, 75, 9)
    assert msg.startswith("conv2d: variant 9 (tf32) needs compute capability 8.0 or newer, this GPU has 7.5"), msg
    assert "variant 9 (tf32) was compiled for compute capability 7.5" in emu._tf32_arch_problem(75, 90, 9)
    assert emu._tf32_arch_problem(80, 90, 9) == "" and emu.conv2d_tf32_problem() == ""


@pytest.fixture
def tf32_switch():
    saved = pygan.backends._tf32
    yield pygan.backends
    pygan.backends._tf32 = saved


def test_tf32_opt_in_switches_the_default_conv_to_variant_9(rng, tf32_switch, monkeypatch):
    """pygan.backends.tf32 (off by default, PYGAN_TF32=1 turns it on) makes the default conv kernel
    the TF32 variant 9; an explicitly chosen variant is kept."""
    monkeypatch.delenv("PYGAN_TF32", raising=False)
    tf32_switch._tf32 = None
    assert tf32_switch.tf32 is False and Native(emu, np).variant("conv2d") == 0
    monkeypatch.setenv("PYGAN_TF32", "1")
    assert tf32_switch.tf32 is True and Native(emu, np).variant("conv2d") == TF32
    tf32_switch.tf32 = False  # the attribute wins over the environment
    assert Native(emu, np).variant("conv2d") == 0
    tf32_switch.tf32 = True
    assert Native(emu, np, variants={"conv2d": 4}).variant("conv2d") == 4
    with pytest.raises(TypeError, match="tf32 must be True or False"):
        tf32_switch.tf32 = "yes"
    # through the emulated backend's registry-style entry point: TF32's error, not float32's
    x, w, b, dy = conv_inputs(rng, (1, 8, 6, 6), (12, 8, 3, 3), 1, 1)
    y_ref, mag = conv_refs(x, w, b, dy, 1, 1)["forward"]
    from pygan.ops import emulated

    y = emulated.backend(poison=True).conv2d_forward(x, w, b, 1, 1)
    e = close_tf32(y, y_ref, mag, 72, "default conv with pygan.backends.tf32 on")
    assert e > 2.0**-16, "the TF32 kernel ran"


def test_pygan_tf32_environment_variable_in_a_fresh_process():
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYGAN_TF32="1", PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", "import pygan; print(pygan.backends.tf32)"], cwd=root, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr
