"""Issue 6 ops on a real GPU (CuPy arrays) against the reference (float64 on the CPU, same float32
values): avg_pool2d (csrc/pool.cu), softmax cross-entropy (csrc/loss.cu) and linear (the conv2d
kernels as 1x1 convolutions), every variant, at the evaluation classifier's shapes and odd ones.
`cuda`-marked: skipped where no GPU is visible (tests/conftest.py). The same checks run on the CPU
through host emulation in tests/test_emulated_pool_softmax_linear.py, at small sizes.

Tolerances (|out - ref| <= atol + rtol * |ref|):
  avg_pool2d: rtol 1e-5, atol 1e-6 (windows of up to 128x128 values);
  softmax cross-entropy: loss rtol 1e-5 (1e-4 above 10^4 rows: a float32 sum of that many row
      losses), atol 1e-6; dlogits rtol 1e-5, atol 1e-6 * |dloss| / N;
  linear: rtol 1e-3, atol 1e-3 * max|ref| (float32 sums of up to 4096 products), as the conv2d GPU
      tests; the opt-in TF32 conv2d variant at rtol 2e-2, atol 2e-2 * max|ref|.
"""

import numpy as np
import pytest

from pygan import ops
from pygan.ops import reference as R

pytestmark = pytest.mark.cuda


def variants(gpu, family):
    return range(1, len(gpu.variants()[family]) + 1)


def f32(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def close(cp, out, ref, what, rtol, atol):
    out = cp.asnumpy(out)
    assert out.dtype == np.float32, f"{what}: dtype {out.dtype}"
    assert out.shape == np.shape(ref), f"{what}: shape {out.shape} != {np.shape(ref)}"
    err = np.abs(out.astype(np.float64) - ref)
    assert (err <= atol + rtol * np.abs(ref)).all(), f"{what}: max error {err.max():.3g}"


# -- avg_pool2d ----------------------------------------------------------------------------------------

POOL_CASES = {
    # x shape, kernel_size, stride
    "classifier-global-8x8": ((128, 256, 8, 8), 8, 8),
    "global-128x128": ((4, 8, 128, 128), 128, 128),
    "global-non-square": ((16, 32, 7, 9), (7, 9), 1),
    "2x2-s2": ((64, 64, 32, 32), 2, 2),
    "overlap-3x3-s2-odd": ((16, 32, 33, 31), 3, 2),
    "non-square-window-and-stride": ((8, 16, 64, 64), (5, 3), (1, 2)),
    "stride-greater-than-kernel": ((8, 8, 30, 30), 2, 5),
}


@pytest.mark.parametrize("case", list(POOL_CASES), ids=list(POOL_CASES))
def test_avg_pool2d_every_variant(cp, gpu, rng, case):
    x_shape, k, s = POOL_CASES[case]
    x = f32(rng, x_shape)
    y_ref = R.avg_pool2d_forward(x.astype(np.float64), k, s)
    dy = f32(rng, y_ref.shape)
    dx_ref = R.avg_pool2d_backward(dy.astype(np.float64), x_shape, k, s)
    xd, dyd = cp.asarray(x), cp.asarray(dy)
    for v in variants(gpu, "avg_pool2d"):
        close(cp, gpu.avg_pool2d_forward(xd, k, s, variant=v), y_ref, f"{case} forward variant {v}", 1e-5, 1e-6)
        close(cp, gpu.avg_pool2d_backward(dyd, x_shape, k, s, variant=v), dx_ref, f"{case} backward variant {v}",
              1e-5, 1e-6)


# -- softmax cross-entropy -----------------------------------------------------------------------------

CE_CASES = [  # rows, classes, logit scale
    (1, 1, 1.0), (64, 10, 3.0), (256, 10, 3.0), (257, 10, 1e3), (1000, 10, 1e4), (4096, 1000, 3.0),
    (100_003, 10, 3.0), (37, 33, 50.0),
]


@pytest.mark.parametrize("rows,classes,scale", CE_CASES)
def test_softmax_ce_every_variant(cp, gpu, rng, rows, classes, scale):
    x, labels = f32(rng, (rows, classes), scale), rng.integers(0, classes, rows)
    dloss = 0.7
    x64 = x.astype(np.float64)
    loss_ref = R.softmax_cross_entropy_forward(x64, labels)
    g_ref = R.softmax_cross_entropy_backward(x64, labels, dloss)
    xd = cp.asarray(x)
    for label_dtype in (np.int64, np.int32):
        ld = cp.asarray(labels.astype(label_dtype))
        for v in variants(gpu, "loss"):
            what = f"{rows}x{classes} scale {scale} labels {np.dtype(label_dtype)} variant {v}"
            loss = gpu.softmax_cross_entropy_forward(xd, ld, variant=v)
            assert loss.shape == ()
            close(cp, loss, loss_ref, "loss " + what, 1e-4 if rows > 10**4 else 1e-5, 1e-6)
            g = gpu.softmax_cross_entropy_backward(xd, ld, cp.asarray(dloss, cp.float32), variant=v)
            close(cp, g, g_ref, "dlogits " + what, 1e-5, 1e-6 * dloss / rows)


def test_softmax_ce_deterministic_and_nan(cp, gpu, rng):
    x, labels = cp.asarray(f32(rng, (200_000, 10), 3.0)), cp.asarray(rng.integers(0, 10, 200_000))
    for v in variants(gpu, "loss"):
        first = cp.asnumpy(gpu.softmax_cross_entropy_forward(x, labels, variant=v))
        for _ in range(3):
            assert cp.asnumpy(gpu.softmax_cross_entropy_forward(x, labels, variant=v)) == first  # bitwise
    x[12345, 3] = cp.nan
    from pygan.ops import cuda

    sentinel = cuda.backend(poison=7.0)  # NaN is the right answer here: poison with 7.0 instead
    g_ref = R.softmax_cross_entropy_backward(cp.asnumpy(x[12346:]).astype(np.float64), cp.asnumpy(labels[12346:]),
                                             (200_000 - 12346) / 200_000)
    for v in variants(gpu, "loss"):
        assert cp.isnan(sentinel.softmax_cross_entropy_forward(x, labels, variant=v))
        g = sentinel.softmax_cross_entropy_backward(x, labels, 1.0, variant=v)
        assert bool(cp.isnan(g[12345]).all())
        close(cp, g[12346:], g_ref, f"finite rows variant {v}", 1e-5, 1e-9)


def test_softmax_ce_out_of_range_labels_direct_call(cp, C, rng):
    """The registry rejects them (ValueError); a direct call must not read out of bounds: NaN."""
    x = cp.asarray(f32(rng, (6, 4)))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        ops.softmax_cross_entropy_forward(x, cp.asarray([0, 1, 4, 2, 3, 1]))
    for v in (1, 2):
        for bad in (-1, 4, 2**40):
            # NaN is the right answer, so outputs start at 7.0 (fresh for every call), not NaN
            ws = cp.full(max(C.softmax_cross_entropy_workspace_size(6, v), 1), cp.nan, cp.float32)
            labels = cp.asarray([0, 1, bad, 2, 3, 1], dtype=cp.int64)
            loss = cp.full((), 7.0, cp.float32)
            C.softmax_cross_entropy_forward(x, labels, ws, loss, v, cp.cuda.get_current_stream().ptr)
            g = cp.full_like(x, 7.0)
            C.softmax_cross_entropy_backward(x, labels, cp.ones(1, cp.float32), g, v,
                                             cp.cuda.get_current_stream().ptr)
            good = [0, 1, 3, 4, 5]
            ref = R.softmax_cross_entropy_backward(cp.asnumpy(x[good]).astype(np.float64),
                                                   cp.asnumpy(labels[good]), len(good) / 6)
            assert cp.isnan(loss) and bool(cp.isnan(g[2]).all())
            close(cp, g[good], ref, f"valid rows variant {v}", 1e-5, 1e-7)


# -- linear --------------------------------------------------------------------------------------------

LINEAR_CASES = {  # n, in_features, out_features
    "classifier-head-256-to-10": (128, 256, 10),
    "wide-4096-to-1000": (64, 4096, 1000),
    "one-sample": (1, 7, 3),
    "batch-1000-split-k": (1000, 33, 17),
}


@pytest.mark.parametrize("case", list(LINEAR_CASES), ids=list(LINEAR_CASES))
def test_linear_every_variant(cp, gpu, rng, case):
    n, k, o = LINEAR_CASES[case]
    x, w, b = f32(rng, (n, k)), (f32(rng, (o, k)) / np.sqrt(k)).astype(np.float32), f32(rng, (o,))
    dy = f32(rng, (n, o))
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    for bias in (True, False):
        y_ref = R.linear_forward(x64, w64, b.astype(np.float64) if bias else None)
        refs = R.linear_backward(x64, w64, dy.astype(np.float64), bias)
        for v, name in enumerate(gpu.variants()["conv2d"], 1):
            tol = 2e-2 if "tf32" in name.lower() else 1e-3
            what = f"{case} bias={bias} variant {v}"

            def chk(out, ref, label):
                close(cp, out, ref, f"{label} {what}", tol, tol * max(float(np.abs(ref).max()), 1e-6))

            chk(gpu.linear_forward(cp.asarray(x), cp.asarray(w), cp.asarray(b) if bias else None, variant=v),
                y_ref, "y")
            outs = gpu.linear_backward(cp.asarray(x), cp.asarray(w), cp.asarray(dy), bias, variant=v)
            for label, out, ref in zip(("dx", "dw", "db"), outs, refs):
                if ref is None:
                    assert out is None
                else:
                    chk(out, ref, label)


# -- registry, stream, validation ------------------------------------------------------------------------


def test_registry_dispatches_to_cuda(cp, rng):
    x, w, b = f32(rng, (8, 12)), f32(rng, (5, 12)), f32(rng, (5,))
    y = ops.linear_forward(cp.asarray(x), cp.asarray(w), cp.asarray(b))
    assert isinstance(y, cp.ndarray)
    close(cp, y, R.linear_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64)), "linear",
          1e-4, 1e-4)
    xp = f32(rng, (2, 3, 8, 8))
    y = ops.avg_pool2d_forward(cp.asarray(xp), 8, 8)
    assert isinstance(y, cp.ndarray) and y.shape == (2, 3, 1, 1)
    dx = ops.avg_pool2d_backward(cp.ones((2, 3, 1, 1), cp.float32), (2, 3, 8, 8), 8, 8)
    close(cp, dx, np.full((2, 3, 8, 8), 1 / 64), "pool backward", 1e-6, 1e-7)
    logits, labels = f32(rng, (9, 4)), rng.integers(0, 4, 9)
    loss = ops.softmax_cross_entropy_forward(cp.asarray(logits), cp.asarray(labels))
    close(cp, loss, R.softmax_cross_entropy_forward(logits.astype(np.float64), labels), "loss", 1e-5, 1e-6)
    g = ops.softmax_cross_entropy_backward(cp.asarray(logits), cp.asarray(labels), cp.asarray(2.0, cp.float32))
    close(cp, g, R.softmax_cross_entropy_backward(logits.astype(np.float64), labels, 2.0), "dlogits", 1e-5, 1e-7)


def test_runs_on_current_stream(cp, gpu, rng):
    x, logits, labels = f32(rng, (64, 128, 8, 8)), f32(rng, (4096, 10)), rng.integers(0, 10, 4096)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        y = gpu.avg_pool2d_forward(cp.asarray(x), 8, 8)
        loss = gpu.softmax_cross_entropy_forward(cp.asarray(logits), cp.asarray(labels))
    stream.synchronize()
    close(cp, y, R.avg_pool2d_forward(x.astype(np.float64), 8, 8), "pool on a stream", 1e-5, 1e-6)
    close(cp, loss, R.softmax_cross_entropy_forward(logits.astype(np.float64), labels), "loss on a stream", 1e-5,
          1e-6)


def test_validation(cp, C):
    with pytest.raises(ValueError, match=r"avg_pool2d_forward: x must be a CuPy array in CUDA device memory"):
        C.avg_pool2d_forward(np.ones((1, 1, 2, 2), np.float32), cp.empty((1, 1, 1, 1), cp.float32), 2, 2)
    with pytest.raises(ValueError, match=r"y has shape \(1, 1, 2, 2\), expected \(1, 1, 1, 1\)"):
        C.avg_pool2d_forward(cp.ones((1, 1, 2, 2), cp.float32), cp.empty((1, 1, 2, 2), cp.float32), 2, 2)
    x, loss = cp.ones((3, 4), cp.float32), cp.empty((), cp.float32)
    with pytest.raises(ValueError, match=r"labels must be int64, got int32"):
        C.softmax_cross_entropy_forward(x, cp.zeros(3, cp.int32), None, loss, 1)
    with pytest.raises(ValueError, match=r"labels must be a CuPy array in CUDA device memory"):
        C.softmax_cross_entropy_forward(x, np.zeros(3, np.int64), None, loss, 1)
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        C.softmax_cross_entropy_forward(x, cp.zeros(4, cp.int64), None, loss, 1)
