"""The fast CPU backend: numba kernels where they beat numpy, the BLAS GEMM, the reference elsewhere.

numpy arrays dispatch here by default (pygan.ops.backend_for); PYGAN_CPU_BACKEND=reference selects
the pure-numpy specification instead, and so does a numba that cannot be imported or cannot
compile a kernel (one line on stderr says so). Every op of the contract is defined with the
reference's exact signature and results (within float32 rounding; tests/test_cpu_backend.py
checks each against the reference). What runs where, and why (the profile behind it is
benchmarks/results/cpu_profile.md):

    conv2d_*, conv_transpose2d_*   the reference's algorithm (NHWC im2col + one GEMM per
                                   computation), with the padded copy, the columns and the GEMM
                                   outputs in reused buffers, the GEMMs on cpu_runtime.Gemm and
                                   col2im a numba gather. With pygan's own GEMM (pygan._cpu, the
                                   default) the patch matrix is never written: the GEMM gathers
                                   it from the padded NHWC image while packing; otherwise im2col
                                   is a numpy strided copy
    batch_norm_*                   numba: statistics in one kernel, normalise + affine in another,
                                   backward in one kernel (two passes); running stats as reference
    batch_norm_leaky_relu_*        the same kernels with the activation fused (not in OPS: the
                                   fusion the CUDA backend has, for callers that want it)
    leaky_relu_*                   numba, one pass on all threads
    adam_step                      numba, one pass per parameter instead of about ten
    everything else                the reference (tanh, sigmoid, BCE, linear, pooling, softmax
                                   cross-entropy, embedding, group norm, RMSprop: not in the
                                   DCGAN step, or numba does not beat numpy there at its sizes)

float64 goes to the reference throughout (gradient checks use it; the kernels are compiled for
float32 only, which keeps the JIT cost down). Threads: see pygan/ops/cpu_runtime.py.
"""

import functools
import sys
import threading

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import reference as _ref

try:
    from . import cpu_kernels as K
except Exception as exc:  # noqa: BLE001 - ImportError, or numba failing to initialise
    K = None
    UNAVAILABLE = f"{type(exc).__name__}: {exc}"
else:
    UNAVAILABLE = None

AVAILABLE = K is not None
__all__ = list(_ref.__all__)

_gemm = None
_disabled = None  # the reason the backend switched itself off after a numba failure
_local = threading.local()
_WORKSPACE_MAX_BYTES = 256 << 20


def _empty(shape, dtype):
    """Every output and workspace comes from here (tests replace it to poison them with NaN)."""
    return np.empty(shape, dtype)


def _workspace(slot, shape, dtype):
    """A scratch array reused across calls (per thread, per slot): the column matrices are the
    largest temporaries of a step (up to tens of MB), and fresh ones cost page faults each time."""
    cache = getattr(_local, "ws", None)
    if cache is None:
        cache = _local.ws = {}
    size = int(np.prod(shape))
    if size * np.dtype(dtype).itemsize > _WORKSPACE_MAX_BYTES:
        return _empty(shape, dtype)  # a one-off giant (say, a big evaluation batch): not kept
    buf = cache.get((slot, np.dtype(dtype)))
    if buf is None or buf.size < size or _empty is not _default_empty:
        buf = _empty((max(size, 1),), dtype)
        cache[(slot, np.dtype(dtype))] = buf
    return buf[:size].reshape(shape)


_default_empty = _empty


def setup():
    """Pick the GEMM and apply the thread policy (once); returns a dict describing both."""
    global _gemm
    from . import cpu_runtime

    if _gemm is None:
        _gemm = cpu_runtime.Gemm()  # before the thread policy: it may load scipy's BLAS
    policy = cpu_runtime.apply_thread_policy(with_numba=K is not None, openblas_gemm=not _implicit())
    getattr(_gemm, "__wrapped__", _gemm).threads = policy["blas_threads"]
    hint = cpu_runtime.gemm_core_hint(_corename_of_gemm())
    return {"gemm": _gemm.name, **policy, "numba": None if K is None else __import__("numba").__version__,
            "gemm_hint": hint}


def _corename_of_gemm():
    from . import cpu_runtime

    gemm = getattr(_gemm, "__wrapped__", _gemm)  # a profiler may have wrapped it
    if gemm.native is not None:
        return None  # not OpenBLAS: no core to name
    handle = cpu_runtime.scipy_blas_handle() if gemm.fblas is not None else cpu_runtime.numpy_blas()
    return cpu_runtime._corename(handle)


def _fast(x):
    return K is not None and _disabled is None and x.dtype == np.float32


def _guarded(ref_fn):
    """Run the numba path; if numba fails to compile (a NumbaError), say so once, switch this
    backend off for the rest of the process, and answer with the reference."""

    def wrap(fn):
        @functools.wraps(ref_fn)
        def op(*args, **kwargs):
            if _disabled is None:
                try:
                    return fn(*args, **kwargs)
                except Exception as exc:  # noqa: BLE001
                    if not _is_numba_error(exc):
                        raise
                    _disable(exc)
            return ref_fn(*args, **kwargs)

        op.__wrapped__ = ref_fn  # inspect.signature: the reference's
        return op

    return wrap


def _is_numba_error(exc):
    try:
        from numba.core.errors import NumbaError
    except Exception:  # noqa: BLE001
        return False
    return isinstance(exc, NumbaError)


def _disable(exc):
    global _disabled
    _disabled = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    print(f"pygan: numba kernel failed to compile ({_disabled}); the CPU backend falls back to the numpy reference",
          file=sys.stderr)


def _c(a):
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _pair(v):
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _out_size(size, k, s, p):
    return (size + 2 * p - k) // s + 1


# -- convolution: the reference's algorithm (NHWC im2col + one GEMM), buffers reused ------------
#
# Same notation as reference.py: cols is the (N*OH*OW, kh*kw*C) patch matrix with entries ordered
# (i, j, c), wk the (O, kh*kw*C) weight matrix in that order. What differs from the reference: the
# padded input, the columns and the GEMM outputs live in reused workspaces (no page faults on
# tens of MB per call), and the GEMMs go to cpu_runtime.Gemm with transpose flags.


def _native_layout():
    """(pygan._cpu, threads, isa) when its layout moves serve the convolutions, else None."""
    gemm = getattr(_gemm, "__wrapped__", _gemm)  # a profiler may have wrapped it
    native = getattr(gemm, "native", None)
    return None if native is None else (native, gemm.threads, gemm.isa)


def _to_nhwc(a, out, padding=(0, 0)):
    native = _native_layout()
    if native is not None and a.dtype == np.float32:
        native[0].nchw_to_nhwc(_c(a), out, padding, threads=native[1], isa=native[2])
        return out
    (ph, pw), (h, w) = padding, a.shape[2:]
    if ph:
        out[:, :ph] = 0
        out[:, ph + h:] = 0
    if pw:
        out[:, :, :pw] = 0
        out[:, :, pw + w:] = 0
    out[:, ph:ph + h, pw:pw + w, :] = a.transpose(0, 2, 3, 1)
    return out


def _nchw(ym, b, n, oh, ow):
    """y (N, O, OH, OW) from the NHWC matrix ym (N*OH*OW, O), plus the bias b when given."""
    native = _native_layout()
    if native is None or ym.dtype != np.float32 or (b is not None and b.dtype != np.float32):
        return _ref._nchw_from_matrix(ym, b, n, oh, ow, _empty)
    y = _empty((n, ym.shape[1], oh, ow), ym.dtype)
    native[0].nhwc_to_nchw(ym, y, None if b is None else _c(b), threads=native[1], isa=native[2])
    return y


def _nhwc(slot, a):
    """(N*H*W, C) matrix of an (N, C, H, W) array, in a workspace."""
    n, c, h, w = a.shape
    return _to_nhwc(a, _workspace(slot, (n, h, w, c), a.dtype)).reshape(n * h * w, c)


def _weight_matrix(w):
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(w.shape[0], -1)


def _padded_nhwc(x, padding):
    """x (N, C, H, W) as a zero-padded (N, H + 2ph, W + 2pw, C) image in the "xpad" workspace."""
    n, c, h, w = x.shape
    ph, pw = padding
    return _to_nhwc(x, _workspace("xpad", (n, h + 2 * ph, w + 2 * pw, c), x.dtype), padding)


def _im2col_padded(xp, kh, kw, stride, oh, ow):
    """The patch matrix of a padded NHWC image in the "cols" workspace (the reference's _im2col)."""
    n, _, _, c = xp.shape
    sh, sw = stride
    bn, bh, bw, bc = xp.strides
    patches = as_strided(xp, (n, oh, ow, kh, kw * c), (bn, sh * bh, sw * bw, bh, bc), writeable=False)
    cols = _workspace("cols", (n, oh, ow, kh, kw * c), xp.dtype)
    np.copyto(cols, patches)
    return cols.reshape(n * oh * ow, kh * kw * c)


def _implicit():
    """Whether the GEMM gathers the patches itself (pygan._cpu), so no im2col is written."""
    return _native_layout() is not None


def _conv_matrix(xp, w, stride, oh, ow):
    """ym (N*OH*OW, O) = cols(xp) wk^T, xp a padded NHWC image, in the "ym" workspace."""
    o, _, kh, kw = w.shape
    ym = _workspace("ym", (xp.shape[0] * oh * ow, o), xp.dtype)
    if _implicit():
        return _gemm.conv_forward(xp, _weight_matrix(w), ym, (kh, kw), stride, (oh, ow))
    return _gemm(_im2col_padded(xp, kh, kw, stride, oh, ow), _weight_matrix(w), trans_b=True, out=ym)


def _conv_weight_grad(xp, dym, w_shape, stride, oh, ow):
    """dw (O, C, kh, kw) = the reorder of dym^T cols(xp)."""
    o, c, kh, kw = w_shape
    dwm = _workspace("dwm", (o, kh * kw * c), xp.dtype)
    if _implicit():
        _gemm.conv_weight_grad(dym, xp, dwm, (kh, kw), stride, (oh, ow))
    else:
        _gemm(dym, _im2col_padded(xp, kh, kw, stride, oh, ow), trans_a=True, out=dwm)
    dw = _empty(tuple(w_shape), xp.dtype)
    dw[...] = dwm.reshape(o, kh, kw, c).transpose(0, 3, 1, 2)
    return dw


def _col2im(dcols, x_shape, kh, kw, oh, ow, stride, padding):
    """The reference's _col2im as one numba gather (cpu_kernels.col2im) into a fresh NCHW dx."""
    n, c, h, w = x_shape
    dx = _empty(tuple(x_shape), dcols.dtype)
    K.col2im(_c(dcols).reshape(n, oh, ow, kh, kw, c), stride[0], stride[1], padding[0], padding[1], dx)
    return dx


def _classes_pay(dy_shape, x_shape, stride):
    """Whether the parity-class GEMMs beat GEMM + col2im: dx has at least 32 channels (fewer waste
    most of each 32-wide tile), and the classes' taps mostly land inside dy (they cover dx's
    pixels times the taps per class; dy's OH*OW*sh*sw against H*W is the fraction that is not
    padding: 1 for DCGAN's stride-2 layers, 1/16 for G's first, 1x1 -> 4x4, which col2im serves
    with no overlap at all)."""
    oh, ow = dy_shape[2:]
    h, w = x_shape[2:]
    return x_shape[1] >= 32 and 4 * oh * ow * stride[0] * stride[1] >= 3 * h * w


def _input_grad(dy, w, x_shape, stride, padding, dym=None):
    """conv2d_backward_data: with pygan's GEMM by parity classes, gathering (no col2im); else the
    reference's GEMM + col2im (dym: dy's NHWC matrix when the caller has it)."""
    if _implicit() and _classes_pay(dy.shape, x_shape, stride):
        dx = _empty(tuple(x_shape), dy.dtype)
        _gemm.conv_backward_data(_c(dy), _c(w), dx, stride, padding)
        return dx
    if dym is None:
        dym = _nhwc("dym", dy)
    return _backward_data_from_matrix(dym, w, x_shape, dy.shape[2], dy.shape[3], stride, padding)


def _backward_data_from_matrix(dym, w, x_shape, oh, ow, stride, padding):
    kh, kw = w.shape[2:]
    wk = _weight_matrix(w)
    dcols = _gemm(dym, wk, out=_workspace("dcols", (dym.shape[0], wk.shape[1]), dym.dtype))
    return _col2im(dcols, x_shape, kh, kw, oh, ow, stride, padding)


def _bias_grad(dy, has_bias):
    return dy.sum(axis=(0, 2, 3)) if has_bias else None


# -- conv2d ---------------------------------------------------------------------------------------


@_guarded(_ref.conv2d_forward)
def conv2d_forward(x, w, b, stride, padding):
    if not _fast(x):
        return _ref.conv2d_forward(x, w, b, stride, padding)
    stride, padding = _pair(stride), _pair(padding)
    n, _, h, wd = x.shape
    kh, kw = w.shape[2:]
    oh, ow = _out_size(h, kh, stride[0], padding[0]), _out_size(wd, kw, stride[1], padding[1])
    return _nchw(_conv_matrix(_padded_nhwc(x, padding), w, stride, oh, ow), b, n, oh, ow)


@_guarded(_ref.conv2d_backward)
def conv2d_backward(x, w, dy, stride, padding, has_bias):
    if not _fast(x):
        return _ref.conv2d_backward(x, w, dy, stride, padding, has_bias)
    stride, padding = _pair(stride), _pair(padding)
    oh, ow = dy.shape[2:]
    dym = _nhwc("dym", dy)
    dx = _input_grad(dy, w, x.shape, stride, padding, dym)
    dw = _conv_weight_grad(_padded_nhwc(x, padding), dym, w.shape, stride, oh, ow)
    return dx, dw, _bias_grad(dy, has_bias)


@_guarded(_ref.conv2d_backward_data)
def conv2d_backward_data(dy, w, x_shape, stride, padding):
    if not _fast(dy):
        return _ref.conv2d_backward_data(dy, w, x_shape, stride, padding)
    return _input_grad(dy, w, tuple(int(s) for s in x_shape), _pair(stride), _pair(padding))


@_guarded(_ref.conv2d_backward_weight)
def conv2d_backward_weight(x, dy, w_shape, stride, padding):
    if not _fast(x):
        return _ref.conv2d_backward_weight(x, dy, w_shape, stride, padding)
    stride, padding = _pair(stride), _pair(padding)
    w_shape = tuple(int(s) for s in w_shape)
    oh, ow = dy.shape[2:]
    return _conv_weight_grad(_padded_nhwc(x, padding), _nhwc("dym", dy), w_shape, stride, oh, ow)


# -- conv_transpose2d: the conv computations with x and y swapped ---------------------------------


@_guarded(_ref.conv_transpose2d_forward)
def conv_transpose2d_forward(x, w, b, stride, padding, output_padding):
    if not _fast(x):
        return _ref.conv_transpose2d_forward(x, w, b, stride, padding, output_padding)
    stride, padding, output_padding = _pair(stride), _pair(padding), _pair(output_padding)
    n, _, h, wd = x.shape
    _, cout, kh, kw = w.shape
    y_shape = (n, cout, (h - 1) * stride[0] - 2 * padding[0] + kh + output_padding[0],
               (wd - 1) * stride[1] - 2 * padding[1] + kw + output_padding[1])
    y = _input_grad(x, w, y_shape, stride, padding)
    if b is not None:
        y += b.reshape(-1, 1, 1)
    return y


@_guarded(_ref.conv_transpose2d_backward)
def conv_transpose2d_backward(x, w, dy, stride, padding, output_padding, has_bias):
    if not _fast(x):
        return _ref.conv_transpose2d_backward(x, w, dy, stride, padding, output_padding, has_bias)
    stride, padding = _pair(stride), _pair(padding)
    h, wd = x.shape[2:]
    dyp = _padded_nhwc(dy, padding)
    dx = _nchw(_conv_matrix(dyp, w, stride, h, wd), None, x.shape[0], h, wd)
    dw = _conv_weight_grad(dyp, _nhwc("dym", x), w.shape, stride, h, wd)
    return dx, dw, _bias_grad(dy, has_bias)


# -- batch norm (+ leaky ReLU) ---------------------------------------------------------------------


def _bn_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps, slope):
    x = _c(x)
    c = x.shape[1]
    x3 = x.reshape(x.shape[0], c, -1)
    dtype = x.dtype
    if training:
        n = x3.shape[0] * x3.shape[2]
        mean, var = _empty((c,), dtype), _empty((c,), dtype)
        K.bn_stats(x3, mean, var)
        rstd = (1 / np.sqrt(var + dtype.type(eps))).astype(dtype)
        _ref._update_running_stats(running_mean, running_var, mean, var, n, momentum)
    else:
        mean = np.array(running_mean, dtype=dtype)
        rstd = (1 / np.sqrt(np.asarray(running_var, dtype=dtype) + dtype.type(eps))).astype(dtype)
    scale = rstd if gamma is None else (rstd * gamma).astype(dtype)
    shift = np.zeros(c, dtype) if beta is None else _c(beta).astype(dtype, copy=False)
    y = _empty(x.shape, dtype)
    K.bn_act_forward(x3, mean, scale, shift, float(slope), y.reshape(x3.shape))
    return y, mean, rstd


def _bn_backward(x, gamma, beta, dy, mean, rstd, training, slope):
    x, dy = _c(x), _c(dy)
    c = x.shape[1]
    x3 = x.reshape(x.shape[0], c, -1)
    dtype = x.dtype
    scale = rstd.astype(dtype) if gamma is None else (rstd * gamma).astype(dtype)
    shift = np.zeros(c, dtype) if beta is None else _c(beta).astype(dtype, copy=False)
    dx = _empty(x.shape, dtype)
    dgamma, dbeta = _empty((c,), dtype), _empty((c,), dtype)
    K.bn_act_backward(x3, dy.reshape(x3.shape), _c(mean).astype(dtype, copy=False), _c(rstd).astype(dtype, copy=False),
                      scale, shift, float(slope), bool(training), dx.reshape(x3.shape), dgamma, dbeta)
    if gamma is None:
        return dx, None, None
    return dx, dgamma, dbeta


@_guarded(_ref.batch_norm_forward)
def batch_norm_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps):
    if not _fast(x):
        return _ref.batch_norm_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps)
    if training and x.size // x.shape[1] < 2:
        return _ref.batch_norm_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps)
    return _bn_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps, 1.0)


@_guarded(_ref.batch_norm_backward)
def batch_norm_backward(x, gamma, dy, mean, rstd, training):
    if not _fast(x):
        return _ref.batch_norm_backward(x, gamma, dy, mean, rstd, training)
    # slope 1: the activation's gradient is the identity, and z (hence beta) is never needed
    return _bn_backward(x, gamma, None, dy, mean, rstd, training, 1.0)


@_guarded(_ref.batch_norm_leaky_relu_forward)
def batch_norm_leaky_relu_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps, negative_slope):
    if not _fast(x) or (training and x.size // x.shape[1] < 2):
        return _ref.batch_norm_leaky_relu_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps,
                                                  negative_slope)
    return _bn_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps, float(negative_slope))


@_guarded(_ref.batch_norm_leaky_relu_backward)
def batch_norm_leaky_relu_backward(x, gamma, beta, dy, mean, rstd, training, negative_slope):
    if not _fast(x):
        return _ref.batch_norm_leaky_relu_backward(x, gamma, beta, dy, mean, rstd, training, negative_slope)
    return _bn_backward(x, gamma, beta, dy, mean, rstd, training, float(negative_slope))


# -- pointwise ------------------------------------------------------------------------------------


@_guarded(_ref.leaky_relu_forward)
def leaky_relu_forward(x, negative_slope):
    if not _fast(x) or x.ndim == 0:
        return _ref.leaky_relu_forward(x, negative_slope)
    x = _c(x)
    y = _empty(x.shape, x.dtype)
    K.leaky_relu_forward(x.reshape(-1), float(negative_slope), y.reshape(-1))
    return y


@_guarded(_ref.leaky_relu_backward)
def leaky_relu_backward(x, dy, negative_slope):
    if not _fast(x) or x.ndim == 0 or dy.dtype != x.dtype:
        return _ref.leaky_relu_backward(x, dy, negative_slope)
    x, dy = _c(x), _c(dy)
    dx = _empty(x.shape, x.dtype)
    K.leaky_relu_backward(x.reshape(-1), dy.reshape(-1), float(negative_slope), dx.reshape(-1))
    return dx


tanh_forward = _ref.tanh_forward
tanh_backward = _ref.tanh_backward
sigmoid_forward = _ref.sigmoid_forward
sigmoid_backward = _ref.sigmoid_backward
binary_cross_entropy_with_logits_forward = _ref.binary_cross_entropy_with_logits_forward
binary_cross_entropy_with_logits_backward = _ref.binary_cross_entropy_with_logits_backward


# -- Adam -----------------------------------------------------------------------------------------


@_guarded(_ref.adam_step)
def adam_step(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps, weight_decay, hyper=None):
    step = int(step)
    lr, beta1, beta2, eps, wd = float(lr), float(beta1), float(beta2), float(eps), float(weight_decay)
    if hyper is None:
        step_size, bc2_sqrt = _ref.adam_hyper(step, lr, beta1, beta2)
    else:  # read when the op runs, as the kernel reads it from device memory
        step_size, bc2_sqrt = float(hyper[0]), float(hyper[1])
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs, strict=True):
        arrays = (p, g, m, v)
        if not (_fast(p) and all(a.dtype == np.float32 and a.flags.c_contiguous for a in arrays)):
            _ref.adam_step([p], [g], [m], [v], step, lr, beta1, beta2, eps, wd, hyper)
            continue
        K.adam(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), step_size, beta1, beta2, bc2_sqrt, eps, wd)


# -- the rest: the reference ----------------------------------------------------------------------

linear_forward = _ref.linear_forward
linear_backward = _ref.linear_backward
avg_pool2d_forward = _ref.avg_pool2d_forward
avg_pool2d_backward = _ref.avg_pool2d_backward
softmax_cross_entropy_forward = _ref.softmax_cross_entropy_forward
softmax_cross_entropy_backward = _ref.softmax_cross_entropy_backward
embedding_forward = _ref.embedding_forward
embedding_backward = _ref.embedding_backward
group_norm_forward = _ref.group_norm_forward
group_norm_backward = _ref.group_norm_backward
rmsprop_step = _ref.rmsprop_step
