"""Module utilities with PyTorch's names: spectral normalisation (Miyato et al. 2018).

`spectral_norm(module)` follows `torch.nn.utils.spectral_norm`: the parameter `weight` is replaced
by `weight_orig` (trained) and the buffers `weight_u`, `weight_v` (the power iteration's vectors,
in the state dict and so in checkpoints: a resumed run continues bit-exactly). Before each forward,
in training mode, `n_power_iterations` steps of the power method refine u and v (no gradient flows
through them), and the layer uses weight = weight_orig / sigma with sigma = u^T W v, W the weight
seen as a (weight.shape[dim], -1) matrix. In evaluation mode u and v are used as they are.
The gradient does flow through sigma (as in PyTorch), so D's Lipschitz constant is controlled
rather than just rescaled.
"""

import numpy as np

from ..autograd import Tensor, array_module, no_grad
from ..random import default_generator
from .modules import ConvTranspose2d, Module, Parameter


def _normalize(v, eps):
    xp = array_module(v)
    return v / max(float(xp.linalg.norm(v)), eps)


def _matrix(w, dim):
    """The weight as a (w.shape[dim], -1) matrix (a view of the data where possible)."""
    if dim != 0:
        w = w.swapaxes(0, dim)
    return w.reshape(w.shape[0], -1)


class SpectralNorm:
    """The state spectral_norm attaches to a module; computes the normalised weight."""

    def __init__(self, name, n_power_iterations, dim, eps):
        self.name, self.n_power_iterations, self.dim, self.eps = name, n_power_iterations, dim, eps

    def compute_weight(self, module):
        w = getattr(module, self.name + "_orig")
        u_buf, v_buf = getattr(module, self.name + "_u"), getattr(module, self.name + "_v")
        mat = _matrix(w.data, self.dim)
        if module.training:
            u, v = u_buf.data, v_buf.data
            for _ in range(self.n_power_iterations):
                v = _normalize(mat.T @ u, self.eps)
                u = _normalize(mat @ v, self.eps)
            u_buf.data[...] = u
            v_buf.data[...] = v
        u, v = u_buf.data, v_buf.data
        # sigma = u^T W v = sum(W * (u v^T) laid out like W): only Mul and Sum carry the gradient
        outer = array_module(u).outer(u, v)
        shape = list(w.shape)
        if self.dim != 0:
            shape[0], shape[self.dim] = shape[self.dim], shape[0]
            outer = outer.reshape(shape).swapaxes(0, self.dim)
        else:
            outer = outer.reshape(shape)
        sigma = (w * Tensor(outer.astype(w.dtype, copy=False))).sum()
        return w / sigma


def spectral_norm(module, name="weight", n_power_iterations=1, eps=1e-12, dim=None):
    """Spectrally normalise `module.<name>` in place and return the module (see the module doc).

    dim defaults to 0, or 1 for ConvTranspose2d (its output channels), as in PyTorch.
    """
    if not isinstance(module, Module):
        raise TypeError(f"spectral_norm: module must be a pygan nn.Module, got {type(module).__name__}")
    if not isinstance(n_power_iterations, int) or isinstance(n_power_iterations, bool) or n_power_iterations < 0:
        raise ValueError(f"spectral_norm: n_power_iterations must be a non-negative int, got {n_power_iterations!r}")
    if not eps > 0:
        raise ValueError(f"spectral_norm: eps must be positive, got {eps!r}")
    if getattr(module, "_spectral_norm", None) is not None:
        raise RuntimeError(f"spectral_norm: {type(module).__name__}.{name} is already spectrally normalised")
    weight = module._parameters.get(name)
    if weight is None:
        raise ValueError(f"spectral_norm: {type(module).__name__} has no parameter {name!r}")
    if dim is None:
        dim = 1 if isinstance(module, ConvTranspose2d) else 0
    if not 0 <= dim < weight.ndim:
        raise ValueError(f"spectral_norm: dim must be in [0, {weight.ndim}), got {dim}")
    fn = SpectralNorm(name, n_power_iterations, dim, eps)
    h, w = _matrix(weight.data, dim).shape
    xp = array_module(weight.data)
    rng = default_generator()
    u = _normalize(xp.asarray(rng.standard_normal(h).astype(weight.dtype)), eps)
    v = _normalize(xp.asarray(rng.standard_normal(w).astype(weight.dtype)), eps)
    del module._parameters[name]
    module.register_parameter(name + "_orig", Parameter(weight.data))
    module.register_buffer(name + "_u", Tensor(u))
    module.register_buffer(name + "_v", Tensor(v))
    object.__setattr__(module, "_spectral_norm", fn)
    original_forward = module.forward

    def forward(*args, **kwargs):
        object.__setattr__(module, name, fn.compute_weight(module))
        return original_forward(*args, **kwargs)

    object.__setattr__(module, "forward", forward)
    with no_grad():
        object.__setattr__(module, name, Tensor(weight.data))  # usable before the first forward
    return module


def remove_spectral_norm(module, name="weight"):
    """Undo spectral_norm: `name` becomes a plain Parameter holding the current normalised weight."""
    fn = getattr(module, "_spectral_norm", None)
    if fn is None or fn.name != name:
        raise ValueError(f"remove_spectral_norm: {type(module).__name__}.{name} is not spectrally normalised")
    training = module.training
    module.training = False
    with no_grad():
        weight = fn.compute_weight(module)
    module.training = training
    for suffix in ("_orig", "_u", "_v"):
        delattr(module, name + suffix)
    for attr in ("forward", "_spectral_norm", name):
        module.__dict__.pop(attr, None)
    module.register_parameter(name, Parameter(np.ascontiguousarray(weight.data) if isinstance(weight.data, np.ndarray) else weight.data.copy()))
    return module
