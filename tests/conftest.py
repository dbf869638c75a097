"""Shared pytest setup: skip `cuda`-marked tests without a GPU; a per-test seeded `rng`; the CUDA
tests' `cp` (CuPy), `gpu` (the CuPy-backed kernel wrappers, outputs poisoned) and `C` (pygan._C)
fixtures; the emulator's block-order seed, set before every test and shown when one fails."""

import os
import random
import zlib

import numpy as np
import pytest


# The kernel tests pick their variants; the TF32 opt-in (pygan.backends.tf32) would turn every
# default conv into the TF32 kernel and its float32 tolerances into false failures.
os.environ.pop("PYGAN_TF32", None)


def pytest_collection_modifyitems(config, items):
    from pygan.backend import cuda_available

    if cuda_available():
        return
    skip_cuda = pytest.mark.skip(reason="no CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip_cuda)


@pytest.fixture
def rng(request):
    """A fresh numpy Generator per test, seeded from the test's node id (stable across runs,
    different for every test). The seed is printed, so a failing test shows it."""
    seed = zlib.crc32(request.node.nodeid.encode("utf-8"))
    print(f"rng seed for {request.node.nodeid}: {seed}")
    return np.random.default_rng(seed)


@pytest.fixture(scope="module")
def cp():
    from pygan.backend import require_cupy

    return require_cupy()


@pytest.fixture(scope="module")
def gpu(cp):
    from pygan.ops import cuda

    return cuda.backend(poison=True)  # every output and workspace NaN before its kernel runs


@pytest.fixture(scope="module")
def C():
    from pygan.backend import native

    return native()


# -- the emulator's block order (csrc/emu/cuda_emu.h) ---------------------------------------------
# pygan._emu runs a launch's blocks in an order drawn from a seed and the launch's number. Each test
# starts from the same seed (PYGAN_EMU_SEED, or one drawn per session), with the launch count reset,
# so a failing test replays alone: PYGAN_EMU_SEED=<seed> python -m pytest <test id>.
def _emu_module():
    try:
        from pygan import _emu
    except ImportError:
        return None
    return _emu


_EMU_SEED = os.environ.get("PYGAN_EMU_SEED") or str(random.SystemRandom().randrange(10**9))


def pytest_report_header(config):
    if _emu_module() is not None:
        return f"emulated block order: PYGAN_EMU_SEED={_EMU_SEED}"
    return None


@pytest.fixture(autouse=True)
def _emulation_seed():
    emu = _emu_module()
    if emu is not None:
        emu._emulation_set_seed(int(_EMU_SEED, 0))
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and _emu_module() is not None:
        report.sections.append(
            ("emulated block order", f"PYGAN_EMU_SEED={_EMU_SEED} python -m pytest '{item.nodeid}' replays it")
        )
