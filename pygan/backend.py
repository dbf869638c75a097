"""Which compute backends this installation can use.

`cuda_available()` is True only when pygan._C was compiled with CUDA, CuPy imports, and at least
one CUDA device is visible. It answers quickly and silently (no error, no warning) everywhere,
and caches the answer. `require_cupy()` returns the cupy module or raises RuntimeError saying
what is missing.

`backends` (also `pygan.backends`) holds process-wide switches, like `torch.backends`:
`pygan.backends.tf32 = True` (or `PYGAN_TF32=1` in the environment) lets the convolutions (conv2d,
conv_transpose2d, linear) run on TF32 tensor cores, as PyTorch's `allow_tf32` does: operands are
rounded to a 10-bit mantissa, accumulation stays float32. Off by default. It changes only the
default kernel (conv2d variant 0 becomes the mma.sync variant 9, on compute capability 8.0 or newer;
older GPUs keep the float32 default); an explicitly chosen variant is always honoured.
"""

from __future__ import annotations

import functools
import warnings

__all__ = ["cuda_compiled", "cuda_available", "require_cupy", "native", "backends"]


@functools.lru_cache(maxsize=None)
def native():
    """The pygan._C extension module, or None if it cannot be imported."""
    try:
        from . import _C
    except Exception:  # not built, or built for another interpreter
        return None
    return _C


def cuda_compiled() -> bool:
    """True iff pygan._C imports and was built with CUDA sources."""
    mod = native()
    return bool(mod is not None and getattr(mod, "cuda_compiled", False))


def _device_count() -> int:
    try:
        return int(native().cuda_device_count())
    except Exception:
        return 0


@functools.lru_cache(maxsize=None)
def _import_cupy():
    """(cupy module or None, reason string or None). Cached; never warns."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import cupy
    except Exception as exc:  # ImportError, or a CuPy that fails to load its libraries
        return None, f"{type(exc).__name__}: {exc}"
    return cupy, None


def _problem() -> str | None:
    """Why CUDA cannot be used, or None when it can. Cheapest checks first."""
    if not cuda_compiled():
        if native() is None:
            return "pygan._C is not built: run `pip install -e .` (see README)"
        return "pygan was built without CUDA (PYGAN_CPU_ONLY or no nvcc); rebuild with nvcc on PATH"
    if _device_count() < 1:
        return "no CUDA device visible"
    cupy, reason = _import_cupy()
    if cupy is None:
        return (
            "CUDA requested but CuPy is not installed: pip install .[cuda] "
            f"(or cupy-cuda13x) ({reason})"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if cupy.cuda.runtime.getDeviceCount() < 1:
                return "no CUDA device visible (to CuPy)"
    except Exception as exc:
        return f"no CUDA device visible (to CuPy: {type(exc).__name__}: {exc})"
    return None


@functools.lru_cache(maxsize=None)
def _cached_problem() -> str | None:
    return _problem()


def cuda_available() -> bool:
    """True when the CUDA backend can run here: CUDA build, CuPy, and a visible device."""
    return _cached_problem() is None


def require_cupy():
    """Return the cupy module, or raise RuntimeError explaining why CUDA cannot be used."""
    problem = _cached_problem()
    if problem is not None:
        raise RuntimeError(problem)
    return _import_cupy()[0]


_TRUE = ("1", "true", "yes", "on")


class Backends:
    """Process-wide backend switches (`pygan.backends`). `tf32`: see the module docstring."""

    def __init__(self):
        self._tf32 = None  # None: follow PYGAN_TF32

    @property
    def tf32(self) -> bool:
        if self._tf32 is not None:
            return self._tf32
        import os

        return os.environ.get("PYGAN_TF32", "").strip().lower() in _TRUE

    @tf32.setter
    def tf32(self, on):
        if not isinstance(on, (bool, int)) or isinstance(on, int) and on not in (0, 1):
            raise TypeError(f"pygan.backends.tf32 must be True or False, got {on!r}")
        self._tf32 = bool(on)

    def __repr__(self):
        return f"pygan.backends(tf32={self.tf32})"


backends = Backends()
