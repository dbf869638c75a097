"""The kernel tests cannot be fooled by a kernel that writes nothing (issue 13, section 1).

Every emulated test takes its outputs and workspaces poisoned (NaN, or a finite sentinel where NaN
is the right answer) before each kernel call, so an element a kernel leaves unwritten fails the
comparison. This file proves it: with PYGAN_EMU_SKIP_LAUNCH=1 every emulated launch returns at once
without running its kernel (a deliberately no-op build, honoured by pygan._emu only), and the
emulated test files are run against it in a subprocess. Every test that launched a kernel must
then fail; one that passes would pass a kernel that does nothing, and is named here.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pygan.ops import emulated

pytestmark = pytest.mark.skipif(not emulated.available(), reason="pygan._emu (host emulation) not built")

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
# Every file whose tests run emulated kernels.
EMULATED_FILES = sorted(p.name for p in TESTS.glob("test_emulated_*.py")) + [
    "test_double_backward_emulated.py",
    "test_emulator_faults.py",
]


def run_without_kernels(tmp_path, *args):
    """pytest on `args` in a subprocess where no emulated kernel runs; (process, audit by test id)."""
    audit = tmp_path / "audit.json"
    env = dict(os.environ, PYGAN_EMU_SKIP_LAUNCH="1", PYGAN_LAUNCH_AUDIT=str(audit))
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "_launch_audit", "-p", "no:cacheprovider",
         "-m", "not slow", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert audit.exists(), f"no audit written:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc, json.loads(audit.read_text())


def test_skip_launch_switch_runs_no_kernel():
    """The switch itself: the launch is counted, the kernel does not run (the output keeps its poison)."""
    code = (
        "import numpy as np; from pygan import _emu; from pygan.ops import emulated\n"
        "n0 = _emu._emulation_launches()\n"
        "y = emulated.backend(poison=True).tanh_forward(np.ones(1000, np.float32))\n"
        "print(_emu._emulation_launches() - n0, int(np.isnan(y).sum()))\n"
    )
    for skip, want in (("1", "1 1000"), ("0", "1 0")):
        env = dict(os.environ, PYGAN_EMU_SKIP_LAUNCH=skip)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == want.split(), (skip, out.stdout)


def check_all_fail(tmp_path, files, min_launching):
    proc, audit = run_without_kernels(tmp_path, *(str(TESTS / name) for name in files))
    assert proc.returncode == 1, f"the emulated tests did not fail without kernels:\n{proc.stdout[-3000:]}"
    launched = {test: r for test, r in audit.items() if r.get("launches", 0) > 0}
    assert len(launched) >= min_launching, f"only {len(launched)} tests launched kernels:\n{proc.stdout[-2000:]}"
    fooled = sorted(test for test, r in launched.items() if r["outcome"] != "failed")
    assert not fooled, "these tests launch kernels, yet pass when no kernel runs:\n  " + "\n  ".join(fooled)
    # every file took part
    took_part = {test.split("::")[0].rsplit("/", 1)[-1] for test in launched}
    assert took_part == set(files), set(files) - took_part


def test_emulated_kernel_tests_fail_when_no_kernel_runs(tmp_path):
    """The default suite's proof, on the activation/BCE/Adam and embedding test files (~10 s)."""
    check_all_fail(tmp_path, ["test_emulated_kernels.py", "test_emulated_embedding.py"], 60)


def test_fast_conv_kernel_tests_fail_when_no_kernel_runs(tmp_path):
    """Conv2d's variants 8 and 9 and the emulated mma.sync (test_emulated_conv_fast.py; ~20 s)."""
    check_all_fail(tmp_path, ["test_emulated_conv_fast.py"], 30)


@pytest.mark.slow
def test_every_emulated_test_fails_when_no_kernel_runs(tmp_path):
    """Every emulated test file at once (~30 s on 2 cores)."""
    check_all_fail(tmp_path, EMULATED_FILES, 150)


def test_poisoned_backend_outputs_are_fresh():
    """Each call gets its own, freshly poisoned output: never the block a previous call returned."""
    be = emulated.backend(poison=True)
    x = np.linspace(-2, 2, 64, dtype=np.float32)
    a, b = be.tanh_forward(x), be.tanh_forward(x)
    assert a is not b and not np.shares_memory(a, b)
    assert np.array_equal(a, b) and np.isfinite(a).all()
    assert np.isnan(be._out((5,))).all()
    assert (emulated.backend(poison=7.0)._out((3,)) == 7.0).all()
    assert emulated.backend() is not be and emulated.backend().poison is None
