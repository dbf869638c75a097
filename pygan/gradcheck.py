"""Directional gradient check (Chainer style) for hand-written backward functions.

For a random output cotangent dy and one random direction v_i per differentiated input x_i,
the chain rule says sum_i <g_i, v_i> (g_i from backward) equals the directional derivative
d/dt <dy, f(x + t v)> at t = 0, which a central difference estimates with two evaluations of f.
Everything runs in float64 on copies, so the caller's arrays are never touched.

check_double_backward applies the same check to the first gradient of a pygan function taken with
create_graph=True: its own gradient (second order) against central differences of it.
"""

import numpy as np

__all__ = ["check_backward", "check_double_backward"]


def _as_tuple(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _is_array(a):
    return isinstance(a, np.ndarray) or isinstance(a, np.generic)


def check_backward(forward, backward, inputs, *, rng, eps=1e-6, atol=1e-6, rtol=1e-4, dy=None):
    """Check backward(*inputs, dy) against central differences of forward along random directions.

    forward(*inputs) -> array or tuple of arrays; backward(*inputs, dy) -> one gradient per input
    (None for an input that is not differentiated; dy is a tuple when forward returns a tuple).
    Array inputs are cast to float64 copies; other inputs (None, ints) are passed through. dy is
    drawn from rng unless given (entries of a given tuple may be None to leave an output out).
    Raises AssertionError when |analytic - numeric| > atol + rtol * |numeric|; returns the pair.
    """
    base = [np.array(a, dtype=np.float64) if _is_array(a) else a for a in inputs]

    def fresh(shift=0.0, directions=None):
        args = []
        for i, a in enumerate(base):
            if not _is_array(a):
                args.append(a)
            elif directions is not None and directions[i] is not None:
                args.append(a + shift * directions[i])
            else:
                args.append(a.copy())
        return args

    raw = forward(*fresh())
    tuple_output = isinstance(raw, (tuple, list))
    outputs = _as_tuple(raw)
    if dy is None:
        dys = tuple(None if o is None else rng.standard_normal(np.shape(o)) for o in outputs)
    else:
        dys = tuple(None if d is None else np.array(d, dtype=np.float64) for d in _as_tuple(dy))
    if len(dys) != len(outputs):
        raise ValueError(f"check_backward: {len(outputs)} outputs but {len(dys)} cotangents")
    for o, d in zip(outputs, dys):
        if d is not None and np.shape(o) != d.shape:
            raise ValueError(f"check_backward: cotangent shape {d.shape} != output shape {np.shape(o)}")

    grads = _as_tuple(backward(*fresh(), dys if tuple_output else dys[0]))
    if len(grads) != len(base):
        raise ValueError(f"check_backward: backward returned {len(grads)} gradients for {len(base)} inputs")

    directions = []
    for i, (a, g) in enumerate(zip(base, grads)):
        if g is None or not _is_array(a):
            directions.append(None)
            continue
        if np.shape(g) != a.shape:
            raise AssertionError(f"check_backward: gradient {i} has shape {np.shape(g)}, input has {a.shape}")
        directions.append(rng.standard_normal(a.shape))
    if all(d is None for d in directions):
        raise ValueError("check_backward: backward returned no gradient to check")
    norm = np.sqrt(sum(float(np.sum(np.square(d))) for d in directions if d is not None))
    if norm > 0:
        directions = [None if d is None else d / norm for d in directions]

    analytic = sum(
        float(np.sum(np.asarray(g, dtype=np.float64) * d)) for g, d in zip(grads, directions) if d is not None
    )
    plus = _as_tuple(forward(*fresh(eps, directions)))
    minus = _as_tuple(forward(*fresh(-eps, directions)))
    numeric = 0.0
    for p, m, d in zip(plus, minus, dys):
        if d is not None:
            diff = np.asarray(p, dtype=np.float64) - np.asarray(m, dtype=np.float64)
            numeric += float(np.sum(d * diff))
    numeric /= 2 * eps

    tolerance = atol + rtol * abs(numeric)
    if not abs(analytic - numeric) <= tolerance:  # also fails on NaN
        raise AssertionError(
            f"check_backward: analytic {analytic!r} vs numeric {numeric!r}: "
            f"|difference| {abs(analytic - numeric):.3g} > atol {atol:g} + rtol {rtol:g} * |numeric| = {tolerance:.3g}"
        )
    return analytic, numeric


def check_double_backward(fn, inputs, *, rng, eps=1e-6, atol=1e-6, rtol=1e-4, gy=None):
    """Check the create_graph gradients of fn (Chainer's check_double_backward).

    fn(*Tensors) -> Tensor, built from pygan ops; inputs are the arrays to differentiate (cast to
    float64 copies; close over anything else). The first gradient is the function
    G(x..., gy) = d<gy, fn(x)>/dx, computed with create_graph=True (and checked equal to the
    first-order path's); its own gradient, for a random cotangent ggx, is taken through that graph
    (the second-order result, in x and in gy) and compared with central differences of
    <ggx, G> along a random direction of (x..., gy): check_backward applied to G.
    Returns check_backward's (analytic, numeric).
    """
    from .autograd import Tensor, grad

    xs = [np.array(a, dtype=np.float64) for a in inputs]
    out_shape = fn(*[Tensor(x.copy(), requires_grad=True) for x in xs]).shape
    gy0 = rng.standard_normal(out_shape) if gy is None else np.array(gy, dtype=np.float64)

    def first(*args, create_graph=True):
        *arrays, g = args
        ts = [Tensor(a, requires_grad=True) for a in arrays]
        tg = Tensor(g, requires_grad=create_graph)
        grads = grad(fn(*ts), ts, tg, create_graph=create_graph, allow_unused=True)
        zeros = [Tensor(np.zeros_like(a)) for a in arrays]
        return ts, tg, [z if gx is None else gx for gx, z in zip(grads, zeros)]

    def forward(*args):
        _, _, grads = first(*args)
        return tuple(np.array(gx.data) for gx in grads)

    def backward(*args):
        *args, ggxs = args
        ts, tg, grads = first(*args)
        total = None
        for gx, ggx in zip(grads, ggxs):
            if ggx is None or not gx.requires_grad:
                continue
            term = (gx * Tensor(ggx)).sum()
            total = term if total is None else total + term
        if total is None:  # the gradient depends on nothing: every second derivative is 0
            return tuple(np.zeros_like(a) for a in args)
        seconds = grad(total, ts + [tg], allow_unused=True)
        return tuple(np.zeros_like(a) if s is None else s.data for s, a in zip(seconds, args))

    # the create_graph path computes the same first gradient as the first-order path
    _, _, plain = first(*[x.copy() for x in xs], gy0.copy(), create_graph=False)
    for i, (p, g) in enumerate(zip(plain, forward(*[x.copy() for x in xs], gy0.copy()))):
        np.testing.assert_allclose(g, p.data, rtol=1e-10, atol=1e-12,
                                   err_msg=f"check_double_backward: create_graph gradient {i} differs from the first-order one")
    return check_backward(forward, backward, xs + [gy0], rng=rng, eps=eps, atol=atol, rtol=rtol)
