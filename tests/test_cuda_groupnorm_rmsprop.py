"""Issue 11 kernels on a real GPU (CuPy arrays): every group-norm and RMSprop variant against the
reference, at WGAN-GP critic shapes (layer norm G = 1, instance norm G = C, groups of 32) and odd
shapes. `cuda`-marked: skipped where no GPU is visible (tests/conftest.py).

Tolerances (|out - ref| <= atol + rtol * |ref|):
  group norm: rtol 1e-3, atol 1e-3 * max|ref| against the float64 reference (float32 sums over up
      to C/G * H * W = 65536 values, in another order than numpy's);
  RMSprop: rtol 1e-5, atol 1e-6 against the float32 reference, three steps.
"""

import numpy as np
import pytest

from pygan.ops import reference as R

pytestmark = pytest.mark.cuda


def variants(C, family):
    return list(range(1, len(C.variants()[family]) + 1))


def close(cp, out, ref, what, rtol=1e-3, atol_rel=1e-3):
    out = cp.asnumpy(out).astype(np.float64)
    assert out.shape == ref.shape, what
    atol = atol_rel * max(float(np.abs(ref).max()), 1e-6)
    err = np.abs(out - ref)
    assert (err <= atol + rtol * np.abs(ref)).all(), f"{what}: max error {err.max():.3g}"


GN_CASES = {
    "layer-critic-128x16x16": ((16, 128, 16, 16), 1),
    "layer-critic-512x4x4": ((16, 512, 4, 4), 1),
    "instance-256x8x8": ((16, 256, 8, 8), 256),
    "groups32-256x8x8": ((16, 256, 8, 8), 32),
    "odd-6x7x5": ((3, 6, 7, 5), 3),
    "one-sample-big-row": ((1, 64, 32, 32), 1),
}


@pytest.mark.parametrize("case", list(GN_CASES), ids=list(GN_CASES))
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_group_norm_gpu_all_variants(cp, gpu, C, rng, case, affine):
    shape, groups = GN_CASES[case]
    c = shape[1]
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
    gamma = rng.standard_normal(c).astype(np.float32) if affine else None
    beta = rng.standard_normal(c).astype(np.float32) if affine else None
    dy = rng.standard_normal(shape).astype(np.float32)
    f64 = lambda a: None if a is None else a.astype(np.float64)  # noqa: E731
    dev = lambda a: None if a is None else cp.asarray(a)  # noqa: E731
    refs = R.group_norm_forward(f64(x), f64(gamma), f64(beta), groups, 1e-5)
    for v in variants(C, "group_norm"):
        outs = gpu.group_norm_forward(dev(x), dev(gamma), dev(beta), groups, 1e-5, variant=v)
        for name, out, ref in zip(("y", "mean", "rstd"), outs, refs):
            close(cp, out, ref, f"group_norm {name} v{v}")
        mean, rstd = outs[1], outs[2]
        gouts = gpu.group_norm_backward(dev(x), dev(gamma), dev(dy), mean, rstd, groups, variant=v)
        grefs = R.group_norm_backward(f64(x), f64(gamma), f64(dy), f64(cp.asnumpy(mean)), f64(cp.asnumpy(rstd)), groups)
        for name, out, ref in zip(("dx", "dgamma", "dbeta"), gouts, grefs):
            if ref is None:
                assert out is None
            else:
                close(cp, out, ref, f"group_norm {name} v{v}")


def test_group_norm_poisoned_outputs_and_determinism(cp, C, rng):
    shape, groups = (4, 64, 8, 8), 8
    x = cp.asarray(rng.standard_normal(shape).astype(np.float32))
    gamma = cp.asarray(rng.standard_normal(64).astype(np.float32))
    for v in variants(C, "group_norm"):
        runs = []
        for _ in range(2):
            y, mean, rstd = (cp.full(s, cp.nan, cp.float32) for s in (shape, (4, groups), (4, groups)))
            C.group_norm_forward(x, gamma, None, y, mean, rstd, groups, 1e-5, v, cp.cuda.get_current_stream().ptr)
            dx, dg, db = (cp.full(s, cp.nan, cp.float32) for s in (shape, (64,), (64,)))
            C.group_norm_backward(x, gamma, x, mean, rstd, dx, dg, db, groups, v, cp.cuda.get_current_stream().ptr)
            outs = [cp.asnumpy(a) for a in (y, mean, rstd, dx, dg, db)]
            assert all(np.isfinite(a).all() for a in outs), f"variant {v} left outputs unwritten"
            runs.append(outs)
        for a, b in zip(*runs):
            np.testing.assert_array_equal(a, b)  # no atomics: bitwise the same


def test_group_norm_registry_dispatches_cupy(cp, rng):
    from pygan import ops as registry

    x = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    y, _, _ = registry.group_norm_forward(cp.asarray(x), None, None, 2, 1e-5)
    close(cp, y, R.group_norm_forward(x.astype(np.float64), None, None, 2, 1e-5)[0], "registry group_norm")


def test_group_norm_validation(cp, C):
    x = cp.ones((2, 6, 4), cp.float32)
    with pytest.raises(ValueError, match="x must be a CuPy array in CUDA device memory"):
        C.group_norm_forward(np.ones((2, 6, 4), np.float32), None, None, x, cp.empty((2, 3), cp.float32),
                             cp.empty((2, 3), cp.float32), 3, 1e-5)
    with pytest.raises(ValueError, match="num_groups 4 does not divide"):
        C.group_norm_forward(x, None, None, x, cp.empty((2, 4), cp.float32), cp.empty((2, 4), cp.float32), 4, 1e-5)


@pytest.mark.parametrize("hyper", [
    dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False),
    dict(lr=5e-3, alpha=0.9, eps=1e-6, weight_decay=0.01, momentum=0.9, centered=True),
], ids=["default", "momentum-centered-wd"])
def test_rmsprop_every_variant(cp, gpu, C, rng, hyper):
    sizes = [1, 3, 257, 2049, 100_003] + [(i % 7) + 1 for i in range(40)]
    for variant in variants(C, "rmsprop"):
        host = [[rng.standard_normal(n).astype(np.float32) for n in sizes]]
        host.append([(np.abs(rng.standard_normal(n)) * 0.1 + 0.05).astype(np.float32) for n in sizes])
        host.append([(rng.standard_normal(n) * 0.1).astype(np.float32) for n in sizes] if hyper["momentum"] else [])
        host.append([(rng.standard_normal(n) * 0.01).astype(np.float32) for n in sizes] if hyper["centered"] else [])

        def to_device(a, offset):  # offset 1: a contiguous view that is not 16-byte aligned
            d = cp.empty(a.size + offset, cp.float32)[offset:]
            d[...] = cp.asarray(a)
            return d

        dev = [[to_device(a, 1 if i == 2 else 0) for i, a in enumerate(group)] for group in host]
        for _ in range(3):
            grads = [rng.standard_normal(n).astype(np.float32) for n in sizes]
            gpu.rmsprop_step(dev[0], [cp.asarray(g) for g in grads], *dev[1:], **hyper, variant=variant)
            R.rmsprop_step(host[0], grads, *host[1:], **hyper)
        for d_group, h_group in zip(dev, host):
            for d, h in zip(d_group, h_group):
                np.testing.assert_allclose(cp.asnumpy(d), h, rtol=1e-5, atol=1e-6)
