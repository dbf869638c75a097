"""Differentiable neural-network ops, named and called as in torch.nn.functional.

Each op is a Function whose forward and backward are the registry's `<op>_forward` and
`<op>_backward`, so the same code runs on numpy (reference) and CuPy (our CUDA kernels).

Each also has a backward_graph (create_graph=True: gradients of gradients, e.g. WGAN-GP), built from
differentiable Functions over the same registry ops, as Chainer and PyTorch do: a conv's input
gradient is a conv-transpose of the output gradient and its weight gradient a Function of its own
(Conv2dWeightGrad) whose backward is again convolutions; linear's are linears of transposes;
average pooling's is a Function whose forward is avg_pool2d_backward and whose backward is
avg_pool2d_forward, and the embedding's likewise (EmbeddingGrad: embedding_backward, whose backward
is the lookup); leaky ReLU's is a Function over leaky_relu_backward (linear in the gradient, its
mask a constant); batch norm, tanh, sigmoid and the losses' are Tensor expressions.
"""

import math

from .. import ops
from ..autograd import Function, Tensor, array_module


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
        need = self.needs_input_grad or (True, True, True)
        if not need[0]:  # e.g. D's first layer on data
            dw = ops.conv2d_backward_weight(x, dy, w.shape, self.stride, self.padding)
            return None, dw, dy.sum(axis=(0, 2, 3)) if self.has_bias else None
        if not need[1]:  # a frozen layer (D's in G's step): no weight gradient GEMM
            dx = ops.conv2d_backward_data(dy, w, x.shape, self.stride, self.padding)
            return dx, None, dy.sum(axis=(0, 2, 3)) if self.has_bias and need[2] else None
        return ops.conv2d_backward(x, w, dy, self.stride, self.padding, self.has_bias)

    def backward_graph(self, dy):
        x, w, b = self.inputs
        dx = dw = db = None
        if self.needs_grad(0):
            dx = _conv2d_input_grad(dy, w, x.shape, self.stride, self.padding)
        if self.needs_grad(1):
            dw = Conv2dWeightGrad(self.stride, self.padding, w.shape)(x, dy)
        if b is not None and self.needs_grad(2):
            db = dy.sum(axis=(0, 2, 3))
        return dx, dw, db


def _conv2d_input_grad(dy, w, x_shape, stride, padding):
    """conv2d's input gradient as a differentiable conv-transpose of dy; output_padding restores the
    rows and columns a strided conv never reads (their gradient is 0)."""
    stride, padding = ops.pair(stride, "stride", "conv2d", 1), ops.pair(padding, "padding", "conv2d", 0)
    kh, kw = w.shape[2:]
    output_padding = tuple((x_shape[2 + i] + 2 * padding[i] - (kh, kw)[i]) % stride[i] for i in range(2))
    return ConvTranspose2dFunction(stride, padding, output_padding)(dy, w, None)


class Conv2dWeightGrad(Function):
    """dw = conv2d_backward_weight(x, dy) as a Function of (x, dy), for create_graph.

    It is bilinear: <ggw, dw> = <dy, conv2d(x, ggw)> = <x, conv2d_backward_data(dy, ggw)>, so its
    backward is two convolutions with ggw as the weight."""

    def __init__(self, stride, padding, w_shape):
        self.stride, self.padding, self.w_shape = stride, padding, tuple(w_shape)

    def forward(self, x, dy):
        self.saved = x, dy
        return ops.conv2d_backward_weight(x, dy, self.w_shape, self.stride, self.padding)

    def backward(self, ggw):
        x, dy = self.saved
        gx = ops.conv2d_backward_data(dy, ggw, x.shape, self.stride, self.padding) if self.needs_input_grad[0] else None
        gdy = ops.conv2d_forward(x, ggw, None, self.stride, self.padding) if self.needs_input_grad[1] else None
        return gx, gdy

    def backward_graph(self, ggw):
        x, dy = self.inputs
        gx = _conv2d_input_grad(dy, ggw, x.shape, self.stride, self.padding) if self.needs_grad(0) else None
        gdy = Conv2dFunction(self.stride, self.padding)(x, ggw, None) if self.needs_grad(1) else None
        return gx, gdy


class ConvTranspose2dFunction(Function):
    def __init__(self, stride, padding, output_padding):
        self.stride, self.padding, self.output_padding = stride, padding, output_padding

    def forward(self, x, w, b):
        self.saved = x, w
        self.has_bias = b is not None
        return ops.conv_transpose2d_forward(x, w, b, self.stride, self.padding, self.output_padding)

    def backward(self, dy):
        x, w = self.saved
        need = self.needs_input_grad or (True, True, True)
        if not need[0]:  # e.g. G's first layer on noise
            # conv-transpose's weight gradient is conv2d's with the roles of x and y swapped; the
            # input gradient (a full strided conv2d of dy) is never computed
            dw = ops.conv2d_backward_weight(dy, x, w.shape, self.stride, self.padding)
            return None, dw, dy.sum(axis=(0, 2, 3)) if self.has_bias else None
        if not need[1]:  # a frozen layer: the input gradient (conv2d of dy) alone
            dx = ops.conv2d_forward(dy, w, None, self.stride, self.padding)
            return dx, None, dy.sum(axis=(0, 2, 3)) if self.has_bias and need[2] else None
        return ops.conv_transpose2d_backward(x, w, dy, self.stride, self.padding, self.output_padding, self.has_bias)

    def backward_graph(self, dy):
        # conv-transpose is conv2d's input gradient: dx = conv2d(dy, w), dw = conv2d's weight
        # gradient with the roles of x and y swapped
        x, w, b = self.inputs
        dx = Conv2dFunction(self.stride, self.padding)(dy, w, None) if self.needs_grad(0) else None
        dw = Conv2dWeightGrad(self.stride, self.padding, w.shape)(dy, x) if self.needs_grad(1) else None
        db = dy.sum(axis=(0, 2, 3)) if b is not None and self.needs_grad(2) else None
        return dx, dw, db


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

    def backward_graph(self, dy):
        """batch_norm_backward as Tensor ops; training mode recomputes mean and rstd from x
        differentiably (they depend on x), evaluation mode uses the running statistics (constants)."""
        x, gamma, beta = self.inputs
        _, _, mean, rstd = self.saved
        c = x.shape[1]
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, c) + (1,) * (x.ndim - 2)
        if self.training:
            centred = x - x.mean(axis=axes, keepdims=True)
            rstd = ((centred * centred).mean(axis=axes, keepdims=True) + self.eps) ** -0.5
            xhat = centred * rstd
        else:
            rstd = Tensor(rstd.reshape(shape))
            xhat = (x - Tensor(mean.reshape(shape))) * rstd
        dx = dgamma = dbeta = None
        if self.needs_grad(0):
            scale = rstd if gamma is None else rstd * gamma.reshape(shape)
            if self.training:
                dx = scale * (dy - dy.mean(axis=axes, keepdims=True) - xhat * (dy * xhat).mean(axis=axes, keepdims=True))
            else:
                dx = dy * scale
        if gamma is not None and self.needs_grad(1):
            dgamma = (dy * xhat).sum(axis=axes)
        if beta is not None and self.needs_grad(2):
            dbeta = dy.sum(axis=axes)
        return dx, dgamma, dbeta


class BatchNormLeakyReLUFunction(Function):
    """leaky_relu(batch_norm(x)) as one Function over the fused ops (slope 0: ReLU): one pass less
    over the activations in each direction, and no intermediate kept for backward (the
    pre-activation is recomputed from x, mean and rstd)."""

    def __init__(self, running_mean, running_var, training, momentum, eps, negative_slope):
        self.running_mean, self.running_var = running_mean, running_var
        self.training, self.momentum, self.eps, self.negative_slope = training, momentum, eps, negative_slope

    def forward(self, x, gamma, beta):
        y, mean, rstd = ops.batch_norm_leaky_relu_forward(
            x, gamma, beta, self.running_mean, self.running_var, self.training, self.momentum, self.eps,
            self.negative_slope,
        )
        self.saved = x, gamma, beta, mean, rstd
        self.running_mean = self.running_var = None
        return y

    def backward(self, dy):
        x, gamma, beta, mean, rstd = self.saved
        return ops.batch_norm_leaky_relu_backward(x, gamma, beta, dy, mean, rstd, self.training, self.negative_slope)

    def backward_graph(self, dy):
        """The activation's gradient (a mask, constant in x) applied to dy, then batch norm's graph."""
        x, gamma, beta, mean, rstd = self.saved
        shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        z = (x - mean.reshape(shape)) * rstd.reshape(shape)
        if gamma is not None:
            z = z * gamma.reshape(shape)
        if beta is not None:
            z = z + beta.reshape(shape)
        g = LeakyReLUGrad(z, self.negative_slope)(dy)
        bn = BatchNormFunction(None, None, self.training, self.momentum, self.eps)
        bn.inputs, bn.saved = self.inputs, (x, gamma, mean, rstd)
        bn.needs_input_grad, bn.grad_mask = self.needs_input_grad, self.grad_mask
        return bn.backward_graph(g)


class GroupNormFunction(Function):
    """group_norm over the registry ops; saves x, gamma and the forward's (mean, rstd)."""

    def __init__(self, num_groups, eps):
        self.num_groups, self.eps = num_groups, eps

    def forward(self, x, gamma, beta):
        y, mean, rstd = ops.group_norm_forward(x, gamma, beta, self.num_groups, self.eps)
        self.saved = x, gamma, mean, rstd
        return y

    def backward(self, dy):
        x, gamma, mean, rstd = self.saved
        return ops.group_norm_backward(x, gamma, dy, mean, rstd, self.num_groups)

    def backward_graph(self, dy):
        """group_norm_backward as Tensor ops on the (N, G, K) view of x; mean and rstd are
        recomputed from x differentiably (they depend on x)."""
        x, gamma, beta = self.inputs
        n, c = x.shape[:2]
        groups = self.num_groups
        k = math.prod(x.shape[1:]) // groups
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, c) + (1,) * (x.ndim - 2)
        xg = x.reshape(n, groups, k)
        centred = xg - xg.mean(axis=2, keepdims=True)
        rstd = ((centred * centred).mean(axis=2, keepdims=True) + self.eps) ** -0.5
        xhat_g = centred * rstd
        dx = dgamma = dbeta = None
        if self.needs_grad(0):
            g = (dy if gamma is None else dy * gamma.reshape(shape)).reshape(n, groups, k)
            dx = rstd * (g - g.mean(axis=2, keepdims=True) - xhat_g * (g * xhat_g).mean(axis=2, keepdims=True))
            dx = dx.reshape(x.shape)
        if gamma is not None and self.needs_grad(1):
            dgamma = (dy * xhat_g.reshape(x.shape)).sum(axis=axes)
        if beta is not None and self.needs_grad(2):
            dbeta = dy.sum(axis=axes)
        return dx, dgamma, dbeta


class LeakyReLUFunction(Function):
    def __init__(self, negative_slope):
        self.negative_slope = negative_slope

    def forward(self, x):
        self.saved = x
        return ops.leaky_relu_forward(x, self.negative_slope)

    def backward(self, dy):
        return ops.leaky_relu_backward(self.saved, dy, self.negative_slope)

    def backward_graph(self, dy):
        return LeakyReLUGrad(self.saved, self.negative_slope)(dy)


class LeakyReLUGrad(Function):
    """dx = leaky_relu_backward(x, dy) as a Function of dy: linear in dy (its own adjoint, the
    slope mask being diagonal) and piecewise constant in x, so d/dx is 0 (almost everywhere)."""

    def __init__(self, x, negative_slope):
        self.saved, self.negative_slope = x, negative_slope

    def forward(self, dy):
        return ops.leaky_relu_backward(self.saved, dy, self.negative_slope)

    def backward(self, gg):
        return ops.leaky_relu_backward(self.saved, gg, self.negative_slope)

    def backward_graph(self, gg):
        return LeakyReLUGrad(self.saved, self.negative_slope)(gg)


class TanhFunction(Function):
    def forward(self, x):
        self.saved = ops.tanh_forward(x)
        return self.saved

    def backward(self, dy):
        return ops.tanh_backward(self.saved, dy)

    def backward_graph(self, dy):
        y = self.outputs[0]
        return dy * (1.0 - y * y)


class SigmoidFunction(Function):
    def forward(self, x):
        self.saved = ops.sigmoid_forward(x)
        return self.saved

    def backward(self, dy):
        return ops.sigmoid_backward(self.saved, dy)

    def backward_graph(self, dy):
        y = self.outputs[0]
        return dy * (y * (1.0 - y))


class BCEWithLogitsFunction(Function):
    def forward(self, logits, target):
        self.saved = logits, target
        return ops.binary_cross_entropy_with_logits_forward(logits, target)

    def backward(self, dloss):
        logits, target = self.saved
        dlogits = ops.binary_cross_entropy_with_logits_backward(logits, target, dloss)
        # d loss / d target = -logits / numel (soft labels that require grad get one, as in PyTorch)
        dtarget = logits * (dloss * (-1.0 / logits.size)) if self.needs_input_grad[1] else None
        return dlogits, dtarget

    def backward_graph(self, dloss):
        x, t = self.inputs
        scale = dloss * (1.0 / x.numel())
        dx = (SigmoidFunction()(x) - t) * scale if self.needs_grad(0) else None
        dt = -x * scale if self.needs_grad(1) else None
        return dx, dt


class LinearFunction(Function):
    def forward(self, x, w, b):
        self.saved = x, w
        self.has_bias = b is not None
        return ops.linear_forward(x, w, b)

    def backward(self, dy):
        x, w = self.saved
        return ops.linear_backward(x, w, dy, self.has_bias)

    def backward_graph(self, dy):
        # dx = dy @ w = linear(dy, w^T), dw = dy^T @ x = linear(dy^T, x^T): linears all the way down
        x, w, b = self.inputs
        dx = LinearFunction()(dy, w.T, None) if self.needs_grad(0) else None
        dw = LinearFunction()(dy.T, x.T, None) if self.needs_grad(1) else None
        db = dy.sum(axis=0) if b is not None and self.needs_grad(2) else None
        return dx, dw, db


class AvgPool2dFunction(Function):
    def __init__(self, kernel_size, stride):
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x):
        self.x_shape = x.shape
        return ops.avg_pool2d_forward(x, self.kernel_size, self.stride)

    def backward(self, dy):
        return ops.avg_pool2d_backward(dy, self.x_shape, self.kernel_size, self.stride)

    def backward_graph(self, dy):
        return AvgPool2dGrad(self.x_shape, self.kernel_size, self.stride)(dy)


class AvgPool2dGrad(Function):
    """dx = avg_pool2d_backward(dy) as a Function: linear in dy, its adjoint is avg_pool2d_forward."""

    def __init__(self, x_shape, kernel_size, stride):
        self.x_shape, self.kernel_size, self.stride = tuple(x_shape), kernel_size, stride

    def forward(self, dy):
        return ops.avg_pool2d_backward(dy, self.x_shape, self.kernel_size, self.stride)

    def backward(self, gg):
        return ops.avg_pool2d_forward(gg, self.kernel_size, self.stride)

    def backward_graph(self, gg):
        return AvgPool2dFunction(self.kernel_size, self.stride)(gg)


class SoftmaxCrossEntropyFunction(Function):
    def forward(self, logits, labels):
        self.saved = logits, labels
        return ops.softmax_cross_entropy_forward(logits, labels)

    def backward(self, dloss):
        logits, labels = self.saved
        return ops.softmax_cross_entropy_backward(logits, labels, dloss), None

    def backward_graph(self, dloss):
        """(softmax(x) - onehot(labels)) * dloss / N, softmax as Tensor ops (shifted by the row max,
        a constant: softmax does not depend on the shift)."""
        x = self.inputs[0]
        labels = self.saved[1]
        xp = array_module(x.data)
        e = (x - Tensor(x.data.max(axis=1, keepdims=True))).exp()
        p = e / e.sum(axis=1, keepdims=True)
        onehot = xp.zeros(x.shape, dtype=x.dtype)
        onehot[xp.arange(x.shape[0]), labels] = 1
        return (p - Tensor(onehot)) * (dloss * (1.0 / x.shape[0])), None


class EmbeddingFunction(Function):
    """y = weight[indices] (issue 12). The indices get no gradient; the weight's is
    embedding_backward, a scatter-add that is linear in dy: as a Function of its own
    (EmbeddingGrad) it is the double backward, and its adjoint is this lookup again."""

    def forward(self, weight, indices):
        self.saved = indices
        self.num_classes = weight.shape[0]
        return ops.embedding_forward(weight, indices)

    def backward(self, dy):
        return ops.embedding_backward(dy, self.saved, self.num_classes), None

    def backward_graph(self, dy):
        return (EmbeddingGrad(self.saved, self.num_classes)(dy) if self.needs_grad(0) else None), None


class EmbeddingGrad(Function):
    """dweight = embedding_backward(dy, indices, num_classes) as a Function of dy: linear in dy,
    its adjoint is the lookup embedding_forward(g, indices) (the indices are constants)."""

    def __init__(self, indices, num_classes):
        self.saved, self.num_classes = indices, num_classes

    def forward(self, dy):
        return ops.embedding_backward(dy, self.saved, self.num_classes)

    def backward(self, gg):
        return ops.embedding_forward(gg, self.saved)

    def backward_graph(self, gg):
        return EmbeddingFunction()(gg, self.saved)


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


def batch_norm_leaky_relu(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                          eps=1e-5, negative_slope=0.0):
    """leaky_relu(batch_norm(input, ...), negative_slope), fused (what nn.Sequential runs for a
    BatchNorm2d followed by a LeakyReLU or ReLU)."""
    _check_tensor("batch_norm_leaky_relu", "input", input)
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight), ("bias", bias)):
        _check_tensor("batch_norm_leaky_relu", name, t, optional=True)
    rm = None if running_mean is None else running_mean.data
    rv = None if running_var is None else running_var.data
    return BatchNormLeakyReLUFunction(rm, rv, training, momentum, eps, negative_slope)(input, weight, bias)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Group normalisation (Wu & He 2018), as torch.nn.functional.group_norm: per sample, the C
    channels fall into num_groups groups of C/num_groups consecutive channels, each normalised over
    its channels and all positions (biased variance), then weight[c] * xhat + bias[c].
    num_groups=1 is layer norm over (C, H, W) with a per-channel affine map; num_groups=C is
    instance norm. Same statistics in training and evaluation (no running averages)."""
    _check_tensor("group_norm", "input", input)
    _check_tensor("group_norm", "weight", weight, optional=True)
    _check_tensor("group_norm", "bias", bias, optional=True)
    return GroupNormFunction(num_groups, eps)(input, weight, bias)


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
    loss = BCEWithLogitsFunction()(input, target)
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


def embedding(input, weight):
    """weight[input]: the rows of the (num_embeddings, embedding_dim) table named by the integer
    indices in `input` (a Tensor or an array, any shape); output shape input.shape + (embedding_dim,).
    Gradient to weight only (repeated indices accumulate), never to the indices."""
    _check_tensor("embedding", "weight", weight)
    if not isinstance(input, Tensor) and not (hasattr(input, "dtype") and hasattr(input, "shape")):
        raise TypeError(f"embedding: input must be a Tensor or array of integer indices, got {type(input).__name__}")
    return EmbeddingFunction()(weight, input)
