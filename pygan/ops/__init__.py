"""The op registry: validate arguments once, then dispatch on the array type.

numpy arrays go to `cpu` (numba kernels and the BLAS where they are faster, the reference for the
rest) or, with PYGAN_CPU_BACKEND=reference or without a working numba, to `reference` (the
specification); CuPy arrays go to `cuda` (our kernels). All backends define the same functions
with the same signatures (a parity test checks it). Checks live here, so bad input gets the same clear error on every backend; the backends may
assume valid arguments. Nothing else in pygan imports `pygan._C`.
"""

import os
import sys

import numpy as np

from . import reference

# Every op of the contract: the reference defines them all, so its __all__ is the list.
OPS = tuple(reference.__all__)

CPU_BACKENDS = ("numba", "reference")
_cpu_module = None  # the module numpy arrays go to, chosen on first use


def set_cpu_backend(name=None):
    """Choose the module numpy arrays go to: "numba" (pygan.ops.cpu) or "reference"; None reads
    PYGAN_CPU_BACKEND (default "numba"). Without a usable numba, "numba" becomes the reference and
    one line on stderr says why. Returns the name in effect."""
    global _cpu_module
    name = (os.environ.get("PYGAN_CPU_BACKEND", "numba") if name is None else name).strip().lower() or "numba"
    if name not in CPU_BACKENDS:
        raise ValueError(f"PYGAN_CPU_BACKEND must be one of {', '.join(CPU_BACKENDS)}, got {name!r}")
    from . import cpu_runtime

    if name == "reference":
        cpu_runtime.apply_thread_policy(with_numba=False)
        _cpu_module = reference
        return name
    from . import cpu

    if not cpu.AVAILABLE:
        print(f"pygan: numba is unavailable ({cpu.UNAVAILABLE}); the CPU backend is the numpy reference", file=sys.stderr)
        cpu_runtime.apply_thread_policy(with_numba=False)
        _cpu_module = reference
        return "reference"
    cpu.setup()
    _cpu_module = cpu
    return name


def cpu_backend():
    """The module numpy arrays dispatch to (pygan.ops.cpu or pygan.ops.reference)."""
    if _cpu_module is None:
        set_cpu_backend()
    return _cpu_module


def backend_for(array):
    """The module implementing the ops for this kind of array."""
    if isinstance(array, np.ndarray):
        return _cpu_module or cpu_backend()
    if _device(array) == "cupy":
        from . import cuda

        return cuda
    raise TypeError(f"expected a numpy or CuPy array, got {type(array).__name__}")


# -- argument checks -----------------------------------------------------------------------------


def _shape(a):
    return tuple(a.shape)


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def pair(value, name, op, minimum):
    """(v, v) from an int, or a validated pair of ints; every entry must be >= minimum.

    Only real integers count: a string ("22" is not (2, 2)), a bool, a float (2.7 is not 2) or a
    sequence of another length raises ValueError naming the argument."""
    if _is_int(value):
        value = (value, value)
    elif isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list, np.ndarray)):
        raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    value = tuple(value)
    if len(value) != 2 or not all(_is_int(v) for v in value):
        raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    value = (int(value[0]), int(value[1]))
    if min(value) < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value}")
    if max(value) > MAX_GEOMETRY:
        raise ValueError(f"{op}: {name} must be <= {MAX_GEOMETRY}, got {value}")
    return value


# The largest stride, padding, kernel size or output padding taken (as in csrc/bindings_conv_bn.h):
# far beyond any real layer, and small enough that no size computed from it overflows int64.
MAX_GEOMETRY = 2**24


def shape_arg(value, name, op, ndim):
    """A validated shape argument: a sequence of `ndim` non-negative ints."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list, np.ndarray)):
        raise ValueError(f"{op}: {name} must be a sequence of {ndim} ints, got {value!r}")
    value = tuple(value)
    if len(value) != ndim or not all(_is_int(v) and v >= 0 for v in value):
        raise ValueError(f"{op}: {name} must be {ndim} non-negative ints, got {value!r}")
    value = tuple(int(v) for v in value)
    if np.prod([v for v in value if v], dtype=object) > 2**56:
        raise ValueError(f"{op}: {name} {value} is not the shape of an array that could exist")
    return value


# Arguments that may be None: a conv/linear bias, a norm's affine bias and running stats; a norm's
# affine weight too (batch and group norm without affine parameters).
_OPTIONAL = ("bias", "running_mean", "running_var")
_OPTIONAL_WEIGHT_OPS = ("batch_norm", "group_norm")


_DEVICE_OF_TYPE = {}  # array type -> its library's top-level module name ("numpy", "cupy"), once per type


def _device(a):
    t = type(a)
    try:
        return _DEVICE_OF_TYPE[t]
    except KeyError:
        return _DEVICE_OF_TYPE.setdefault(t, t.__module__.split(".")[0])


def _check_float(op, **arrays):
    """Every named array is floating point, of one dtype, on one device; only _OPTIONAL ones (and
    a norm's weight) may be None."""
    dtype = device = None
    for name, a in arrays.items():
        if a is None:
            if name in _OPTIONAL or (name == "weight" and op.startswith(_OPTIONAL_WEIGHT_OPS)):
                continue
            raise TypeError(f"{op}: {name} must be an array, got None")
        if not hasattr(a, "dtype") or not hasattr(a, "shape"):
            raise TypeError(f"{op}: {name} must be an array, got {type(a).__name__}")
        if a.dtype.kind != "f" or a.dtype.itemsize not in (4, 8):
            raise TypeError(f"{op}: {name} must be float32 or float64, got {a.dtype}")
        if dtype is None:
            dtype, device, first = a.dtype, _device(a), name
        elif a.dtype != dtype:
            raise TypeError(f"{op}: {name} is {a.dtype} but {first} is {dtype}; convert one of them")
        elif _device(a) != device:
            raise ValueError(f"{op}: {name} and {first} are on different devices")


def _check_ndim(op, name, a, ndim, layout):
    if a.ndim != ndim:
        raise ValueError(f"{op}: {name} must be {ndim}-D {layout}, got shape {_shape(a)}")


def _check_grad(op, name, g, expected):
    if _shape(g) != tuple(expected):
        raise ValueError(f"{op}: {name} has shape {_shape(g)}, expected {tuple(expected)}")


def conv2d_output_size(op, x_shape, w_shape, stride, padding):
    (h, w_), (kh, kw) = x_shape[2:], w_shape[2:]
    ph, pw = padding
    if kh > h + 2 * ph or kw > w_ + 2 * pw:
        raise ValueError(
            f"{op}: kernel {kh}x{kw} is larger than the padded input {h + 2 * ph}x{w_ + 2 * pw} "
            f"(input shape {tuple(x_shape)}, padding {padding})"
        )
    return (h + 2 * ph - kh) // stride[0] + 1, (w_ + 2 * pw - kw) // stride[1] + 1


def _check_weight_fits(op, x, w, b, in_axis, out_axis, noun):
    """x.shape[1] matches the weight's input axis, and the bias (if any) its output axis."""
    if x.shape[1] != w.shape[in_axis]:
        raise ValueError(
            f"{op}: input has {x.shape[1]} {noun} but weight expects {w.shape[in_axis]} "
            f"(input shape {_shape(x)}, weight shape {_shape(w)})"
        )
    if b is not None and _shape(b) != (w.shape[out_axis],):
        raise ValueError(f"{op}: bias must have shape ({w.shape[out_axis]},), got {_shape(b)}")


def _check_conv2d(x, w, b, stride, padding, op="conv2d"):
    _check_float(op, input=x, weight=w, bias=b)
    _check_ndim(op, "input", x, 4, "(N, C, H, W)")
    _check_ndim(op, "weight", w, 4, "(out_channels, in_channels, kH, kW)")
    _check_weight_fits(op, x, w, b, 1, 0, "channels")
    stride, padding = pair(stride, "stride", op, 1), pair(padding, "padding", op, 0)
    out_hw = conv2d_output_size(op, x.shape, w.shape, stride, padding)
    return stride, padding, (x.shape[0], w.shape[0]) + out_hw


def conv_transpose2d_output_shape(op, x_shape, w_shape, stride, padding, output_padding):
    size = []
    for i in range(2):
        if output_padding[i] >= stride[i]:
            raise ValueError(f"{op}: output_padding {output_padding} must be smaller than stride {stride}")
        n = (x_shape[2 + i] - 1) * stride[i] - 2 * padding[i] + w_shape[2 + i] + output_padding[i]
        if n <= 0:
            raise ValueError(
                f"{op}: output size {n} is not positive (input shape {tuple(x_shape)}, "
                f"weight shape {tuple(w_shape)}, stride {stride}, padding {padding})"
            )
        size.append(n)
    return (x_shape[0], w_shape[1], size[0], size[1])


def _check_conv_transpose2d(x, w, b, stride, padding, output_padding, op="conv_transpose2d"):
    _check_float(op, input=x, weight=w, bias=b)
    _check_ndim(op, "input", x, 4, "(N, C, H, W)")
    _check_ndim(op, "weight", w, 4, "(in_channels, out_channels, kH, kW)")
    _check_weight_fits(op, x, w, b, 0, 1, "channels")
    stride, padding = pair(stride, "stride", op, 1), pair(padding, "padding", op, 0)
    output_padding = pair(output_padding, "output_padding", op, 0)
    y_shape = conv_transpose2d_output_shape(op, x.shape, w.shape, stride, padding, output_padding)
    return stride, padding, output_padding, y_shape


def _check_batch_norm(x, gamma, beta, running_mean, running_var, op="batch_norm"):
    _check_float(op, input=x, weight=gamma, bias=beta, running_mean=running_mean, running_var=running_var)
    if x.ndim < 2:
        raise ValueError(f"{op}: input must be at least 2-D (N, C, ...), got shape {_shape(x)}")
    c = x.shape[1]
    for name, a in (("weight", gamma), ("bias", beta), ("running_mean", running_mean), ("running_var", running_var)):
        if a is not None and _shape(a) != (c,):
            raise ValueError(f"{op}: {name} must have shape ({c},) for input shape {_shape(x)}, got {_shape(a)}")


# -- the dispatched ops --------------------------------------------------------------------------


def conv2d_forward(x, w, b, stride, padding):
    stride, padding, _ = _check_conv2d(x, w, b, stride, padding)
    return backend_for(x).conv2d_forward(x, w, b, stride, padding)


def conv2d_backward(x, w, dy, stride, padding, has_bias):
    stride, padding, y_shape = _check_conv2d(x, w, None, stride, padding, "conv2d_backward")
    _check_float("conv2d_backward", input=x, grad_output=dy)
    _check_grad("conv2d_backward", "grad_output", dy, y_shape)
    return backend_for(x).conv2d_backward(x, w, dy, stride, padding, bool(has_bias))


def conv2d_backward_data(dy, w, x_shape, stride, padding):
    x_shape = shape_arg(x_shape, "x_shape", "conv2d_backward_data", 4)
    stride, padding = pair(stride, "stride", "conv2d_backward_data", 1), pair(padding, "padding", "conv2d_backward_data", 0)
    _check_float("conv2d_backward_data", grad_output=dy, weight=w)
    _check_ndim("conv2d_backward_data", "weight", w, 4, "(out_channels, in_channels, kH, kW)")
    if x_shape[1] != w.shape[1]:
        raise ValueError(f"conv2d_backward_data: x_shape {x_shape} has {x_shape[1]} channels but weight expects {w.shape[1]}")
    y_hw = conv2d_output_size("conv2d_backward_data", x_shape, w.shape, stride, padding)
    _check_grad("conv2d_backward_data", "grad_output", dy, (x_shape[0], w.shape[0]) + y_hw)
    return backend_for(dy).conv2d_backward_data(dy, w, x_shape, stride, padding)


def conv2d_backward_weight(x, dy, w_shape, stride, padding):
    w_shape = shape_arg(w_shape, "w_shape", "conv2d_backward_weight", 4)
    stride, padding = pair(stride, "stride", "conv2d_backward_weight", 1), pair(padding, "padding", "conv2d_backward_weight", 0)
    _check_float("conv2d_backward_weight", input=x, grad_output=dy)
    _check_ndim("conv2d_backward_weight", "input", x, 4, "(N, C, H, W)")
    if x.shape[1] != w_shape[1]:
        raise ValueError(f"conv2d_backward_weight: input has {x.shape[1]} channels but w_shape {w_shape} expects {w_shape[1]}")
    y_hw = conv2d_output_size("conv2d_backward_weight", x.shape, w_shape, stride, padding)
    _check_grad("conv2d_backward_weight", "grad_output", dy, (x.shape[0], w_shape[0]) + y_hw)
    return backend_for(x).conv2d_backward_weight(x, dy, w_shape, stride, padding)


def conv_transpose2d_forward(x, w, b, stride, padding, output_padding):
    stride, padding, output_padding, _ = _check_conv_transpose2d(x, w, b, stride, padding, output_padding)
    return backend_for(x).conv_transpose2d_forward(x, w, b, stride, padding, output_padding)


def conv_transpose2d_backward(x, w, dy, stride, padding, output_padding, has_bias):
    op = "conv_transpose2d_backward"
    stride, padding, output_padding, y_shape = _check_conv_transpose2d(x, w, None, stride, padding, output_padding, op)
    _check_float(op, input=x, grad_output=dy)
    _check_grad(op, "grad_output", dy, y_shape)
    return backend_for(x).conv_transpose2d_backward(x, w, dy, stride, padding, output_padding, bool(has_bias))


def _batch_norm_forward_args(op, x, gamma, beta, running_mean, running_var, training, momentum, eps):
    """The checks batch_norm_forward and its fused form share; returns (momentum, eps) as floats."""
    _check_batch_norm(x, gamma, beta, running_mean, running_var, op)
    if not training and (running_mean is None or running_var is None):
        raise ValueError(f"{op}: evaluation mode (training=False) needs running_mean and running_var")
    if training and (x.shape[1] == 0 or x.size // x.shape[1] < 2):
        raise ValueError(f"{op}: training needs more than one value per channel, got input shape {_shape(x)}")
    momentum, eps = _number(op, "momentum", momentum), _number(op, "eps", eps)
    if not eps > 0:
        raise ValueError(f"{op}: eps must be positive, got {eps}")
    return float(momentum), float(eps)


def _batch_norm_backward_args(op, x, gamma, beta, dy, mean, rstd):
    _check_float(op, mean=mean, rstd=rstd)  # saved by the forward: required
    _check_batch_norm(x, gamma, beta, mean, rstd, op)
    _check_float(op, input=x, grad_output=dy)
    _check_grad(op, "grad_output", dy, x.shape)


def batch_norm_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps):
    momentum, eps = _batch_norm_forward_args("batch_norm", x, gamma, beta, running_mean, running_var, training,
                                             momentum, eps)
    return backend_for(x).batch_norm_forward(x, gamma, beta, running_mean, running_var, bool(training), momentum, eps)


def batch_norm_backward(x, gamma, dy, mean, rstd, training):
    _batch_norm_backward_args("batch_norm_backward", x, gamma, None, dy, mean, rstd)
    return backend_for(x).batch_norm_backward(x, gamma, dy, mean, rstd, bool(training))


def batch_norm_leaky_relu_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps, negative_slope):
    """batch_norm_forward then leaky_relu_forward in one op (the backends fuse them: one pass less
    over the activations each way); (y, mean, rstd) as batch_norm_forward. Not a registry pair of
    its own: reference.batch_norm_leaky_relu_* is its specification, the composition."""
    op = "batch_norm_leaky_relu"
    momentum, eps = _batch_norm_forward_args(op, x, gamma, beta, running_mean, running_var, training, momentum, eps)
    slope = float(_number(op, "negative_slope", negative_slope))
    return backend_for(x).batch_norm_leaky_relu_forward(x, gamma, beta, running_mean, running_var, bool(training),
                                                        momentum, eps, slope)


def batch_norm_leaky_relu_backward(x, gamma, beta, dy, mean, rstd, training, negative_slope):
    op = "batch_norm_leaky_relu_backward"
    _batch_norm_backward_args(op, x, gamma, beta, dy, mean, rstd)
    return backend_for(x).batch_norm_leaky_relu_backward(x, gamma, beta, dy, mean, rstd, bool(training),
                                                         float(_number(op, "negative_slope", negative_slope)))


def _pointwise_backward_check(op, ref, dy):
    _check_float(op, input=ref, grad_output=dy)
    _check_grad(op, "grad_output", dy, ref.shape)


def leaky_relu_forward(x, negative_slope):
    _check_float("leaky_relu", input=x)
    return backend_for(x).leaky_relu_forward(x, _number("leaky_relu", "negative_slope", negative_slope))


def leaky_relu_backward(x, dy, negative_slope):
    _pointwise_backward_check("leaky_relu_backward", x, dy)
    return backend_for(x).leaky_relu_backward(x, dy, _number("leaky_relu_backward", "negative_slope", negative_slope))


def tanh_forward(x):
    _check_float("tanh", input=x)
    return backend_for(x).tanh_forward(x)


def tanh_backward(y, dy):
    _pointwise_backward_check("tanh_backward", y, dy)
    return backend_for(y).tanh_backward(y, dy)


def sigmoid_forward(x):
    _check_float("sigmoid", input=x)
    return backend_for(x).sigmoid_forward(x)


def sigmoid_backward(y, dy):
    _pointwise_backward_check("sigmoid_backward", y, dy)
    return backend_for(y).sigmoid_backward(y, dy)


def _check_bce(op, logits, target):
    _check_float(op, input=logits, target=target)
    if _shape(logits) != _shape(target):
        raise ValueError(f"{op}: target shape {_shape(target)} must equal input shape {_shape(logits)}")
    if logits.size == 0:
        raise ValueError(f"{op}: input is empty")


def binary_cross_entropy_with_logits_forward(logits, target):
    _check_bce("binary_cross_entropy_with_logits", logits, target)
    return backend_for(logits).binary_cross_entropy_with_logits_forward(logits, target)


def binary_cross_entropy_with_logits_backward(logits, target, dloss):
    _check_bce("binary_cross_entropy_with_logits_backward", logits, target)
    if getattr(dloss, "size", 1) != 1:
        raise ValueError(f"binary_cross_entropy_with_logits_backward: grad_output must be a scalar, got shape {_shape(dloss)}")
    return backend_for(logits).binary_cross_entropy_with_logits_backward(logits, target, dloss)


def adam_step(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay, hyper=None):
    lists = {"params": params, "grads": grads, "exp_avgs": exp_avgs, "exp_avg_sqs": exp_avg_sqs}
    for name, arrays in lists.items():
        if not isinstance(arrays, (list, tuple)):
            raise TypeError(f"adam_step: {name} must be a list of arrays, got {type(arrays).__name__}")
    n = len(params)
    for name, arrays in lists.items():
        if len(arrays) != n:
            raise ValueError(f"adam_step: {name} has {len(arrays)} arrays, params has {n}")
    for i in range(n):
        _check_float("adam_step", param=params[i], grad=grads[i], exp_avg=exp_avgs[i], exp_avg_sq=exp_avg_sqs[i])
        for name in ("grads", "exp_avgs", "exp_avg_sqs"):
            _check_grad("adam_step", f"{name}[{i}]", lists[name][i], params[i].shape)
    if hyper is not None:
        _check_adam_hyper(hyper, params)
    if n == 0:
        return
    if not _is_int(step) or step < 1:
        raise ValueError(f"adam_step: step must be an int >= 1, got {step!r}")
    lr, beta1, beta2, eps, weight_decay = (
        _number("adam_step", name, v) for name, v in
        (("lr", lr), ("beta1", beta1), ("beta2", beta2), ("eps", eps), ("weight_decay", weight_decay)))
    if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
        raise ValueError(f"adam_step: beta1 and beta2 must lie in [0, 1), got {beta1} and {beta2}")
    backend_for(params[0]).adam_step(params, grads, exp_avgs, exp_avg_sqs, int(step), lr, beta1, beta2, eps, weight_decay,
                                     hyper)


def _check_adam_hyper(hyper, params):
    """hyper: a float32 array of shape (2,) on the params' device (its values live there: unchecked)."""
    if not hasattr(hyper, "dtype") or not hasattr(hyper, "shape"):
        raise TypeError(f"adam_step: hyper must be None or an array, got {type(hyper).__name__}")
    if hyper.dtype != np.float32 or _shape(hyper) != (2,):
        raise ValueError("adam_step: hyper must be a float32 array of shape (2,) ([step_size, bias_correction2_sqrt]), "
                         f"got {hyper.dtype} of shape {_shape(hyper)}")
    if params and type(hyper).__module__.split(".")[0] != type(params[0]).__module__.split(".")[0]:
        raise ValueError(f"adam_step: hyper must be on the params' device, got a {type(hyper).__module__.split('.')[0]} "
                         f"array for {type(params[0]).__module__.split('.')[0]} params")


def _number(op, name, value):
    """float(value) for a real number (not a string, None or a bool)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{op}: {name} must be a number, got {value!r}")
    return float(value)


# -- linear, average pooling, softmax cross-entropy ----------------------------------------------


def _check_linear(x, w, b, op="linear"):
    _check_float(op, input=x, weight=w, bias=b)
    _check_ndim(op, "input", x, 2, "(N, in_features)")
    _check_ndim(op, "weight", w, 2, "(out_features, in_features)")
    _check_weight_fits(op, x, w, b, 1, 0, "features")


def linear_forward(x, w, b):
    _check_linear(x, w, b)
    return backend_for(x).linear_forward(x, w, b)


def linear_backward(x, w, dy, has_bias):
    _check_linear(x, w, None, "linear_backward")
    _check_float("linear_backward", input=x, grad_output=dy)
    _check_grad("linear_backward", "grad_output", dy, (x.shape[0], w.shape[0]))
    return backend_for(x).linear_backward(x, w, dy, bool(has_bias))


def avg_pool2d_output_shape(op, x_shape, kernel_size, stride):
    """Validated (kernel_size, stride, output shape) of an unpadded average pooling."""
    kernel_size, stride = pair(kernel_size, "kernel_size", op, 1), pair(stride, "stride", op, 1)
    if len(x_shape) != 4:
        raise ValueError(f"{op}: input must be 4-D (N, C, H, W), got shape {tuple(x_shape)}")
    h, w = x_shape[2:]
    if kernel_size[0] > h or kernel_size[1] > w:
        raise ValueError(f"{op}: kernel_size {kernel_size} is larger than the input {h}x{w} (shape {tuple(x_shape)})")
    out = (x_shape[0], x_shape[1], (h - kernel_size[0]) // stride[0] + 1, (w - kernel_size[1]) // stride[1] + 1)
    return kernel_size, stride, out


def avg_pool2d_forward(x, kernel_size, stride):
    _check_float("avg_pool2d", input=x)
    kernel_size, stride, _ = avg_pool2d_output_shape("avg_pool2d", _shape(x), kernel_size, stride)
    return backend_for(x).avg_pool2d_forward(x, kernel_size, stride)


def avg_pool2d_backward(dy, x_shape, kernel_size, stride):
    op = "avg_pool2d_backward"
    _check_float(op, grad_output=dy)
    x_shape = shape_arg(x_shape, "x_shape", op, 4)
    kernel_size, stride, y_shape = avg_pool2d_output_shape(op, x_shape, kernel_size, stride)
    _check_grad(op, "grad_output", dy, y_shape)
    return backend_for(dy).avg_pool2d_backward(dy, x_shape, kernel_size, stride)


def _check_softmax_cross_entropy(op, logits, labels):
    _check_float(op, input=logits)
    _check_ndim(op, "input", logits, 2, "(N, num_classes)")
    if logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ValueError(f"{op}: input is empty (shape {_shape(logits)})")
    if not hasattr(labels, "dtype") or labels.dtype.kind not in "iu":
        raise TypeError(f"{op}: labels must be an integer array of class indices, got {getattr(labels, 'dtype', type(labels).__name__)}")
    if _shape(labels) != (logits.shape[0],):
        raise ValueError(f"{op}: labels must have shape ({logits.shape[0]},) for input shape {_shape(logits)}, got {_shape(labels)}")
    if _device(labels) != _device(logits):
        raise ValueError(f"{op}: labels and input are on different devices")
    # The range is checked here only while the labels are on the host (numpy): a CuPy array's
    # min/max would be two device-to-host synchronisations per call. On the GPU the kernels never
    # use an out-of-range label as an index: its row's loss term and gradient row are NaN
    # (csrc/loss.cu), so the loss shows the mistake, as the embedding does for its indices.
    if isinstance(labels, np.ndarray):
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= logits.shape[1]:
            raise ValueError(f"{op}: labels must lie in [0, {logits.shape[1]}), got values from {lo} to {hi}")


def softmax_cross_entropy_forward(logits, labels):
    _check_softmax_cross_entropy("softmax_cross_entropy", logits, labels)
    return backend_for(logits).softmax_cross_entropy_forward(logits, labels)


def softmax_cross_entropy_backward(logits, labels, dloss):
    op = "softmax_cross_entropy_backward"
    _check_softmax_cross_entropy(op, logits, labels)
    if getattr(dloss, "size", 1) != 1:
        raise ValueError(f"{op}: grad_output must be a scalar, got shape {_shape(dloss)}")
    return backend_for(logits).softmax_cross_entropy_backward(logits, labels, dloss)


# -- class embedding (issue 12) ------------------------------------------------------------------
# The index range is checked on the host only for numpy indices: reading a CuPy array's min/max
# would be a device-to-host synchronisation in every step. On the GPU the kernels never use an
# out-of-range index as an address: such an index gives a NaN output row in the forward and makes
# the whole weight gradient NaN in the backward (csrc/embedding.cu), so the mistake shows.


def _check_indices(op, indices, like, like_name, num_classes):
    if not hasattr(indices, "dtype") or not hasattr(indices, "shape"):
        raise TypeError(f"{op}: indices must be an integer array, got {type(indices).__name__}")
    if indices.dtype.kind not in "iu":
        raise TypeError(f"{op}: indices must be an integer array of class indices, got {indices.dtype}")
    if _device(indices) != _device(like):
        raise ValueError(f"{op}: indices and {like_name} are on different devices")
    if isinstance(indices, np.ndarray) and indices.size:
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"{op}: indices must lie in [0, {num_classes}), got values from {lo} to {hi}")


def embedding_forward(weight, indices):
    op = "embedding"
    _check_float(op, weight=weight)
    _check_ndim(op, "weight", weight, 2, "(num_embeddings, embedding_dim)")
    _check_indices(op, indices, weight, "weight", weight.shape[0])
    return backend_for(weight).embedding_forward(weight, indices)


def embedding_backward(dy, indices, num_classes):
    op = "embedding_backward"
    if not _is_int(num_classes) or num_classes < 0:
        raise ValueError(f"{op}: num_classes must be a non-negative int, got {num_classes!r}")
    _check_float(op, grad_output=dy)
    _check_indices(op, indices, dy, "grad_output", int(num_classes))
    if dy.ndim != indices.ndim + 1 or _shape(dy)[:-1] != _shape(indices):
        raise ValueError(
            f"{op}: grad_output must have shape indices.shape + (embedding_dim,) = {_shape(indices)} + (dim,), "
            f"got {_shape(dy)}"
        )
    return backend_for(dy).embedding_backward(dy, indices, int(num_classes))


# -- group norm, RMSprop (issue 11) --------------------------------------------------------------


def _check_num_groups(op, num_groups):
    if not isinstance(num_groups, (int, np.integer)) or isinstance(num_groups, bool) or num_groups < 1:
        raise ValueError(f"{op}: num_groups must be an int >= 1, got {num_groups!r}")
    return int(num_groups)


def _check_group_norm(x, gamma, beta, num_groups, op="group_norm"):
    _check_float(op, input=x, weight=gamma, bias=beta)
    num_groups = _check_num_groups(op, num_groups)
    if x.ndim < 2:
        raise ValueError(f"{op}: input must be at least 2-D (N, C, ...), got shape {_shape(x)}")
    c = x.shape[1]
    if c % num_groups != 0:
        raise ValueError(f"{op}: num_groups {num_groups} must divide the {c} channels (input shape {_shape(x)})")
    if any(d == 0 for d in x.shape[1:]):
        raise ValueError(f"{op}: input has no values per group (shape {_shape(x)})")
    for name, a in (("weight", gamma), ("bias", beta)):
        if a is not None and _shape(a) != (c,):
            raise ValueError(f"{op}: {name} must have shape ({c},) for input shape {_shape(x)}, got {_shape(a)}")
    return num_groups


def group_norm_forward(x, gamma, beta, num_groups, eps):
    num_groups = _check_group_norm(x, gamma, beta, num_groups)
    if not eps > 0:
        raise ValueError(f"group_norm: eps must be positive, got {eps}")
    return backend_for(x).group_norm_forward(x, gamma, beta, num_groups, float(eps))


def group_norm_backward(x, gamma, dy, mean, rstd, num_groups):
    op = "group_norm_backward"
    num_groups = _check_group_norm(x, gamma, None, num_groups, op)
    _check_float(op, input=x, grad_output=dy, mean=mean, rstd=rstd)
    _check_grad(op, "grad_output", dy, x.shape)
    _check_grad(op, "mean", mean, (x.shape[0], num_groups))
    _check_grad(op, "rstd", rstd, (x.shape[0], num_groups))
    return backend_for(x).group_norm_backward(x, gamma, dy, mean, rstd, num_groups)


def rmsprop_step(params, grads, square_avgs, momentum_buffers, grad_avgs, lr, alpha, eps, weight_decay, momentum,
                 centered):
    op = "rmsprop_step"
    for name, arrays in (("params", params), ("grads", grads), ("square_avgs", square_avgs),
                         ("momentum_buffers", momentum_buffers), ("grad_avgs", grad_avgs)):
        if not isinstance(arrays, (list, tuple)):
            raise TypeError(f"{op}: {name} must be a list of arrays, got {type(arrays).__name__}")
    if not isinstance(centered, (bool, np.bool_)):
        raise TypeError(f"{op}: centered must be a bool, got {centered!r}")
    n = len(params)
    lists = {"grads": grads, "square_avgs": square_avgs}
    lr, alpha, eps, weight_decay, momentum = (
        _number(op, name, v) for name, v in
        (("lr", lr), ("alpha", alpha), ("eps", eps), ("weight_decay", weight_decay), ("momentum", momentum)))
    centered = bool(centered)
    for name, arrays, wanted, why in (
        ("momentum_buffers", momentum_buffers, momentum > 0, "momentum > 0"),
        ("grad_avgs", grad_avgs, centered, "centered"),
    ):
        if wanted:
            lists[name] = arrays
        elif len(arrays) != 0:
            raise ValueError(f"{op}: {name} must be empty unless {why}, got {len(arrays)} arrays")
    for name, arrays in lists.items():
        if len(arrays) != n:
            raise ValueError(f"{op}: {name} has {len(arrays)} arrays, params has {n}")
    for i in range(n):
        _check_float(op, param=params[i], **{name[:-1]: arrays[i] for name, arrays in lists.items()})
        for name, arrays in lists.items():
            _check_grad(op, f"{name}[{i}]", arrays[i], params[i].shape)
    for name, value in (("lr", lr), ("alpha", alpha), ("eps", eps), ("weight_decay", weight_decay), ("momentum", momentum)):
        if not value >= 0:
            raise ValueError(f"{op}: {name} must be >= 0, got {value}")
    if n == 0:
        return
    backend_for(params[0]).rmsprop_step(
        params, grads, square_avgs, momentum_buffers, grad_avgs, float(lr), float(alpha), float(eps),
        float(weight_decay), momentum, centered,
    )
