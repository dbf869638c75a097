"""numpy reference ops: the specification of every pygan op, and the CPU training path.

Every backend implements exactly these functions with these argument orders; where a kernel and
this file disagree, this file is right. Arrays are numpy float32 or float64 and every op computes in
its input's dtype. Inputs were validated by the registry (pygan.ops), so only cheap asserts remain.
stride, padding and output_padding are pairs (sh, sw); plain ints are accepted. Results are fresh
C-contiguous arrays, never views of inputs.

    conv2d_forward(x, w, b, stride, padding) -> y
        x (N,C,H,W), w (O,C,kh,kw), b (O,) or None; y (N,O,OH,OW), OH = (H + 2ph - kh)//sh + 1
    conv2d_backward(x, w, dy, stride, padding, has_bias) -> (dx, dw, db)      db None unless has_bias
    conv2d_backward_data(dy, w, x_shape, stride, padding) -> dx
    conv2d_backward_weight(x, dy, w_shape, stride, padding) -> dw
    conv_transpose2d_forward(x, w, b, stride, padding, output_padding) -> y
        x (N,Cin,H,W), w (Cin,Cout,kh,kw); OH = (H-1)*sh - 2ph + kh + oph, output_padding < stride
    conv_transpose2d_backward(x, w, dy, stride, padding, output_padding, has_bias) -> (dx, dw, db)
    batch_norm_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps)
        -> (y, mean, rstd)    per channel (axis 1); running stats updated in place when training
    batch_norm_backward(x, gamma, dy, mean, rstd, training) -> (dx, dgamma, dbeta)
    leaky_relu_forward(x, negative_slope) -> y;  leaky_relu_backward(x, dy, negative_slope) -> dx
    tanh_forward(x) -> y;  tanh_backward(y, dy) -> dx                     (from the output y)
    sigmoid_forward(x) -> y;  sigmoid_backward(y, dy) -> dx               (from the output y)
    binary_cross_entropy_with_logits_forward(logits, target) -> loss      (0-d, mean reduction)
    binary_cross_entropy_with_logits_backward(logits, target, dloss) -> dlogits
    adam_step(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay, hyper=None)
        -> None    in place, torch.optim.Adam semantics (L2 weight decay, no amsgrad); hyper: None or
                   float32 [step_size, bias_correction2_sqrt] on the params' device, used instead of
                   the values computed from step and lr (for a launch captured in a CUDA graph)
    linear_forward(x, w, b) -> y          x (N,in), w (out,in), b (out,) or None; y = x w^T + b
    linear_backward(x, w, dy, has_bias) -> (dx, dw, db)                   db None unless has_bias
    avg_pool2d_forward(x, kernel_size, stride) -> y
        mean over each kh x kw window, no padding; OH = (H - kh)//sh + 1 (kernel = H x W: global)
    avg_pool2d_backward(dy, x_shape, kernel_size, stride) -> dx
    softmax_cross_entropy_forward(logits, labels) -> loss
        logits (N,K), labels (N,) integer class indices in [0, K); mean of -log softmax(x)[label]
    softmax_cross_entropy_backward(logits, labels, dloss) -> dlogits     (softmax - onehot) dloss / N
    embedding_forward(weight, indices) -> y
        weight (num_classes, dim), indices integer array of any shape with values in [0, num_classes);
        y = weight[indices], shape indices.shape + (dim,)
    embedding_backward(dy, indices, num_classes) -> dweight   (num_classes, dim): the rows of dy
        added into the rows named by indices (a class named twice gets the sum)
    group_norm_forward(x, gamma, beta, num_groups, eps) -> (y, mean, rstd)
        x (N,C,...), C % num_groups == 0; mean, rstd (N, num_groups) over each group's C/G * spatial
        values (biased variance); y = (x - mean) * rstd * gamma[c] + beta[c], gamma/beta (C,) or None.
        num_groups=1: layer norm over (C, H, W) with per-channel affine; num_groups=C: instance norm
    group_norm_backward(x, gamma, dy, mean, rstd, num_groups) -> (dx, dgamma, dbeta)  None if no gamma
    rmsprop_step(params, grads, square_avgs, momentum_buffers, grad_avgs, lr, alpha, eps,
                 weight_decay, momentum, centered) -> None    in place, torch.optim.RMSprop semantics;
        momentum_buffers: one per param when momentum > 0, else []; grad_avgs: likewise when centered

Convolution is im2col + one GEMM in an NHWC-style layout: the input is padded and transposed to
(N, Hp, Wp, C) once, so each patch row (kw*C values) is contiguous and the column matrix
(N*OH*OW, kh*kw*C) is a single strided copy. Backward-data is one GEMM and a col2im that adds the
patches back in a few non-overlapping strided groups; backward-weight is one GEMM against the
columns. Conv-transpose reuses the three computations with the roles of x and y swapped.
"""

import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = [
    "conv2d_forward",
    "conv2d_backward",
    "conv2d_backward_data",
    "conv2d_backward_weight",
    "conv_transpose2d_forward",
    "conv_transpose2d_backward",
    "batch_norm_forward",
    "batch_norm_backward",
    "leaky_relu_forward",
    "leaky_relu_backward",
    "tanh_forward",
    "tanh_backward",
    "sigmoid_forward",
    "sigmoid_backward",
    "binary_cross_entropy_with_logits_forward",
    "binary_cross_entropy_with_logits_backward",
    "adam_step",
    "linear_forward",
    "linear_backward",
    "avg_pool2d_forward",
    "avg_pool2d_backward",
    "softmax_cross_entropy_forward",
    "softmax_cross_entropy_backward",
    "embedding_forward",
    "embedding_backward",
    "group_norm_forward",
    "group_norm_backward",
    "rmsprop_step",
]


def _pair(v):
    """(a, b) from an int or a pair of ints."""
    if isinstance(v, (tuple, list)):
        a, b = v
        return int(a), int(b)
    return int(v), int(v)


def _out_size(size, k, s, p):
    return (size + 2 * p - k) // s + 1


# -- the three conv computations, on NHWC matrices ------------------------------------------------
#
# Notation: cols is the (N*OH*OW, kh*kw*C) patch matrix, patch entries ordered (i, j, c); wk is the
# weight as an (O, kh*kw*C) matrix in the same order; an "NHWC matrix" of an (N, C, H, W) array is
# its (N*H*W, C) transpose.


def _nhwc_matrix(a):
    """(N*H*W, C) contiguous copy of an (N, C, H, W) array."""
    n, c, h, w = a.shape
    m = np.empty((n, h, w, c), a.dtype)
    m[...] = a.transpose(0, 2, 3, 1)
    return m.reshape(n * h * w, c)


def _weight_matrix(w):
    """(O, kh*kw*C) copy of an (O, C, kh, kw) weight, columns ordered (i, j, c)."""
    o = w.shape[0]
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(o, -1)


def _im2col(x, kh, kw, stride, padding):
    """Patch matrix (N*OH*OW, kh*kw*C) of x (N, C, H, W), plus OH, OW."""
    n, c, h, w = x.shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = _out_size(h, kh, sh, ph), _out_size(w, kw, sw, pw)
    alloc = np.zeros if (ph or pw) else np.empty
    xp = alloc((n, h + 2 * ph, w + 2 * pw, c), x.dtype)
    xp[:, ph : ph + h, pw : pw + w, :] = x.transpose(0, 2, 3, 1)
    bn, bh, bw, bc = xp.strides
    # patches[n, oh, ow, i, (j, c)] = xp[n, oh*sh + i, ow*sw + j, c]; (j, c) is contiguous in xp.
    patches = as_strided(xp, (n, oh, ow, kh, kw * c), (bn, sh * bh, sw * bw, bh, bc), writeable=False)
    cols = np.empty((n, oh, ow, kh, kw * c), x.dtype)
    np.copyto(cols, patches)
    return cols.reshape(n * oh * ow, kh * kw * c), oh, ow


def _col2im(dcols, x_shape, kh, kw, oh, ow, stride, padding):
    """Adjoint of _im2col: add each patch row of dcols back into an (N, C, H, W) array."""
    n, c, h, w = x_shape
    (sh, sw), (ph, pw) = stride, padding
    dxp = np.zeros((n, h + 2 * ph, w + 2 * pw, c), dcols.dtype)
    dcols = dcols.reshape(n, oh, ow, kh, kw * c)
    bn, bh, bw, bc = dxp.strides
    # Patches of output positions mh rows (mw columns) apart never overlap, so each residue class
    # (rh, rw) is one non-overlapping strided view of dxp: mh*mw in-place adds in all (the first
    # is a copy, dxp being still zero there).
    mh, mw = min(-(-kh // sh), oh), min(-(-kw // sw), ow)
    for rh in range(mh):
        for rw in range(mw):
            src = dcols[:, rh::mh, rw::mw]
            dst = as_strided(
                dxp[:, sh * rh :, sw * rw :],
                src.shape,
                (bn, mh * sh * bh, mw * sw * bw, bh, bc),
            )
            if rh == rw == 0:
                np.copyto(dst, src)
            else:
                np.add(dst, src, out=dst)
    dx = np.empty(x_shape, dcols.dtype)
    dx[...] = dxp[:, ph : ph + h, pw : pw + w, :].transpose(0, 3, 1, 2)
    return dx


def _forward_from_cols(cols, w, b, n, oh, ow):
    """y (N, O, OH, OW) = cols @ wk.T (+ b)."""
    return _nchw_from_matrix(cols @ _weight_matrix(w).T, b, n, oh, ow, np.empty)


def _nchw_from_matrix(ym, b, n, oh, ow, empty):
    """y (N, O, OH, OW), from the NHWC matrix ym (N*OH*OW, O), plus the bias b when given, into
    an array from empty(shape, dtype)."""
    o = ym.shape[1]
    y = empty((n, o, oh, ow), ym.dtype)
    ynchw = ym.reshape(n, oh, ow, o).transpose(0, 3, 1, 2)
    if b is None:
        y[...] = ynchw
    else:
        np.add(ynchw, b.reshape(o, 1, 1), out=y)
    return y


def _backward_data_from_matrix(dym, w, x_shape, oh, ow, stride, padding):
    """dx from the NHWC matrix of dy: col2im(dym @ wk)."""
    kh, kw = w.shape[2:]
    return _col2im(dym @ _weight_matrix(w), x_shape, kh, kw, oh, ow, stride, padding)


def _backward_weight_from_cols(cols, dym, w_shape):
    """dw (O, C, kh, kw) = dym.T @ cols, reordered from (i, j, c)."""
    o, c, kh, kw = w_shape
    dwm = dym.T @ cols
    dw = np.empty(w_shape, cols.dtype)
    dw[...] = dwm.reshape(o, kh, kw, c).transpose(0, 3, 1, 2)
    return dw


# -- conv2d ---------------------------------------------------------------------------------------


def conv2d_forward(x, w, b, stride, padding):
    """y[n,o,p,q] = b[o] + sum_{c,i,j} x_padded[n, c, p*sh + i, q*sw + j] * w[o,c,i,j]."""
    stride, padding = _pair(stride), _pair(padding)
    assert x.ndim == 4 and w.ndim == 4 and x.shape[1] == w.shape[1]
    kh, kw = w.shape[2:]
    cols, oh, ow = _im2col(x, kh, kw, stride, padding)
    return _forward_from_cols(cols, w, b, x.shape[0], oh, ow)


def conv2d_backward(x, w, dy, stride, padding, has_bias):
    """(dx, dw, db) of conv2d_forward; db = dy.sum((0, 2, 3)) if has_bias else None."""
    stride, padding = _pair(stride), _pair(padding)
    kh, kw = w.shape[2:]
    dym = _nhwc_matrix(dy)
    oh, ow = dy.shape[2:]
    dx = _backward_data_from_matrix(dym, w, x.shape, oh, ow, stride, padding)
    cols, _, _ = _im2col(x, kh, kw, stride, padding)
    dw = _backward_weight_from_cols(cols, dym, w.shape)
    db = dy.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dw, db


def conv2d_backward_data(dy, w, x_shape, stride, padding):
    """dx of conv2d for an input of shape x_shape (the adjoint of conv2d_forward in x)."""
    stride, padding = _pair(stride), _pair(padding)
    x_shape = tuple(int(s) for s in x_shape)
    oh, ow = dy.shape[2:]
    kh, kw = w.shape[2:]
    assert (oh, ow) == (
        _out_size(x_shape[2], kh, stride[0], padding[0]),
        _out_size(x_shape[3], kw, stride[1], padding[1]),
    )
    return _backward_data_from_matrix(_nhwc_matrix(dy), w, x_shape, oh, ow, stride, padding)


def conv2d_backward_weight(x, dy, w_shape, stride, padding):
    """dw of conv2d for a weight of shape w_shape."""
    stride, padding = _pair(stride), _pair(padding)
    w_shape = tuple(int(s) for s in w_shape)
    cols, oh, ow = _im2col(x, w_shape[2], w_shape[3], stride, padding)
    assert (oh, ow) == tuple(dy.shape[2:])
    return _backward_weight_from_cols(cols, _nhwc_matrix(dy), w_shape)


# -- conv_transpose2d: the conv computations with x and y swapped ----------------------------------


def _conv_transpose_out_shape(x, w, stride, padding, output_padding):
    (sh, sw), (ph, pw), (oph, opw) = stride, padding, output_padding
    n, _, h, wd = x.shape
    _, cout, kh, kw = w.shape
    return (n, cout, (h - 1) * sh - 2 * ph + kh + oph, (wd - 1) * sw - 2 * pw + kw + opw)


def conv_transpose2d_forward(x, w, b, stride, padding, output_padding):
    """y = conv2d_backward_data(x, w, y_shape) (+ b); output_padding only enlarges y_shape."""
    stride, padding, output_padding = _pair(stride), _pair(padding), _pair(output_padding)
    assert x.ndim == 4 and w.ndim == 4 and x.shape[1] == w.shape[0]
    y_shape = _conv_transpose_out_shape(x, w, stride, padding, output_padding)
    h, wd = x.shape[2:]
    y = _backward_data_from_matrix(_nhwc_matrix(x), w, y_shape, h, wd, stride, padding)
    if b is not None:
        y += b.reshape(-1, 1, 1)
    return y


def conv_transpose2d_backward(x, w, dy, stride, padding, output_padding, has_bias):
    """dx = conv2d_forward(dy, w), dw = conv2d_backward_weight(dy, x, w.shape), db = dy.sum((0,2,3))."""
    stride, padding = _pair(stride), _pair(padding)
    kh, kw = w.shape[2:]
    cols, h, wd = _im2col(dy, kh, kw, stride, padding)
    assert (h, wd) == tuple(x.shape[2:])
    dx = _forward_from_cols(cols, w, None, x.shape[0], h, wd)
    dw = _backward_weight_from_cols(cols, _nhwc_matrix(x), w.shape)
    db = dy.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dw, db


# -- batch norm -----------------------------------------------------------------------------------


def _channels_3d(a):
    """View (or copy) of an (N, C, ...) array as (N, C, M)."""
    return a.reshape(a.shape[0], a.shape[1], -1)


def _channel_sum(a3):
    """Per-channel sum of an (N, C, M) array (summing N first is much faster than axis=(0, 2))."""
    return a3.sum(axis=0).sum(axis=1)


def _update_running_stats(running_mean, running_var, mean, var, n, momentum):
    """PyTorch's running statistics, in place: the unbiased variance (n / (n - 1)) is averaged in."""
    momentum = float(momentum)
    if running_mean is not None:
        running_mean[...] = (1.0 - momentum) * running_mean + momentum * mean
    if running_var is not None:
        running_var[...] = (1.0 - momentum) * running_var + momentum * (var * (n / (n - 1)))


def batch_norm_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps):
    """y = (x - mean) * rstd * gamma + beta per channel (axis 1); returns (y, mean, rstd).

    training: batch mean and biased variance; running stats (if given) updated in place with the
    unbiased variance, running = (1 - momentum) * running + momentum * stat. Eval: running stats.
    """
    dtype = x.dtype
    x3 = _channels_3d(x)
    c = x3.shape[1]
    if training:
        n = x3.shape[0] * x3.shape[2]
        if n < 2:
            raise ValueError(f"batch_norm: expected more than 1 value per channel when training, got {x.shape}")
        mean = _channel_sum(x3) / dtype.type(n)
        centred = x3 - mean.reshape(c, 1)
        var = np.einsum("ncm,ncm->c", centred, centred) / dtype.type(n)
        rstd = 1 / np.sqrt(var + dtype.type(eps))
        _update_running_stats(running_mean, running_var, mean, var, n, momentum)
    else:
        mean = np.array(running_mean, dtype=dtype)
        rstd = 1 / np.sqrt(np.asarray(running_var, dtype=dtype) + dtype.type(eps))
        centred = x3 - mean.reshape(c, 1)
    scale = rstd if gamma is None else rstd * gamma
    centred *= scale.reshape(c, 1)
    if beta is not None:
        centred += beta.reshape(c, 1)
    return centred.reshape(x.shape), mean, rstd


def batch_norm_backward(x, gamma, dy, mean, rstd, training):
    """(dx, dgamma, dbeta); dgamma, dbeta are None when gamma is None (affine=False).

    With xhat = (x - mean) * rstd, dbeta = sum(dy), dgamma = sum(dy * xhat) per channel;
    training: dx = gamma * rstd * (dy - dbeta/n - xhat * dgamma/n); eval: dx = dy * gamma * rstd.
    """
    dtype = x.dtype
    x3, dy3 = _channels_3d(x), _channels_3d(dy)
    c = x3.shape[1]
    n = x3.shape[0] * x3.shape[2]
    centred = x3 - mean.reshape(c, 1)
    sum_dy = _channel_sum(dy3)
    sum_dy_xhat = np.einsum("ncm,ncm->c", dy3, centred) * rstd
    scale = rstd if gamma is None else rstd * gamma
    dx = dy3 * scale.reshape(c, 1)
    if training:
        centred *= (scale * rstd * sum_dy_xhat / dtype.type(n)).reshape(c, 1)
        centred += (scale * sum_dy / dtype.type(n)).reshape(c, 1)
        dx -= centred
    dx = dx.reshape(x.shape)
    if gamma is None:
        return dx, None, None
    return dx, sum_dy_xhat, sum_dy


# -- pointwise ------------------------------------------------------------------------------------


def leaky_relu_forward(x, negative_slope):
    """y = x if x > 0 else negative_slope * x (slope 0 is ReLU); NaN stays NaN."""
    slope = float(negative_slope)
    if slope == 0.0:
        return np.maximum(x, 0)
    if 0.0 < slope <= 1.0:
        return np.maximum(x, x * slope)  # max(x, slope*x) is leaky ReLU for 0 <= slope <= 1
    return np.where(x > 0, x, x * slope)


def leaky_relu_backward(x, dy, negative_slope):
    """dx = dy where x > 0, else negative_slope * dy."""
    # A table lookup times dy instead of np.where: branch-free and ~3x faster on random signs, the
    # same values for finite dy (an infinite dy meeting slope 0 gives NaN here, 0 under np.where).
    factor = np.array([negative_slope, 1], dtype=dy.dtype).take((x > 0).view(np.uint8))
    factor *= dy
    return factor


def tanh_forward(x):
    return np.tanh(x)


def tanh_backward(y, dy):
    """dx = dy * (1 - y^2), from the output y."""
    return dy * (1 - np.square(y))


def _sigmoid(x):
    """Overflow-free logistic: with e = exp(-|x|) <= 1, 1/(1+e) for x >= 0 and e/(1+e) for x < 0."""
    with np.errstate(under="ignore"):
        e = np.exp(-np.abs(x))
    r = np.asarray(1 / (1 + e))  # asarray: numpy turns 0-d results into scalars
    np.multiply(r, e, out=r, where=x < 0)
    return r


def sigmoid_forward(x):
    return _sigmoid(x)


def sigmoid_backward(y, dy):
    """dx = dy * y * (1 - y), from the output y."""
    return dy * (y * (1 - y))


def _scalar(a):
    """A Python float from a 0-d or one-element array (or a number)."""
    return float(np.asarray(a).reshape(-1)[0])


def binary_cross_entropy_with_logits_forward(logits, target):
    """Mean over all elements of max(x, 0) - x*t + log1p(exp(-|x|)); a 0-d array."""
    x = logits
    t = np.asarray(target, dtype=x.dtype)
    with np.errstate(under="ignore"):
        losses = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))
    return np.array(losses.mean(), dtype=x.dtype)


def binary_cross_entropy_with_logits_backward(logits, target, dloss):
    """dlogits = (sigmoid(x) - t) * dloss / numel."""
    x = logits
    t = np.asarray(target, dtype=x.dtype)
    g = _sigmoid(x)
    g -= t
    g *= _scalar(dloss) / x.size
    return g


# -- Adam -----------------------------------------------------------------------------------------


def adam_hyper(step, lr, beta1, beta2):
    """(step_size, bc2_sqrt) of Adam's step `step` (1-based), in float64: lr / (1 - beta1^step) and
    sqrt(1 - beta2^step). The launchers compute the same (csrc/adam.cu); as float32 they are the
    `hyper` a captured update reads from device memory (pygan.optim stages them every step)."""
    step = int(step)
    return float(lr) / (1.0 - float(beta1) ** step), math.sqrt(1.0 - float(beta2) ** step)


def adam_step(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay, hyper=None):
    """One torch.optim.Adam step (amsgrad=False, L2 weight decay), all arrays updated in place.

    g = grad + weight_decay * p; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;
    p -= step_size * m / (sqrt(v) / bc2_sqrt + eps), with step_size = lr / (1 - b1^step) and
    bc2_sqrt = sqrt(1 - b2^step); step is 1-based.

    hyper: None, or a float32 array [step_size, bc2_sqrt] (adam_hyper's values) that replaces the two
    computed from step and lr. A kernel reads it from device memory when it runs, so a launch
    captured in a CUDA graph takes each replay's values; float32, as the kernels use both anyway.
    """
    lr, beta1, beta2, eps, wd = float(lr), float(beta1), float(beta2), float(eps), float(weight_decay)
    if hyper is None:
        step_size, bc2_sqrt = adam_hyper(step, lr, beta1, beta2)
    else:
        step_size, bc2_sqrt = float(hyper[0]), float(hyper[1])
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs, strict=True):
        if wd != 0.0:
            g = g + wd * p
        m *= beta1
        m += (1.0 - beta1) * g
        v *= beta2
        v += (1.0 - beta2) * np.square(g)
        denom = np.sqrt(v)
        denom /= bc2_sqrt
        denom += eps
        update = m / denom
        update *= step_size
        p -= update


# -- linear, average pooling, softmax cross-entropy (issue 6: the evaluation classifier) ----------


def linear_forward(x, w, b):
    """y = x @ w.T + b: a fully connected layer, PyTorch's (out_features, in_features) weight."""
    y = x @ w.T
    if b is not None:
        y += b
    return np.ascontiguousarray(y)


def linear_backward(x, w, dy, has_bias):
    """(dx, dw, db): dx = dy @ w, dw = dy.T @ x, db = dy summed over the batch."""
    dx = dy @ w
    dw = dy.T @ x
    db = dy.sum(axis=0) if has_bias else None
    return np.ascontiguousarray(dx), np.ascontiguousarray(dw), db


def _window_offsets(kernel_size, stride, out_hw):
    """For each offset (i, j) inside a window, the slices picking that pixel of every window."""
    (kh, kw), (sh, sw), (oh, ow) = _pair(kernel_size), _pair(stride), out_hw
    for i in range(kh):
        for j in range(kw):
            yield np.s_[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]


def avg_pool2d_forward(x, kernel_size, stride):
    """Mean over each kh x kw window (stride (sh, sw), no padding, so every window is full).

    Summed as kh*kw strided slices (one per offset inside the window): a few large vectorised adds.
    """
    (kh, kw), (sh, sw) = _pair(kernel_size), _pair(stride)
    n, c, h, w = x.shape
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    y = np.zeros((n, c, oh, ow), dtype=x.dtype)
    for window_pixel in _window_offsets(kernel_size, stride, (oh, ow)):
        y += x[window_pixel]
    y /= kh * kw
    return y


def avg_pool2d_backward(dy, x_shape, kernel_size, stride):
    """dx: each window's dy / (kh*kw) added back over its window; rows/columns no window covers get 0."""
    (kh, kw) = _pair(kernel_size)
    dx = np.zeros(x_shape, dtype=dy.dtype)
    share = dy / (kh * kw)
    for window_pixel in _window_offsets(kernel_size, stride, dy.shape[2:]):
        dx[window_pixel] += share  # overlapping windows accumulate
    return dx


def _log_softmax(x):
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax_cross_entropy_forward(logits, labels):
    """Mean over the batch of -log(softmax(logits)[label]), computed through a shifted log-sum-exp."""
    labels = np.asarray(labels)
    logp = _log_softmax(logits)
    return np.array(-logp[np.arange(len(labels)), labels].mean(), dtype=logits.dtype)


def softmax_cross_entropy_backward(logits, labels, dloss):
    """dlogits = (softmax(logits) - onehot(labels)) * dloss / N."""
    labels = np.asarray(labels)
    g = np.exp(_log_softmax(logits))
    g[np.arange(len(labels)), labels] -= 1
    g *= _scalar(dloss) / len(labels)
    return g


# -- class embedding (issue 12: conditional generation) ------------------------------------------


def embedding_forward(weight, indices):
    """y = weight[indices]: one row of the (num_classes, dim) table per index; shape indices.shape + (dim,).

    np.take, not weight[indices]: a 0-d index array would make the latter a view of weight."""
    return np.take(weight, np.asarray(indices), axis=0)


def embedding_backward(dy, indices, num_classes):
    """dweight (num_classes, dim): dy[..., :] added into row indices[...] (repeated indices accumulate).

    The rows are sorted by class (stably) and each class's run summed in index order with one
    np.add.reduceat: deterministic, and ~50x faster than np.add.at's unbuffered scatter."""
    flat = np.asarray(indices).reshape(-1)
    dim = dy.shape[-1]
    dw = np.zeros((int(num_classes), dim), dtype=dy.dtype)
    if flat.size and dim:
        order = np.argsort(flat, kind="stable")
        classes = flat[order]
        starts = np.flatnonzero(np.concatenate(([True], classes[1:] != classes[:-1])))
        dw[classes[starts]] = np.add.reduceat(dy.reshape(flat.size, dim)[order], starts, axis=0)
    return dw


# == issue 5: fused batch norm + leaky ReLU (not in OPS / __all__: a kernel-fusion reference) =====
# The CUDA backend fuses these two ops into one kernel per direction (csrc/batchnorm.cu); this pair
# is their specification, a plain composition of the ops above.


def batch_norm_leaky_relu_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps, negative_slope):
    """(leaky_relu(y, negative_slope), mean, rstd) with (y, mean, rstd) = batch_norm_forward(...)."""
    y, mean, rstd = batch_norm_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps)
    return leaky_relu_forward(y, negative_slope), mean, rstd


def batch_norm_leaky_relu_backward(x, gamma, beta, dy, mean, rstd, training, negative_slope):
    """(dx, dgamma, dbeta) of batch_norm_leaky_relu_forward; the pre-activation is recomputed."""
    c = x.shape[1]
    shape = (1, c) + (1,) * (x.ndim - 2)
    scale = rstd if gamma is None else rstd * gamma
    z = (x - mean.reshape(shape)) * scale.reshape(shape)
    if beta is not None:
        z = z + beta.reshape(shape)
    dz = leaky_relu_backward(z, dy, negative_slope)
    return batch_norm_backward(x, gamma, dz, mean, rstd, training)


# == issue 11: group norm (layer norm and instance norm are its two ends) and RMSprop =============


def _groups_3d(a, num_groups):
    """View (or copy) of an (N, C, ...) array as (N, G, C/G * M): each group's values in one row."""
    return a.reshape(a.shape[0], num_groups, a.shape[1] // num_groups * math.prod(a.shape[2:]))


def group_norm_forward(x, gamma, beta, num_groups, eps):
    """y = (x - mean) * rstd * gamma[c] + beta[c] with per-(sample, group) statistics.

    mean, rstd: (N, num_groups), over the C/num_groups channels of the group and all spatial
    positions; biased variance, rstd = 1 / sqrt(var + eps). num_groups=1 is layer norm over
    (C, H, W) with a per-channel affine map (WGAN-GP critics); num_groups=C is instance norm.
    """
    dtype = x.dtype
    n, c = x.shape[:2]
    xg = _groups_3d(x, num_groups)
    k = xg.shape[2]
    mean = xg.sum(axis=2) / dtype.type(k)
    centred = xg - mean[:, :, None]
    var = np.einsum("ngk,ngk->ng", centred, centred) / dtype.type(k)
    rstd = 1 / np.sqrt(var + dtype.type(eps))
    centred *= rstd[:, :, None]
    y = centred.reshape(n, c, math.prod(x.shape[2:]))
    if gamma is not None:
        y *= gamma.reshape(1, c, 1)
    if beta is not None:
        y += beta.reshape(1, c, 1)
    return y.reshape(x.shape), mean, rstd


def group_norm_backward(x, gamma, dy, mean, rstd, num_groups):
    """(dx, dgamma, dbeta); dgamma, dbeta are None when gamma is None (affine=False).

    With xhat = (x - mean) * rstd and g = dy * gamma[c], per (sample, group) of k values:
    dx = rstd * (g - mean(g) - xhat * mean(g * xhat)); dgamma[c] = sum(dy * xhat), dbeta[c] = sum(dy)
    over the batch and spatial positions.
    """
    n, c = x.shape[:2]
    xhat = (_groups_3d(x, num_groups) - mean[:, :, None]) * rstd[:, :, None]
    dy3 = dy.reshape(n, c, math.prod(x.shape[2:]))
    g = dy3 if gamma is None else dy3 * gamma.reshape(1, c, 1)
    g = g.reshape(xhat.shape)
    k = xhat.shape[2]
    mean_g = g.sum(axis=2) / x.dtype.type(k)
    mean_gx = np.einsum("ngk,ngk->ng", g, xhat) / x.dtype.type(k)
    dx = (g - mean_g[:, :, None] - xhat * mean_gx[:, :, None]) * rstd[:, :, None]
    dx = dx.reshape(x.shape)
    if gamma is None:
        return dx, None, None
    xhat3 = xhat.reshape(dy3.shape)
    dgamma = np.einsum("ncm,ncm->c", dy3, xhat3)
    dbeta = _channel_sum(dy3)
    return dx, dgamma, dbeta


def rmsprop_step(params, grads, square_avgs, momentum_buffers, grad_avgs, lr, alpha, eps, weight_decay, momentum,
                 centered):
    """One torch.optim.RMSprop step, all arrays updated in place.

    g = grad + weight_decay * p; v = alpha*v + (1-alpha)*g*g; centered: ga = alpha*ga + (1-alpha)*g,
    avg = sqrt(v - ga*ga) + eps, else avg = sqrt(v) + eps; momentum > 0: buf = momentum*buf + g/avg,
    p -= lr*buf; else p -= lr*g/avg. momentum_buffers holds one array per param when momentum > 0
    (else it is empty), grad_avgs one per param when centered (else empty).
    """
    lr, alpha, eps, wd, momentum = float(lr), float(alpha), float(eps), float(weight_decay), float(momentum)
    bufs = momentum_buffers if momentum > 0 else [None] * len(params)
    gavgs = grad_avgs if centered else [None] * len(params)
    for p, g, v, buf, ga in zip(params, grads, square_avgs, bufs, gavgs, strict=True):
        if wd != 0.0:
            g = g + wd * p
        v *= alpha
        v += (1.0 - alpha) * np.square(g)
        if ga is not None:
            ga *= alpha
            ga += (1.0 - alpha) * g
            avg = np.sqrt(v - np.square(ga))
        else:
            avg = np.sqrt(v)
        avg += eps
        if buf is not None:
            buf *= momentum
            buf += g / avg
            p -= lr * buf
        else:
            p -= lr * (g / avg)
