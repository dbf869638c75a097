"""Which compute backends this installation can use.

`cuda_available()` is True only when pygan._C was compiled with CUDA, CuPy imports, and at least
one CUDA device is visible. It answers quickly and silently (no error, no warning) everywhere,
and caches the answer. `require_cupy()` returns the cupy module or raises RuntimeError saying
what is missing.
"""

from __future__ import annotations

import functools
import warnings

__all__ = ["cuda_compiled", "cuda_available", "require_cupy", "native"]


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
