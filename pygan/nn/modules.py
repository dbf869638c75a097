"""Modules with PyTorch's names, signatures and defaults.

A Module registers Parameters and sub-Modules when they are assigned as attributes, and buffers
through register_buffer; state_dict() names them all with dotted paths, as PyTorch does.
"""

import math
from collections import OrderedDict

import numpy as np

from .. import autograd
from ..autograd import Tensor
from ..random import default_generator
from . import functional as F


class Parameter(Tensor):
    """A Tensor that a Module treats as a learnable parameter."""

    def __init__(self, data, requires_grad=True):
        super().__init__(data.data if isinstance(data, Tensor) else data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class Module:
    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() before assigning {name!r}")
        for store in (self._parameters, self._buffers, self._modules):
            store.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name, tensor):
        """A named state tensor that is saved in state_dict but not trained (e.g. running_mean)."""
        if tensor is not None and not isinstance(tensor, Tensor):
            tensor = Tensor(np.asarray(tensor))
        self.__dict__.pop(name, None)
        self._buffers[name] = tensor

    def register_parameter(self, name, param):
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: {name} must be a Parameter or None, got {type(param).__name__}")
        self._parameters[name] = param

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- traversal -----------------------------------------------------------------------------
    def named_modules(self, prefix=""):
        yield prefix, self
        for name, m in self._modules.items():
            if m is not None:
                yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def children(self):
        return (m for m in self._modules.values() if m is not None)

    def named_parameters(self, prefix=""):
        for mod_name, m in self.named_modules(prefix):
            for name, p in m._parameters.items():
                if p is not None:
                    yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self):
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self, prefix=""):
        for mod_name, m in self.named_modules(prefix):
            for name, b in m._buffers.items():
                if b is not None:
                    yield (f"{mod_name}.{name}" if mod_name else name), b

    def buffers(self):
        for _, b in self.named_buffers():
            yield b

    # -- modes, gradients, devices ------------------------------------------------------------------
    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self, set_to_none=True):
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad.data[...] = 0

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def to(self, device):
        """Move every parameter and buffer to `device` in place ('cpu', 'cuda' or 'auto')."""
        for t in list(self.parameters()) + list(self.buffers()):
            t.data = autograd.to_device(t.data, device)
            if t.grad is not None:
                t.grad = Tensor(autograd.to_device(t.grad.data, device))
        return self

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def apply(self, fn):
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self):
        """Every parameter and buffer by dotted name, as detached Tensors sharing the data."""
        out = OrderedDict()
        for name, p in self.named_parameters():
            out[name] = p.detach()
        for name, b in self.named_buffers():
            out[name] = b.detach()
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy values into the existing parameters and buffers (keeping their device and dtype)."""
        own = dict(self.named_parameters())
        own.update(self.named_buffers())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for name, target in own.items():
            if name not in state_dict:
                continue
            value = state_dict[name]
            value = value.data if isinstance(value, Tensor) else value
            if tuple(value.shape) != target.shape and value.size == 1 == target.data.size:
                value = value.reshape(target.shape)  # 0-d scalars come back from some formats as (1,)
            if tuple(value.shape) != target.shape:
                raise ValueError(f"load_state_dict: {name} has shape {tuple(value.shape)}, the module expects {target.shape}")
            value = autograd.to_device(value, target.device)
            xp = autograd.array_module(target.data)
            target.data[...] = xp.asarray(value).astype(target.dtype, copy=False)
        return missing, unexpected

    # -- printing ------------------------------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


def _uniform(shape, bound):
    return default_generator().uniform(-bound, bound, size=shape).astype(np.float32)


class Conv2d(Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        from ..ops import pair

        self.in_channels, self.out_channels = _positive("Conv2d", "in_channels", in_channels), _positive("Conv2d", "out_channels", out_channels)
        self.kernel_size = pair(kernel_size, "kernel_size", "Conv2d", 1)
        self.stride = pair(stride, "stride", "Conv2d", 1)
        self.padding = pair(padding, "padding", "Conv2d", 0)
        fan_in = in_channels * self.kernel_size[0] * self.kernel_size[1]
        bound = 1.0 / math.sqrt(fan_in)  # PyTorch's default: kaiming_uniform(a=sqrt(5)) reduces to this
        self.weight = Parameter(_uniform((out_channels, in_channels) + self.kernel_size, bound))
        self.bias = Parameter(_uniform((out_channels,), bound)) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, bias={self.bias is not None}")


class ConvTranspose2d(Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, bias=True):
        super().__init__()
        from ..ops import pair

        self.in_channels = _positive("ConvTranspose2d", "in_channels", in_channels)
        self.out_channels = _positive("ConvTranspose2d", "out_channels", out_channels)
        self.kernel_size = pair(kernel_size, "kernel_size", "ConvTranspose2d", 1)
        self.stride = pair(stride, "stride", "ConvTranspose2d", 1)
        self.padding = pair(padding, "padding", "ConvTranspose2d", 0)
        self.output_padding = pair(output_padding, "output_padding", "ConvTranspose2d", 0)
        if max(o - s for o, s in zip(self.output_padding, self.stride)) >= 0:
            raise ValueError(f"ConvTranspose2d: output_padding {self.output_padding} must be smaller than stride {self.stride}")
        # PyTorch computes fan_in from weight.size(1) * kH * kW, i.e. out_channels for a transposed conv
        fan_in = out_channels * self.kernel_size[0] * self.kernel_size[1]
        bound = 1.0 / math.sqrt(fan_in)
        self.weight = Parameter(_uniform((in_channels, out_channels) + self.kernel_size, bound))
        self.bias = Parameter(_uniform((out_channels,), bound)) if bias else None

    def forward(self, x):
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, bias={self.bias is not None}")


class BatchNorm2d(Module):
    """Batch statistics while training (running averages updated), running statistics in eval()."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        super().__init__()
        self.num_features = _positive("BatchNorm2d", "num_features", num_features)
        self.eps, self.momentum = eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype=np.float32))
            self.bias = Parameter(np.zeros(num_features, dtype=np.float32))
        else:
            self.weight = self.bias = None
        if track_running_stats:
            self.register_buffer("running_mean", Tensor(np.zeros(num_features, dtype=np.float32)))
            self.register_buffer("running_var", Tensor(np.ones(num_features, dtype=np.float32)))
            self.register_buffer("num_batches_tracked", Tensor(np.zeros((), dtype=np.int64)))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None
        self.process_group = None  # a pygan.distributed communicator: sync-BN over its ranks while training

    def forward(self, x, negative_slope=None):
        """negative_slope: apply leaky_relu (0: ReLU) after, fused (nn.Sequential passes it for a
        BatchNorm2d followed by a LeakyReLU or ReLU); None: batch norm alone."""
        if isinstance(x, Tensor) and x.ndim != 4:
            raise ValueError(f"BatchNorm2d: expected 4-D input (N, C, H, W), got shape {x.shape}")
        use_batch_stats = self.training or not self.track_running_stats
        if self.training and self.track_running_stats:
            self.num_batches_tracked.data += 1
        running = ((self.running_mean, self.running_var) if self.track_running_stats else (None, None))
        if self.process_group is not None and use_batch_stats:
            from ..distributed import sync_batch_norm

            y = sync_batch_norm(x, *running, self.weight, self.bias, self.momentum, self.eps, self.process_group)
            return y if negative_slope is None else F.leaky_relu(y, negative_slope)
        if negative_slope is not None:
            return F.batch_norm_leaky_relu(x, *running, self.weight, self.bias, use_batch_stats, self.momentum,
                                           self.eps, negative_slope)
        return F.batch_norm(x, *running, self.weight, self.bias, use_batch_stats, self.momentum, self.eps)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


class GroupNorm(Module):
    """torch.nn.GroupNorm: per sample, groups of num_channels // num_groups consecutive channels are
    normalised over their channels and all positions; then a per-channel affine map (affine=True).
    No running statistics: training and evaluation compute the same thing. Input (N, C, ...)."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        super().__init__()
        name = type(self).__name__
        self.num_groups = _positive(name, "num_groups", num_groups)
        self.num_channels = _positive(name, "num_channels", num_channels)
        if self.num_channels % self.num_groups:
            raise ValueError(f"{name}: num_groups {num_groups} must divide num_channels {num_channels}")
        if not eps > 0:
            raise ValueError(f"{name}: eps must be positive, got {eps}")
        self.eps, self.affine = eps, bool(affine)
        if affine:
            self.weight = Parameter(np.ones(num_channels, dtype=np.float32))
            self.bias = Parameter(np.zeros(num_channels, dtype=np.float32))
        else:
            self.weight = self.bias = None

    def _check_input(self, x, ndim=None):
        name = type(self).__name__
        if not isinstance(x, Tensor):
            return
        if ndim is not None and x.ndim != ndim:
            raise ValueError(f"{name}: expected {ndim}-D input (N, C, H, W), got shape {x.shape}")
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"{name}: expected input (N, {self.num_channels}, ...), got shape {x.shape}")

    def forward(self, x):
        self._check_input(x)
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class LayerNorm2d(GroupNorm):
    """Layer normalisation of (N, C, H, W) images: each sample normalised over all of (C, H, W),
    then a per-channel affine map (weight, bias of shape (C,)). This is GroupNorm(1, C), the
    critic normalisation of WGAN-GP (Gulrajani et al. 2017), which must not mix samples. (PyTorch's
    nn.LayerNorm([C, H, W]) normalises the same way but has per-element weight and bias.)"""

    def __init__(self, num_channels, eps=1e-5, affine=True):
        super().__init__(1, num_channels, eps, affine)

    def forward(self, x):
        self._check_input(x, 4)
        return F.group_norm(x, 1, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.num_channels}, eps={self.eps}, affine={self.affine}"


class InstanceNorm2d(GroupNorm):
    """torch.nn.InstanceNorm2d without running statistics: each (sample, channel) normalised over
    (H, W); GroupNorm(C, C). affine defaults to False as in PyTorch (pass affine=True for a
    per-channel weight and bias). momentum is accepted for PyTorch compatibility and unused;
    track_running_stats=True is not supported."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False, track_running_stats=False):
        if track_running_stats:
            raise ValueError("InstanceNorm2d: track_running_stats=True is not supported (instance statistics only)")
        super().__init__(num_features, num_features, eps, affine)
        self.num_features, self.momentum = self.num_channels, momentum

    def forward(self, x):
        self._check_input(x, 4)
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}"


class Linear(Module):
    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features = _positive("Linear", "in_features", in_features)
        self.out_features = _positive("Linear", "out_features", out_features)
        bound = 1.0 / math.sqrt(in_features)  # PyTorch's default initialisation
        self.weight = Parameter(_uniform((out_features, in_features), bound))
        self.bias = Parameter(_uniform((out_features,), bound)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A table of num_embeddings vectors of embedding_dim floats, looked up by integer index: the
    class embedding of a conditional generator or discriminator. weight (num_embeddings,
    embedding_dim) starts N(0, 1), as in PyTorch."""

    def __init__(self, num_embeddings, embedding_dim):
        super().__init__()
        self.num_embeddings = _positive("Embedding", "num_embeddings", num_embeddings)
        self.embedding_dim = _positive("Embedding", "embedding_dim", embedding_dim)
        shape = (self.num_embeddings, self.embedding_dim)
        self.weight = Parameter(default_generator().standard_normal(shape).astype(np.float32))

    def forward(self, input):
        return F.embedding(input, self.weight)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class AvgPool2d(Module):
    def __init__(self, kernel_size, stride=None):
        super().__init__()
        from ..ops import pair

        self.kernel_size = pair(kernel_size, "kernel_size", "AvgPool2d", 1)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", "AvgPool2d", 1)

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class GlobalAvgPool2d(Module):
    """(N, C, H, W) -> (N, C, 1, 1): PyTorch's AdaptiveAvgPool2d(1)."""

    def forward(self, x):
        return F.global_avg_pool2d(x)


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope = negative_slope  # inplace is accepted for PyTorch compatibility; we never write in place

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class ReLU(Module):
    def __init__(self, inplace=False):
        super().__init__()

    def forward(self, x):
        return F.relu(x)


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)


class Sigmoid(Module):
    def forward(self, x):
        return F.sigmoid(x)


class Flatten(Module):
    def __init__(self, start_dim=1):
        super().__init__()
        self.start_dim = start_dim

    def forward(self, x):
        return x.flatten(self.start_dim)


def _fusable_activation(m):
    """The slope of a LeakyReLU (0 for ReLU) that nn.Sequential may fuse into the BatchNorm2d before it, else None."""
    if type(m) is LeakyReLU:
        return float(m.negative_slope)
    if type(m) is ReLU:
        return 0.0
    return None


class Sequential(Module):
    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], (dict, OrderedDict)):
            modules = list(modules[0].items())
        else:
            modules = [(str(i), m) for i, m in enumerate(modules)]
        for name, m in modules:
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: entry {name} must be a Module, got {type(m).__name__}")
            setattr(self, name, m)

    def __getitem__(self, index):
        return list(self._modules.values())[index]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        modules = list(self._modules.values())
        i = 0
        while i < len(modules):
            m = modules[i]
            slope = _fusable_activation(modules[i + 1]) if i + 1 < len(modules) and type(m) is BatchNorm2d else None
            if slope is not None:  # BatchNorm2d + (Leaky)ReLU: one fused op, the same result
                x = m(x, negative_slope=slope)
                i += 2
            else:
                x = m(x)
                i += 1
        return x


def _positive(op, name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{op}: {name} must be a positive int, got {value!r}")
    return int(value)
