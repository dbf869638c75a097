"""Shared pytest setup: skip `cuda`-marked tests without a GPU; a per-test seeded `rng`; the CUDA
tests' `cp` (CuPy), `gpu` (the CuPy-backed kernel wrappers) and `C` (pygan._C) fixtures."""

import zlib

import numpy as np
import pytest


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

    return cuda.backend()


@pytest.fixture(scope="module")
def C():
    from pygan.backend import native

    return native()
