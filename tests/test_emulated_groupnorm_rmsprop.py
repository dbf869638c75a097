"""Issue 11 kernels (csrc/groupnorm.cu, csrc/rmsprop.cu) under host emulation, against the reference.

Every variant runs in pygan._emu (the CUDA sources compiled by g++ with csrc/emu/cuda_emu.h). The
kernel calls go straight to the module with every output poisoned with NaN first (a kernel that
leaves an element unwritten fails), plus one pass through the shared wrappers (pygan/ops/native.py,
as the CUDA backend uses them). Inputs are float32; the group-norm reference runs in float64 on
the same values, the RMSprop reference in float32 on copies of the same state. Emulation runs one
std::thread per CUDA thread, so shapes stay small.

Tolerances (|out - ref| <= atol + rtol * |ref|):
  group norm: atol 1e-4, rtol 1e-4 on y, mean, rstd, dx, dgamma, dbeta (float32 sums of at most a
      few hundred values);
  RMSprop: rtol 1e-5, atol 1e-6 per step, over several steps (sqrtf and division differ from numpy
      by an ulp or so; the GPU may fuse multiply-adds).
"""

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pygan.ops import reference as R  # noqa: E402

emu = pytest.importorskip("pygan._emu", reason="pygan._emu (host-emulation module) not built")

ATOL = RTOL = 1e-4
GN_VARIANTS = list(range(1, len(emu.group_norm_variants()) + 1))
RMS_VARIANTS = list(range(1, len(emu.rmsprop_variants()) + 1))
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def close(out, ref, what, atol=ATOL, rtol=RTOL):
    assert out.shape == ref.shape, f"{what}: shape {out.shape} != {ref.shape}"
    assert out.dtype == np.float32, f"{what}: dtype {out.dtype}"
    err = np.abs(out.astype(np.float64) - ref)
    bad = ~(err <= atol + rtol * np.abs(ref))  # NaN (unwritten poison) counts as bad
    assert not bad.any(), f"{what}: max error {np.nanmax(err):.3g}, first bad at {np.argwhere(bad)[0]}"


def poisoned(*shape):
    return np.full(shape, np.nan, np.float32)


def f32(rng, shape, scale=1.0, shift=0.0):
    return (rng.standard_normal(shape) * scale + shift).astype(np.float32)


def to64(a):
    return None if a is None else a.astype(np.float64)


# -- group norm -----------------------------------------------------------------------------------


def check_gn(rng, variant, shape, groups, affine, eps=1e-5):
    n, c = shape[:2]
    x = f32(rng, shape, scale=2.0, shift=0.5)
    gamma = f32(rng, (c,), 0.5, 1.0) if affine else None
    beta = f32(rng, (c,)) if affine else None
    tag = f"variant {variant} {shape} groups={groups} affine={affine}"
    y, mean, rstd = poisoned(*shape), poisoned(n, groups), poisoned(n, groups)
    emu.group_norm_forward(x, gamma, beta, y, mean, rstd, groups, eps, variant)
    refs = R.group_norm_forward(to64(x), to64(gamma), to64(beta), groups, eps)
    for name, out, ref in zip(("y", "mean", "rstd"), (y, mean, rstd), refs):
        close(out, ref, f"group_norm forward {name} " + tag)
    dy = f32(rng, shape)
    dx = poisoned(*shape)
    dgamma, dbeta = (poisoned(c), poisoned(c)) if affine else (None, None)
    emu.group_norm_backward(x, gamma, dy, mean, rstd, dx, dgamma, dbeta, groups, variant)
    grefs = R.group_norm_backward(to64(x), to64(gamma), to64(dy), to64(mean), to64(rstd), groups)
    close(dx, grefs[0], "group_norm dx " + tag)
    if affine:
        close(dgamma, grefs[1], "group_norm dgamma " + tag)
        close(dbeta, grefs[2], "group_norm dbeta " + tag)


@st.composite
def gn_cases(draw):
    n = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 4))
    c = groups * draw(st.integers(1, 3))
    spatial = draw(st.lists(st.integers(1, 6), min_size=0, max_size=2))
    if c // groups * int(np.prod(spatial, dtype=int)) < 2:
        spatial = [3] + spatial
    return (n, c, *spatial), groups, draw(st.booleans())


@pytest.mark.parametrize("variant", GN_VARIANTS)
@settings(max_examples=12, **SETTINGS)
@given(case=gn_cases(), seed=st.integers(0, 2**32 - 1))
def test_group_norm_hypothesis(variant, case, seed):
    check_gn(np.random.default_rng(seed), variant, *case)


@pytest.mark.parametrize("variant", GN_VARIANTS)
@pytest.mark.parametrize(
    "shape,groups",
    [
        ((2, 8, 4, 4), 1),    # layer norm; M = 16: variant 2's float4 path
        ((2, 6, 4, 4), 6),    # instance norm
        ((2, 6, 3, 3), 3),    # M odd: scalar path
        ((1, 4, 20, 20), 2),  # rows of 800 values: several elements per thread
    ],
    ids=["layer", "instance", "odd", "long"],
)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_group_norm_grid(rng, variant, shape, groups, affine):
    check_gn(rng, variant, shape, groups, affine)


@pytest.mark.parametrize("variant", GN_VARIANTS)
def test_group_norm_misaligned_views_fall_back(rng, variant):
    """A contiguous view at a 4-byte offset with M % 4 == 0: variant 2 must take the scalar path."""
    shape, groups = (2, 4, 2, 2), 2
    base = f32(rng, (np.prod(shape) + 1,))
    x = base[1:].reshape(shape)
    assert x.ctypes.data % 16 != 0
    y, mean, rstd = poisoned(*shape), poisoned(2, groups), poisoned(2, groups)
    emu.group_norm_forward(x, None, None, y, mean, rstd, groups, 1e-5, variant)
    close(y, R.group_norm_forward(to64(x), None, None, groups, 1e-5)[0], "misaligned y")


@pytest.mark.parametrize("variant", GN_VARIANTS)
def test_group_norm_empty_batch(variant):
    """N = 0: nothing to normalise; dgamma, dbeta are sums over nothing: zeros."""
    x = np.ones((0, 4, 3), np.float32)
    y, mean, rstd = poisoned(0, 4, 3), poisoned(0, 2), poisoned(0, 2)
    emu.group_norm_forward(x, None, None, y, mean, rstd, 2, 1e-5, variant)
    dg, db = poisoned(4), poisoned(4)
    emu.group_norm_backward(x, np.ones(4, np.float32), x, mean, rstd, poisoned(0, 4, 3), dg, db, 2, variant)
    assert (dg == 0).all() and (db == 0).all()


def test_group_norm_through_shared_wrappers(rng):
    """NativeOps (pygan/ops/native.py, as on CUDA) with variant=, and float64 in -> float64 out."""
    from pygan.ops import emulated

    be = emulated.backend(poison=True)
    x, gamma, beta = f32(rng, (2, 6, 4, 4)), f32(rng, (6,)), f32(rng, (6,))
    refs = R.group_norm_forward(to64(x), to64(gamma), to64(beta), 3, 1e-5)
    dy = f32(rng, x.shape)
    for v in [0] + GN_VARIANTS:
        outs = be.group_norm_forward(x, gamma, beta, 3, 1e-5, variant=v)
        for name, out, ref in zip(("y", "mean", "rstd"), outs, refs):
            close(out, ref, f"NativeOps group_norm {name} variant {v}")
        grads = be.group_norm_backward(x, gamma, dy, outs[1], outs[2], 3, variant=v)
        grefs = R.group_norm_backward(to64(x), to64(gamma), to64(dy), to64(outs[1]), to64(outs[2]), 3)
        for name, out, ref in zip(("dx", "dgamma", "dbeta"), grads, grefs):
            close(out, ref, f"NativeOps group_norm {name} variant {v}")
    y64, _, _ = be.group_norm_forward(to64(x), None, None, 2, 1e-5)
    assert y64.dtype == np.float64
    assert be.group_norm_backward(x, None, dy, outs[1], outs[2], 3)[1:] == (None, None)


def test_group_norm_bindings_validate():
    x = np.ones((2, 6, 4), np.float32)
    out = lambda *s: np.empty(s, np.float32)  # noqa: E731
    fwd = emu.group_norm_forward
    with pytest.raises(ValueError, match="num_groups 4 does not divide the 6 channels"):
        fwd(x, None, None, out(2, 6, 4), out(2, 4), out(2, 4), 4, 1e-5)
    with pytest.raises(ValueError, match="num_groups must be >= 1"):
        fwd(x, None, None, out(2, 6, 4), out(2, 0), out(2, 0), 0, 1e-5)
    with pytest.raises(ValueError, match=r"mean must have shape \(2, 3\)"):
        fwd(x, None, None, out(2, 6, 4), out(2, 2), out(2, 3), 3, 1e-5)
    with pytest.raises(ValueError, match=r"gamma must have shape \(6,\)"):
        fwd(x, out(3), None, out(2, 6, 4), out(2, 3), out(2, 3), 3, 1e-5)
    with pytest.raises(ValueError, match="y has shape"):
        fwd(x, None, None, out(2, 6, 5), out(2, 3), out(2, 3), 3, 1e-5)
    with pytest.raises(ValueError, match="eps must be positive"):
        fwd(x, None, None, out(2, 6, 4), out(2, 3), out(2, 3), 3, 0.0)
    with pytest.raises(ValueError, match="x must be float32"):
        fwd(x.astype(np.float64), None, None, out(2, 6, 4), out(2, 3), out(2, 3), 3, 1e-5)
    with pytest.raises(ValueError, match="variant"):
        fwd(x, None, None, out(2, 6, 4), out(2, 3), out(2, 3), 3, 1e-5, 9)
    with pytest.raises(ValueError, match="at least 2-D"):
        fwd(np.ones(6, np.float32), None, None, out(6), out(1, 1), out(1, 1), 1, 1e-5)
    bwd = emu.group_norm_backward
    with pytest.raises(ValueError, match="dgamma/dbeta must be None when gamma is None"):
        bwd(x, None, x, out(2, 3), out(2, 3), out(2, 6, 4), out(6), out(6), 3)
    with pytest.raises(ValueError, match=r"dbeta must have shape \(6,\)"):
        bwd(x, out(6), x, out(2, 3), out(2, 3), out(2, 6, 4), out(6), out(5), 3)
    with pytest.raises(ValueError, match="dy has shape"):
        bwd(x, None, out(2, 6, 3), out(2, 3), out(2, 3), out(2, 6, 4), None, None, 3)
    ro = out(2, 6, 4)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="dx is read-only"):
        bwd(x, None, x, out(2, 3), out(2, 3), ro, None, None, 3)


# -- RMSprop --------------------------------------------------------------------------------------

HYPERS = [
    dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False),  # PyTorch's defaults
    dict(lr=5e-3, alpha=0.9, eps=1e-6, weight_decay=0.01, momentum=0.9, centered=False),
    dict(lr=5e-3, alpha=0.9, eps=1e-6, weight_decay=0.0, momentum=0.0, centered=True),
    dict(lr=1e-3, alpha=0.95, eps=1e-5, weight_decay=0.1, momentum=0.5, centered=True),
]
HYPER_IDS = ["default", "momentum+wd", "centered", "all"]


def rms_state(rng, sizes, hyper, misaligned=()):
    def arr(n, i, scale, positive=False):
        a = rng.standard_normal(n + 1) * scale
        a = np.abs(a) if positive else a
        a = a.astype(np.float32)
        return a[1:] if i in misaligned else a[:n].copy()  # a[1:]: a 4-byte-offset contiguous view

    params = [arr(n, i, 1.0) for i, n in enumerate(sizes)]
    v = [arr(n, i, 0.1, positive=True) + 0.05 for i, n in enumerate(sizes)]  # keeps v - ga^2 > 0
    bufs = [arr(n, i, 0.1) for i, n in enumerate(sizes)] if hyper["momentum"] > 0 else []
    gas = [arr(n, i, 0.01) for i, n in enumerate(sizes)] if hyper["centered"] else []
    return params, v, bufs, gas


def run_rmsprop(rng, sizes, hyper, variant, steps=3, misaligned=()):
    state = rms_state(rng, sizes, hyper, misaligned)
    ref = [[a.copy() for a in group] for group in state]
    for _ in range(steps):
        grads = [f32(rng, a.shape) for a in state[0]]
        emu.rmsprop_step(state[0], grads, state[1], state[2], state[3], hyper["lr"], hyper["alpha"], hyper["eps"],
                         hyper["weight_decay"], hyper["momentum"], hyper["centered"], variant)
        R.rmsprop_step(ref[0], grads, ref[1], ref[2], ref[3], **hyper)
        for name, got_group, want_group in zip(("param", "square_avg", "momentum_buffer", "grad_avg"), state, ref):
            for i, (got, want) in enumerate(zip(got_group, want_group)):
                close(got, want.astype(np.float64), f"rmsprop {name}[{i}] variant {variant}", atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("variant", RMS_VARIANTS)
@pytest.mark.parametrize("hyper", HYPERS, ids=HYPER_IDS)
def test_rmsprop_multi_tensor(rng, variant, hyper):
    # sizes: 1, odd, not divisible by 4, > one 2048-element chunk; tensors 2 and 4 misaligned
    run_rmsprop(rng, [1, 3, 257, 2049, 4100, 6], hyper, variant, misaligned=(2, 4))


@pytest.mark.parametrize("variant", RMS_VARIANTS)
def test_rmsprop_more_tensors_than_one_launch_holds(rng, variant):
    run_rmsprop(rng, [(i % 7) + 1 for i in range(70)], HYPERS[3], variant, steps=2)


@pytest.mark.parametrize("variant", RMS_VARIANTS)
@settings(max_examples=10, **SETTINGS)
@given(sizes=st.lists(st.integers(1, 600), min_size=1, max_size=5), hyper=st.sampled_from(HYPERS),
       seed=st.integers(0, 2**32 - 1))
def test_rmsprop_random_sizes(variant, sizes, hyper, seed):
    run_rmsprop(np.random.default_rng(seed), sizes, hyper, variant, steps=2)


def test_rmsprop_every_element_written(rng):
    """Every element of every state array is updated: after one step each differs from what it held
    before (finite random state, so a skipped element keeps its old value) and matches the
    reference. Sizes around a float4 and beyond one 2048-element chunk."""
    hyper = HYPERS[3]  # momentum and centered: all four state arrays are written
    for variant in RMS_VARIANTS:
        state = rms_state(rng, [5, 2051, 8], hyper)
        before = [[a.copy() for a in group] for group in state]
        ref = [[a.copy() for a in group] for group in state]
        grads = [f32(rng, a.shape) for a in state[0]]
        emu.rmsprop_step(state[0], grads, state[1], state[2], state[3], hyper["lr"], hyper["alpha"], hyper["eps"],
                         hyper["weight_decay"], hyper["momentum"], hyper["centered"], variant)
        R.rmsprop_step(ref[0], grads, ref[1], ref[2], ref[3], **hyper)
        for name, got_group, old_group, want_group in zip(("param", "square_avg", "momentum_buffer", "grad_avg"),
                                                          state, before, ref):
            for i, (got, old, want) in enumerate(zip(got_group, old_group, want_group)):
                assert (got != old).all(), f"rmsprop {name}[{i}] variant {variant}: elements not updated"
                close(got, want.astype(np.float64), f"rmsprop {name}[{i}] variant {variant}", atol=1e-6, rtol=1e-5)


def test_rmsprop_through_shared_wrappers(rng):
    from pygan.ops import emulated

    be = emulated.backend(poison=True)
    hyper = HYPERS[3]
    state = rms_state(rng, [7, 12], hyper)
    ref = [[a.copy() for a in group] for group in state]
    grads = [f32(rng, a.shape) for a in state[0]]
    be.rmsprop_step(*state[:1], grads, *state[1:], **hyper, variant=1)
    R.rmsprop_step(ref[0], grads, *ref[1:], **hyper)
    for got, want in zip(state[0], ref[0]):
        close(got, want.astype(np.float64), "NativeOps rmsprop param", atol=1e-6, rtol=1e-5)


def test_rmsprop_bindings_validate():
    one = lambda n=3: np.ones(n, np.float32)  # noqa: E731
    step = emu.rmsprop_step
    with pytest.raises(ValueError, match="momentum_buffers must be empty when momentum == 0"):
        step([one()], [one()], [one()], [one()], [], 0.1, 0.9, 1e-8, 0.0, 0.0, False)
    with pytest.raises(ValueError, match="momentum_buffers has 0 arrays but params has 1"):
        step([one()], [one()], [one()], [], [], 0.1, 0.9, 1e-8, 0.0, 0.9, False)
    with pytest.raises(ValueError, match="grad_avgs must be empty unless centered"):
        step([one()], [one()], [one()], [], [one()], 0.1, 0.9, 1e-8, 0.0, 0.0, False)
    with pytest.raises(ValueError, match="grad_avgs has 0 arrays"):
        step([one()], [one()], [one()], [], [], 0.1, 0.9, 1e-8, 0.0, 0.0, True)
    with pytest.raises(ValueError, match=r"square_avgs\[0\] has shape \(4,\)"):
        step([one()], [one()], [one(4)], [], [], 0.1, 0.9, 1e-8, 0.0, 0.0, False)
    with pytest.raises(ValueError, match=r"grads\[0\] must be float32"):
        step([one()], [np.ones(3)], [one()], [], [], 0.1, 0.9, 1e-8, 0.0, 0.0, False)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        step([one()], [one()], [one()], [], [], -0.1, 0.9, 1e-8, 0.0, 0.0, False)
    with pytest.raises(ValueError, match="variant"):
        step([one()], [one()], [one()], [], [], 0.1, 0.9, 1e-8, 0.0, 0.0, False, 5)
    step([], [], [], [], [], 0.1, 0.9, 1e-8, 0.0, 0.0, False)  # nothing to do
