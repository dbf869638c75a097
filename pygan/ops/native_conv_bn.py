"""Conv2d, conv_transpose2d and batch-norm wrappers over the native launchers (issue 5).

One implementation for both native modules: ``Native(pygan._C, cupy, stream_fn)`` is the CUDA
backend (pygan/ops/cuda.py re-exports its bound methods), ``Native(pygan._emu, numpy)`` runs the
very same wrapper logic on the host-emulated kernels, which is how the tests check it without a
GPU. Functions have the reference's exact signatures (pygan/ops/reference.py); arguments were
validated by the registry (pygan.ops). Kernel variant: ``VARIANTS`` (module-level, family ->
int, 0 = the kernel file's default) or ``Native(..., variants={...})``; never an extra argument,
so signatures stay identical to the reference's. With ``pygan.backends.tf32`` on (``PYGAN_TF32=1``),
conv2d's default becomes the TF32 tensor-core variant ``TF32_CONV_VARIANT`` where the device can
run it; a variant chosen explicitly is kept.

conv_transpose2d runs on the three conv computations: its forward is conv backward-data (y plays
conv's input, x conv's output), its backward-data is conv forward of dy, its backward-weight is conv
backward-weight with x and dy swapped.

linear (issue 6) runs on them too, as a 1x1 convolution of a 1x1 image: x (N, in) is viewed as
(N, in, 1, 1) and w (out, in) as (out, in, 1, 1), so forward is conv forward (an (out x N x in)
GEMM), dx is conv backward-data, dw conv backward-weight (split-K over the batch, deterministic)
and db the conv bias gradient. Its kernel variant is the conv2d family's.
"""

from __future__ import annotations

# family -> variant (0: the kernel file's default). Benchmarks and tests may change these.
VARIANTS = {"conv2d": 0, "batch_norm": 0}
# The conv2d variant the TF32 opt-in (pygan.backends.tf32 / PYGAN_TF32=1) puts in place of the default.
TF32_CONV_VARIANT = 9
_tf32_problems = {}  # native module -> why it cannot run TF32 ("" when it can), asked once


def tf32_problem(lib):
    """Why `lib` (pygan._C or pygan._emu) cannot run conv2d's TF32 variant here, or ""."""
    key = id(lib)
    if key not in _tf32_problems:
        _tf32_problems[key] = str(lib.conv2d_tf32_problem())
    return _tf32_problems[key]


def _pair(v):
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _out(size, k, s, p):
    return (size + 2 * p - k) // s + 1


class Native:
    """The issue-5 ops on one native module. lib: pygan._C or pygan._emu; xp: cupy or numpy;
    stream: a function returning the current stream handle (an int; 0 for the emulation)."""

    def __init__(self, lib, xp, stream=None, variants=None, poison=False):
        self.lib, self.xp = lib, xp
        self._array_type, self._float32 = xp.ndarray, xp.dtype(xp.float32)
        self._stream = stream or (lambda: 0)
        self._bn_ws_sizes = {}  # (x shape, variant) -> floats of batch-norm workspace
        self._variants = variants
        # tests: outputs and workspaces filled with NaN (True) or a given float before the kernel
        self.poison = None if poison is None or poison is False else float("nan") if poison is True else float(poison)

    def _empty(self, shape):
        if self.poison is not None:
            return self.xp.full(tuple(shape), self.poison, self.xp.float32)
        return self.xp.empty(tuple(shape), self.xp.float32)

    # -- helpers -------------------------------------------------------------------------------
    def variant(self, family):
        table = self._variants if self._variants is not None else VARIANTS
        v = int(table.get(family, 0))
        if v == 0 and family == "conv2d":
            from ..backend import backends

            if backends.tf32 and tf32_problem(self.lib) == "":  # opt-in; GPUs below sm_80 keep fp32
                return TF32_CONV_VARIANT
        return v

    def _f32(self, a):
        """float32, C-contiguous, of this backend (the kernels are float32 only)."""
        if a is None:
            return None
        if type(a) is self._array_type and a.dtype == self._float32 and a.ndim and a.flags.c_contiguous:
            return a  # what ascontiguousarray would return, without its call
        return self.xp.ascontiguousarray(a, dtype=self.xp.float32)

    def _cast_back(self, out, like):
        return out if out is None or out.dtype == like.dtype else out.astype(like.dtype)

    def _fwd(self, x, w, b, y_shape, stride, padding):
        y = self._empty(y_shape)
        self.lib.conv2d_forward(x, w, b, y, stride, padding, self.variant("conv2d"), self._stream())
        return y

    def _bwd_data(self, dy, w, x_shape, stride, padding):
        dx = self._empty(tuple(x_shape))
        self.lib.conv2d_backward_data(dy, w, dx, stride, padding, self.variant("conv2d"), self._stream())
        return dx

    def _bwd_weight(self, x, dy, w_shape, stride, padding):
        v = self.variant("conv2d")
        n_ws = self.lib.conv2d_backward_weight_workspace_size(tuple(x.shape), tuple(w_shape), stride, padding, v)
        ws = self._empty((n_ws,)) if n_ws > 0 else None
        dw = self._empty(tuple(w_shape))
        self.lib.conv2d_backward_weight(x, dy, dw, ws, stride, padding, v, self._stream())
        return dw

    def _bias_grad(self, dy):
        db = self._empty((dy.shape[1],))
        self.lib.conv2d_bias_backward(dy, db, self._stream())
        return db

    # -- conv2d --------------------------------------------------------------------------------
    def conv2d_forward(self, x, w, b, stride, padding):
        stride, padding = _pair(stride), _pair(padding)
        xf, wf, bf = self._f32(x), self._f32(w), self._f32(b)
        oh = _out(x.shape[2], w.shape[2], stride[0], padding[0])
        ow = _out(x.shape[3], w.shape[3], stride[1], padding[1])
        y = self._fwd(xf, wf, bf, (x.shape[0], w.shape[0], oh, ow), stride, padding)
        return self._cast_back(y, x)

    def conv2d_backward(self, x, w, dy, stride, padding, has_bias):
        stride, padding = _pair(stride), _pair(padding)
        xf, wf, dyf = self._f32(x), self._f32(w), self._f32(dy)
        dx = self._bwd_data(dyf, wf, x.shape, stride, padding)
        dw = self._bwd_weight(xf, dyf, w.shape, stride, padding)
        db = self._bias_grad(dyf) if has_bias else None
        return self._cast_back(dx, x), self._cast_back(dw, x), self._cast_back(db, x)

    def conv2d_backward_data(self, dy, w, x_shape, stride, padding):
        stride, padding = _pair(stride), _pair(padding)
        dx = self._bwd_data(self._f32(dy), self._f32(w), tuple(int(s) for s in x_shape), stride, padding)
        return self._cast_back(dx, dy)

    def conv2d_backward_weight(self, x, dy, w_shape, stride, padding):
        stride, padding = _pair(stride), _pair(padding)
        dw = self._bwd_weight(self._f32(x), self._f32(dy), tuple(int(s) for s in w_shape), stride, padding)
        return self._cast_back(dw, x)

    # -- conv_transpose2d ----------------------------------------------------------------------
    def conv_transpose2d_forward(self, x, w, b, stride, padding, output_padding):
        stride, padding, output_padding = _pair(stride), _pair(padding), _pair(output_padding)
        n, _, h, wd = x.shape
        _, cout, kh, kw = w.shape
        y_shape = (n, cout, (h - 1) * stride[0] - 2 * padding[0] + kh + output_padding[0],
                   (wd - 1) * stride[1] - 2 * padding[1] + kw + output_padding[1])
        y = self._bwd_data(self._f32(x), self._f32(w), y_shape, stride, padding)
        if b is not None:
            y += self._f32(b).reshape(-1, 1, 1)
        return self._cast_back(y, x)

    def conv_transpose2d_backward(self, x, w, dy, stride, padding, output_padding, has_bias):
        stride, padding = _pair(stride), _pair(padding)
        xf, wf, dyf = self._f32(x), self._f32(w), self._f32(dy)
        dx = self._fwd(dyf, wf, None, x.shape, stride, padding)
        dw = self._bwd_weight(dyf, xf, w.shape, stride, padding)
        db = self._bias_grad(dyf) if has_bias else None
        return self._cast_back(dx, x), self._cast_back(dw, x), self._cast_back(db, x)

    # -- linear (issue 6): conv2d with 1x1 kernels on a 1x1 image ---------------------------------
    def linear_forward(self, x, w, b):
        n, k = x.shape
        o = w.shape[0]
        xf = self._f32(x).reshape(n, k, 1, 1)
        wf = self._f32(w).reshape(o, k, 1, 1)
        y = self._fwd(xf, wf, self._f32(b), (n, o, 1, 1), (1, 1), (0, 0))
        return self._cast_back(y.reshape(n, o), x)

    def linear_backward(self, x, w, dy, has_bias):
        n, k = x.shape
        o = w.shape[0]
        xf = self._f32(x).reshape(n, k, 1, 1)
        wf = self._f32(w).reshape(o, k, 1, 1)
        dyf = self._f32(dy).reshape(n, o, 1, 1)
        dx = self._bwd_data(dyf, wf, (n, k, 1, 1), (1, 1), (0, 0)).reshape(n, k)
        dw = self._bwd_weight(xf, dyf, (o, k, 1, 1), (1, 1), (0, 0)).reshape(o, k)
        db = self._bias_grad(dyf) if has_bias else None
        return self._cast_back(dx, x), self._cast_back(dw, x), self._cast_back(db, x)

    # -- batch norm ----------------------------------------------------------------------------
    def _bn_workspace(self, shape, variant):
        # scratch space of the variant (3: partial statistics and a per-channel table), or None
        key = (tuple(shape), variant)
        n_ws = self._bn_ws_sizes.get(key)
        if n_ws is None:
            if len(self._bn_ws_sizes) > 256:  # many shapes (a varying batch): start over
                self._bn_ws_sizes.clear()
            n_ws = self._bn_ws_sizes[key] = self.lib.batch_norm_workspace_size(key[0], variant)
        return self._empty((n_ws,)) if n_ws > 0 else None

    def _bn_forward(self, x, gamma, beta, running_mean, running_var, training, momentum, eps, act, slope):
        xf = self._f32(x)
        c = x.shape[1]
        y = self._empty(xf.shape)
        mean = self._empty((c,))
        rstd = self._empty((c,))
        # running stats are updated in place: pass them directly when they are float32 and
        # contiguous, else through a float32 copy that is written back.
        runs = []
        for r in (running_mean, running_var):
            if r is None or (r.dtype == self.xp.float32 and r.flags.c_contiguous):
                runs.append(r)
            else:
                runs.append(self._f32(r))
        v = self.variant("batch_norm")
        self.lib.batch_norm_forward(xf, self._f32(gamma), self._f32(beta), runs[0], runs[1], y, mean, rstd,
                                    bool(training), float(momentum), float(eps), act, float(slope),
                                    v, self._stream(), self._bn_workspace(xf.shape, v))
        for orig, used in zip((running_mean, running_var), runs):
            if orig is not None and used is not orig:
                orig[...] = used
        return self._cast_back(y, x), self._cast_back(mean, x), self._cast_back(rstd, x)

    def _bn_backward(self, x, gamma, beta, dy, mean, rstd, training, act, slope):
        xf = self._f32(x)
        c = x.shape[1]
        dx = self._empty(xf.shape)
        dgamma = self._empty((c,)) if gamma is not None else None
        dbeta = self._empty((c,)) if gamma is not None else None
        v = self.variant("batch_norm")
        self.lib.batch_norm_backward(xf, self._f32(gamma), self._f32(beta), self._f32(dy), self._f32(mean),
                                     self._f32(rstd), dx, dgamma, dbeta, bool(training), act, float(slope),
                                     v, self._stream(), self._bn_workspace(xf.shape, v))
        return self._cast_back(dx, x), self._cast_back(dgamma, x), self._cast_back(dbeta, x)

    def batch_norm_forward(self, x, gamma, beta, running_mean, running_var, training, momentum, eps):
        return self._bn_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps, 0, 0.0)

    def batch_norm_backward(self, x, gamma, dy, mean, rstd, training):
        return self._bn_backward(x, gamma, None, dy, mean, rstd, training, 0, 0.0)

    # fused batch norm + leaky ReLU (slope 0: ReLU); reference: reference.batch_norm_leaky_relu_*
    def batch_norm_leaky_relu_forward(self, x, gamma, beta, running_mean, running_var, training, momentum, eps,
                                      negative_slope):
        """(y, mean, rstd) with y = leaky_relu(batch_norm(x), negative_slope)."""
        return self._bn_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps, 1,
                                negative_slope)

    def batch_norm_leaky_relu_backward(self, x, gamma, beta, dy, mean, rstd, training, negative_slope):
        """(dx, dgamma, dbeta) of batch_norm_leaky_relu_forward; the pre-activation is recomputed
        from x, so beta is needed (None when affine=False)."""
        if gamma is not None and beta is None:
            beta = self.xp.zeros_like(gamma)
        return self._bn_backward(x, gamma, beta, dy, mean, rstd, training, 1, negative_slope)


OPS = (
    "conv2d_forward",
    "conv2d_backward",
    "conv2d_backward_data",
    "conv2d_backward_weight",
    "conv_transpose2d_forward",
    "conv_transpose2d_backward",
    "batch_norm_forward",
    "batch_norm_backward",
    "batch_norm_leaky_relu_forward",
    "batch_norm_leaky_relu_backward",
    "linear_forward",
    "linear_backward",
)
