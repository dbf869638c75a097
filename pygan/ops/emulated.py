"""The CUDA kernels run on the CPU through host emulation (pygan._emu), for tests only.

pygan._emu is built from the same csrc/*.cu sources and the same bindings.cpp as pygan._C, by the
host compiler with PYGAN_EMULATION (see csrc/emu/cuda_emu.h), and works on numpy arrays. The
wrappers are native.py's, as for CUDA, so a test through `backend()` checks kernels, launchers,
validation and wrappers together. Slow (every CUDA thread is a host thread): use small arrays.
Not part of the registry: numpy arrays still dispatch to the reference.
"""

import functools

import numpy as np

from .native import make_backend


def available():
    try:
        from .. import _emu  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def backend(poison=False):
    """NativeOps over pygan._emu and numpy (ImportError when the module was not built).
    poison=True: every output and workspace NaN-filled before its kernel runs (what tests use)."""
    try:
        from .. import _emu
    except ImportError as exc:
        raise ImportError(
            "pygan._emu (host emulation of the CUDA kernels) is not built; "
            "rebuild with `pip install -e .` without PYGAN_NO_EMULATION=1"
        ) from exc
    return make_backend(_emu, np, lambda: 0, poison=poison)
