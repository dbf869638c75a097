"""Hypothesis fuzz of every binding of a native module (pygan._emu or pygan._C), run as a script.

tests/test_fuzz_bindings.py runs this file in a subprocess, so a crash (a segfault, an abort)
fails that test instead of killing pytest:

    python tests/_fuzz_bindings.py MODULE MAX_EXAMPLES [SEED]     # MODULE: _emu or _C

Each example takes one binding, builds a valid call of tiny arrays (every emulated CUDA thread is
a host thread) and breaks one or two of its arguments: another dtype (float64, int32, float16,
bool, ...), a non-contiguous, misaligned, read-only, zero-size or wrongly shaped array, a wrong
ndim, None or a non-array where an array goes, negative / huge / non-integer sizes, strides and
paddings, unknown variants, NaN hyper-parameters. Rules:

  * the call ends in ValueError or TypeError (RuntimeError too in _C: its launchers need a GPU),
    or it returns;
  * a break that makes the call invalid (a wrong dtype, a non-contiguous or misaligned array, a
    read-only output, an array missing, a negative size, an unknown variant, ...) must raise;
  * a call that returns wrote nothing outside its arrays (each array lies between guard values,
    checked afterwards), changed no input, and, when its inputs were finite and its outputs had
    their valid shapes, left no NaN in an output (outputs are poisoned with NaN first).

In _C without a GPU, numpy arrays are rejected (not device memory), so objects exposing a
forged __cuda_array_interface__ (any shape, strides, typestr, pointer) are fuzzed there too:
they must be rejected before any pointer is used.
Prints one line per binding with its example count and exits 0; anything else is a failure.
"""

import sys

import numpy as np
import os

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

G = 16  # guard elements on each side of every array
SENTINEL = {np.dtype(np.float32): np.float32(-12345.5), np.dtype(np.int64): np.int64(-777)}

HUGE_INTS = [-(2**63), -(2**31), -1, 2**31, 2**62, 2**63 - 1, 2**63, 2**64]
BAD_INTLIKE = [None, 1.5, 2.0, "2", "22", b"2", True, [1], object()]
BAD_PAIRS = ["22", "2", b"22", (1,), (1, 2, 3), (2, 2.7), (2, None), [2.0, 2.0], {1: 2}, 2.7, None, (True, 1),
             (-1, 1), (0, 0), (2**62, 1), (2**63, 1), (1, 2**64), -(2**63)]
BAD_FLOATS = [float("nan"), float("inf"), -float("inf"), -1.0, 0.0, 1e38, None, "1", [1.0]]
NON_ARRAYS = [None, [1.0, 2.0], 1.0, "x", np.float32(1.0), memoryview(b"abcd"), object(), {}, (np.zeros(2, np.float32),)]
BAD_DTYPES = [np.float64, np.int32, np.float16, np.bool_, np.int64, np.complex64, np.uint8, np.float32]


class Arrays:
    """Guarded arrays: each one is a view into a buffer with G sentinel elements on both sides."""

    def __init__(self):
        self.items = []  # (buffer, view, is_output, snapshot of the inputs)

    def make(self, shape, dtype=np.float32, output=False, fill=None, rng=None, inout=False):
        dtype = np.dtype(dtype)
        size = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
        # 16 to 19 guard elements in front: arrays 4-byte but not always 16-byte aligned, as the
        # float4 variants must handle
        front = G + (int(rng.integers(0, 4)) if rng is not None else len(self.items) % 4)
        buf = np.empty(size + front + G, dtype)
        buf[:front] = buf[front + size:] = SENTINEL.get(dtype, 0)
        view = buf[front:front + size].reshape(shape)
        if output:
            view[...] = np.nan if dtype.kind == "f" else 0
        elif fill is not None:
            view[...] = fill
        else:
            view[...] = rng.uniform(-1.5, 1.5, size).astype(dtype).reshape(shape) if dtype.kind == "f" else 0
        self.items.append((buf, view, output or inout, None))
        return view

    def snapshot(self):
        self.items = [(b, v, o, b.copy()) for b, v, o, _ in self.items]

    def check(self, what):
        for buf, view, output, snap in self.items:
            if buf.dtype in SENTINEL:
                front = (view.__array_interface__["data"][0] - buf.__array_interface__["data"][0]) // buf.itemsize
                end = front + view.size
                if not (np.array_equal(buf[:front], snap[:front]) and np.array_equal(buf[end:], snap[end:])):
                    raise AssertionError(f"{what}: wrote outside an array of shape {view.shape}")
            if not output and not np.array_equal(buf, snap, equal_nan=True):
                raise AssertionError(f"{what}: changed an input of shape {view.shape}")


# ---- the valid calls ---------------------------------------------------------------------------
# Each builder returns [(name, kind, value)]: kinds "in", "out", "ws" (workspace output),
# "opt_in"/"opt_out" (None allowed), "labels", "pair", "int", "size", "float", "bool", "variant",
# "stream", "seq" (adam's lists), "shape" (a list of ints), "bn_shape" (batch norm's x_shape).


def _dims(draw, lo=1, hi=3, k=4):
    return [draw(st.integers(lo, hi)) for _ in range(k)]


def b_activation(draw, A, rng, M, name):
    n = draw(st.integers(0, 9)) if draw(st.integers(0, 9)) else draw(st.integers(10, 3000))
    shape = draw(st.sampled_from([(n,), (1, n), (2, n), (0, 2**40)[: 1 + (n == 0)]]))
    if name.endswith("_forward"):
        return [("x", "in", A.make(shape, rng=rng)), ("y", "out", A.make(shape, output=True)),
                ("negative_slope", "float", 0.2), ("variant", "variant", 0), ("stream", "stream", 0)]
    return [("in", "in", A.make(shape, rng=rng)), ("dy", "in", A.make(shape, rng=rng)),
            ("dx", "out", A.make(shape, output=True)), ("negative_slope", "float", 0.2),
            ("variant", "variant", 0), ("stream", "stream", 0)]


def b_bce(draw, A, rng, M, name):
    n = draw(st.integers(1, 9))
    logits, target = A.make((n,), rng=rng), A.make((n,), rng=rng)
    if name.endswith("_forward"):
        ws = M.bce_workspace_size(n, 0)
        return [("logits", "in", logits), ("target", "in", target),
                ("workspace", "ws", A.make((ws,), output=True) if ws else None),
                ("loss", "out", A.make((1,), output=True)), ("variant", "variant", 0), ("stream", "stream", 0)]
    return [("logits", "in", logits), ("target", "in", target), ("dloss", "in", A.make((1,), rng=rng)),
            ("dlogits", "out", A.make((n,), output=True)), ("variant", "variant", 0), ("stream", "stream", 0)]


def b_adam(draw, A, rng, M, name):
    count = draw(st.sampled_from([1, 2, 3, 3, 33, 40]))  # more than 32 tensors: several launches
    shapes = [(draw(st.integers(0, 6)),) for _ in range(count)]
    seqs = [[A.make(s, output=(k != 1), rng=rng) for s in shapes] for k in range(4)]
    for lst in (seqs[0], seqs[2], seqs[3]):  # in-place state: finite starting values
        for a in lst:
            a[...] = rng.uniform(0.1, 1.0, a.shape)
    # the step's [step_size, bc2_sqrt] from device memory (a captured launch), or None: by value
    hyper = A.make((2,), fill=[1e-3 / 0.1, 0.001**0.5]) if draw(st.booleans()) else None
    return [("params", "seq", seqs[0]), ("grads", "seq", seqs[1]), ("exp_avgs", "seq", seqs[2]),
            ("exp_avg_sqs", "seq", seqs[3]), ("step", "size", 1), ("lr", "float", 1e-3), ("beta1", "float", 0.9),
            ("beta2", "float", 0.999), ("eps", "float", 1e-8), ("weight_decay", "float", 0.0),
            ("hyper", "opt_in", hyper), ("variant", "variant", 0), ("stream", "stream", 0)]


def _conv_sizes(draw):
    lo = draw(st.sampled_from([1, 1, 1, 0]))  # sometimes empty batches, channels or filters
    n, c, o = draw(st.integers(lo, 2)), draw(st.integers(lo, 2)), draw(st.integers(lo, 2))
    kh, kw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    h, w = draw(st.integers(kh, 3)), draw(st.integers(kw, 3))
    if n == 0 and draw(st.booleans()):  # an empty batch of enormous images: sizes must not overflow
        h, w = draw(st.sampled_from([2**20, 2**24 + 3])), draw(st.sampled_from([3, 2**20]))
    sh, sw, ph, pw = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(0, 1)), draw(st.integers(0, 1))
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    return (n, c, h, w), (o, c, kh, kw), (n, o, oh, ow), (sh, sw), (ph, pw)


def b_conv(draw, A, rng, M, name):
    xs, ws, ys, stride, padding = _conv_sizes(draw)
    if name == "conv2d_forward":
        return [("x", "in", A.make(xs, rng=rng)), ("w", "in", A.make(ws, rng=rng)),
                ("b", "opt_in", A.make(ws[:1], rng=rng)), ("y", "out", A.make(ys, output=True)),
                ("stride", "pair", stride), ("padding", "pair", padding), ("variant", "variant", 0),
                ("stream", "stream", 0)]
    if name == "conv2d_backward_data":
        return [("dy", "in", A.make(ys, rng=rng)), ("w", "in", A.make(ws, rng=rng)),
                ("dx", "out", A.make(xs, output=True)), ("stride", "pair", stride), ("padding", "pair", padding),
                ("variant", "variant", 0), ("stream", "stream", 0)]
    if name == "conv2d_backward_weight":
        need = M.conv2d_backward_weight_workspace_size(list(xs), list(ws), stride, padding, 0)
        return [("x", "in", A.make(xs, rng=rng)), ("dy", "in", A.make(ys, rng=rng)),
                ("dw", "out", A.make(ws, output=True)),
                ("workspace", "ws", A.make((need,), output=True) if need else None),
                ("stride", "pair", stride), ("padding", "pair", padding), ("variant", "variant", 0),
                ("stream", "stream", 0)]
    if name == "conv2d_backward_weight_workspace_size":
        return [("x_shape", "shape", list(xs)), ("w_shape", "shape", list(ws)), ("stride", "pair", stride),
                ("padding", "pair", padding), ("variant", "variant", 0)]
    # conv2d_bias_backward
    return [("dy", "in", A.make(ys, rng=rng)), ("db", "out", A.make(ys[1:2], output=True)), ("stream", "stream", 0)]


def b_bn(draw, A, rng, M, name):
    lo = draw(st.sampled_from([1, 1, 1, 0]))
    n, c, m = draw(st.integers(2 * lo, 3)), draw(st.integers(lo, 2)), draw(st.integers(lo, 4))
    shape = draw(st.sampled_from([(n, c, m), (n, c, 1, m), (n * m, c)]))
    vec = lambda out=False: A.make((c,), output=out, rng=rng)  # noqa: E731
    if name == "batch_norm_workspace_size":
        return [("x_shape", "bn_shape", list(shape)), ("variant", "variant", 0)]
    # the default variant needs no workspace (None); variant 3 does (drawn: then a ValueError)
    if name == "batch_norm_forward":
        rm, rv = A.make((c,), fill=0.0, inout=True), A.make((c,), fill=1.0, inout=True)
        return [("x", "in", A.make(shape, rng=rng)), ("gamma", "opt_in", vec()), ("beta", "opt_in", vec()),
                ("running_mean", "opt_out", rm), ("running_var", "opt_out", rv),
                ("y", "out", A.make(shape, output=True)), ("mean", "out", vec(True)), ("rstd", "out", vec(True)),
                ("training", "bool", True), ("momentum", "float", 0.1), ("eps", "float", 1e-5), ("act", "int", 0),
                ("negative_slope", "float", 0.2), ("variant", "variant", 0), ("stream", "stream", 0),
                ("workspace", "ws", None)]
    rstd = A.make((c,), fill=1.5)
    return [("x", "in", A.make(shape, rng=rng)), ("gamma", "opt_in", vec()), ("beta", "opt_in", vec()),
            ("dy", "in", A.make(shape, rng=rng)), ("mean", "in", vec()), ("rstd", "in", rstd),
            ("dx", "out", A.make(shape, output=True)), ("dgamma", "opt_out", vec(True)),
            ("dbeta", "opt_out", vec(True)), ("training", "bool", True), ("act", "int", 0),
            ("negative_slope", "float", 0.2), ("variant", "variant", 0), ("stream", "stream", 0),
            ("workspace", "ws", None)]


def b_pool(draw, A, rng, M, name):
    lo = draw(st.sampled_from([1, 1, 1, 0]))
    n, c = draw(st.integers(lo, 2)), draw(st.integers(lo, 2))
    kh, kw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    h, w = draw(st.integers(kh, 4)), draw(st.integers(kw, 4))
    if n * c == 0 and draw(st.booleans()):
        h, w = 2**24 + 3, 2**20
    sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    xs, ys = (n, c, h, w), (n, c, (h - kh) // sh + 1, (w - kw) // sw + 1)
    if name == "avg_pool2d_forward":
        return [("x", "in", A.make(xs, rng=rng)), ("y", "out", A.make(ys, output=True)),
                ("kernel_size", "pair", (kh, kw)), ("stride", "pair", (sh, sw)), ("variant", "variant", 0),
                ("stream", "stream", 0)]
    return [("dy", "in", A.make(ys, rng=rng)), ("dx", "out", A.make(xs, output=True)),
            ("kernel_size", "pair", (kh, kw)), ("stride", "pair", (sh, sw)), ("variant", "variant", 0),
            ("stream", "stream", 0)]


def b_softmax(draw, A, rng, M, name):
    rows, classes = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    logits = A.make((rows, classes), rng=rng)
    labels = A.make((rows,), np.int64, fill=rng.integers(0, classes, rows))
    if name == "softmax_cross_entropy_forward":
        ws = M.softmax_cross_entropy_workspace_size(rows, 0)
        return [("logits", "in", logits), ("labels", "labels", labels),
                ("workspace", "ws", A.make((ws,), output=True) if ws else None),
                ("loss", "out", A.make((1,), output=True)), ("variant", "variant", 0), ("stream", "stream", 0)]
    return [("logits", "in", logits), ("labels", "labels", labels), ("dloss", "in", A.make((1,), rng=rng)),
            ("dlogits", "out", A.make((rows, classes), output=True)), ("variant", "variant", 0),
            ("stream", "stream", 0)]


def b_embedding(draw, A, rng, M, name):
    classes, dim = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    ishape = draw(st.sampled_from([(draw(st.integers(0, 4)),), (2, draw(st.integers(1, 3))), ()]))
    indices = A.make(ishape, np.int64, fill=rng.integers(0, classes, ishape))
    if name == "embedding_forward":
        return [("weight", "in", A.make((classes, dim), rng=rng)), ("indices", "labels", indices),
                ("y", "out", A.make(ishape + (dim,), output=True)), ("variant", "variant", 0), ("stream", "stream", 0)]
    return [("dy", "in", A.make(ishape + (dim,), rng=rng)), ("indices", "labels", indices),
            ("dweight", "out", A.make((classes, dim), output=True)), ("variant", "variant", 0),
            ("stream", "stream", 0)]


def b_group_norm(draw, A, rng, M, name):
    lo = draw(st.sampled_from([1, 1, 1, 0]))
    groups = draw(st.integers(1, 2))
    n, c, m = draw(st.integers(lo, 2)), groups * draw(st.integers(1, 2)), draw(st.integers(lo, 3))
    shape = draw(st.sampled_from([(n, c, m), (n, c, 1, m)]))
    vec = lambda out=False: A.make((c,), output=out, rng=rng)  # noqa: E731
    if name == "group_norm_forward":
        return [("x", "in", A.make(shape, rng=rng)), ("gamma", "opt_in", vec()), ("beta", "opt_in", vec()),
                ("y", "out", A.make(shape, output=True)), ("mean", "out", A.make((n, groups), output=True)),
                ("rstd", "out", A.make((n, groups), output=True)), ("num_groups", "exact", groups),
                ("eps", "float", 1e-5), ("variant", "variant", 0), ("stream", "stream", 0)]
    return [("x", "in", A.make(shape, rng=rng)), ("gamma", "opt_in", vec()), ("dy", "in", A.make(shape, rng=rng)),
            ("mean", "in", A.make((n, groups), rng=rng)), ("rstd", "in", A.make((n, groups), fill=1.5)),
            ("dx", "out", A.make(shape, output=True)), ("dgamma", "opt_out", vec(True)),
            ("dbeta", "opt_out", vec(True)), ("num_groups", "exact", groups), ("variant", "variant", 0),
            ("stream", "stream", 0)]


def b_rmsprop(draw, A, rng, M, name):
    count = draw(st.sampled_from([1, 2, 3, 33]))
    shapes = [(draw(st.integers(0, 5)),) for _ in range(count)]
    seqs = [[A.make(s, output=(k != 1), rng=rng) for s in shapes] for k in range(5)]
    for k, (lo, hi) in ((0, (0.1, 1.0)), (2, (0.5, 1.0)), (3, (0.1, 1.0)), (4, (0.0, 0.1))):
        for a in seqs[k]:  # square_avg > grad_avg**2, as a real run's state (else sqrt of a negative)
            a[...] = rng.uniform(lo, hi, a.shape)
    return [("params", "seq", seqs[0]), ("grads", "seq", seqs[1]), ("square_avgs", "seq", seqs[2]),
            ("momentum_buffers", "seq", seqs[3]), ("grad_avgs", "seq", seqs[4]), ("lr", "float", 1e-3),
            ("alpha", "float", 0.99), ("eps", "float", 1e-8), ("weight_decay", "float", 0.0),
            ("momentum", "float", 0.9), ("centered", "centered", True), ("variant", "variant", 0),
            ("stream", "stream", 0)]


def b_size(draw, A, rng, M, name):
    return [("rows" if name.startswith("softmax") else "n", "size", draw(st.integers(0, 5000))), ("variant", "variant", 0)]


def b_noargs(draw, A, rng, M, name):
    return []


BUILDERS = {
    "leaky_relu_forward": b_activation, "leaky_relu_backward": b_activation, "tanh_forward": b_activation,
    "tanh_backward": b_activation, "sigmoid_forward": b_activation, "sigmoid_backward": b_activation,
    "binary_cross_entropy_with_logits_forward": b_bce, "binary_cross_entropy_with_logits_backward": b_bce,
    "adam_step": b_adam,
    "conv2d_forward": b_conv, "conv2d_backward_data": b_conv, "conv2d_backward_weight": b_conv,
    "conv2d_backward_weight_workspace_size": b_conv, "conv2d_bias_backward": b_conv,
    "batch_norm_forward": b_bn, "batch_norm_backward": b_bn, "batch_norm_workspace_size": b_bn,
    "avg_pool2d_forward": b_pool, "avg_pool2d_backward": b_pool,
    "softmax_cross_entropy_forward": b_softmax, "softmax_cross_entropy_backward": b_softmax,
    "embedding_forward": b_embedding, "embedding_backward": b_embedding,
    "group_norm_forward": b_group_norm, "group_norm_backward": b_group_norm, "rmsprop_step": b_rmsprop,
    "bce_workspace_size": b_size, "softmax_cross_entropy_workspace_size": b_size,
}
NOARG = ("variants", "build_info", "cuda_device_count", "_emulation_selftest", "activation_variants",
         "loss_variants", "adam_variants", "conv2d_variants", "batch_norm_variants", "avg_pool2d_variants",
         "embedding_variants", "group_norm_variants", "rmsprop_variants", "cuda_sync", "_emulation_seed",
         "_emulation_launches", "_emulation_recent_launches", "conv2d_tf32_problem",
         "_emulation_concurrent_blocks")
# Debug switches and test hooks that set process-wide state or fault on purpose: not fuzzed here
# (tests/test_emulator_faults.py checks each of them).
HOOKS = ("set_cuda_sync", "_emulation_set_seed", "_emulation_faulty_kernel", "_tf32_arch_problem",
         "_emulation_mma_tf32")
FAMILY = {"leaky_relu": "activation", "tanh": "activation", "sigmoid": "activation", "binary": "loss",
          "softmax": "loss", "bce": "loss", "adam": "adam", "conv2d": "conv2d", "batch": "batch_norm",
          "avg": "avg_pool2d", "embedding": "embedding", "group": "group_norm", "rmsprop": "rmsprop"}


def bindings(M):
    """Every callable the module exports; a new one with no builder fails the fuzz (add it above)."""
    names = sorted(n for n in dir(M) if not n.startswith("__") and callable(getattr(M, n)) and n not in HOOKS)
    unknown = [n for n in names if n not in BUILDERS and n not in NOARG]
    if unknown:
        raise SystemExit(f"no fuzz builder for {unknown}: add one to this file")
    return names


# ---- breaking an argument ----------------------------------------------------------------------


class Forged:
    """An object with a forged (CUDA) array interface: anything a hostile caller could pass."""

    def __init__(self, attr, iface):
        setattr(self, attr, iface)


def forged_interface(draw, attr):
    ndim = draw(st.integers(0, 4))
    shape = tuple(draw(st.sampled_from([0, 1, 2, 3, -1, -(2**40), 2**31, 2**40, 2**62, 2**63 - 1])) for _ in range(ndim))
    iface = {"shape": shape, "typestr": draw(st.sampled_from(["<f4", "<f8", "<i8", "|b1", "f4", "<f4 "])),
             "data": (draw(st.sampled_from([0, 1, 2, 4096, 2**48, 2**64 - 4])), draw(st.booleans())),
             "version": 3}
    choice = draw(st.integers(0, 6))
    if choice == 1:
        iface["strides"] = tuple(draw(st.sampled_from([0, 4, -4, 8, 2**62, "4"]))
                                 for _ in range(draw(st.sampled_from([ndim, ndim, 0, ndim + 1]))))
    elif choice == 2:
        del iface[draw(st.sampled_from(["shape", "typestr", "data"]))]
    elif choice == 3:
        iface["shape"] = draw(st.sampled_from(["(2,)", None, [2.5], ("a",), 5]))
    elif choice == 4:
        iface["data"] = draw(st.sampled_from([None, (), (1,), ("x", False), 7]))
    elif choice == 5:
        iface["mask"] = iface.get("data")
    elif choice == 6:
        return Forged(attr, draw(st.sampled_from([None, 5, "x", [1, 2]])))
    return Forged(attr, iface)


def valid_empty(forged):
    """A forged interface that describes a well-formed float32 array with no elements."""
    iface = next(iter(vars(forged).values()))
    if not isinstance(iface, dict) or iface.get("typestr") != "<f4" or iface.get("mask") is not None:
        return False
    shape, data, strides = iface.get("shape"), iface.get("data"), iface.get("strides")
    return (isinstance(shape, tuple) and all(type(d) is int and d >= 0 for d in shape) and 0 in shape
            and all(d < 2**56 for d in shape)
            and isinstance(data, tuple) and len(data) == 2 and type(data[0]) is int and 0 <= data[0] < 2**64
            and isinstance(data[1], bool)
            and (strides is None or (isinstance(strides, tuple) and len(strides) == len(shape)
                                     and all(type(x) is int for x in strides))))


def break_array(draw, a, kind, rng, forged_attr):
    """(new value, must_fail, finite, valid_shape)."""
    output = kind in ("out", "ws", "opt_out")
    how = draw(st.sampled_from(["dtype", "noncontig", "misaligned", "readonly", "zero", "ndim", "shape", "nonarray",
                                "fortran", "nan", "0d", "alias", "forged", "hugezero"]))
    if how == "forged":
        return forged_interface(draw, forged_attr), True, True, False
    if how == "dtype":
        want = np.int64 if kind == "labels" else np.float32
        dt = draw(st.sampled_from(BAD_DTYPES))
        if dt == want:
            dt = np.float64
        return np.zeros(a.shape, dt), True, True, False
    if how == "noncontig" and a.ndim and a.shape[-1] > 1:
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        return big[..., ::2], a.size > 0, True, False  # an empty view has no layout to get wrong
    if how == "fortran" and a.ndim >= 2 and not (a.flags.c_contiguous and a.flags.f_contiguous):
        return np.asfortranarray(a), a.size > 0, True, False
    if how == "misaligned" and a.size:
        raw = np.zeros(a.nbytes + 1, np.uint8)[1:]
        return raw.view(a.dtype).reshape(a.shape), True, True, False
    if how == "readonly" and output and a.size:
        r = a.copy()
        r.setflags(write=False)
        return r, True, True, False
    if how == "zero" and a.ndim:
        shape = list(a.shape)
        shape[draw(st.integers(0, a.ndim - 1))] = 0
        return np.zeros(shape, a.dtype), False, True, False
    if how == "hugezero":
        return np.zeros((0,) + (2**20,) * max(a.ndim - 1, 1), a.dtype), False, True, False
    if how == "ndim":
        shape = a.shape[1:] if a.ndim and draw(st.booleans()) else (1,) + a.shape
        if int(np.prod(shape, dtype=object)) > 4096:  # dropped the 0 of an empty enormous array
            shape = (0,) + tuple(shape[1:])
        return np.zeros(shape, a.dtype), False, True, False
    if how == "shape":
        shape = tuple(draw(st.integers(0, 4)) for _ in range(draw(st.integers(0, 4))))
        return np.zeros(shape, a.dtype), False, True, shape == a.shape
    if how == "nan" and not output and a.dtype.kind == "f" and a.size:
        b = a.copy()
        b.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        return b, False, False, True
    if how == "0d" and a.size == 1:
        return np.zeros((), a.dtype) + (0 if output else 0.5), False, True, True
    if how == "alias":
        return a, False, True, True  # unchanged (the same array): a valid call
    value = draw(st.sampled_from(NON_ARRAYS))
    return value, not (kind.startswith("opt") and value is None) and kind != "ws", True, False


def break_arg(draw, name, kind, value, rng, M, forged_attr):
    """(new value, must_fail, finite, valid_shape) for one argument."""
    if kind in ("in", "out", "ws", "opt_in", "opt_out", "labels"):
        if value is None:  # a workspace the variant does not need
            return draw(st.sampled_from([None, np.zeros(3, np.float32), np.zeros(3, np.float64)])), False, True, True
        return break_array(draw, value, kind, rng, forged_attr)
    if kind == "variant":
        fam = next(v for k, v in FAMILY.items() if name_of_binding[0].startswith(k))
        count = len(M.variants().get(fam, []))
        v = draw(st.sampled_from([-1, count + 1, 99, 2**31 - 1, -(2**31)] + list(range(0, count + 1)) + HUGE_INTS
                                 + BAD_INTLIKE))
        valid = isinstance(v, int) and 0 <= v <= count  # pybind11 takes a bool as an int (True is variant 1)
        return v, not valid, True, True
    if kind == "stream":
        v = draw(st.sampled_from([0, 1, 2**63, 2**64 - 1, -1, 2**64, None, "0", 1.5]))
        bad = not isinstance(v, int) or v < 0 or v >= 2**64
        # a non-zero stream in _C is a CUDA stream handle: a bogus one is the caller's problem (no GPU here)
        return v, bad, True, True
    if kind == "pair":
        v = draw(st.sampled_from(BAD_PAIRS + [1, 2, 3, (1, 2), (2, 1)]))
        return v, isinstance(v, (str, bytes, float, dict, type(None))) or (
            isinstance(v, (tuple, list)) and (len(v) != 2 or not all(type(e) is int for e in v))), True, False
    if kind == "size":
        v = draw(st.sampled_from(HUGE_INTS + BAD_INTLIKE + [0, 1, 7]))
        return v, not isinstance(v, int) or v < (1 if name == "step" else 0) or v >= 2**63, True, True
    if kind == "int":  # batch-norm's act
        v = draw(st.sampled_from([0, 1, 2, -1, 3, 2**31, None, 1.5]))
        return v, v not in (0, 1) or isinstance(v, bool), True, True
    if kind == "float":
        v = draw(st.sampled_from(BAD_FLOATS))
        binding = name_of_binding[0]
        must = v is None or isinstance(v, (str, list))
        if not must and name == "eps" and binding.startswith(("batch", "group")):
            must = not v > 0
        if not must and binding == "rmsprop_step":  # every hyper-parameter >= 0; momentum 0 takes no buffers
            must = not v >= 0 or (name == "momentum" and v == 0)
        return v, must, False, True
    if kind == "exact":  # an int only its own value fits (num_groups: the stats arrays' shapes follow it)
        v = draw(st.sampled_from([value, value + 1, 0, -1, 2**31, 2**63, None, 1.5, "1"]))
        return v, v != value or not isinstance(v, int), True, True
    if kind == "centered":  # rmsprop's centered=False takes no grad_avgs
        v = draw(st.sampled_from([False, True, None, 2, "yes", np.bool_(True)]))
        return v, not (v is True or (isinstance(v, np.bool_) and bool(v))), True, True
    if kind == "bool":
        v = draw(st.sampled_from([False, True, None, 2, "yes", np.bool_(True)]))
        return v, not isinstance(v, (bool, np.bool_)), True, True
    if kind == "seq":
        how = draw(st.sampled_from(["short", "none_item", "nonseq", "bad_item", "empty"]))
        if how == "short":
            return value[:-1] + ([] if len(value) > 1 else []), True, True, False
        if how == "none_item":
            return [None] + value[1:], True, True, False
        if how == "nonseq":
            return draw(st.sampled_from([None, 5, np.zeros(3, np.float32)])), True, True, False
        if how == "bad_item":
            b, must, _, _ = break_array(draw, value[0], "in", rng, forged_attr)
            return [b] + value[1:], must, True, False
        return [], True, True, False
    if kind == "shape":
        v = list(value)
        i = draw(st.integers(0, 3))
        v[i] = draw(st.sampled_from(HUGE_INTS + [0, 1, None, 1.5]))
        if draw(st.booleans()):
            v = v[: draw(st.integers(0, 5))] if draw(st.booleans()) else v + [1]
        must = len(v) != 4 or any(not isinstance(e, int) or e < 0 or e >= 2**63 for e in v) or (
            i == 1 and v[1] != value[1])  # x_shape and w_shape must agree on the channels
        return v, must, True, False
    if kind == "bn_shape":  # (N, C, ...): at least two entries, each a non-negative int64
        v = list(value)
        v[draw(st.integers(0, len(v) - 1))] = draw(st.sampled_from(HUGE_INTS + [0, 1, None, 1.5]))
        if draw(st.booleans()):
            v = v[: draw(st.integers(0, 3))] if draw(st.booleans()) else v + [2**40]
        return v, len(v) < 2 or any(not isinstance(e, int) or e < 0 or e >= 2**63 for e in v), True, False
    raise AssertionError(kind)


name_of_binding = [""]
COLLECT = os.environ.get("PYGAN_FUZZ_COLLECT") == "1"  # report every failure, do not stop
TRACE = os.environ.get("PYGAN_FUZZ_TRACE") == "1"


def run(module_name, max_examples, seed):
    import importlib

    M = importlib.import_module("pygan." + module_name)
    on_gpu_module = module_name == "_C"
    allowed = (ValueError, TypeError, RuntimeError) if on_gpu_module else (ValueError, TypeError)
    forged_attr = "__cuda_array_interface__" if on_gpu_module else "__array_interface__"
    names = bindings(M)
    counts = dict.fromkeys(names, 0)

    def fuzz_one(data):
        try:
            check_one(data)
        except AssertionError as exc:
            if not COLLECT:
                raise
            msg = str(exc)
            if msg not in seen:
                seen.add(msg)
                print("FAIL", msg, flush=True)

    seen = set()

    @settings(max_examples=max_examples, deadline=None, derandomize=seed is None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(st.data())
    def fuzz(data):
        fuzz_one(data)

    def check_one(data):
        draw = data.draw
        name = draw(st.sampled_from(names), label="binding")
        name_of_binding[0] = name
        counts[name] += 1
        fn = getattr(M, name)
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        A = Arrays()
        if name in NOARG:
            args = draw(st.sampled_from([(), (1,), (None,), ("x", 2)]))
            try:
                fn(*args)
            except allowed:
                if not args:
                    raise
            else:
                if args:
                    raise AssertionError(f"{name}{args!r} was accepted")
            return
        spec = BUILDERS[name](draw, A, rng, M, name)
        values = [v for _, _, v in spec]
        must_fail, finite, shapes_ok = False, True, True
        n_breaks = min(draw(st.sampled_from([0, 1, 1, 1, 2])), len(spec))
        broken = []
        for i in draw(st.lists(st.integers(0, len(spec) - 1), min_size=n_breaks, max_size=n_breaks, unique=True)):
            argname, kind, value = spec[i]
            new, must, fin, shape_ok = break_arg(draw, argname, kind, value, rng, M, forged_attr)
            values[i] = new
            broken.append((argname, new if not isinstance(new, np.ndarray) else f"array{new.shape} {new.dtype}"))
            must_fail |= must
            finite &= fin
            shapes_ok &= shape_ok
        if name == "rmsprop_step" and len(broken) == 2:
            # Two breaks can agree: no grad_avgs with centered=False, or no momentum buffers with
            # momentum 0, is a valid call.
            args = {argname: v for (argname, _, _), v in zip(spec, values)}
            pair = {argname for argname, _ in broken}
            if (pair == {"grad_avgs", "centered"} and isinstance(args["grad_avgs"], list) and not args["grad_avgs"]
                    and args["centered"] is False) or (
                    pair == {"momentum_buffers", "momentum"} and isinstance(args["momentum_buffers"], list)
                    and not args["momentum_buffers"] and isinstance(args["momentum"], float) and args["momentum"] == 0):
                must_fail = False
        if on_gpu_module and draw(st.integers(0, 3)) == 0:
            # Every array argument replaced by one forged interface of one shape (consistent
            # shapes, so only the interface checks stand between it and a launcher).
            forged = forged_interface(draw, forged_attr)
            for i, (_, kind, v) in enumerate(spec):
                if kind in ("in", "out", "ws", "opt_in", "opt_out", "labels") and v is not None:
                    values[i] = forged
                    must_fail = True
                elif kind == "seq":
                    values[i] = [forged] * len(v)
                    must_fail = True
            broken.append(("every array", vars(forged)))
            if valid_empty(forged) and not any(kind == "labels" for _, kind, _ in spec):
                must_fail = False  # well-formed float32 arrays with no elements: a valid, empty call
        if draw(st.booleans()):  # the same call by keyword
            kwargs = {argname: v for (argname, _, _), v in zip(spec, values)}
            call = lambda: fn(**kwargs)  # noqa: E731
        else:
            call = lambda: fn(*values)  # noqa: E731
        A.snapshot()
        what = f"{module_name}.{name} with {broken}"
        if TRACE:  # a crash kills the process before hypothesis can report: say what runs first
            print("calling", what, flush=True)
        try:
            result = call()
        except allowed:
            return
        except Exception as exc:  # anything else is a bug of the binding
            raise AssertionError(f"{what} raised {type(exc).__name__}: {exc}") from exc
        if must_fail:
            raise AssertionError(f"{what} was accepted (returned {result!r})")
        A.check(what)
        if name.endswith("workspace_size") and not (isinstance(result, int) and result >= 0):
            raise AssertionError(f"{what} returned {result!r}")
        if finite and shapes_ok:
            for (argname, kind, _), v in zip(spec, values):
                if kind in ("out", "opt_out") and isinstance(v, np.ndarray) and np.isnan(v).any():
                    raise AssertionError(f"{what}: output {argname} still holds NaN")
                if kind == "seq" and argname == "params" and any(isinstance(p, np.ndarray) and np.isnan(p).any() for p in v):
                    raise AssertionError(f"{what}: params hold NaN")

    if seed is not None:
        fuzz = hypothesis_seed(seed)(fuzz)
    fuzz()
    for name in names:
        print(f"{module_name}.{name}: {counts[name]} examples")
    print("fuzz ok")


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else None)
