"""Differentiable neural-network ops, named and called as in torch.nn.functional.

Each op is a Function whose forward and backward are the registry's `<op>_forward` and
`<op>_backward`, so the same code runs on numpy (reference) and CuPy (our CUDA kernels).
"""

from .. import ops
from ..autograd import Function, Tensor


def _check_tensor(op, name, t, optional=False):
    if t is None and optional:
        return
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a pygan Tensor, got {type(t).__name__}")


class Conv2dFunction(Function):
    def __init__(self, stride, padding):
        self.stride, self.padding = stride, padding

    def forward(self, x, w, b):
        self.saved = x, w
        self.has_bias = b is not None
        return ops.conv2d_forward(x, w, b, self.stride, self.padding)

    def backward(self, dy):
        x, w = self.saved
        if self.needs_input_grad and not self.needs_input_grad[0]:  # e.g. D's first layer on data
            dw = ops.conv2d_backward_weight(x, dy, w.shape, self.stride, self.padding)
            return None, dw, dy.sum(axis=(0, 2, 3)) if self.has_bias else None
        return ops.conv2d_backward(x, w, dy, self.stride, self.padding, self.has_bias)


class ConvTranspose2dFunction(Function):
    def __init__(self, stride, padding, output_padding):
        self.stride, self.padding, self.output_padding = stride, padding, output_padding

    def forward(self, x, w, b):
        self.saved = x, w
        self.has_bias = b is not None
        return ops.conv_transpose2d_forward(x, w, b, self.stride, self.padding, self.output_padding)

    def backward(self, dy):
        x, w = self.saved
        return ops.conv_transpose2d_backward(x, w, dy, self.stride, self.padding, self.output_padding, self.has_bias)


class BatchNormFunction(Function):
    def __init__(self, running_mean, running_var, training, momentum, eps):
        self.running_mean, self.running_var = running_mean, running_var
        self.training, self.momentum, self.eps = training, momentum, eps

    def forward(self, x, gamma, beta):
        y, mean, rstd = ops.batch_norm_forward(
            x, gamma, beta, self.running_mean, self.running_var, self.training, self.momentum, self.eps
        )
        self.saved = x, gamma, mean, rstd
        self.running_mean = self.running_var = None  # updated in place already; backward needs only mean/rstd
        return y

    def backward(self, dy):
        x, gamma, mean, rstd = self.saved
        return ops.batch_norm_backward(x, gamma, dy, mean, rstd, self.training)


class LeakyReLUFunction(Function):
    def __init__(self, negative_slope):
        self.negative_slope = negative_slope

    def forward(self, x):
        self.saved = x
        return ops.leaky_relu_forward(x, self.negative_slope)

    def backward(self, dy):
        return ops.leaky_relu_backward(self.saved, dy, self.negative_slope)


class TanhFunction(Function):
    def forward(self, x):
        self.saved = ops.tanh_forward(x)
        return self.saved

    def backward(self, dy):
        return ops.tanh_backward(self.saved, dy)


class SigmoidFunction(Function):
    def forward(self, x):
        self.saved = ops.sigmoid_forward(x)
        return self.saved

    def backward(self, dy):
        return ops.sigmoid_backward(self.saved, dy)


class BCEWithLogitsFunction(Function):
    def forward(self, logits, target):
        self.saved = logits, target
        return ops.binary_cross_entropy_with_logits_forward(logits, target)

    def backward(self, dloss):
        logits, target = self.saved
        return ops.binary_cross_entropy_with_logits_backward(logits, target, dloss), None


class LinearFunction(Function):
    def forward(self, x, w, b):
        self.saved = x, w
        self.has_bias = b is not None
        return ops.linear_forward(x, w, b)

    def backward(self, dy):
        x, w = self.saved
        return ops.linear_backward(x, w, dy, self.has_bias)


class AvgPool2dFunction(Function):
    def __init__(self, kernel_size, stride):
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x):
        self.x_shape = x.shape
        return ops.avg_pool2d_forward(x, self.kernel_size, self.stride)

    def backward(self, dy):
        return ops.avg_pool2d_backward(dy, self.x_shape, self.kernel_size, self.stride)


class SoftmaxCrossEntropyFunction(Function):
    def forward(self, logits, labels):
        self.saved = logits, labels
        return ops.softmax_cross_entropy_forward(logits, labels)

    def backward(self, dloss):
        logits, labels = self.saved
        return ops.softmax_cross_entropy_backward(logits, labels, dloss), None


def conv2d(input, weight, bias=None, stride=1, padding=0):
    _check_tensor("conv2d", "input", input)
    _check_tensor("conv2d", "weight", weight)
    _check_tensor("conv2d", "bias", bias, optional=True)
    return Conv2dFunction(stride, padding)(input, weight, bias)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0):
    _check_tensor("conv_transpose2d", "input", input)
    _check_tensor("conv_transpose2d", "weight", weight)
    _check_tensor("conv_transpose2d", "bias", bias, optional=True)
    return ConvTranspose2dFunction(stride, padding, output_padding)(input, weight, bias)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Batch normalisation over axis 1; running_mean/running_var are Tensors (or None), updated in place."""
    _check_tensor("batch_norm", "input", input)
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight), ("bias", bias)):
        _check_tensor("batch_norm", name, t, optional=True)
    rm = None if running_mean is None else running_mean.data
    rv = None if running_var is None else running_var.data
    return BatchNormFunction(rm, rv, training, momentum, eps)(input, weight, bias)


def leaky_relu(input, negative_slope=0.01):
    _check_tensor("leaky_relu", "input", input)
    return LeakyReLUFunction(negative_slope)(input)


def relu(input):
    """ReLU is leaky ReLU with slope 0."""
    _check_tensor("relu", "input", input)
    return LeakyReLUFunction(0.0)(input)


def tanh(input):
    _check_tensor("tanh", "input", input)
    return TanhFunction()(input)


def sigmoid(input):
    _check_tensor("sigmoid", "input", input)
    return SigmoidFunction()(input)


def binary_cross_entropy_with_logits(input, target, reduction="mean"):
    """Mean (or summed) binary cross-entropy of sigmoid(input) against target, computed stably."""
    _check_tensor("binary_cross_entropy_with_logits", "input", input)
    if not isinstance(target, Tensor):
        raise TypeError(f"binary_cross_entropy_with_logits: target must be a pygan Tensor, got {type(target).__name__}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"binary_cross_entropy_with_logits: reduction must be 'mean' or 'sum', got {reduction!r}")
    loss = BCEWithLogitsFunction()(input, target.detach())
    return loss if reduction == "mean" else loss * float(input.numel())


def linear(input, weight, bias=None):
    """input @ weight.T + bias, weight of shape (out_features, in_features)."""
    _check_tensor("linear", "input", input)
    _check_tensor("linear", "weight", weight)
    _check_tensor("linear", "bias", bias, optional=True)
    return LinearFunction()(input, weight, bias)


def avg_pool2d(input, kernel_size, stride=None):
    """Mean over kernel_size windows, no padding; stride defaults to kernel_size, as in PyTorch."""
    _check_tensor("avg_pool2d", "input", input)
    return AvgPool2dFunction(kernel_size, kernel_size if stride is None else stride)(input)


def global_avg_pool2d(input):
    """Global average pooling: (N, C, H, W) -> (N, C, 1, 1)."""
    _check_tensor("global_avg_pool2d", "input", input)
    return AvgPool2dFunction(tuple(input.shape[2:]), 1)(input)


def cross_entropy(input, target):
    """Mean softmax cross-entropy of logits (N, K) against integer class labels (N,)."""
    _check_tensor("cross_entropy", "input", input)
    labels = target.data if isinstance(target, Tensor) else target
    return SoftmaxCrossEntropyFunction()(input, labels)
