"""numba kernels of the fast CPU backend (pygan/ops/cpu.py), one kernel per function.

Importing this module imports numba; pygan.ops.cpu catches the ImportError and runs everything on
the reference instead. Kernels are compiled on first use with cache=True (the machine code lands
in __pycache__ beside this file, so only a process with a cold cache pays the compile) and, like
the CUDA launchers, write into outputs the caller allocated: they allocate nothing, so a test can
poison every output with NaN and see that each element was written.

Convolutions: the CPU backend keeps the reference's algorithm (im2col, one BLAS GEMM, col2im)
and numba does only col2im, as a gather: each input pixel sums the (at most ceil(kh/sh) *
ceil(kw/sw)) column entries that touch it and is written once, straight into NCHW. The numpy
col2im it replaces zeroes a padded NHWC buffer, makes one strided read-modify-write pass per
residue class and then transposes; the gather measured 2-5x faster at the DCGAN layer shapes
(benchmarks/results/cpu_kernels.json). im2col stays numpy (one strided copy, already a single
pass).

Threads: the kernels marked parallel run numba.prange loops on numba's thread pool, whose size
pygan.ops.cpu_runtime sets (one policy for numba and BLAS, see there).
"""

import math

import numba
import numpy as np
from numba import prange

_JIT = dict(nopython=True, cache=True, nogil=True)
_PJIT = dict(_JIT, parallel=True)
# reductions may be reassociated (so LLVM vectorises the float64 sums); nothing else is relaxed
_PJIT_SUM = dict(_PJIT, fastmath={"reassoc", "contract"})


# -- col2im ---------------------------------------------------------------------------------------


@numba.jit(**_PJIT)
def col2im(dcols6, sh, sw, ph, pw, dx):
    """dx (N, C, H, W) = the adjoint of im2col applied to dcols6 (N, OH, OW, kh, kw, C).

    dx[n, c, h, w] = sum over (i, j) with h + ph - i = oh * sh, w + pw - j = ow * sw (0 <= oh < OH,
    0 <= ow < OW) of dcols6[n, oh, ow, i, j, c]. One image row (n, h) per iteration, parallel:
    the C-contiguous column entries are summed into a (W, C) float32 row, which is then written
    transposed into dx, so every element of dx is written exactly once (rows no patch touches,
    e.g. under output_padding, get 0)."""
    n_, oh_, ow_, kh, kw, c_ = dcols6.shape
    h_, w_ = dx.shape[2], dx.shape[3]
    for nh in prange(n_ * h_):
        n = nh // h_
        h = nh - n * h_
        acc = np.zeros((w_, c_), np.float32)
        for i in range(kh):
            t = h + ph - i
            if t < 0 or t % sh != 0:
                continue
            oh = t // sh
            if oh >= oh_:
                continue
            for w in range(w_):
                for j in range(kw):
                    u = w + pw - j
                    if u < 0 or u % sw != 0:
                        continue
                    ow = u // sw
                    if ow >= ow_:
                        continue
                    for c in range(c_):
                        acc[w, c] += dcols6[n, oh, ow, i, j, c]
        for c in range(c_):
            for w in range(w_):
                dx[n, c, h, w] = acc[w, c]


# -- batch norm (+ leaky ReLU) ---------------------------------------------------------------------


@numba.jit(**_PJIT_SUM)
def bn_stats(x3, mean, var):
    """Per-channel mean and biased variance of x3 (N, C, M), two passes over the channel in float64.

    One read for the mean and one for the centred sum of squares (the reference makes a centred
    copy and reads it again); parallel over channels."""
    n_, c_, m = x3.shape
    cnt = n_ * m
    for c in prange(c_):
        s = 0.0
        for n in range(n_):
            for t in range(m):
                s += x3[n, c, t]
        mu = s / cnt
        ss = 0.0
        for n in range(n_):
            for t in range(m):
                d = x3[n, c, t] - mu
                ss += d * d
        mean[c] = mu
        var[c] = ss / cnt


@numba.jit(**_PJIT)
def bn_act_forward(x3, mean, scale, shift, slope, y3):
    """y = leaky_relu((x - mean) * scale + shift, slope) per channel; slope 1 is plain batch norm.

    Fuses the normalisation, the affine map and the activation into one read of x and one write
    of y (the reference makes four passes, plus two for the activation). Parallel over channels."""
    n_, c_, m = x3.shape
    sl = np.float32(slope)
    for c in prange(c_):
        mu, sc, sh = mean[c], scale[c], shift[c]
        for n in range(n_):
            for t in range(m):
                z = (x3[n, c, t] - mu) * sc + sh
                y3[n, c, t] = z if z > 0 else z * sl


@numba.jit(**_PJIT_SUM)
def bn_act_backward(x3, dy3, mean, rstd, scale, shift, slope, training, dx3, dgamma, dbeta):
    """Backward of bn_act_forward: dx, and the sums dgamma = sum(dz * xhat), dbeta = sum(dz).

    The activation's gradient dz = dy * (z > 0 ? 1 : slope) is recomputed from x (z is not kept),
    so one kernel does the work of leaky_relu_backward + batch_norm_backward: a first pass over x
    and dy for the two sums, a second for dx. Parallel over channels."""
    n_, c_, m = x3.shape
    cnt = n_ * m
    for c in prange(c_):
        mu, r, sc, sh = mean[c], rstd[c], scale[c], shift[c]
        s_dz = 0.0
        s_dzx = 0.0
        for n in range(n_):
            for t in range(m):
                xc = x3[n, c, t] - mu
                z = xc * sc + sh
                dz = dy3[n, c, t] if z > 0 else dy3[n, c, t] * slope
                s_dz += dz
                s_dzx += dz * xc
        g = s_dzx * r  # sum(dz * xhat)
        dgamma[c] = g
        dbeta[c] = s_dz
        if training:
            a = sc * r * g / cnt
            b = sc * s_dz / cnt
        else:
            a = 0.0
            b = 0.0
        for n in range(n_):
            for t in range(m):
                xc = x3[n, c, t] - mu
                z = xc * sc + sh
                dz = dy3[n, c, t] if z > 0 else dy3[n, c, t] * slope
                dx3[n, c, t] = dz * sc - xc * a - b


# -- pointwise ------------------------------------------------------------------------------------


@numba.jit(**_PJIT)
def leaky_relu_forward(x, slope, y):
    """y = x if x > 0 else slope * x, over flat arrays: one pass on all threads (NaN stays NaN)."""
    sl = np.float32(slope)
    for k in prange(x.size):
        v = x[k]
        y[k] = v if v > 0 else v * sl


@numba.jit(**_PJIT)
def leaky_relu_backward(x, dy, slope, dx):
    """dx = dy where x > 0 else slope * dy, over flat arrays: one pass on all threads."""
    sl = np.float32(slope)
    for k in prange(x.size):
        dx[k] = dy[k] if x[k] > 0 else dy[k] * sl


# -- Adam -----------------------------------------------------------------------------------------


@numba.jit(**_PJIT)
def adam(p, g, m, v, step_size, beta1, beta2, bc2_sqrt, eps, wd):
    """One torch.optim.Adam step on flat float32 arrays, in place, in one pass.

    The reference makes about ten numpy passes per parameter (each allocating a temporary); here
    each element is read and written once. Arithmetic in float32 as in the reference, with the
    same order of operations."""
    b1c = np.float32(1.0 - beta1)
    b2c = np.float32(1.0 - beta2)
    b1 = np.float32(beta1)
    b2 = np.float32(beta2)
    ss = np.float32(step_size)
    bc = np.float32(bc2_sqrt)
    ep = np.float32(eps)
    w = np.float32(wd)
    for k in prange(p.size):
        gk = g[k]
        if wd != 0.0:
            gk = gk + w * p[k]
        mk = m[k] * b1 + b1c * gk
        vk = v[k] * b2 + b2c * (gk * gk)
        m[k] = mk
        v[k] = vk
        denom = np.float32(math.sqrt(vk)) / bc + ep
        p[k] -= (mk / denom) * ss
