"""The fast CPU backend (pygan/ops/cpu.py: numba kernels, pygan's GEMM or the BLAS) against the reference.

As for the CUDA kernels (tests/test_emulated_conv_batchnorm.py): float32 inputs drawn fresh per
example, the reference run in float64 on the same values, shapes drawn by hypothesis, and every
output and workspace the backend allocates poisoned with NaN first (the `poisoned` fixture
replaces cpu._empty), so an element a kernel forgets to write fails the test.

Tolerances (|out - ref| <= atol + rtol * |ref|): atol 1e-4, rtol 1e-4 for every op (float32 sums
of at most a few hundred products of N(0, 1) values; batch-norm statistics accumulate in float64).
Adam: atol 1e-6, rtol 1e-5 (one float32 update from the same values).

Also here: the registry's choice of CPU backend (PYGAN_CPU_BACKEND), the fallback to the
reference when numba cannot be imported or cannot compile (one line on stderr), and the thread
policy of pygan/ops/cpu_runtime.py. The numba kernels compile on first use (cache=True), a few
seconds on a cold cache.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from pygan import ops
from pygan.ops import cpu, cpu_runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from pygan.ops import reference as R

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

needs_numba = pytest.mark.skipif(not cpu.AVAILABLE, reason=f"numba unavailable: {cpu.UNAVAILABLE}")
pytestmark = needs_numba

ATOL = RTOL = 1e-4
SETTINGS = dict(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture
def poisoned(monkeypatch):
    """Every array cpu.py allocates (outputs, workspaces) starts as NaN."""
    cpu.setup()
    monkeypatch.setattr(cpu, "_empty", lambda shape, dtype: np.full(shape, np.nan, dtype))
    monkeypatch.setattr(cpu._local, "ws", {}, raising=False)
    yield
    cpu._local.ws = {}


def _native_isas():
    try:
        from pygan import _cpu
    except ImportError:
        return []
    return [isa for isa in ("avx512", "avx2") if isa in _cpu.supported_isas()]


@pytest.fixture(params=["pygan", "pygan-avx2", "openblas"])
def conv_gemm(request, monkeypatch):
    """The convolutions on each GEMM: pygan's own (pygan._cpu, which gathers the patches while
    packing, run on 2 threads here) with its widest micro-kernel and with the AVX2 one, and scipy's
    OpenBLAS (explicit im2col)."""
    gemm_name, _, isa = request.param.partition("-")
    if gemm_name == "pygan" and not _native_isas():
        pytest.skip("pygan._cpu is not built or has no micro-kernel for this CPU")
    if isa and isa not in _native_isas():
        pytest.skip(f"this CPU has no {isa}")
    monkeypatch.setenv("PYGAN_CPU_GEMM", gemm_name)
    monkeypatch.setenv("PYGAN_CPU_ISA", isa)
    gemm = cpu_runtime.Gemm()
    assert gemm.implicit == (gemm_name == "pygan")
    gemm.threads = 2
    cpu.setup()
    monkeypatch.setattr(cpu, "_gemm", gemm)
    return request.param


def close(out, ref, what, atol=ATOL, rtol=RTOL):
    if ref is None:
        assert out is None, what
        return
    assert out.shape == ref.shape, f"{what}: shape {out.shape} != {ref.shape}"
    assert out.dtype == np.float32, f"{what}: dtype {out.dtype}"
    err = np.abs(out.astype(np.float64) - ref)
    bad = ~(err <= atol + rtol * np.abs(ref))  # NaN counts as bad
    assert not bad.any(), f"{what}: max error {np.nanmax(err):.3g}, {bad.sum()} bad, first at {np.argwhere(bad)[0]}"


def f32(rng, shape, scale=1.0, shift=0.0):
    return (rng.standard_normal(shape) * scale + shift).astype(np.float32)


def d(a):
    return None if a is None else a.astype(np.float64)


# -- convolution ----------------------------------------------------------------------------------

conv_cases = st.tuples(
    st.integers(1, 3),  # n
    st.integers(1, 5),  # c
    st.integers(1, 9), st.integers(1, 9),  # h, w
    st.integers(1, 5),  # o
    st.integers(1, 4), st.integers(1, 4),  # kh, kw
    st.integers(1, 3), st.integers(1, 3),  # stride
    st.integers(0, 2), st.integers(0, 2),  # padding
    st.booleans(),  # bias
)


@given(case=conv_cases, seed=st.integers(0, 2**32 - 1))
@settings(**SETTINGS)
def test_conv2d_matches_reference(poisoned, conv_gemm, case, seed):
    n, c, h, w, o, kh, kw, sh, sw, ph, pw, bias = case
    if kh > h + 2 * ph or kw > w + 2 * pw:
        return
    rng = np.random.default_rng(seed)
    x, wt = f32(rng, (n, c, h, w)), f32(rng, (o, c, kh, kw))
    b = f32(rng, (o,)) if bias else None
    s, p = (sh, sw), (ph, pw)
    tag = f"x{x.shape} w{wt.shape} s{s} p{p}"
    y_ref = R.conv2d_forward(d(x), d(wt), d(b), s, p)
    close(cpu.conv2d_forward(x, wt, b, s, p), y_ref, "conv2d_forward " + tag)
    dy = f32(rng, y_ref.shape)
    ref = R.conv2d_backward(d(x), d(wt), d(dy), s, p, bias)
    for name, got, want in zip(("dx", "dw", "db"), cpu.conv2d_backward(x, wt, dy, s, p, bias), ref):
        close(got, want, f"conv2d {name} " + tag)
    close(cpu.conv2d_backward_data(dy, wt, x.shape, s, p), ref[0], "conv2d_backward_data " + tag)
    close(cpu.conv2d_backward_weight(x, dy, wt.shape, s, p), ref[1], "conv2d_backward_weight " + tag)


@given(case=conv_cases, op_extra=st.integers(0, 2), seed=st.integers(0, 2**32 - 1))
@settings(**SETTINGS)
def test_conv_transpose2d_matches_reference(poisoned, conv_gemm, case, op_extra, seed):
    n, c, h, w, o, kh, kw, sh, sw, ph, pw, bias = case
    opad = (min(op_extra, sh - 1), min(op_extra, sw - 1))
    oh, ow = (h - 1) * sh - 2 * ph + kh + opad[0], (w - 1) * sw - 2 * pw + kw + opad[1]
    if oh <= 0 or ow <= 0:
        return
    rng = np.random.default_rng(seed)
    x, wt = f32(rng, (n, c, h, w)), f32(rng, (c, o, kh, kw))
    b = f32(rng, (o,)) if bias else None
    s, p = (sh, sw), (ph, pw)
    tag = f"x{x.shape} w{wt.shape} s{s} p{p} op{opad}"
    y_ref = R.conv_transpose2d_forward(d(x), d(wt), d(b), s, p, opad)
    close(cpu.conv_transpose2d_forward(x, wt, b, s, p, opad), y_ref, "conv_transpose2d_forward " + tag)
    dy = f32(rng, y_ref.shape)
    ref = R.conv_transpose2d_backward(d(x), d(wt), d(dy), s, p, opad, bias)
    for name, got, want in zip(("dx", "dw", "db"), cpu.conv_transpose2d_backward(x, wt, dy, s, p, opad, bias), ref):
        close(got, want, f"conv_transpose2d {name} " + tag)


def test_dcgan_layer_shapes(poisoned, conv_gemm, rng):
    """The shapes a 64x64 DCGAN step runs (batch 4), both conv kinds."""
    for c, o, hw in ((3, 64, 64), (64, 128, 32), (256, 512, 8)):
        x, wt = f32(rng, (4, c, hw, hw)), f32(rng, (o, c, 4, 4), 0.05)
        y_ref = R.conv2d_forward(d(x), d(wt), None, 2, 1)
        close(cpu.conv2d_forward(x, wt, None, 2, 1), y_ref, f"conv2d {c}->{o} at {hw}")
        dy = f32(rng, y_ref.shape)
        for got, want in zip(cpu.conv2d_backward(x, wt, dy, 2, 1, False), R.conv2d_backward(d(x), d(wt), d(dy), 2, 1, False)):
            close(got, want, f"conv2d backward {c}->{o} at {hw}")
        xt = f32(rng, y_ref.shape)
        close(cpu.conv_transpose2d_forward(xt, wt, None, 2, 1, 0), R.conv_transpose2d_forward(d(xt), d(wt), None, 2, 1, 0),
              f"conv_transpose2d {o}->{c} at {hw // 2}")


# -- batch norm (+ leaky ReLU), pointwise ---------------------------------------------------------

bn_cases = st.tuples(
    st.integers(1, 4), st.integers(1, 6), st.integers(1, 5), st.integers(1, 5),  # n, c, h, w
    st.booleans(), st.booleans(),  # affine, training
    st.sampled_from([1.0, 0.2, 0.0]),  # slope (1: plain batch norm)
)


@given(case=bn_cases, seed=st.integers(0, 2**32 - 1))
@settings(**SETTINGS)
def test_batch_norm_matches_reference(poisoned, case, seed):
    n, c, h, w, affine, training, slope = case
    if training and n * h * w < 2:
        return
    rng = np.random.default_rng(seed)
    x = f32(rng, (n, c, h, w), 2.0, 0.5)
    gamma, beta = (f32(rng, (c,), 0.5, 1.0), f32(rng, (c,))) if affine else (None, None)
    rm, rv = f32(rng, (c,)), np.abs(f32(rng, (c,))) + 0.5
    rm64, rv64 = d(rm), d(rv)
    tag = f"x{x.shape} affine={affine} training={training} slope={slope}"
    if slope == 1.0:
        got = cpu.batch_norm_forward(x, gamma, beta, rm, rv, training, 0.1, 1e-5)
        ref = R.batch_norm_forward(d(x), d(gamma), d(beta), rm64, rv64, training, 0.1, 1e-5)
    else:
        got = cpu.batch_norm_leaky_relu_forward(x, gamma, beta, rm, rv, training, 0.1, 1e-5, slope)
        ref = R.batch_norm_leaky_relu_forward(d(x), d(gamma), d(beta), rm64, rv64, training, 0.1, 1e-5, slope)
    for name, g, r in zip(("y", "mean", "rstd"), got, ref):
        close(g, r, f"batch_norm {name} " + tag)
    close(rm, rm64, "running_mean " + tag)
    close(rv, rv64, "running_var " + tag)
    dy = f32(rng, x.shape)
    mean, rstd = got[1], got[2]
    if slope == 1.0:
        got = cpu.batch_norm_backward(x, gamma, dy, mean, rstd, training)
        ref = R.batch_norm_backward(d(x), d(gamma), d(dy), d(mean), d(rstd), training)
    else:
        got = cpu.batch_norm_leaky_relu_backward(x, gamma, beta, dy, mean, rstd, training, slope)
        ref = R.batch_norm_leaky_relu_backward(d(x), d(gamma), d(beta), d(dy), d(mean), d(rstd), training, slope)
    for name, g, r in zip(("dx", "dgamma", "dbeta"), got, ref):
        close(g, r, f"batch_norm {name} " + tag)


@given(shape=st.lists(st.integers(1, 7), min_size=1, max_size=4), slope=st.sampled_from([0.0, 0.2, 1.5]),
       seed=st.integers(0, 2**32 - 1))
@settings(**SETTINGS)
def test_leaky_relu_matches_reference(poisoned, shape, slope, seed):
    rng = np.random.default_rng(seed)
    x, dy = f32(rng, shape), f32(rng, shape)
    close(cpu.leaky_relu_forward(x, slope), R.leaky_relu_forward(d(x), slope), f"leaky_relu {shape}")
    close(cpu.leaky_relu_backward(x, dy, slope), R.leaky_relu_backward(d(x), d(dy), slope), f"leaky_relu_backward {shape}")


def test_leaky_relu_nan_propagates(poisoned):
    x = np.array([np.nan, -1.0, 2.0], np.float32)
    y = cpu.leaky_relu_forward(x, 0.2)
    assert np.isnan(y[0]) and y[1] == np.float32(-0.2) and y[2] == 2.0


@given(sizes=st.lists(st.integers(1, 300), min_size=1, max_size=4), step=st.integers(1, 5), wd=st.sampled_from([0.0, 0.01]),
       seed=st.integers(0, 2**32 - 1))
@settings(**SETTINGS)
def test_adam_matches_reference(sizes, step, wd, seed):
    rng = np.random.default_rng(seed)
    mk = lambda: [f32(rng, (s,)) for s in sizes]  # noqa: E731
    p, g, m = mk(), mk(), mk()
    v = [np.abs(a) for a in mk()]
    p2, m2, v2 = [a.astype(np.float64) for a in p], [a.astype(np.float64) for a in m], [a.astype(np.float64) for a in v]
    cpu.adam_step(p, g, m, v, step, 2e-4, 0.5, 0.999, 1e-8, wd)
    R.adam_step(p2, [a.astype(np.float64) for a in g], m2, v2, step, 2e-4, 0.5, 0.999, 1e-8, wd)
    for name, got, want in (("param", p, p2), ("exp_avg", m, m2), ("exp_avg_sq", v, v2)):
        for a, b in zip(got, want):
            close(a, b, f"adam {name}", atol=1e-6, rtol=1e-5)


def test_float64_goes_to_the_reference(rng):
    x = rng.standard_normal((2, 3, 5, 5))
    w = rng.standard_normal((4, 3, 3, 3))
    assert np.array_equal(cpu.conv2d_forward(x, w, None, 1, 1), R.conv2d_forward(x, w, None, 1, 1))
    y = cpu.batch_norm_forward(x, None, None, None, None, True, 0.1, 1e-5)
    assert all(np.array_equal(a, b) for a, b in zip(y, R.batch_norm_forward(x, None, None, None, None, True, 0.1, 1e-5)))


def test_dcgan_step_matches_reference_backend():
    """One D+G step of a small DCGAN on each backend: same losses and gradients (float32)."""
    from pygan import manual_seed
    from pygan.autograd import Tensor
    from pygan.models import Discriminator, Generator
    from pygan.nn import functional as F

    results = {}
    for name in ("reference", "numba"):
        ops.set_cpu_backend(name)
        try:
            manual_seed(0)
            G, D = Generator(16, 8, 1, 32), Discriminator(8, 1, 32)
            rng = np.random.default_rng(1)
            real = Tensor(rng.uniform(-1, 1, (4, 1, 32, 32)).astype(np.float32))
            z = Tensor(rng.standard_normal((4, 16)).astype(np.float32))
            ones = Tensor(np.ones(4, np.float32))
            loss = F.binary_cross_entropy_with_logits(D(G(z)), ones) + F.binary_cross_entropy_with_logits(D(real), ones)
            loss.backward()
            results[name] = [loss.item()] + [p.grad.data for p in list(G.parameters()) + list(D.parameters())]
        finally:
            ops.set_cpu_backend(None)
    ref, got = results["reference"], results["numba"]
    assert got[0] == pytest.approx(ref[0], rel=1e-5)
    for k, (a, b) in enumerate(zip(got[1:], ref[1:])):
        scale = float(np.abs(b).max()) + 1e-12
        assert np.abs(a - b).max() <= 1e-3 * scale, f"gradient {k}: max error {np.abs(a - b).max():.3g}, scale {scale:.3g}"


# -- choosing the backend, falling back ------------------------------------------------------------


def test_registry_dispatches_numpy_to_the_cpu_backend():
    ops.set_cpu_backend(None)
    expected = cpu if os.environ.get("PYGAN_CPU_BACKEND", "numba") == "numba" else R
    assert ops.backend_for(np.zeros(1, np.float32)) is expected
    try:
        assert ops.set_cpu_backend("reference") == "reference"
        assert ops.backend_for(np.zeros(1, np.float32)) is R
    finally:
        ops.set_cpu_backend(None)
    with pytest.raises(ValueError, match="PYGAN_CPU_BACKEND"):
        ops.set_cpu_backend("fast")


def _run(code, **env):
    full = dict(os.environ, **env)
    full.pop("PYGAN_CPU_BACKEND", None) if "PYGAN_CPU_BACKEND" not in env else None
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=300, cwd=ROOT)


OP_CALL = (
    "import numpy as np; from pygan import ops; "
    "x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4); "
    "print(ops.cpu_backend().__name__); print(ops.leaky_relu_forward(x, 0.5).sum())"
)


def test_environment_variable_selects_the_reference():
    out = _run(OP_CALL, PYGAN_CPU_BACKEND="reference")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "pygan.ops.reference" and out.stderr == ""


def test_numba_that_cannot_import_falls_back_with_one_line():
    block = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'numba' or name.startswith('numba.'):\n"
        "            raise ImportError('numba blocked for this test')\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    out = _run(block + OP_CALL.replace("; ", "\n"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "pygan.ops.reference"
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "numba is unavailable" in lines[0] and "numpy reference" in lines[0], out.stderr


def test_kernel_that_fails_to_compile_falls_back_once(monkeypatch, capsys, rng):
    from numba.core.errors import TypingError

    def broken(*args):
        raise TypingError("simulated compile failure")

    cpu.setup()
    monkeypatch.setattr(cpu.K, "leaky_relu_forward", broken)
    x = f32(rng, (3, 4))
    try:
        y = cpu.leaky_relu_forward(x, 0.2)
        y2 = cpu.leaky_relu_forward(x, 0.2)
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "falls back to the numpy reference" in err[0]
        assert np.array_equal(y, R.leaky_relu_forward(x, 0.2)) and np.array_equal(y2, y)
        assert cpu._disabled is not None
    finally:
        cpu._disabled = None


def test_compile_errors_are_not_swallowed_when_they_are_bugs(monkeypatch, rng):
    monkeypatch.setattr(cpu.K, "leaky_relu_forward", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        cpu.leaky_relu_forward(f32(rng, (2,)), 0.2)


# -- the thread policy -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env, load, expected",
    [
        ({}, 0.0, (2, 2)),
        ({}, 5.0, (1, 1)),  # busy machine: one thread
        ({"PYGAN_NUM_THREADS": "2"}, 5.0, (2, 2)),
        ({"OMP_NUM_THREADS": "1"}, 0.0, (1, 1)),
        ({"OPENBLAS_NUM_THREADS": "1"}, 0.0, (2, 1)),
        ({"PYGAN_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "1"}, 0.0, (2, 2)),
        ({"OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, 0.0, (1, 1)),  # two MPI ranks on a 2-core node: a core each
        ({"SLURM_NTASKS_PER_NODE": "2", "OMP_NUM_THREADS": "2"}, 0.0, (2, 2)),  # the user's count wins
    ],
)
def test_thread_policy(monkeypatch, env, load, expected):
    for name in ("PYGAN_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS") + cpu_runtime._LOCAL_SIZE_ENV:
        monkeypatch.delenv(name, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(cpu_runtime, "available_cores", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    assert cpu_runtime.thread_counts()[:2] == expected


def test_gemm_choice_from_the_environment(monkeypatch):
    """PYGAN_CPU_GEMM: pygan's own by default where built, openblas and numpy on request, anything
    else a clear error; PYGAN_CPU_ISA checked against what the CPU runs."""
    monkeypatch.setenv("PYGAN_CPU_ISA", "")
    monkeypatch.delenv("PYGAN_CPU_GEMM", raising=False)
    gemm = cpu_runtime.Gemm()
    assert gemm.implicit == bool(_native_isas())
    if gemm.implicit:
        assert gemm.isa == _native_isas()[0] and gemm.name.startswith("pygan GEMM")
    monkeypatch.setenv("PYGAN_CPU_GEMM", "openblas")
    gemm = cpu_runtime.Gemm()
    assert not gemm.implicit and gemm.fblas is not None and "OpenBLAS" in gemm.name
    monkeypatch.setenv("PYGAN_CPU_GEMM", "numpy")
    assert cpu_runtime.Gemm().name.startswith("numpy matmul")
    monkeypatch.setenv("PYGAN_CPU_GEMM", "mkl")
    with pytest.raises(ValueError, match="PYGAN_CPU_GEMM must be one of pygan, openblas, numpy"):
        cpu_runtime.Gemm()
    if _native_isas():
        monkeypatch.setenv("PYGAN_CPU_GEMM", "pygan")
        monkeypatch.setenv("PYGAN_CPU_ISA", "sse2")
        with pytest.raises(ValueError, match="PYGAN_CPU_ISA must be one of avx512, avx2, generic"):
            cpu_runtime.Gemm()
        monkeypatch.setenv("PYGAN_CPU_ISA", "generic")
        assert cpu_runtime.Gemm().isa == "generic"


@pytest.mark.parametrize(
    "dy_shape, x_shape, stride, classes",
    [
        ((64, 128, 8, 8), (64, 64, 16, 16), (2, 2), True),  # DCGAN's 4x4 stride-2 layers: every tap inside dy
        ((64, 64, 32, 32), (64, 3, 64, 64), (2, 2), False),  # 3 channels: most of each tile wasted
        ((64, 100, 1, 1), (64, 512, 4, 4), (1, 1), False),  # G's 1x1 -> 4x4: 15 of 16 taps on padding
    ],
)
def test_which_input_gradient_path(dy_shape, x_shape, stride, classes):
    assert cpu._classes_pay(dy_shape, x_shape, stride) is classes


def test_without_pygans_gemm_the_blas_serves(monkeypatch, rng):
    """A build without pygan._cpu (PYGAN_NO_CPU_GEMM=1) or a CPU without AVX2: OpenBLAS and the
    explicit im2col, same answers."""
    monkeypatch.delenv("PYGAN_CPU_GEMM", raising=False)
    monkeypatch.setattr(cpu_runtime, "_native_gemm_module", lambda: (None, None, "pygan._cpu is not built (test)"))
    gemm = cpu_runtime.Gemm()
    assert not gemm.implicit and gemm.fblas is not None
    cpu.setup()
    monkeypatch.setattr(cpu, "_gemm", gemm)
    x, wt = f32(rng, (2, 3, 8, 8)), f32(rng, (4, 3, 4, 4))
    close(cpu.conv2d_forward(x, wt, None, 2, 1), R.conv2d_forward(d(x), d(wt), None, 2, 1), "conv2d on OpenBLAS")


def test_gemm_matches_numpy(rng):
    gemm = cpu_runtime.Gemm()
    for ta in (False, True):
        for tb in (False, True):
            a = f32(rng, (7, 5) if not ta else (5, 7))
            b = f32(rng, (5, 3) if not tb else (3, 5))
            want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b)
            out = np.full((7, 3), np.nan, np.float32)
            got = gemm(a, b, ta, tb, out=out)
            assert got is out
            close(got, want, f"gemm trans_a={ta} trans_b={tb}")



AVX512 = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl", "avx2"}


@pytest.mark.parametrize(
    "core, flags, env, hinted",
    [
        ("Haswell", AVX512, {"OPENBLAS_CORETYPE": "Haswell"}, True),  # the pin costs speed: say so
        ("SkylakeX", AVX512, {"OPENBLAS_CORETYPE": "SkylakeX"}, False),
        ("Haswell", {"avx2"}, {"OPENBLAS_CORETYPE": "Haswell"}, False),  # an AVX2 CPU: nothing better
        ("Haswell", AVX512, {}, False),  # OpenBLAS chose it itself
        ("Haswell", AVX512, {"OPENBLAS_CORETYPE": "Haswell", "PYGAN_OPENBLAS_CORE": "Haswell"}, False),
    ],
)
def test_gemm_core_hint(core, flags, env, hinted):
    hint = cpu_runtime.gemm_core_hint(core, flags=flags, env=env)
    assert (hint is not None) == hinted, hint
    if hinted:
        assert "PYGAN_OPENBLAS_CORE=native" in hint and f"OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']}" in hint


@pytest.mark.parametrize("request_core", ["native", "Haswell"])
def test_pygan_openblas_core_applies_to_pygans_gemm_only(request_core):
    """PYGAN_OPENBLAS_CORE decides the core scipy's OpenBLAS (pygan's GEMM) loads with, whatever
    OPENBLAS_CORETYPE says; the variable is restored afterwards and the GEMM still computes."""
    flags = cpu_runtime.cpu_flags()
    if not {"avx2", "fma"} <= flags:
        pytest.skip("needs an AVX2 CPU")
    code = (
        "import os, numpy as np; from pygan.ops import cpu_runtime\n"
        "g = cpu_runtime.Gemm()\n"
        "a = np.arange(12, dtype=np.float32).reshape(3, 4)\n"
        "assert np.array_equal(g(a, a, trans_b=True), a @ a.T)\n"
        "print(os.environ.get('OPENBLAS_CORETYPE'), '|', g.name)\n"
    )
    pin = "SkylakeX" if request_core == "Haswell" else "Haswell"
    env = dict(os.environ, OPENBLAS_CORETYPE=pin, PYGAN_OPENBLAS_CORE=request_core, PYGAN_CPU_GEMM="openblas")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    restored, name = (part.strip() for part in out.split("|"))
    assert restored == pin
    assert f"PYGAN_OPENBLAS_CORE={request_core}" in name, name
    core = name.split("core ", 1)[1].split(" ")[0]
    if request_core == "Haswell":
        assert core == "Haswell", name
    elif set(AVX512) <= flags:
        assert core != "Haswell", name  # OpenBLAS detected this AVX-512 CPU itself


# -- every registry op, through the registry, on both CPU backends ---------------------------------


def _registry_calls(rng):
    """name -> (args for pygan.ops.<name>, indices of the in-place arguments to compare after the call).

    One small float32 call per op of the contract; a new op in reference.__all__ without an entry
    here fails test_every_registry_op_is_reachable."""
    x4, w4 = f32(rng, (2, 3, 6, 6)), f32(rng, (4, 3, 3, 3))
    y4 = R.conv2d_forward(x4, w4, None, 1, 1)
    xt, wt = f32(rng, (2, 4, 3, 3)), f32(rng, (4, 3, 4, 4))
    yt = R.conv_transpose2d_forward(xt, wt, None, 2, 1, 0)
    c = 3
    xbn, g, b = f32(rng, (4, c, 5, 5), 2.0, 0.5), f32(rng, (c,), 0.5, 1.0), f32(rng, (c,))
    _, mean, rstd = R.batch_norm_forward(xbn, g, b, None, None, True, 0.1, 1e-5)
    xgn = f32(rng, (2, 4, 3, 3))
    _, gmean, grstd = R.group_norm_forward(xgn, f32(rng, (4,)), None, 2, 1e-5)
    logits, target, scalar = f32(rng, (5,)), (rng.random(5) > 0.5).astype(np.float32), np.float32(1.3)
    cls_logits, labels = f32(rng, (5, 4)), rng.integers(0, 4, 5)
    xl, wl = f32(rng, (5, 6)), f32(rng, (3, 6))
    table, idx = f32(rng, (7, 3)), rng.integers(0, 7, (2, 4))
    params = lambda: [f32(rng, (4, 3)), f32(rng, (5,))]  # noqa: E731
    pos = lambda: [np.abs(a) + 1 for a in params()]  # noqa: E731  (centered RMSprop: v > grad_avg**2)
    return {
        "conv2d_forward": ((x4, w4, f32(rng, (4,)), 1, 1), ()),
        "conv2d_backward": ((x4, w4, f32(rng, y4.shape), 1, 1, True), ()),
        "conv2d_backward_data": ((f32(rng, y4.shape), w4, x4.shape, 1, 1), ()),
        "conv2d_backward_weight": ((x4, f32(rng, y4.shape), w4.shape, 1, 1), ()),
        "conv_transpose2d_forward": ((xt, wt, f32(rng, (3,)), 2, 1, 0), ()),
        "conv_transpose2d_backward": ((xt, wt, f32(rng, yt.shape), 2, 1, 0, True), ()),
        "batch_norm_forward": ((xbn, g, b, f32(rng, (c,)), np.abs(f32(rng, (c,))) + 0.5, True, 0.1, 1e-5), (3, 4)),
        "batch_norm_backward": ((xbn, g, f32(rng, xbn.shape), mean, rstd, True), ()),
        "leaky_relu_forward": ((x4, 0.2), ()),
        "leaky_relu_backward": ((x4, f32(rng, x4.shape), 0.2), ()),
        "tanh_forward": ((x4,), ()),
        "tanh_backward": ((np.tanh(x4), f32(rng, x4.shape)), ()),
        "sigmoid_forward": ((x4,), ()),
        "sigmoid_backward": ((R.sigmoid_forward(x4), f32(rng, x4.shape)), ()),
        "binary_cross_entropy_with_logits_forward": ((logits, target), ()),
        "binary_cross_entropy_with_logits_backward": ((logits, target, scalar), ()),
        "adam_step": ((params(), params(), params(), pos(), 3, 1e-3, 0.5, 0.999, 1e-8, 0.01), (0, 2, 3)),
        "linear_forward": ((xl, wl, f32(rng, (3,))), ()),
        "linear_backward": ((xl, wl, f32(rng, (5, 3)), True), ()),
        "avg_pool2d_forward": ((x4, 2, 2), ()),
        "avg_pool2d_backward": ((f32(rng, (2, 3, 3, 3)), x4.shape, 2, 2), ()),
        "softmax_cross_entropy_forward": ((cls_logits, labels), ()),
        "softmax_cross_entropy_backward": ((cls_logits, labels, scalar), ()),
        "embedding_forward": ((table, idx), ()),
        "embedding_backward": ((f32(rng, (2, 4, 3)), idx, 7), ()),
        "group_norm_forward": ((xgn, f32(rng, (4,)), f32(rng, (4,)), 2, 1e-5), ()),
        "group_norm_backward": ((xgn, f32(rng, (4,)), f32(rng, xgn.shape), gmean, grstd, 2), ()),
        "rmsprop_step": ((params(), params(), pos(), params(), [0.1 * a for a in params()], 1e-3, 0.99, 1e-8, 0.01, 0.9, True), (0, 2, 3, 4)),
    }


def _copy(a):
    if isinstance(a, list):
        return [x.copy() for x in a]
    return a.copy() if isinstance(a, np.ndarray) else a


def _flat(out):
    if out is None:
        return []
    if isinstance(out, (tuple, list)):
        return [a for o in out for a in _flat(o)]
    return [np.asarray(out)]


@pytest.mark.parametrize("choice", [None, "reference"])
def test_every_registry_op_is_reachable(monkeypatch, choice):
    """With PYGAN_CPU_BACKEND unset (numba) and =reference, every op of the contract runs through
    pygan.ops on the chosen module and gives the reference's answer (the numba kernels within the
    float32 tolerances above, the ops that fall through to the reference exactly)."""
    if choice is None:
        monkeypatch.delenv("PYGAN_CPU_BACKEND", raising=False)
    else:
        monkeypatch.setenv("PYGAN_CPU_BACKEND", choice)
    calls = _registry_calls(np.random.default_rng(7))
    assert set(calls) == set(ops.OPS), f"no call for {sorted(set(ops.OPS) - set(calls))}"
    try:
        ops.set_cpu_backend(None)
        module = ops.backend_for(np.zeros(1, np.float32))
        assert module is (cpu if choice is None else R)
        for name, (args, inplace) in calls.items():
            ref_args = [_copy(a) for a in args]
            got_args = [_copy(a) for a in args]
            want = getattr(R, name)(*ref_args)
            got = getattr(ops, name)(*got_args)
            want_arrays = _flat(want) + [a for i in inplace for a in _flat(ref_args[i])]
            got_arrays = _flat(got) + [a for i in inplace for a in _flat(got_args[i])]
            assert len(got_arrays) == len(want_arrays) > 0, name
            for k, (a, b) in enumerate(zip(got_arrays, want_arrays)):
                assert a.shape == b.shape and a.dtype == b.dtype, f"{name} output {k}: {a.shape} {a.dtype} vs {b.shape} {b.dtype}"
                if module is R or getattr(cpu, name) is getattr(R, name):
                    assert np.array_equal(a, b), f"{name} output {k} differs from the reference"
                else:
                    close(a, b.astype(np.float64), f"{name} output {k}", atol=1e-5, rtol=1e-5)
    finally:
        ops.set_cpu_backend(None)


@pytest.mark.parametrize("threads, preset, expected", [("2", None, "PASSIVE"), ("2", "ACTIVE", "ACTIVE"), ("1", None, None)])
def test_more_than_one_thread_makes_openmp_waits_passive_unless_set(threads, preset, expected):
    """With T > 1 and the GEMMs on OpenBLAS the policy sets OMP_WAIT_POLICY=PASSIVE before numba's
    OpenMP pool starts (spinning workers starved OpenBLAS's threads); a value the user set is kept;
    one thread changes nothing; with pygan's GEMM (numba's own pool) it is never set."""
    code = ("import os; from pygan.ops import cpu_runtime\n"
            "cpu_runtime.apply_thread_policy(with_numba=True, openblas_gemm=True)\n"
            "print(os.environ.get('OMP_WAIT_POLICY'))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "PYGAN_NUM_THREADS")}
    env["OMP_NUM_THREADS"] = threads
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == str(expected)
    own = code.replace("openblas_gemm=True", "openblas_gemm=False")
    out = subprocess.run([sys.executable, "-c", own], env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == str(preset)
