"""Batch norm variant 3 (csrc/batchnorm.cu, issue 13): several blocks per channel, under emulation.

Each channel's N*M values are split over P blocks (P from the element count: 2048 floats at the
least per block, about 1024 statistics blocks in all); each block writes partial statistics to the
workspace, one thread per channel merges them in a fixed order (Chan's formula, in double), and an
elementwise kernel normalises. The shapes here are chosen so that P > 1 really happens (asserted
from the launches), with odd M, M % 4 == 0 (float4 path), N = 1, M = 1 (BatchNorm1d) and a large
mean offset. Outputs and the workspace are poisoned (NaN) before every call (Native(poison=True)).

Tolerances (|out - ref| <= atol + rtol * |ref|, the reference in float64 on the same values):
  everything: atol 1e-4, rtol 1e-4, as the other batch-norm variants;
  x = 1000 + noise: rstd and running_var rtol 1e-5 (E[x^2] - E[x]^2 in float32 would be off by
      about 1e-2 here); y and dx atol 3e-4: the float32 mean of ~1000 is itself rounded by up to
      half an ulp (3e-5), and y inherits that times rstd.
"""

import numpy as np
import pytest

from pygan.ops import reference as R

emu = pytest.importorskip("pygan._emu", reason="pygan._emu (host-emulation module) not built")
from pygan.ops.native_conv_bn import Native  # noqa: E402

SPLIT = 3  # batch_norm variant 3
MIN_PART = 2048  # floats: the fewest one statistics block takes (kV3MinPart)


def backend():
    return Native(emu, np, variants={"batch_norm": SPLIT}, poison=True)


def close(out, ref, what, atol=1e-4, rtol=1e-4):
    assert out is not None and ref is not None, what
    assert out.shape == ref.shape and out.dtype == np.float32, f"{what}: {out.shape} {out.dtype}"
    err = np.abs(out.astype(np.float64) - ref)
    bad = ~(err <= atol + rtol * np.abs(ref))  # NaN (an unwritten, poisoned element) is bad
    assert not bad.any(), f"{what}: max error {np.nanmax(err, initial=np.inf):.3g} at {np.argwhere(bad)[0]}"


def parts(shape):
    """P, the blocks per channel, from the workspace size C * (2 P + 8)."""
    c = shape[1]
    return (emu.batch_norm_workspace_size(shape, SPLIT) // c - 8) // 2


def launched(name):
    """Blocks of the latest launch of `name` among the recent ones."""
    blocks = [b for n, b in emu._emulation_recent_launches() if n == name]
    assert blocks, f"{name} was not launched: {emu._emulation_recent_launches()[-6:]}"
    return blocks[-1]


def f64(a):
    return None if a is None else a.astype(np.float64)


def check(rng, shape, training=True, affine=True, running=True, slope=None, offset=0.5, scale=2.0,
          atol=1e-4, rtol=1e-4, stat_rtol=1e-4):
    c = shape[1]
    x = (rng.standard_normal(shape) * scale + offset).astype(np.float32)
    gamma = (rng.standard_normal(c) * 0.5 + 1.0).astype(np.float32) if affine else None
    beta = rng.standard_normal(c).astype(np.float32) if affine else None
    rm = (rng.standard_normal(c) + offset).astype(np.float32) if running else None
    rv = (rng.random(c) + 0.5).astype(np.float32) if running else None
    rm64, rv64 = f64(rm), f64(rv)
    tag = f"{shape} training={training} affine={affine} running={running} slope={slope}"
    be = backend()
    if slope is None:
        outs = be.batch_norm_forward(x, gamma, beta, rm, rv, training, 0.1, 1e-5)
        refs = R.batch_norm_forward(f64(x), f64(gamma), f64(beta), rm64, rv64, training, 0.1, 1e-5)
    else:
        outs = be.batch_norm_leaky_relu_forward(x, gamma, beta, rm, rv, training, 0.1, 1e-5, slope)
        refs = R.batch_norm_leaky_relu_forward(f64(x), f64(gamma), f64(beta), rm64, rv64, training, 0.1, 1e-5, slope)
    if training:
        assert launched("partial_stats") == c * parts(shape), tag
    close(outs[0], refs[0], "y " + tag, atol, rtol)
    close(outs[1], refs[1], "mean " + tag, atol, rtol)
    close(outs[2], refs[2], "rstd " + tag, atol, stat_rtol)
    if running:
        close(rm, rm64, "running_mean " + tag, atol, rtol)
        close(rv, rv64, "running_var " + tag, atol, stat_rtol)
    dy = rng.standard_normal(shape).astype(np.float32)
    mean, rstd = outs[1], outs[2]
    if slope is None:
        gouts = be.batch_norm_backward(x, gamma, dy, mean, rstd, training)
        grefs = R.batch_norm_backward(f64(x), f64(gamma), f64(dy), f64(mean), f64(rstd), training)
    else:
        gouts = be.batch_norm_leaky_relu_backward(x, gamma, beta, dy, mean, rstd, training, slope)
        grefs = R.batch_norm_leaky_relu_backward(f64(x), f64(gamma), f64(beta), f64(dy), f64(mean), f64(rstd),
                                                 training, slope)
    assert launched("partial_grads") == c * parts(shape), tag
    for name, out, ref in zip(("dx", "dgamma", "dbeta"), gouts, grefs):
        if ref is None:
            assert out is None, f"{name} should be None " + tag
        else:
            close(out, ref, f"{name} " + tag, atol, rtol)
    return outs, gouts


# (shape, what it exercises); every one has P > 1 parts per channel
SHAPES = {
    "odd-M": (3, 2, 45, 47),           # M = 2115: scalar path, parts start mid-row
    "float4": (4, 2, 32, 32),          # M = 1024: float4 path
    "M%4=2": (2, 3, 2, 1151),          # M = 2302: scalar path, rows of an even, non-multiple-of-4 length
    "N=1": (1, 3, 4500),               # one row per channel, float4 path
    "M=1": (6000, 2),                  # BatchNorm1d: a row per value
}


def test_the_shapes_really_split_every_channel():
    for name, shape in SHAPES.items():
        n_per_channel = int(np.prod(shape)) // shape[1]
        assert parts(shape) == n_per_channel // MIN_PART >= 2, name
    # the benchmark's (128, 64, 32, 32): 16 parts per channel, 1024 statistics blocks on the GPU
    assert parts((128, 64, 32, 32)) == 16
    assert emu.batch_norm_workspace_size((128, 64, 32, 32), SPLIT) == 64 * (2 * 16 + 8)
    # D's 4x4 layer: one part per channel, 512 blocks already
    assert parts((128, 512, 4, 4)) == 1
    # the other variants need no workspace
    assert emu.batch_norm_workspace_size((128, 64, 32, 32), 2) == 0
    assert emu.batch_norm_workspace_size((128, 64, 32, 32), 0) == 0
    assert emu.batch_norm_workspace_size((0, 3, 5), SPLIT) >= 0


@pytest.mark.parametrize("case", list(SHAPES))
@pytest.mark.parametrize("slope", [None, 0.2], ids=["bn", "bn+lrelu"])
def test_split_variant_training_against_float64_reference(rng, case, slope):
    check(rng, SHAPES[case], slope=slope)


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("slope", [None, 0.0], ids=["bn", "bn+relu"])
def test_split_variant_affine_and_running_stats_options(rng, affine, slope):
    check(rng, (2, 2, 45, 47), affine=affine, running=False, slope=slope)
    check(rng, (2, 2, 45, 47), affine=affine, running=True, slope=slope)


@pytest.mark.parametrize("slope", [None, 0.2], ids=["bn", "bn+lrelu"])
def test_split_variant_eval_mode(rng, slope):
    """Evaluation: no statistics kernel runs; running stats are read, left as they are."""
    before = emu._emulation_launches()
    shape = (3, 2, 45, 47)
    be = backend()
    x = rng.standard_normal(shape).astype(np.float32)
    rm, rv = rng.standard_normal(2).astype(np.float32), (rng.random(2) + 0.5).astype(np.float32)
    rm0, rv0 = rm.copy(), rv.copy()
    y, mean, rstd = be.batch_norm_forward(x, None, None, rm, rv, False, 0.1, 1e-5)
    assert emu._emulation_launches() - before == 2  # combine (reads the running stats) + normalise
    assert np.array_equal(rm, rm0) and np.array_equal(rv, rv0)
    close(y, R.batch_norm_forward(f64(x), None, None, f64(rm), f64(rv), False, 0.1, 1e-5)[0], "eval y")
    check(rng, shape, training=False, slope=slope)


def test_large_mean_offset_is_not_cancelled(rng):
    """x = 1000 + N(0, 1): the variance comes from deviations, not from E[x^2] - E[x]^2."""
    for shape in ((4, 2, 32, 32), (6000, 2)):
        check(rng, shape, offset=1000.0, scale=1.0, atol=3e-4, stat_rtol=1e-5)
        check(rng, shape, offset=-1000.0, scale=1.0, slope=0.2, atol=3e-4, stat_rtol=1e-5)


def test_bitwise_repeatable_across_block_orders(rng):
    """A fixed merge order, no atomics: two runs under different emulated block orders agree bitwise."""
    shape = (3, 2, 45, 47)
    x = (rng.standard_normal(shape) + 3.0).astype(np.float32)
    g, b = rng.standard_normal(2).astype(np.float32), rng.standard_normal(2).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    runs = []
    for seed in (1, 987654321):
        emu._emulation_set_seed(seed)
        y, mean, rstd = backend().batch_norm_leaky_relu_forward(x, g, b, None, None, True, 0.1, 1e-5, 0.2)
        runs.append((y, mean, rstd) + backend().batch_norm_leaky_relu_backward(x, g, b, dy, mean, rstd, True, 0.2))
    for name, a, b_ in zip(("y", "mean", "rstd", "dx", "dgamma", "dbeta"), *runs):
        assert np.isfinite(a).all(), name  # written (the outputs start as NaN)
        assert np.array_equal(a.view(np.uint32), b_.view(np.uint32)), name


def test_workspace_is_checked():
    shape = (2, 2, 45, 47)
    x = np.ones(shape, np.float32)
    x[0, 0, 0, 0] = 2.0
    out = lambda *s: np.full(s, np.nan, np.float32)  # noqa: E731
    need = emu.batch_norm_workspace_size(shape, SPLIT)
    args = (x, None, None, None, None, out(*shape), out(2), out(2), True, 0.1, 1e-5, 0, 0.0, SPLIT, 0)
    with pytest.raises(ValueError, match="workspace"):
        emu.batch_norm_forward(*args)  # None where a workspace is needed
    with pytest.raises(ValueError, match="workspace"):
        emu.batch_norm_forward(*args, out(need - 1))
    bargs = (x, None, None, x, out(2), out(2), out(*shape), None, None, True, 0, 0.0, SPLIT, 0)
    with pytest.raises(ValueError, match="workspace"):
        emu.batch_norm_backward(*bargs)
    with pytest.raises(ValueError, match="x_shape"):
        emu.batch_norm_workspace_size((3,), SPLIT)
    with pytest.raises(ValueError, match="x_shape"):
        emu.batch_norm_workspace_size((2**40, 2**40, 4), SPLIT)
    with pytest.raises(ValueError, match="variant"):
        emu.batch_norm_workspace_size(shape, 4)
    ws = out(need)
    emu.batch_norm_forward(*args, ws)
    assert np.isfinite(ws).all()  # every float of it written (table and partials)
    assert np.isfinite(args[5]).all()


def test_through_native_ops_with_variant_keyword(rng):
    """The NativeOps methods the CUDA backend uses, with variant=3 (workspace allocated there)."""
    from pygan.ops import emulated

    ops = emulated.backend(poison=True)
    x = rng.standard_normal((2, 2, 45, 47)).astype(np.float32)
    y, mean, rstd = ops.batch_norm_forward(x, None, None, None, None, True, 0.1, 1e-5, variant=SPLIT)
    assert launched("partial_stats") == 2 * parts(x.shape)
    close(y, R.batch_norm_forward(f64(x), None, None, None, None, True, 0.1, 1e-5)[0], "NativeOps variant 3 y")
