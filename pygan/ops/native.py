"""The op wrappers over a native kernel module, written once for both of its builds.

`make_backend(native, xp, stream_fn)` returns an object whose methods are the ops of
`pygan.ops.OPS` that have kernels, with the reference's signatures plus a keyword-only `variant`
(0: the kernel family's default; 1..n: `native.variants()[family][k-1]`). Each method makes its
inputs contiguous, allocates outputs with `xp.empty` (NaN-filled with `poison=True`, for tests), and calls the native launcher on stream
`stream_fn()`; the native module validates every argument (ValueError naming it) before any
kernel runs.

    cuda.py      make_backend(pygan._C, cupy, lambda: cupy.cuda.get_current_stream().ptr)
    emulated.py  make_backend(pygan._emu, numpy, lambda: 0)   the same kernels on the CPU, for tests

The conv2d_* / conv_transpose2d_* / batch_norm_* methods (issue 5) are attached at the end of this
file; their wrapper logic is native_conv_bn.py's, and so is linear_* (issue 6: conv2d with 1x1
kernels). avg_pool2d_* and softmax_cross_entropy_* (issue 6), group_norm_* and rmsprop_step
(issue 11) and embedding_* (issue 12) are methods of NativeOps below.
Arguments were validated by the registry (pygan.ops) when called through it.
"""

import numpy as np


def _pair(v):
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def make_backend(native, xp, stream_fn, poison=False):
    return NativeOps(native, xp, stream_fn, poison)


def poison_value(poison):
    """None (poison=False: outputs from `xp.empty`), NaN (poison=True) or the float given."""
    if poison is False or poison is None:
        return None
    return float("nan") if poison is True else float(poison)


class NativeOps:
    """poison=True (tests): every output and workspace is a fresh array filled with NaN before the
    kernel runs, instead of `xp.empty` (whose memory pool may hand back a block that already holds
    the right answer), so an element a kernel fails to write shows as NaN; poison=<float> fills
    with that value instead (for checks whose right answer is NaN)."""

    def __init__(self, native, xp, stream_fn, poison=False):
        self.native, self.xp, self.stream = native, xp, stream_fn
        self.poison = poison_value(poison)

    def variants(self):
        """{family: [variant names]}; variant k is names[k-1]."""
        return self.native.variants()

    def _out(self, shape):
        if self.poison is not None:
            return self.xp.full(tuple(shape), self.poison, dtype=np.float32)
        return self.xp.empty(tuple(shape), dtype=np.float32)

    def _in(self, a):
        # (not ascontiguousarray alone: it turns a 0-d array into shape (1,))
        return a if a.flags.c_contiguous else self.xp.ascontiguousarray(a)

    # -- pointwise ---------------------------------------------------------------------------
    def leaky_relu_forward(self, x, negative_slope, *, variant=0):
        x = self._in(x)
        y = self._out(x.shape)
        self.native.leaky_relu_forward(x, y, float(negative_slope), variant, self.stream())
        return y

    def leaky_relu_backward(self, x, dy, negative_slope, *, variant=0):
        x, dy = self._in(x), self._in(dy)
        dx = self._out(x.shape)
        self.native.leaky_relu_backward(x, dy, dx, float(negative_slope), variant, self.stream())
        return dx

    def tanh_forward(self, x, *, variant=0):
        x = self._in(x)
        y = self._out(x.shape)
        self.native.tanh_forward(x, y, 0.0, variant, self.stream())
        return y

    def tanh_backward(self, y, dy, *, variant=0):
        y, dy = self._in(y), self._in(dy)
        dx = self._out(y.shape)
        self.native.tanh_backward(y, dy, dx, 0.0, variant, self.stream())
        return dx

    def sigmoid_forward(self, x, *, variant=0):
        x = self._in(x)
        y = self._out(x.shape)
        self.native.sigmoid_forward(x, y, 0.0, variant, self.stream())
        return y

    def sigmoid_backward(self, y, dy, *, variant=0):
        y, dy = self._in(y), self._in(dy)
        dx = self._out(y.shape)
        self.native.sigmoid_backward(y, dy, dx, 0.0, variant, self.stream())
        return dx

    # -- loss --------------------------------------------------------------------------------
    def binary_cross_entropy_with_logits_forward(self, logits, target, *, variant=0):
        logits, target = self._in(logits), self._in(target)
        n = self.native.bce_workspace_size(int(logits.size), variant)
        workspace = self._out((n,)) if n else None
        loss = self._out(())
        self.native.binary_cross_entropy_with_logits_forward(logits, target, workspace, loss, variant, self.stream())
        return loss

    def binary_cross_entropy_with_logits_backward(self, logits, target, dloss, *, variant=0):
        logits, target = self._in(logits), self._in(target)
        # dloss: a Python number or a one-element array (stays on the device when it is there)
        dloss = self.xp.ascontiguousarray(self.xp.asarray(dloss, dtype=np.float32).reshape(1))
        dlogits = self._out(logits.shape)
        self.native.binary_cross_entropy_with_logits_backward(logits, target, dloss, dlogits, variant, self.stream())
        return dlogits

    # -- softmax cross-entropy (issue 6; the "loss" family's variants) -------------------------
    def _labels(self, labels):
        # The kernels read int64 class indices: any integer dtype (int32 from a data loader,
        # uint8, ...) is converted here, int64 passes through (copied only when not contiguous).
        return self.xp.ascontiguousarray(labels, dtype=self.xp.int64)

    def softmax_cross_entropy_forward(self, logits, labels, *, variant=0):
        logits, labels = self._in(logits), self._labels(labels)
        n = self.native.softmax_cross_entropy_workspace_size(int(logits.shape[0]), variant)
        workspace = self._out((n,)) if n else None
        loss = self._out(())
        self.native.softmax_cross_entropy_forward(logits, labels, workspace, loss, variant, self.stream())
        return loss

    def softmax_cross_entropy_backward(self, logits, labels, dloss, *, variant=0):
        logits, labels = self._in(logits), self._labels(labels)
        dloss = self.xp.ascontiguousarray(self.xp.asarray(dloss, dtype=np.float32).reshape(1))
        dlogits = self._out(logits.shape)
        self.native.softmax_cross_entropy_backward(logits, labels, dloss, dlogits, variant, self.stream())
        return dlogits

    # -- average pooling (issue 6) -------------------------------------------------------------
    def avg_pool2d_forward(self, x, kernel_size, stride, *, variant=0):
        x = self._in(x)
        (kh, kw), (sh, sw) = _pair(kernel_size), _pair(stride)
        n, c, h, w = x.shape
        y = self._out((n, c, (h - kh) // sh + 1, (w - kw) // sw + 1))
        self.native.avg_pool2d_forward(x, y, (kh, kw), (sh, sw), variant, self.stream())
        return y

    def avg_pool2d_backward(self, dy, x_shape, kernel_size, stride, *, variant=0):
        dy = self._in(dy)
        dx = self._out(tuple(int(d) for d in x_shape))
        self.native.avg_pool2d_backward(dy, dx, _pair(kernel_size), _pair(stride), variant, self.stream())
        return dx

    # -- class embedding (issue 12) ----------------------------------------------------------
    def _indices(self, indices):
        # int64 for the kernels (any integer dtype converted), any shape, 0-d included (which
        # ascontiguousarray would make 1-d); copied only when converted or not contiguous.
        indices = self.xp.asarray(indices, dtype=self.xp.int64)
        return self._in(indices)

    def embedding_forward(self, weight, indices, *, variant=0):
        weight, indices = self._in(weight), self._indices(indices)
        y = self._out(tuple(indices.shape) + (weight.shape[1],))
        self.native.embedding_forward(weight, indices, y, variant, self.stream())
        return y

    def embedding_backward(self, dy, indices, num_classes, *, variant=0):
        dy, indices = self._in(dy), self._indices(indices)
        dweight = self._out((int(num_classes), dy.shape[-1]))
        self.native.embedding_backward(dy, indices, dweight, variant, self.stream())
        return dweight

    # -- Adam --------------------------------------------------------------------------------
    def adam_step(self, params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay, hyper=None,
                  *, variant=0):
        # In place: the arrays go through as they are (a non-contiguous one is a ValueError, since
        # updating a contiguous copy would lose the update). hyper (device memory) goes as it is too:
        # the kernel reads it when it runs, so a captured launch sees each replay's values.
        self.native.adam_step(
            list(params), [self._in(g) for g in grads], list(exp_avgs), list(exp_avg_sqs),
            int(step), float(lr), float(beta1), float(beta2), float(eps), float(weight_decay),
            hyper, variant, self.stream(),
        )

    # -- group norm (issue 11) -----------------------------------------------------------------
    # float32 kernels: other float dtypes go through float32 copies and come back in their dtype.
    def _f32(self, a):
        return None if a is None else self.xp.ascontiguousarray(a, dtype=np.float32)

    @staticmethod
    def _like(out, x):
        return out if out is None or out.dtype == x.dtype else out.astype(x.dtype)

    def group_norm_forward(self, x, gamma, beta, num_groups, eps, *, variant=0):
        xf = self._f32(x)
        y = self._out(xf.shape)
        mean, rstd = self._out((x.shape[0], int(num_groups))), self._out((x.shape[0], int(num_groups)))
        self.native.group_norm_forward(xf, self._f32(gamma), self._f32(beta), y, mean, rstd, int(num_groups),
                                       float(eps), variant, self.stream())
        return self._like(y, x), self._like(mean, x), self._like(rstd, x)

    def group_norm_backward(self, x, gamma, dy, mean, rstd, num_groups, *, variant=0):
        xf = self._f32(x)
        dx = self._out(xf.shape)
        c = x.shape[1]
        dgamma = self._out((c,)) if gamma is not None else None
        dbeta = self._out((c,)) if gamma is not None else None
        self.native.group_norm_backward(xf, self._f32(gamma), self._f32(dy), self._f32(mean), self._f32(rstd), dx,
                                        dgamma, dbeta, int(num_groups), variant, self.stream())
        return self._like(dx, x), self._like(dgamma, x), self._like(dbeta, x)

    # -- RMSprop (issue 11) --------------------------------------------------------------------
    def rmsprop_step(self, params, grads, square_avgs, momentum_buffers, grad_avgs, lr, alpha, eps, weight_decay,
                     momentum, centered, *, variant=0):
        # In place, as adam_step: state arrays go through as they are (float32, contiguous).
        self.native.rmsprop_step(
            list(params), [self._in(g) for g in grads], list(square_avgs), list(momentum_buffers), list(grad_avgs),
            float(lr), float(alpha), float(eps), float(weight_decay), float(momentum), bool(centered),
            variant, self.stream(),
        )


# ==== issue 5: conv2d, conv_transpose2d, batch norm (+ fused leaky ReLU) ===========================
# The wrappers live in native_conv_bn.py (class Native); here they become NativeOps methods with the
# reference's parameters plus keyword-only `variant` (0: native_conv_bn.VARIANTS[family], itself 0 =
# the kernel file's default).


def _issue5_native(self, family, variant):
    # one Native per (family, variant), made on first use: building it (and importing its module)
    # on every call was a measurable part of a small op's host time (issue 13)
    try:
        return self._issue5_cache[family, variant]
    except AttributeError:
        self._issue5_cache = {}
    except KeyError:
        pass
    from .native_conv_bn import Native

    native = Native(self.native, self.xp, self.stream, variants={family: variant} if variant else None,
                    poison=self.poison)
    self._issue5_cache[family, variant] = native
    return native


def _conv2d_forward(self, x, w, b, stride, padding, *, variant=0):
    return _issue5_native(self, "conv2d", variant).conv2d_forward(x, w, b, stride, padding)


def _conv2d_backward(self, x, w, dy, stride, padding, has_bias, *, variant=0):
    return _issue5_native(self, "conv2d", variant).conv2d_backward(x, w, dy, stride, padding, has_bias)


def _conv2d_backward_data(self, dy, w, x_shape, stride, padding, *, variant=0):
    return _issue5_native(self, "conv2d", variant).conv2d_backward_data(dy, w, x_shape, stride, padding)


def _conv2d_backward_weight(self, x, dy, w_shape, stride, padding, *, variant=0):
    return _issue5_native(self, "conv2d", variant).conv2d_backward_weight(x, dy, w_shape, stride, padding)


def _conv_transpose2d_forward(self, x, w, b, stride, padding, output_padding, *, variant=0):
    return _issue5_native(self, "conv2d", variant).conv_transpose2d_forward(x, w, b, stride, padding, output_padding)


def _conv_transpose2d_backward(self, x, w, dy, stride, padding, output_padding, has_bias, *, variant=0):
    return _issue5_native(self, "conv2d", variant).conv_transpose2d_backward(
        x, w, dy, stride, padding, output_padding, has_bias
    )


def _batch_norm_forward(self, x, gamma, beta, running_mean, running_var, training, momentum, eps, *, variant=0):
    return _issue5_native(self, "batch_norm", variant).batch_norm_forward(
        x, gamma, beta, running_mean, running_var, training, momentum, eps
    )


def _batch_norm_backward(self, x, gamma, dy, mean, rstd, training, *, variant=0):
    return _issue5_native(self, "batch_norm", variant).batch_norm_backward(x, gamma, dy, mean, rstd, training)


def _batch_norm_leaky_relu_forward(
    self, x, gamma, beta, running_mean, running_var, training, momentum, eps, negative_slope, *, variant=0
):
    return _issue5_native(self, "batch_norm", variant).batch_norm_leaky_relu_forward(
        x, gamma, beta, running_mean, running_var, training, momentum, eps, negative_slope
    )


def _batch_norm_leaky_relu_backward(self, x, gamma, beta, dy, mean, rstd, training, negative_slope, *, variant=0):
    return _issue5_native(self, "batch_norm", variant).batch_norm_leaky_relu_backward(
        x, gamma, beta, dy, mean, rstd, training, negative_slope
    )


# issue 6: linear runs on the conv2d kernels (1x1 convolutions), so its variant is conv2d's.
def _linear_forward(self, x, w, b, *, variant=0):
    return _issue5_native(self, "conv2d", variant).linear_forward(x, w, b)


def _linear_backward(self, x, w, dy, has_bias, *, variant=0):
    return _issue5_native(self, "conv2d", variant).linear_backward(x, w, dy, has_bias)


for _name in (
    "conv2d_forward", "conv2d_backward", "conv2d_backward_data", "conv2d_backward_weight",
    "conv_transpose2d_forward", "conv_transpose2d_backward", "batch_norm_forward", "batch_norm_backward",
    "batch_norm_leaky_relu_forward", "batch_norm_leaky_relu_backward", "linear_forward", "linear_backward",
):
    _fn = globals()["_" + _name]
    _fn.__name__ = _fn.__qualname__ = _name
    setattr(NativeOps, _name, _fn)
del _name, _fn
# ==== end issue 5 =================================================================================
