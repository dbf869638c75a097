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
