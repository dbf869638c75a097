"""The emulator's fault detection and the launch-error path (issue 13, section 1).

csrc/emu/cuda_emu.h faults a misaligned float2/float4 access and a __syncthreads() that the threads
of a block reach at different places, runs blocks in a seeded shuffled order, and poisons shared
memory at every block start (its own checks: _emulation_selftest, in test_emulated_kernels.py).
Here: what such a fault looks like from Python (the message PYGAN_LAUNCH builds, the same helper
the CUDA build's PYGAN_CUDA_SYNC=1 mode uses), the seed hooks, the PYGAN_CUDA_SYNC switch of both
modules, and the TF32 arch guard's decision.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pygan.ops import emulated

pytestmark = pytest.mark.skipif(not emulated.available(), reason="pygan._emu (host emulation) not built")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def emu():
    from pygan import _emu

    return _emu


def aligned_out():
    buf = np.full(64 + 4, np.nan, np.float32)
    off = (-buf.ctypes.data % 16) // 4
    return buf[off:off + 64]


def test_misaligned_vector_load_is_a_clear_error(emu):
    out = aligned_out()
    with pytest.raises(RuntimeError) as info:
        emu._emulation_faulty_kernel("misaligned", out)
    msg = str(info.value)
    assert msg.startswith("CUDA error 716 (misaligned address) in kernel `misaligned_load`"), msg
    assert "(grid (1, 1, 1), block (8, 1, 1)) launched at csrc/emu/selftest.cpp:" in msg
    # the op being run and its arguments' shapes, then the emulator's account of the fault
    assert re.search(r"by _emulation_faulty_kernel\(out \(64,\)\): misaligned float4 load at address 0x[0-9a-f]+ "
                     r"\(not 16-byte aligned\) by thread \(\d, 0, 0\) of block \(0, 0, 0\)$", msg), msg


def test_divergent_syncthreads_is_a_clear_error(emu):
    with pytest.raises(RuntimeError) as info:
        emu._emulation_faulty_kernel("divergent", aligned_out())
    msg = str(info.value)
    assert "in kernel `divergent_barrier`" in msg and "by _emulation_faulty_kernel(out (64,))" in msg, msg
    assert re.search(r"divergent __syncthreads\(\): in block \(0, 0, 0\), thread \d+ waits at "
                     r"csrc/emu/selftest.cpp:\d+ while thread \d+ waits at csrc/emu/selftest.cpp:\d+", msg), msg


def test_a_fault_does_not_outlive_its_launch(emu, rng):
    """The next launch runs normally, and its error message would name its own op's arguments."""
    x = rng.standard_normal(300).astype(np.float32)
    with pytest.raises(RuntimeError):
        emu._emulation_faulty_kernel("misaligned", aligned_out())
    y = emulated.backend(poison=True).tanh_forward(x)
    np.testing.assert_allclose(y, np.tanh(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match=r"by _emulation_faulty_kernel\(out \(64,\)\): divergent"):
        emu._emulation_faulty_kernel("divergent", aligned_out())  # not tanh_forward's x and y
    with pytest.raises(ValueError, match="kind must be"):
        emu._emulation_faulty_kernel("nothing", aligned_out())


def test_block_order_seed_hooks(emu):
    seed = emu._emulation_seed()
    try:
        emu._emulation_set_seed(424242)
        assert emu._emulation_seed() == 424242
    finally:
        emu._emulation_set_seed(seed)
    env = dict(os.environ, PYGAN_EMU_SEED="987654")
    code = "from pygan import _emu; print(_emu._emulation_seed())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "987654", out.stderr


def test_kernels_agree_across_block_orders(emu, rng):
    """The same op under different block-order seeds gives bitwise the same answer (no kernel
    depends on the order its blocks run in)."""
    be = emulated.backend(poison=True)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    seed = emu._emulation_seed()
    results = []
    try:
        for s in (1, 2, 3):
            emu._emulation_set_seed(s)
            dx, dw, db = be.conv2d_backward(x, w, be.conv2d_forward(x, w, None, 2, 1), 2, 1, True)
            bn = be.batch_norm_forward(x, None, None, None, None, True, 0.1, 1e-5)
            results.append([dx, dw, db, *bn])
    finally:
        emu._emulation_set_seed(seed)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("module", ["_emu", "_C"])
def test_cuda_sync_switch_is_read_from_the_environment(module):
    code = f"from pygan import {module} as m; print(m.cuda_sync()); m.set_cuda_sync(False); print(m.cuda_sync())"
    for value, want in (("1", "True"), ("0", "False"), ("", "False"), (None, "False")):
        env = dict(os.environ)
        env.pop("PYGAN_CUDA_SYNC", None)
        if value is not None:
            env["PYGAN_CUDA_SYNC"] = value
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == [want, "False"], (value, out.stdout)


def test_cuda_sync_switch_is_documented():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "PYGAN_CUDA_SYNC=1" in readme and "PYGAN_EMU_SEED" in readme and "PYGAN_EMU_SKIP_LAUNCH" in readme


@pytest.mark.parametrize("module", ["_emu", "_C"])
def test_tf32_arch_guard(module):
    """The launcher's decision for conv2d variant 5: the kernel's compiled (PTX) arch and the GPU's
    compute capability must both be 8.0 or newer; the message says which is not and what to do."""
    import importlib

    m = importlib.import_module(f"pygan.{module}")
    if not getattr(m, "has_kernels", False):
        pytest.skip("a CPU-only pygan._C has no kernels")
    assert m._tf32_arch_problem(80, 80) == "" and m._tf32_arch_problem(90, 90) == "" and m._tf32_arch_problem(80, 120) == ""
    msg = m._tf32_arch_problem(75, 90)
    assert "compiled for compute capability 7.5" in msg and "9.0 GPU" in msg and "PYGAN_CUDA_ARCH" in msg, msg
    assert "needs compute capability 8.0 or newer, this GPU has 7.5" in m._tf32_arch_problem(90, 75)
    assert "this GPU has 7.0" in m._tf32_arch_problem(70, 70)


# -- two blocks at once (PYGAN_EMU_CONCURRENT_BLOCKS=2) ---------------------------------------------
# The self-test's racy kernel ("the last block to finish sums the partials", its counter taken
# without an atomic) is right whenever blocks run one at a time and wrong with two alive at once.
CONCURRENT_SELFTEST = (
    "one block at a time: the racy last-block kernel passes",
    "two blocks at once: the racy last-block kernel is caught",
    "one block alive at a time when asked",
    "two blocks alive at once when asked",
    "static shared memory is per block with two blocks alive",
)

# A few tests of every emulated kernel family whose blocks share a launch's output or workspace
# (split reductions, two-pass workspaces, deterministic scatters), run again with two blocks alive
# at once. (The whole emulated suite passes so, in about 5 minutes on 2 cores.)
TWO_AT_ONCE = [
    "tests/test_emulated_batchnorm_split.py::test_bitwise_repeatable_across_block_orders",
    "tests/test_emulated_batchnorm_split.py::test_split_variant_training_against_float64_reference",
    "tests/test_emulated_conv_batchnorm.py::test_conv2d_backward_weight_is_deterministic",
    "tests/test_emulated_conv_batchnorm.py::test_small_output_variant_at_dcgan_discriminator_last_layer",
    "tests/test_emulated_conv_batchnorm.py::test_batch_norm_grid",
    "tests/test_emulated_pool_softmax_linear.py::test_softmax_ce_deterministic",
    "tests/test_emulated_pool_softmax_linear.py::test_avg_pool2d_grid_stride",
    "tests/test_emulated_embedding.py::test_variant_2_backward_is_deterministic",
    "tests/test_emulated_groupnorm_rmsprop.py::test_group_norm_misaligned_views_fall_back",
    "tests/test_emulated_kernels.py::test_bce_edge_sizes",
    "tests/test_emulated_kernels.py::test_adam_more_tensors_than_one_launch_holds",
]


def test_concurrent_blocks_switch_is_read_at_every_launch(emu, monkeypatch):
    monkeypatch.delenv("PYGAN_EMU_CONCURRENT_BLOCKS", raising=False)
    assert emu._emulation_concurrent_blocks() == 1
    monkeypatch.setenv("PYGAN_EMU_CONCURRENT_BLOCKS", "2")
    assert emu._emulation_concurrent_blocks() == 2
    monkeypatch.setenv("PYGAN_EMU_CONCURRENT_BLOCKS", "0")
    assert emu._emulation_concurrent_blocks() == 1


def test_two_blocks_at_once_catch_a_cross_block_race(emu):
    results = dict(emu._emulation_selftest())
    for name in CONCURRENT_SELFTEST:
        assert results.get(name) is True, name


def test_kernels_agree_with_two_blocks_at_once(emu, rng, monkeypatch):
    """Split reductions (batch norm variant 3, conv2d's split-K weight gradient, the two-pass
    softmax cross-entropy) give bitwise the same, written answer with one or two blocks alive."""
    be = emulated.backend(poison=True)
    from pygan.ops.native_conv_bn import Native

    bn3 = Native(emu, np, variants={"batch_norm": 3}, poison=True)
    x = (rng.standard_normal((3, 2, 45, 47)) + 2.0).astype(np.float32)
    xc = rng.standard_normal((4, 3, 17, 17)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    logits = rng.standard_normal((300, 7)).astype(np.float32)
    labels = rng.integers(0, 7, 300)
    results = []
    for k in ("1", "2"):
        monkeypatch.setenv("PYGAN_EMU_CONCURRENT_BLOCKS", k)
        assert emu._emulation_concurrent_blocks() == int(k)
        y, mean, rstd = bn3.batch_norm_forward(x, None, None, None, None, True, 0.1, 1e-5)
        dx, _, _ = bn3.batch_norm_backward(x, None, y, mean, rstd, True)
        dw = be.conv2d_backward_weight(xc, be.conv2d_forward(xc, w, None, 1, 1), w.shape, 1, 1, variant=3)
        loss = be.softmax_cross_entropy_forward(logits, labels, variant=2)
        results.append([y, mean, rstd, dx, dw, loss])
    for a, b in zip(*results):
        assert np.isfinite(a).all()
        assert np.array_equal(a, b)


def test_kernels_still_pass_with_two_blocks_at_once():
    env = dict(os.environ, PYGAN_EMU_CONCURRENT_BLOCKS="2")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TWO_AT_ONCE],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed and int(passed.group(1)) >= 30, proc.stdout[-2000:]
