"""CuPy backend of the op registry: our CUDA kernels (pygan._C) on CuPy arrays.

Every function has the reference's exact signature (tests/test_ops_parity.py checks it); the
wrappers themselves live in native.py, shared with the host-emulation module used by the tests.
They make inputs contiguous, allocate outputs with cupy.empty, and launch on CuPy's current
stream. `backend()` returns the wrapper object, whose methods also take `variant=` (benchmarks,
tests). Importing this module needs no CuPy; the first call does.

The conv2d_* / conv_transpose2d_* / batch_norm_* ops (issue 5), linear_* / avg_pool2d_* /
softmax_cross_entropy_* (issue 6), group_norm_* / rmsprop_step (issue 11) and embedding_* (issue 12)
are at the end of this file.
"""

from .native import make_backend

_backends = {}


def backend(poison=False):
    """The CuPy-backed NativeOps (built on first use; RuntimeError when CUDA cannot be used).
    poison=True: every output and workspace NaN-filled before its kernel runs (what tests use)."""
    if poison not in _backends:
        from ..backend import native, require_cupy

        cupy = require_cupy()
        _backends[poison] = make_backend(native(), cupy, lambda: cupy.cuda.get_current_stream().ptr, poison=poison)
    return _backends[poison]


def leaky_relu_forward(x, negative_slope):
    return backend().leaky_relu_forward(x, negative_slope)


def leaky_relu_backward(x, dy, negative_slope):
    return backend().leaky_relu_backward(x, dy, negative_slope)


def tanh_forward(x):
    return backend().tanh_forward(x)


def tanh_backward(y, dy):
    return backend().tanh_backward(y, dy)


def sigmoid_forward(x):
    return backend().sigmoid_forward(x)


def sigmoid_backward(y, dy):
    return backend().sigmoid_backward(y, dy)


def binary_cross_entropy_with_logits_forward(logits, target):
    return backend().binary_cross_entropy_with_logits_forward(logits, target)


def binary_cross_entropy_with_logits_backward(logits, target, dloss):
    return backend().binary_cross_entropy_with_logits_backward(logits, target, dloss)


def adam_step(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay, hyper=None):
    backend().adam_step(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay, hyper)


# ==== issue 5: conv2d, conv_transpose2d, batch norm (kernels: csrc/conv2d.cu, csrc/batchnorm.cu) ====
# Variant: backend().<op>(..., variant=k), or pygan.ops.native_conv_bn.VARIANTS[family] = k.


def conv2d_forward(x, w, b, stride, padding):
    return backend().conv2d_forward(x, w, b, stride, padding)


def conv2d_backward(x, w, dy, stride, padding, has_bias):
    return backend().conv2d_backward(x, w, dy, stride, padding, has_bias)


def conv2d_backward_data(dy, w, x_shape, stride, padding):
    return backend().conv2d_backward_data(dy, w, x_shape, stride, padding)


def conv2d_backward_weight(x, dy, w_shape, stride, padding):
    return backend().conv2d_backward_weight(x, dy, w_shape, stride, padding)


def conv_transpose2d_forward(x, w, b, stride, padding, output_padding):
    return backend().conv_transpose2d_forward(x, w, b, stride, padding, output_padding)


def conv_transpose2d_backward(x, w, dy, stride, padding, output_padding, has_bias):
    return backend().conv_transpose2d_backward(x, w, dy, stride, padding, output_padding, has_bias)


def batch_norm_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps):
    return backend().batch_norm_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps)


def batch_norm_backward(x, gamma, dy, mean, rstd, training):
    return backend().batch_norm_backward(x, gamma, dy, mean, rstd, training)


# Fused batch norm + leaky ReLU (slope 0: ReLU): not registry ops; their specification is
# reference.batch_norm_leaky_relu_forward / _backward.
def batch_norm_leaky_relu_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps, negative_slope):
    return backend().batch_norm_leaky_relu_forward(
        x, gamma, beta, running_mean, running_var, training, momentum, eps, negative_slope
    )


def batch_norm_leaky_relu_backward(x, gamma, beta, dy, mean, rstd, training, negative_slope):
    return backend().batch_norm_leaky_relu_backward(x, gamma, beta, dy, mean, rstd, training, negative_slope)


# ==== end issue 5 =================================================================================


# ==== issue 6: linear (conv2d kernels as 1x1 convs), avg_pool2d (csrc/pool.cu), softmax
# cross-entropy (csrc/loss.cu). labels: any integer dtype; converted to int64 for the kernels.
# Variant: backend().<op>(..., variant=k); linear's is the conv2d family's (native_conv_bn.VARIANTS).


def linear_forward(x, w, b):
    return backend().linear_forward(x, w, b)


def linear_backward(x, w, dy, has_bias):
    return backend().linear_backward(x, w, dy, has_bias)


def avg_pool2d_forward(x, kernel_size, stride):
    return backend().avg_pool2d_forward(x, kernel_size, stride)


def avg_pool2d_backward(dy, x_shape, kernel_size, stride):
    return backend().avg_pool2d_backward(dy, x_shape, kernel_size, stride)


def softmax_cross_entropy_forward(logits, labels):
    return backend().softmax_cross_entropy_forward(logits, labels)


def softmax_cross_entropy_backward(logits, labels, dloss):
    return backend().softmax_cross_entropy_backward(logits, labels, dloss)


# ==== end issue 6 =================================================================================


# ==== issue 12: class embedding (csrc/embedding.cu). indices: any integer dtype and shape; converted
# to int64 for the kernels. Their range is not checked here (no device-to-host sync): the kernels
# turn an out-of-range index into NaN (y row; all of dweight). Variant: backend().<op>(..., variant=k).


def embedding_forward(weight, indices):
    return backend().embedding_forward(weight, indices)


def embedding_backward(dy, indices, num_classes):
    return backend().embedding_backward(dy, indices, num_classes)


# ==== end issue 12 ================================================================================


# ==== issue 11: group norm (csrc/groupnorm.cu), RMSprop (csrc/rmsprop.cu) =========================
# Variant: backend().<op>(..., variant=k).


def group_norm_forward(x, gamma, beta, num_groups, eps):
    return backend().group_norm_forward(x, gamma, beta, num_groups, eps)


def group_norm_backward(x, gamma, dy, mean, rstd, num_groups):
    return backend().group_norm_backward(x, gamma, dy, mean, rstd, num_groups)


def rmsprop_step(params, grads, square_avgs, momentum_buffers, grad_avgs, lr, alpha, eps, weight_decay, momentum,
                 centered):
    backend().rmsprop_step(params, grads, square_avgs, momentum_buffers, grad_avgs, lr, alpha, eps, weight_decay,
                           momentum, centered)


# ==== end issue 11 ================================================================================
