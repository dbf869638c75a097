"""The class embedding kernels (csrc/embedding.cu, issue 12) under host emulation, every variant,
against the reference, plus the bindings' input validation and the out-of-range guard.

Kernels run in float32 through the wrappers the CUDA backend uses (pygan/ops/native.py), with
every output poisoned (NaN) before the launch, so an element a kernel fails to write fails the
test. The reference runs in float64 on the same float32 values.

Tolerances: the forward is a copy, so it must be bitwise equal (NaN rows for out-of-range indices).
The backward sums the m dy values of a class in some order (atomics in variant 1, index order in
variant 2): |out - ref| <= 1e-7 + m * 2^-24 * sum |dy| per element, the worst-case bound of a
float32 sum of m terms in any order. A class no index names must be exactly 0.
"""

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pygan.ops import reference as R  # noqa: E402
from pygan.ops.native import NativeOps  # noqa: E402

emu = pytest.importorskip("pygan._emu", reason="pygan._emu (host-emulation module) not built")

VARIANTS = list(range(1, len(emu.embedding_variants()) + 1))
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


class Poisoned(NativeOps):
    """The emulation backend with every output NaN before the kernel runs."""

    def _out(self, shape):
        return np.full(tuple(shape), np.nan, np.float32)


@pytest.fixture(scope="module")
def ops():
    return Poisoned(emu, np, lambda: 0)


def f32(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def check(ops, rng, variant, num_classes, dim, index_shape, indices=None, weight=None):
    w = f32(rng, (num_classes, dim)) if weight is None else weight
    idx = rng.integers(0, num_classes, index_shape) if indices is None else indices
    tag = f"variant {variant} weight {w.shape} indices {idx.shape} {idx.dtype}"
    y = ops.embedding_forward(w, idx, variant=variant)
    assert y.dtype == np.float32 and y.shape == idx.shape + (dim,), tag
    np.testing.assert_array_equal(y, R.embedding_forward(w, idx), err_msg="forward " + tag)

    dy = f32(rng, idx.shape + (dim,))
    dw = ops.embedding_backward(dy, idx, num_classes, variant=variant)
    assert dw.dtype == np.float32 and dw.shape == (num_classes, dim), tag
    ref = R.embedding_backward(dy.astype(np.float64), idx, num_classes)
    flat = np.asarray(idx).reshape(-1).astype(np.int64)
    m = np.bincount(flat, minlength=num_classes)[:, None]
    s = R.embedding_backward(np.abs(dy.astype(np.float64)), idx, num_classes)
    err = np.abs(dw.astype(np.float64) - ref)
    bad = ~(err <= 1e-7 + m * 2.0**-24 * s)
    assert not bad.any(), f"backward {tag}: max error {np.nanmax(err):.3g} at {np.argwhere(bad)[0]}"
    assert (dw[m[:, 0] == 0] == 0).all(), f"backward {tag}: a class no index names is not 0"
    return y, dw


CASES = {
    # num_classes, dim, index shape
    "gan-10-classes-dim-100": (10, 100, (64,)),
    "dim-multiple-of-4": (7, 16, (9,)),
    "dim-1": (5, 1, (6,)),
    "dim-3-no-float4": (4, 3, (8,)),
    "one-class": (1, 5, (7,)),
    "one-index": (9, 4, (1,)),
    "0-d-index": (6, 8, ()),
    "2-d-indices": (5, 12, (3, 4)),
    "3-d-indices": (4, 6, (2, 3, 2)),
    "dim-over-a-block": (3, 300, (5,)),  # variant 2: two column passes of 256
    "indices-over-a-chunk": (6, 300, (600,)),  # variant 2: three chunks of 256 indices
    "many-chunks-narrow-block": (5, 8, (600,)),  # variant 2: 32-thread blocks, 19 chunks
    "classes-over-the-grid": (130, 8, (40,)),  # variant 2: 128 blocks, grid-stride over classes
    "more-classes-than-indices": (50, 4, (3,)),
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_cases(ops, rng, variant, case):
    check(ops, rng, variant, *CASES[case])


@pytest.mark.parametrize("variant", VARIANTS)
def test_grid_stride(ops, rng, variant):
    # 300 x 448 = 134400 outputs: past the emulated grid cap (4 SMs * 32 blocks * 256 threads) in
    # variant 1 and, as 33600 float4s, in variant 2's forward too
    check(ops, rng, variant, 12, 448, (300,))


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_class_named_by_every_index(ops, rng, variant):
    """Every thread adds into the same row (atomic contention in variant 1)."""
    _, dw = check(ops, rng, variant, 4, 20, (500,), indices=np.full(500, 2))
    assert not dw[[0, 1, 3]].any()


@pytest.mark.parametrize("variant", VARIANTS)
def test_empty_indices_give_a_zero_gradient(ops, rng, variant):
    w = f32(rng, (5, 8))
    y = ops.embedding_forward(w, np.zeros(0, np.int64), variant=variant)
    assert y.shape == (0, 8)
    dw = ops.embedding_backward(np.zeros((0, 8), np.float32), np.zeros(0, np.int64), 5, variant=variant)
    assert dw.shape == (5, 8) and (dw == 0).all()  # poisoned, so the kernel wrote every zero
    assert ops.embedding_forward(f32(rng, (5, 0)), np.array([1, 2]), variant=variant).shape == (2, 0)
    assert ops.embedding_backward(np.zeros((2, 0), np.float32), np.array([1, 2]), 5, variant=variant).shape == (5, 0)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.int16, np.uint32])
def test_index_dtypes_and_views(ops, rng, dtype):
    """The wrapper converts any integer indices to int64 and copies non-contiguous inputs."""
    idx = rng.integers(0, 9, 21).astype(dtype)
    for v in VARIANTS:
        check(ops, rng, v, 9, 8, None, indices=idx)
        check(ops, rng, v, 9, 8, None, indices=np.repeat(idx, 2)[::2])  # a strided view
        check(ops, rng, v, 9, 8, None, indices=idx, weight=f32(rng, (9, 16))[:, ::2])  # a strided weight


@pytest.mark.parametrize("variant", VARIANTS)
def test_misaligned_weight_falls_back(ops, rng, variant):
    """dim % 4 == 0 but the weight starts 4 bytes past a 16-byte boundary: variant 2 uses variant 1."""
    buf = f32(rng, (8 * 12 + 4,))
    w = buf[1 : 1 + 8 * 12].reshape(8, 12)
    assert w.flags.c_contiguous and w.ctypes.data % 16 != 0
    check(ops, rng, variant, 8, 12, (10,), weight=w)


@st.composite
def cases(draw):
    num_classes, dim = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    index_shape = tuple(draw(st.lists(st.integers(1, 6), min_size=0, max_size=3)))
    return num_classes, dim, index_shape


@pytest.mark.parametrize("variant", VARIANTS)
@settings(max_examples=20, **SETTINGS)
@given(case=cases(), seed=st.integers(0, 2**32 - 1))
def test_hypothesis(ops, variant, case, seed):
    check(ops, np.random.default_rng(seed), variant, *case)


def test_variant_2_backward_is_deterministic(ops, rng):
    idx, dy = rng.integers(0, 3, 700), f32(rng, (700, 33))
    first = ops.embedding_backward(dy, idx, 3, variant=2)
    ref = R.embedding_backward(dy.astype(np.float64), idx, 3)
    np.testing.assert_allclose(first, ref, rtol=1e-5, atol=1e-5)  # and right, not only repeatable
    for _ in range(2):
        np.testing.assert_array_equal(ops.embedding_backward(dy, idx, 3, variant=2), first)  # bitwise
    np.testing.assert_array_equal(ops.embedding_backward(dy, idx, 3), first)  # variant 2 is the default


# -- out-of-range indices: the kernels' own guard ----------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("bad", [-1, 6, 2**40, -(2**63)])
def test_out_of_range_index_direct_call(ops, rng, variant, bad):
    """The registry rejects them for numpy only; a direct call must not read or write out of bounds:
    the forward's row for that index is NaN (the others are right), the backward is NaN everywhere."""
    w, dim = f32(rng, (6, 8)), 8
    idx = np.array([0, 5, bad, 2, 5], np.int64)
    y = np.full((5, dim), 7.0, np.float32)
    emu.embedding_forward(w, idx, y, variant)
    assert np.isnan(y[2]).all()
    np.testing.assert_array_equal(np.delete(y, 2, axis=0), w[[0, 5, 2, 5]])
    dw = np.full((6, dim), 7.0, np.float32)
    emu.embedding_backward(f32(rng, (5, dim)), idx, dw, variant)
    assert np.isnan(dw).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_classes_direct_call(variant):
    """An empty table: every index is out of range (NaN rows); the gradient is empty."""
    y = np.zeros((2, 4), np.float32)
    emu.embedding_forward(np.zeros((0, 4), np.float32), np.array([0, 1], np.int64), y, variant)
    assert np.isnan(y).all()
    emu.embedding_backward(np.ones((2, 4), np.float32), np.array([0, 1], np.int64), np.zeros((0, 4), np.float32),
                           variant)


# -- variant table and binding validation ----------------------------------------------------------


def test_variant_table():
    v = emu.variants()
    assert v["embedding"] == emu.embedding_variants() and len(v["embedding"]) == 2


def out(*shape):
    return np.empty(shape, np.float32)


def test_forward_binding_validates():
    fwd = emu.embedding_forward
    w, idx = np.ones((4, 3), np.float32), np.array([0, 1], np.int64)
    with pytest.raises(ValueError, match=r"embedding_forward: weight must be float32, got float64"):
        fwd(w.astype(np.float64), idx, out(2, 3))
    with pytest.raises(ValueError, match=r"embedding_forward: weight must be 2-D \(num_embeddings, embedding_dim\), got shape \(4,\)"):
        fwd(np.ones(4, np.float32), idx, out(2, 3))
    with pytest.raises(ValueError, match=r"embedding_forward: indices must be int64, got int32"):
        fwd(w, idx.astype(np.int32), out(2, 3))
    with pytest.raises(ValueError, match=r"indices must be int64, got float64"):
        fwd(w, idx.astype(np.float64), out(2, 3))
    with pytest.raises(ValueError, match=r"indices must be a numpy array"):
        fwd(w, [0, 1], out(2, 3))
    with pytest.raises(ValueError, match=r"indices must be C-contiguous"):
        fwd(w, np.zeros(4, np.int64)[::2], out(2, 3))
    with pytest.raises(ValueError, match=r"y has shape \(2, 4\), expected indices.shape \+ \(embedding_dim,\) = \(2, 3\)"):
        fwd(w, idx, out(2, 4))
    with pytest.raises(ValueError, match=r"y has shape \(2, 3\), expected .* = \(1, 2, 3\)"):
        fwd(w, idx.reshape(1, 2), out(2, 3))
    with pytest.raises(ValueError, match=r"y must be float32"):
        fwd(w, idx, np.empty((2, 3)))
    y = out(2, 3)
    y.flags.writeable = False
    with pytest.raises(ValueError, match=r"embedding_forward: y is read-only"):
        fwd(w, idx, y)
    with pytest.raises(ValueError, match=r"embedding: variant 3"):
        fwd(w, idx, out(2, 3), 3)


def test_backward_binding_validates():
    bwd = emu.embedding_backward
    dy, idx = np.ones((2, 3), np.float32), np.array([0, 1], np.int64)
    with pytest.raises(ValueError, match=r"embedding_backward: dweight must be 2-D"):
        bwd(dy, idx, out(12))
    with pytest.raises(ValueError, match=r"embedding_backward: dy has shape \(2, 3\), expected .* = \(2, 5\)"):
        bwd(dy, idx, out(4, 5))
    with pytest.raises(ValueError, match=r"dy has shape \(2, 3\), expected .* = \(3, 3\)"):
        bwd(dy, np.zeros(3, np.int64), out(4, 3))
    with pytest.raises(ValueError, match=r"embedding_backward: indices must be int64, got uint8"):
        bwd(dy, idx.astype(np.uint8), out(4, 3))
    with pytest.raises(ValueError, match=r"embedding_backward: dy must be float32, got float64"):
        bwd(dy.astype(np.float64), idx, out(4, 3))
    dw = out(4, 3)
    dw.flags.writeable = False
    with pytest.raises(ValueError, match=r"dweight is read-only"):
        bwd(dy, idx, dw)
    with pytest.raises(ValueError, match=r"variant -1"):
        bwd(dy, idx, out(4, 3), -1)
