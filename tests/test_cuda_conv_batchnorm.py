"""Issue 5 kernels on a real GPU (CuPy arrays): every conv2d / batch-norm variant against the
reference (float64 on the CPU), at DCGAN layer shapes (small batch) and odd shapes. `cuda`-marked:
skipped where no GPU is visible (tests/conftest.py).

Tolerance: |out - ref| <= atol + rtol * |ref| with rtol 1e-3 and atol 1e-3 * max|ref| (float32
sums over up to C*kh*kw = 8192 or N*OH*OW terms; order differs from numpy's).
The opt-in TF32 tensor-core conv2d variants (5: wmma, 9: mma.sync) round their operands to a 10-bit mantissa (relative
error up to 2^-11 per operand), so they are left out of the float32 loops and checked on their own at
rtol 2e-2 and atol 2e-2 * max|ref| (relative to the output's scale).
"""

import numpy as np
import pytest

from pygan.ops import reference as R

pytestmark = pytest.mark.cuda

# n, c, h, w, o, k, stride, padding: DCGAN 64x64x3 (D side: conv) at batch 4
DCGAN_CONV = {
    "d1-3ch-64to32": (4, 3, 64, 64, 64, 4, 2, 1),
    "d2-64to128": (4, 64, 32, 32, 128, 4, 2, 1),
    "d4-256to512": (4, 256, 8, 8, 512, 4, 2, 1),
    "d5-512to1-4x4-s1-p0": (4, 512, 4, 4, 1, 4, 1, 0),
    "mnist-d1-1ch-32to16": (4, 1, 32, 32, 64, 4, 2, 1),
}
# n, cin, h, w, cout, k, stride, padding: G side (conv_transpose)
DCGAN_CONVT = {
    "g1-100to512-1to4": (4, 100, 1, 1, 512, 4, 1, 0),
    "g2-512to256-4to8": (4, 512, 4, 4, 256, 4, 2, 1),
    "g5-64to3-32to64": (4, 64, 32, 32, 3, 4, 2, 1),
    "mnist-g-to-1ch": (4, 64, 16, 16, 1, 4, 2, 1),
}


@pytest.fixture(scope="module")
def cp():
    return pytest.importorskip("cupy")


@pytest.fixture(scope="module")
def ops(cp):
    from pygan.ops import cuda

    return cuda.backend(poison=True)  # every output and workspace NaN before its kernel runs


def variant_names(family):
    from pygan.backend import native

    return native().variants()[family]


def variants(family):
    """The float32-exact variants (the opt-in TF32 ones have their own, looser tests)."""
    return [v for v, name in enumerate(variant_names(family), 1) if "tf32" not in name.lower()]


def tf32_variants(family):
    return [v for v, name in enumerate(variant_names(family), 1) if "tf32" in name.lower()]


TF32_TOL = 2e-2  # rtol, and atol relative to max|ref|


def close(cp, out, ref, what, rtol=1e-3, atol_rel=1e-3):
    out = cp.asnumpy(out).astype(np.float64)
    assert out.shape == ref.shape, what
    atol = atol_rel * max(float(np.abs(ref).max()), 1e-6)
    err = np.abs(out - ref)
    assert (err <= atol + rtol * np.abs(ref)).all(), f"{what}: max error {err.max():.3g}"


@pytest.mark.parametrize("case", list(DCGAN_CONV), ids=list(DCGAN_CONV))
def test_conv2d_dcgan_shapes_all_variants(cp, ops, rng, case):
    n, c, h, w, o, k, s, p = DCGAN_CONV[case]
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((o, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    y_ref = R.conv2d_forward(x.astype(np.float64), wt.astype(np.float64), b.astype(np.float64), s, p)
    dy = rng.standard_normal(y_ref.shape).astype(np.float32)
    refs = R.conv2d_backward(x.astype(np.float64), wt.astype(np.float64), dy.astype(np.float64), s, p, True)
    xg, wg, bg, dyg = (cp.asarray(a) for a in (x, wt, b, dy))
    for v in variants("conv2d"):
        close(cp, ops.conv2d_forward(xg, wg, bg, s, p, variant=v), y_ref, f"{case} forward v{v}")
        for name, out, ref in zip(("dx", "dw", "db"), ops.conv2d_backward(xg, wg, dyg, s, p, True, variant=v), refs):
            close(cp, out, ref, f"{case} {name} v{v}")


@pytest.mark.parametrize("case", list(DCGAN_CONVT), ids=list(DCGAN_CONVT))
def test_conv_transpose2d_dcgan_shapes_all_variants(cp, ops, rng, case):
    n, cin, h, w, cout, k, s, p = DCGAN_CONVT[case]
    x = rng.standard_normal((n, cin, h, w)).astype(np.float32)
    wt = (rng.standard_normal((cin, cout, k, k)) / np.sqrt(cin)).astype(np.float32)
    y_ref = R.conv_transpose2d_forward(x.astype(np.float64), wt.astype(np.float64), None, s, p, 0)
    dy = rng.standard_normal(y_ref.shape).astype(np.float32)
    refs = R.conv_transpose2d_backward(x.astype(np.float64), wt.astype(np.float64), dy.astype(np.float64), s, p, 0, False)
    xg, wg, dyg = (cp.asarray(a) for a in (x, wt, dy))
    for v in variants("conv2d"):
        close(cp, ops.conv_transpose2d_forward(xg, wg, None, s, p, 0, variant=v), y_ref, f"{case} forward v{v}")
        dx, dw, db = ops.conv_transpose2d_backward(xg, wg, dyg, s, p, 0, False, variant=v)
        assert db is None
        close(cp, dx, refs[0], f"{case} dx v{v}")
        close(cp, dw, refs[1], f"{case} dw v{v}")


def test_conv2d_tf32_variant_is_listed_and_not_default():
    assert tf32_variants("conv2d") == [5, 9]
    assert "tf32" in variant_names("conv2d")[4].lower()


@pytest.mark.parametrize("case", list(DCGAN_CONV), ids=list(DCGAN_CONV))
def test_conv2d_tf32_variant_dcgan_shapes(cp, ops, rng, case):
    n, c, h, w, o, k, s, p = DCGAN_CONV[case]
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((o, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    y_ref = R.conv2d_forward(x.astype(np.float64), wt.astype(np.float64), b.astype(np.float64), s, p)
    dy = rng.standard_normal(y_ref.shape).astype(np.float32)
    refs = R.conv2d_backward(x.astype(np.float64), wt.astype(np.float64), dy.astype(np.float64), s, p, True)
    xg, wg, bg, dyg = (cp.asarray(a) for a in (x, wt, b, dy))
    for v in tf32_variants("conv2d"):
        tol = dict(rtol=TF32_TOL, atol_rel=TF32_TOL)
        close(cp, ops.conv2d_forward(xg, wg, bg, s, p, variant=v), y_ref, f"{case} forward tf32 v{v}", **tol)
        for name, out, ref in zip(("dx", "dw", "db"), ops.conv2d_backward(xg, wg, dyg, s, p, True, variant=v), refs):
            close(cp, out, ref, f"{case} {name} tf32 v{v}", **tol)


@pytest.mark.parametrize("case", list(DCGAN_CONVT), ids=list(DCGAN_CONVT))
def test_conv_transpose2d_tf32_variant_dcgan_shapes(cp, ops, rng, case):
    n, cin, h, w, cout, k, s, p = DCGAN_CONVT[case]
    x = rng.standard_normal((n, cin, h, w)).astype(np.float32)
    wt = (rng.standard_normal((cin, cout, k, k)) / np.sqrt(cin)).astype(np.float32)
    y_ref = R.conv_transpose2d_forward(x.astype(np.float64), wt.astype(np.float64), None, s, p, 0)
    dy = rng.standard_normal(y_ref.shape).astype(np.float32)
    refs = R.conv_transpose2d_backward(x.astype(np.float64), wt.astype(np.float64), dy.astype(np.float64), s, p, 0, False)
    xg, wg, dyg = (cp.asarray(a) for a in (x, wt, dy))
    for v in tf32_variants("conv2d"):
        tol = dict(rtol=TF32_TOL, atol_rel=TF32_TOL)
        close(cp, ops.conv_transpose2d_forward(xg, wg, None, s, p, 0, variant=v), y_ref, f"{case} fwd tf32 v{v}", **tol)
        dx, dw, _ = ops.conv_transpose2d_backward(xg, wg, dyg, s, p, 0, False, variant=v)
        close(cp, dx, refs[0], f"{case} dx tf32 v{v}", **tol)
        close(cp, dw, refs[1], f"{case} dw tf32 v{v}", **tol)


def test_conv2d_backward_weight_deterministic_on_gpu(cp, ops, rng):
    x = cp.asarray(rng.standard_normal((32, 64, 32, 32)).astype(np.float32))
    dy = cp.asarray(rng.standard_normal((32, 128, 16, 16)).astype(np.float32))
    for v in variants("conv2d") + tf32_variants("conv2d"):
        a = ops.conv2d_backward_weight(x, dy, (128, 64, 4, 4), 2, 1, variant=v)
        b = ops.conv2d_backward_weight(x, dy, (128, 64, 4, 4), 2, 1, variant=v)
        assert bool((a == b).all()), f"variant {v} is not deterministic"


def test_registry_dispatches_cupy_to_cuda(cp, rng):
    from pygan import ops as registry

    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = registry.conv2d_forward(cp.asarray(x), cp.asarray(w), None, 1, 1)
    close(cp, y, R.conv2d_forward(x.astype(np.float64), w.astype(np.float64), None, 1, 1), "registry conv2d")


@pytest.mark.parametrize("shape", [(128, 64, 32, 32), (64, 256, 8, 8), (16, 3, 7, 5), (64, 512, 4, 4)])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("fused", [False, True], ids=["bn", "bn+lrelu"])
def test_batch_norm_gpu_all_variants(cp, ops, rng, shape, training, fused):
    c = shape[1]
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
    gamma, beta = rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    f64 = lambda a: a.astype(np.float64)  # noqa: E731
    for v in variants("batch_norm"):
        rm, rv = rng.standard_normal(c).astype(np.float32), (rng.random(c) + 0.5).astype(np.float32)
        rm64, rv64 = f64(rm), f64(rv)
        rmg, rvg = cp.asarray(rm), cp.asarray(rv)
        args = (cp.asarray(x), cp.asarray(gamma), cp.asarray(beta), rmg, rvg, training, 0.1, 1e-5)
        rargs = (f64(x), f64(gamma), f64(beta), rm64, rv64, training, 0.1, 1e-5)
        if fused:
            outs = ops.batch_norm_leaky_relu_forward(*args, 0.2, variant=v)
            refs = R.batch_norm_leaky_relu_forward(*rargs, 0.2)
        else:
            outs = ops.batch_norm_forward(*args, variant=v)
            refs = R.batch_norm_forward(*rargs)
        for name, out, ref in zip(("y", "mean", "rstd"), outs, refs):
            close(cp, out, ref, f"bn {name} v{v}")
        close(cp, rmg, rm64, f"running_mean v{v}")
        close(cp, rvg, rv64, f"running_var v{v}")
        mean, rstd = outs[1], outs[2]
        if fused:
            gouts = ops.batch_norm_leaky_relu_backward(cp.asarray(x), cp.asarray(gamma), cp.asarray(beta),
                                                       cp.asarray(dy), mean, rstd, training, 0.2, variant=v)
            grefs = R.batch_norm_leaky_relu_backward(f64(x), f64(gamma), f64(beta), f64(dy), f64(cp.asnumpy(mean)),
                                                     f64(cp.asnumpy(rstd)), training, 0.2)
        else:
            gouts = ops.batch_norm_backward(cp.asarray(x), cp.asarray(gamma), cp.asarray(dy), mean, rstd, training,
                                            variant=v)
            grefs = R.batch_norm_backward(f64(x), f64(gamma), f64(dy), f64(cp.asnumpy(mean)), f64(cp.asnumpy(rstd)),
                                          training)
        for name, out, ref in zip(("dx", "dgamma", "dbeta"), gouts, grefs):
            close(cp, out, ref, f"bn {name} v{v}")
