"""The class embedding (csrc/embedding.cu, issue 12) on a real GPU (CuPy arrays) against the
reference (float64 on the CPU, same float32 values), every variant, at conditional-GAN shapes and
odd ones; the registry, F.embedding and nn.Embedding on CUDA; the out-of-range guard.
`cuda`-marked: skipped where no GPU is visible (tests/conftest.py). The same checks run on the CPU
through host emulation in tests/test_emulated_embedding.py, at small sizes.

Tolerances: forward bitwise (a copy). Backward |out - ref| <= 1e-7 + m * 2^-24 * sum |dy| per
element (m: how often the class is named), the worst-case bound of a float32 sum of m terms in
any order (atomics in variant 1); a class no index names is exactly 0.
"""

import numpy as np
import pytest

import pygan
from pygan import nn, ops
from pygan.ops import reference as R

pytestmark = pytest.mark.cuda


def variants(gpu):
    return range(1, len(gpu.variants()["embedding"]) + 1)


def f32(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def check_backward(cp, dw, dy, idx, num_classes, what):
    dw = cp.asnumpy(dw)
    assert dw.dtype == np.float32 and dw.shape == (num_classes, dy.shape[-1]), what
    ref = R.embedding_backward(dy.astype(np.float64), idx, num_classes)
    m = np.bincount(idx.reshape(-1), minlength=num_classes)[:, None]
    s = R.embedding_backward(np.abs(dy.astype(np.float64)), idx, num_classes)
    err = np.abs(dw.astype(np.float64) - ref)
    assert (err <= 1e-7 + m * 2.0**-24 * s).all(), f"{what}: max error {err.max():.3g}"
    assert (dw[m[:, 0] == 0] == 0).all(), f"{what}: a class no index names is not 0"


CASES = {
    # num_classes, dim, index shape
    "cgan-10-classes-dim-100": (10, 100, (128,)),
    "cgan-10-classes-dim-128": (10, 128, (512,)),
    "imagenet-1000-classes": (1000, 128, (4096,)),
    "one-index-dim-1": (3, 1, (1,)),
    "odd-dim-257": (17, 257, (333,)),
    "2-d-indices": (50, 64, (32, 8)),
    "one-class-big-batch": (1, 64, (100_000,)),  # every add into one row
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_every_variant(cp, gpu, rng, case):
    num_classes, dim, index_shape = CASES[case]
    w, idx = f32(rng, (num_classes, dim)), rng.integers(0, num_classes, index_shape)
    dy = f32(rng, index_shape + (dim,))
    y_ref = R.embedding_forward(w, idx)
    wd, dyd = cp.asarray(w), cp.asarray(dy)
    for label_dtype in (np.int64, np.int32):
        idxd = cp.asarray(idx.astype(label_dtype))
        for v in variants(gpu):
            what = f"{case} indices {np.dtype(label_dtype)} variant {v}"
            y = gpu.embedding_forward(wd, idxd, variant=v)
            np.testing.assert_array_equal(cp.asnumpy(y), y_ref, err_msg=what)
            check_backward(cp, gpu.embedding_backward(dyd, idxd, num_classes, variant=v), dy, idx, num_classes, what)


def test_variant_2_backward_is_deterministic(cp, gpu, rng):
    idx, dy = cp.asarray(rng.integers(0, 10, 50_000)), cp.asarray(f32(rng, (50_000, 100)))
    first = cp.asnumpy(gpu.embedding_backward(dy, idx, 10, variant=2))
    for _ in range(3):
        np.testing.assert_array_equal(cp.asnumpy(gpu.embedding_backward(dy, idx, 10, variant=2)), first)  # bitwise


def test_out_of_range_indices_give_nan_not_a_fault(cp, gpu, rng):
    """The registry does not read CuPy indices back to the host (no sync per step), so it passes
    them on; the kernels guard them: a NaN forward row, an all-NaN gradient, no memory fault."""
    from pygan.ops import cuda

    sentinel = cuda.backend(poison=7.0)  # NaN is the right answer here: poison with 7.0 instead
    w = cp.asarray(f32(rng, (6, 8)))
    for bad in (-1, 6, 2**40):
        idx = cp.asarray([0, 5, bad, 2], dtype=cp.int64)
        y = ops.embedding_forward(w, idx)
        assert bool(cp.isnan(y[2]).all()) and bool(cp.isfinite(y[[0, 1, 3]]).all())
        for v in variants(gpu):
            y = sentinel.embedding_forward(w, idx, variant=v)
            assert bool(cp.isnan(y[2]).all())
            np.testing.assert_array_equal(cp.asnumpy(y[[0, 1, 3]]), cp.asnumpy(w[[0, 5, 2]]))
            dw = sentinel.embedding_backward(cp.ones((4, 8), cp.float32), idx, 6, variant=v)
            assert bool(cp.isnan(dw).all())
    cp.cuda.get_current_stream().synchronize()  # a fault would surface here


def test_registry_functional_and_module_on_cuda(cp, rng):
    w, idx = f32(rng, (10, 16)), rng.integers(0, 10, 64)
    y = ops.embedding_forward(cp.asarray(w), cp.asarray(idx))
    assert isinstance(y, cp.ndarray)
    np.testing.assert_array_equal(cp.asnumpy(y), w[idx])
    with pytest.raises(ValueError, match=r"indices and weight are on different devices"):
        ops.embedding_forward(cp.asarray(w), idx)
    pygan.manual_seed(0)
    emb = nn.Embedding(10, 16)
    cpu_weight = emb.weight.numpy().copy()
    emb.to("cuda")
    labels = pygan.tensor(idx).to("cuda")
    out = emb(labels)
    assert out.device == "cuda"
    np.testing.assert_array_equal(out.numpy(), cpu_weight[idx])
    out.sum().backward()
    np.testing.assert_allclose(emb.weight.grad.numpy(), R.embedding_backward(np.ones((64, 16)), idx, 10), rtol=1e-6)
    with pytest.raises(ValueError, match=r"different devices"):
        emb(pygan.tensor(idx))  # indices left on the CPU


def test_runs_on_current_stream(cp, gpu, rng):
    w, idx, dy = f32(rng, (100, 128)), rng.integers(0, 100, 8192), f32(rng, (8192, 128))
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        y = gpu.embedding_forward(cp.asarray(w), cp.asarray(idx))
        dw = gpu.embedding_backward(cp.asarray(dy), cp.asarray(idx), 100)
    stream.synchronize()
    np.testing.assert_array_equal(cp.asnumpy(y), w[idx])
    check_backward(cp, dw, dy, idx, 100, "on a stream")


def test_validation(cp, C):
    w, idx = cp.ones((4, 3), cp.float32), cp.zeros(2, cp.int64)
    with pytest.raises(ValueError, match=r"embedding_forward: weight must be a CuPy array in CUDA device memory"):
        C.embedding_forward(np.ones((4, 3), np.float32), idx, cp.empty((2, 3), cp.float32))
    with pytest.raises(ValueError, match=r"embedding_forward: indices must be a CuPy array in CUDA device memory"):
        C.embedding_forward(w, np.zeros(2, np.int64), cp.empty((2, 3), cp.float32))
    with pytest.raises(ValueError, match=r"indices must be int64, got int32"):
        C.embedding_forward(w, cp.zeros(2, cp.int32), cp.empty((2, 3), cp.float32))
    with pytest.raises(ValueError, match=r"y has shape \(2, 4\), expected"):
        C.embedding_forward(w, idx, cp.empty((2, 4), cp.float32))
    with pytest.raises(ValueError, match=r"embedding_backward: dweight must be 2-D"):
        C.embedding_backward(cp.ones((2, 3), cp.float32), idx, cp.empty(12, cp.float32))
