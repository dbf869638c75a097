"""pygan: a small GAN engine with no deep-learning framework.

numpy reference ops (the specification and CPU path), hand-written CUDA kernels on CuPy memory, a
reverse-mode autograd and Adam; names follow PyTorch's.
"""

import numpy as np

from . import models, nn, ops, optim
from .autograd import Tensor, enable_grad, grad, is_grad_enabled, no_grad, normalise_device, to_device
from .backend import backends, cuda_available, cuda_compiled
from .random import get_rng_state, manual_seed, set_rng_state

__version__ = "0.1.0"

float32, float64 = np.float32, np.float64


def _dtype(dtype, default=np.float32):
    dtype = np.dtype(default if dtype is None else dtype)
    if dtype.kind not in "fiub":
        raise TypeError(f"dtype must be a numeric numpy dtype, got {dtype}")
    return dtype


def tensor(data, requires_grad=False, device="cpu", dtype=None):
    """A new Tensor holding a copy of `data` (lists, scalars, numpy or CuPy arrays, Tensors).

    Python floats become float32 as in PyTorch; numpy arrays keep their dtype unless `dtype` is given.
    """
    if isinstance(data, Tensor):
        data = data.data
    if hasattr(data, "__cuda_array_interface__"):
        data = data.get()
    array = np.array(data, copy=True)
    if dtype is not None:
        array = array.astype(_dtype(dtype))
    elif array.dtype == np.float64 and not isinstance(data, np.ndarray):
        array = array.astype(np.float32)
    if array.dtype.kind not in "fiub":
        raise TypeError(f"tensor: data must be numeric, got dtype {array.dtype}")
    return Tensor(to_device(array, device), requires_grad=requires_grad)


def _shape(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    for n in shape:
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"size must be non-negative ints, got {shape}")
    return tuple(int(n) for n in shape)


def randn(*shape, requires_grad=False, device="cpu", dtype=None):
    """Standard normal samples from the global generator (pygan.manual_seed)."""
    from .random import default_generator

    array = default_generator().standard_normal(_shape(shape)).astype(_dtype(dtype))
    return Tensor(to_device(array, device), requires_grad=requires_grad)


def rand(*shape, requires_grad=False, device="cpu", dtype=None):
    from .random import default_generator

    array = default_generator().random(_shape(shape)).astype(_dtype(dtype))
    return Tensor(to_device(array, device), requires_grad=requires_grad)


def zeros(*shape, requires_grad=False, device="cpu", dtype=None):
    return Tensor(to_device(np.zeros(_shape(shape), _dtype(dtype)), device), requires_grad=requires_grad)


def ones(*shape, requires_grad=False, device="cpu", dtype=None):
    return Tensor(to_device(np.ones(_shape(shape), _dtype(dtype)), device), requires_grad=requires_grad)


def full(shape, fill_value, requires_grad=False, device="cpu", dtype=None):
    return Tensor(to_device(np.full(_shape((shape,)), fill_value, _dtype(dtype)), device), requires_grad=requires_grad)


def zeros_like(t, requires_grad=False):
    return Tensor(_like(t, 0.0), requires_grad=requires_grad)


def ones_like(t, requires_grad=False):
    return Tensor(_like(t, 1.0), requires_grad=requires_grad)


def full_like(t, fill_value, requires_grad=False):
    return Tensor(_like(t, fill_value), requires_grad=requires_grad)


def _like(t, value):
    from .autograd import array_module

    data = t.data if isinstance(t, Tensor) else t
    return array_module(data).full(data.shape, value, dtype=data.dtype)


def cat(tensors, dim=0):
    """Concatenate along `dim` (differentiable)."""
    from .autograd import Concat

    return Concat(dim)(*tensors)


__all__ = [
    "Tensor", "tensor", "randn", "rand", "zeros", "ones", "full", "zeros_like", "ones_like", "full_like", "cat",
    "no_grad", "enable_grad", "grad", "is_grad_enabled", "manual_seed", "get_rng_state", "set_rng_state",
    "backends", "cuda_available", "cuda_compiled", "models", "nn", "ops", "optim", "float32", "float64",
]
