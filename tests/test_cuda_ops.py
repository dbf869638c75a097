"""The CUDA kernels on real CuPy arrays against the reference, plus tensors, modules and Adam on
CUDA. Every test here is marked `cuda` and skips without a GPU (tests/conftest.py). Same checks and
tolerances as tests/test_emulated_kernels.py (rtol 1e-5, atol 1e-6; leaky ReLU exact), at sizes
only a GPU makes cheap.
"""

import numpy as np
import pytest

import pygan
from pygan import nn, ops, optim
from pygan.ops import reference

pytestmark = pytest.mark.cuda

TOL = dict(rtol=1e-5, atol=1e-6)
EXACT = dict(rtol=0, atol=0)
SIZES = [1, 3, 4, 5, 255, 257, 4099, (1 << 20) + 3]


def variants(gpu, family):
    return range(1, len(gpu.variants()[family]) + 1)


def randn(rng, shape, scale=3.0):
    return np.asarray(rng.standard_normal(shape) * scale, dtype=np.float32)


def check(out, ref, tol=TOL):
    out = out.get()
    assert out.dtype == np.float32 and out.shape == np.shape(ref)
    np.testing.assert_allclose(out, ref, equal_nan=True, **tol)


POINTWISE = [("leaky_relu", (0.2,), "x", EXACT), ("leaky_relu", (0.0,), "x", EXACT),
             ("tanh", (), "y", TOL), ("sigmoid", (), "y", TOL)]


def to_device(cp, a, offset=0):
    """a on the GPU; offset 1 puts it at a 4-byte offset (not 16-byte aligned: float4 variants fall back)."""
    buf = cp.empty(a.size + offset, cp.float32)
    out = buf[offset:].reshape(a.shape)
    out[...] = cp.asarray(a)
    return out


@pytest.mark.parametrize("name,extra,source,tol", POINTWISE)
def test_pointwise_every_variant(cp, gpu, rng, name, extra, source, tol):
    for variant in variants(gpu, "activation"):
        for n in SIZES:
            x, dy = randn(rng, n), randn(rng, n, 1.0)
            if n == 257:
                x[:4] = [np.nan, np.inf, -np.inf, 1e4]
            with np.errstate(invalid="ignore", over="ignore"):
                y_ref = getattr(reference, f"{name}_forward")(x, *extra)
                src = x if source == "x" else y_ref
                dx_ref = getattr(reference, f"{name}_backward")(src, dy, *extra)
            for offset in (0, 1):
                xd, dyd, srcd = (to_device(cp, a, offset) for a in (x, dy, src))
                check(getattr(gpu, f"{name}_forward")(xd, *extra, variant=variant), y_ref, tol)
                check(getattr(gpu, f"{name}_backward")(srcd, dyd, *extra, variant=variant), dx_ref, tol)


def test_registry_dispatches_cupy_to_cuda(cp, rng):
    x = randn(rng, (4, 5, 6))
    y = ops.tanh_forward(cp.asarray(x))
    assert isinstance(y, cp.ndarray)
    check(y, reference.tanh_forward(x))


def test_runs_on_current_stream(cp, gpu, rng):
    x = randn(rng, 100_003)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        y = gpu.sigmoid_forward(cp.asarray(x))
    stream.synchronize()
    check(y, reference.sigmoid_forward(x))


def test_bce_every_variant(cp, gpu, rng):
    for variant in variants(gpu, "loss"):
        for n in SIZES + [3_000_001]:
            x, t = randn(rng, n, 4.0), rng.random(n).astype(np.float32)
            if n == 257:
                x[:4] = [1e4, -1e4, 1e4, -1e4]
            loss = gpu.binary_cross_entropy_with_logits_forward(cp.asarray(x), cp.asarray(t), variant=variant)
            assert loss.shape == ()
            ref = reference.binary_cross_entropy_with_logits_forward(x, t)
            np.testing.assert_allclose(loss.get(), ref, rtol=1e-4 if n > 10**6 else 1e-5, atol=1e-6)
            dx = gpu.binary_cross_entropy_with_logits_backward(cp.asarray(x), cp.asarray(t), cp.asarray(0.5, cp.float32), variant=variant)
            check(dx, reference.binary_cross_entropy_with_logits_backward(x, t, 0.5))


def test_bce_deterministic_and_nan(cp, gpu, rng):
    x, t = cp.asarray(randn(rng, 1_000_000)), cp.asarray(rng.random(1_000_000).astype(np.float32))
    first = gpu.binary_cross_entropy_with_logits_forward(x, t).get()
    for _ in range(3):
        assert gpu.binary_cross_entropy_with_logits_forward(x, t).get() == first  # bitwise
    x[12345] = cp.nan
    for variant in variants(gpu, "loss"):
        assert cp.isnan(gpu.binary_cross_entropy_with_logits_forward(x, t, variant=variant))


def test_adam_every_variant(cp, gpu, rng):
    sizes = [1, 3, 257, 2049, 100_003] + [(i % 7) + 1 for i in range(40)]
    hyper = dict(lr=2e-3, beta1=0.8, beta2=0.99, eps=1e-8, weight_decay=0.01)
    for variant in variants(gpu, "adam"):
        host = [[randn(rng, n, s) for n in sizes] for s in (1.0, 0.1, 0.1)]
        host[2] = [np.abs(v) for v in host[2]]
        # tensor 2 is a misaligned view in every list: the float4 variant takes its scalar path
        dev = [[to_device(cp, a, 1 if i == 2 else 0) for i, a in enumerate(group)] for group in host]
        for step in range(1, 4):
            grads = [randn(rng, n, 1.0) for n in sizes]
            gpu.adam_step(dev[0], [cp.asarray(g) for g in grads], dev[1], dev[2], step, **hyper, variant=variant)
            reference.adam_step(host[0], grads, host[1], host[2], step, **hyper)
        for d_group, h_group in zip(dev, host):
            for d, h in zip(d_group, h_group):
                check(d, h)


def test_validation(cp, C):
    with pytest.raises(ValueError, match=r"x must be a CuPy array in CUDA device memory"):
        C.tanh_forward(np.ones(4, np.float32), cp.empty(4, cp.float32))
    with pytest.raises(ValueError, match=r"x must be float32, got float64"):
        C.tanh_forward(cp.ones(4), cp.empty(4, cp.float32))
    with pytest.raises(ValueError, match=r"x must be C-contiguous"):
        C.tanh_forward(cp.ones(8, cp.float32)[::2], cp.empty(4, cp.float32))
    with pytest.raises(ValueError, match=r"y has shape"):
        C.tanh_forward(cp.ones(4, cp.float32), cp.empty(5, cp.float32))
    with pytest.raises(ValueError, match=r"grads\[0\]"):
        a = cp.ones(3, cp.float32)
        C.adam_step([a], [cp.ones(2, cp.float32)], [a], [a], 1, 1e-3, 0.9, 0.999, 1e-8, 0.0)
    with pytest.raises(ValueError, match=r"x must be float32, got float64"):  # through the registry
        ops.sigmoid_forward(cp.ones(3))


def test_tensor_to_cuda_and_back(cp, rng):
    x = pygan.tensor(randn(rng, (3, 7)), requires_grad=True)
    xc = x.to("cuda")
    assert xc.device == "cuda" and isinstance(xc.data, cp.ndarray)
    for t in (x, xc):
        y = nn.functional.sigmoid(nn.functional.leaky_relu(nn.functional.tanh(t), 0.2))
        y.sum().backward()
    assert xc.grad.device == "cuda"
    np.testing.assert_allclose(xc.grad.data.get(), x.grad.data, **TOL)
    assert xc.to("cpu").device == "cpu"


def test_module_to_cuda(cp, rng):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.LeakyReLU(0.2), nn.Tanh())
    model.to("cuda")
    for p in list(model.parameters()) + list(model.buffers()):
        assert isinstance(p.data, cp.ndarray), p.shape
    act = nn.Sequential(nn.LeakyReLU(0.2), nn.Tanh(), nn.Sigmoid())
    x = randn(rng, (2, 3, 5))
    out = act.to("cuda")(pygan.tensor(x, device="cuda"))
    assert out.device == "cuda"
    np.testing.assert_allclose(out.data.get(), act.to("cpu")(pygan.tensor(x)).data, **TOL)


def test_adam_on_cuda_tensors(cp, rng):
    shapes = [(4, 3, 3, 3), (4,), (7, 5)]
    init = [randn(rng, s, 0.5) for s in shapes]
    grads = [[randn(rng, s) for s in shapes] for _ in range(3)]
    results = {}
    for device in ("cpu", "cuda"):
        params = [pygan.tensor(a, requires_grad=True, device=device) for a in init]
        opt = optim.Adam(params, lr=2e-4, betas=(0.5, 0.999), weight_decay=1e-3)
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                p.grad = pygan.tensor(g, device=device)
            opt.step()
        results[device] = [p.data for p in params]
    for got, want in zip(results["cuda"], results["cpu"]):
        assert isinstance(got, cp.ndarray)
        np.testing.assert_allclose(got.get(), want, **TOL)
