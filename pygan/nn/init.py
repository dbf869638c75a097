"""In-place initialisers (torch.nn.init names), drawing from pygan's global generator."""

import numpy as np

from ..autograd import Tensor, array_module, no_grad
from ..random import default_generator


def _fill(tensor, values):
    if not isinstance(tensor, Tensor):
        raise TypeError(f"init: tensor must be a pygan Tensor, got {type(tensor).__name__}")
    with no_grad():
        xp = array_module(tensor.data)
        tensor.data[...] = xp.asarray(np.asarray(values, dtype=tensor.dtype))
    return tensor


def normal_(tensor, mean=0.0, std=1.0):
    return _fill(tensor, default_generator().normal(mean, std, size=tensor.shape))


def uniform_(tensor, a=0.0, b=1.0):
    return _fill(tensor, default_generator().uniform(a, b, size=tensor.shape))


def constant_(tensor, val):
    return _fill(tensor, np.full(tensor.shape, val))


def zeros_(tensor):
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)
