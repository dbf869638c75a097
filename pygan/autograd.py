"""Reverse-mode automatic differentiation, in one file.

A Tensor wraps an array (numpy on the CPU, CuPy on the GPU). Every differentiable operation is a
Function: its forward takes and returns raw arrays and saves what its backward needs; calling it on
Tensors records the Function as the `grad_fn` of its outputs. `Tensor.backward()` sorts the
recorded graph topologically and runs each Function's backward once, accumulating gradients with
`+` (a tensor used twice, like D applied to real and fake images, gets the sum).

Two paths share one graph walk (`_run_backward`). The first-order path, used by every training step,
calls `Function.backward(*arrays)` on raw arrays: no graph is built, nothing is wrapped. With
`create_graph=True` (`Tensor.backward(create_graph=True)`, `grad(..., create_graph=True)`) it calls
`Function.backward_graph(*tensors)` instead, which builds each gradient from differentiable
Functions, so the gradient has a graph of its own and can be differentiated again (WGAN-GP's
gradient penalty, R1). A Function without a backward_graph raises NotImplementedError naming
itself when create_graph reaches it: never a silently missing second derivative.
"""

import contextlib

import numpy as np

_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Inside this block operations build no graph (sampling, evaluation, optimiser updates)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


@contextlib.contextmanager
def enable_grad():
    """Inside this block operations build a graph again, even within no_grad()."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, True
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled():
    return _grad_enabled


def is_cupy_array(a):
    return type(a).__module__.split(".")[0] == "cupy"


def array_module(a):
    """numpy or cupy, whichever owns the array `a`."""
    if is_cupy_array(a):
        import cupy

        return cupy
    return np


def device_of(a):
    return "cuda" if is_cupy_array(a) else "cpu"


def normalise_device(device):
    """'cpu' or 'cuda' from 'cpu', 'cuda', 'cuda:0' or 'auto' (the GPU when one is usable)."""
    name = str(device).lower()
    if name == "auto":
        from .backend import cuda_available

        return "cuda" if cuda_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name in ("cuda", "gpu") or name.startswith("cuda:"):
        if name not in ("cuda", "gpu", "cuda:0"):
            raise ValueError(f"device: pygan uses one GPU, 'cuda' or 'cuda:0'; got {device!r}")
        return "cuda"
    raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")


def to_device(a, device):
    """The array `a` on `device`; `a` itself when it is already there."""
    device = normalise_device(device)
    if device == device_of(a):
        return a
    if device == "cpu":
        return a.get()
    from .backend import require_cupy

    return require_cupy().asarray(a)


def write_host_values(dst, values):
    """Host numbers into the small array dst, in place (dst keeps its memory): on CuPy an upload
    ordered on the current stream, with no read-back and no synchronisation."""
    host = np.asarray(values, dtype=dst.dtype).reshape(dst.shape)
    if isinstance(dst, np.ndarray):
        dst[...] = host
    else:
        dst.set(host, stream=array_module(dst).cuda.get_current_stream())


def _sum_to(g, shape):
    """Sum a broadcast gradient back down to `shape` (the adjoint of broadcasting)."""
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(shape) if n == 1 and g.shape[i + lead] != 1)
    g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


class Tensor:
    """An array with an optional gradient and the Function that produced it."""

    __array_priority__ = 1000  # numpy scalars on the left defer to Tensor's operators
    # A view of a flat gradient buffer (optim.FlatBuffers) that backward accumulates into, in place
    _grad_buffer = None

    def __init__(self, data, requires_grad=False):
        if isinstance(data, Tensor):
            data = data.data
        if isinstance(data, np.generic):  # numpy turns 0-d results into scalars
            data = np.asarray(data)
        if not (isinstance(data, np.ndarray) or is_cupy_array(data)):
            raise TypeError(f"Tensor data must be a numpy or CuPy array, got {type(data).__name__}; use pygan.tensor()")
        if requires_grad and data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, got dtype {data.dtype}")
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self.grad_fn = None

    # -- array facts -------------------------------------------------------------------------
    shape = property(lambda self: tuple(self.data.shape))
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    device = property(lambda self: device_of(self.data))
    is_leaf = property(lambda self: self.grad_fn is None)

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self):
        return int(self.data.size)

    def __len__(self):
        return self.shape[0]

    def numpy(self):
        """The data as a numpy array (a copy from the GPU, the array itself on the CPU)."""
        return self.data.get() if is_cupy_array(self.data) else self.data

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.numpy().reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def detach(self):
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def requires_grad_(self, requires_grad=True):
        if requires_grad and self.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, got dtype {self.dtype}")
        self.requires_grad = requires_grad
        return self

    def to(self, device):
        """A copy on `device` ("cpu" or "cuda"); the tensor itself when it is already there."""
        data = to_device(self.data, device)
        if data is self.data:
            return self
        out = Tensor(data, requires_grad=self.requires_grad)
        return out

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def float(self):
        return Tensor(self.data.astype(np.float32), self.requires_grad) if self.dtype != np.float32 else self

    def double(self):
        return Tensor(self.data.astype(np.float64), self.requires_grad) if self.dtype != np.float64 else self

    def __repr__(self):
        extra = ", requires_grad=True" if self.requires_grad else ""
        dev = ", device='cuda'" if self.device == "cuda" else ""
        body = np.array2string(self.numpy(), separator=", ", threshold=20, edgeitems=2, precision=4)
        return f"tensor({body}{dev}{extra})"

    # -- autograd ----------------------------------------------------------------------------
    def backward(self, gradient=None, retain_graph=None, create_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf's .grad that requires a gradient.

        `gradient` is d(loss)/d(self) (needed unless self has one element). With create_graph the
        accumulated .grad Tensors carry a graph and can be differentiated again. retain_graph
        (default: create_graph, PyTorch's rule) keeps the graph for another backward.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad (did you build it under no_grad()?)")
        seed = _seed(self, gradient, create_graph, "backward()")
        if retain_graph is None:
            retain_graph = create_graph
        _run_backward([self], [seed], retain_graph, create_graph)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False):
    """The gradients of `outputs` with respect to `inputs`, as a tuple of Tensors (torch.autograd.grad).

    outputs, inputs: a Tensor or a sequence of Tensors; grad_outputs: d(loss)/d(output) for each
    output (a Tensor, an array, or None for a one-element output: ones). The inputs' .grad are
    left alone. With create_graph=True the results carry a graph of their own and can be
    differentiated again (gradient penalties). retain_graph defaults to create_graph. An input the
    outputs do not depend on is an error unless allow_unused, which gives None for it.
    """
    outputs = _tensor_tuple(outputs, "outputs")
    inputs = _tensor_tuple(inputs, "inputs")
    if grad_outputs is None or isinstance(grad_outputs, Tensor) or _is_array(grad_outputs):
        grad_outputs = (grad_outputs,) * len(outputs) if grad_outputs is None else (grad_outputs,)
    grad_outputs = tuple(grad_outputs)
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"grad(): {len(outputs)} outputs but {len(grad_outputs)} grad_outputs")
    for i, out in enumerate(outputs):
        if not out.requires_grad:
            raise RuntimeError(f"grad(): outputs[{i}] does not require grad (was it built under no_grad(), or from "
                               "tensors that do not require grad?)")
    for i, x in enumerate(inputs):
        if not x.requires_grad:
            raise RuntimeError(f"grad(): inputs[{i}] (shape {x.shape}) does not require grad")
    seeds = [_seed(out, g, create_graph, f"grad(): outputs[{i}]") for i, (out, g) in enumerate(zip(outputs, grad_outputs))]
    if retain_graph is None:
        retain_graph = create_graph
    targets = {id(x): x for x in inputs}
    found = _run_backward(outputs, seeds, retain_graph, create_graph, targets)
    result = []
    for i, x in enumerate(inputs):
        g = found.get(id(x))
        if g is None:
            if not allow_unused:
                raise RuntimeError(f"grad(): inputs[{i}] (shape {x.shape}) was not reached from the outputs: "
                                   "the outputs do not depend on it (pass allow_unused=True to get None for it)")
            result.append(None)
            continue
        if not create_graph:
            g = Tensor(g.copy())
        elif tuple(g.shape) != x.shape:
            g = SumTo(x.shape)(g)
        result.append(g)
    return tuple(result)


def _is_array(a):
    return isinstance(a, np.ndarray) or is_cupy_array(a)


def _tensor_tuple(value, name):
    items = (value,) if isinstance(value, Tensor) else tuple(value)
    if not items:
        raise ValueError(f"grad(): {name} is empty")
    for i, t in enumerate(items):
        if not isinstance(t, Tensor):
            raise TypeError(f"grad(): {name}[{i}] must be a Tensor, got {type(t).__name__}")
    return items


def _seed(out, gradient, create_graph, where):
    """d(loss)/d(out) to start the walk: an array on the first-order path, a Tensor with create_graph."""
    if gradient is None:
        if out.data.size != 1:
            raise ValueError(f"{where} without a gradient needs a scalar output, got shape {out.shape}; "
                             "pass the gradient of the loss with respect to it")
        g = array_module(out.data).ones_like(out.data)
        return Tensor(g) if create_graph else g
    data = gradient.data if isinstance(gradient, Tensor) else gradient
    if not _is_array(data):
        raise TypeError(f"{where}: gradient must be a Tensor or an array, got {type(gradient).__name__}")
    if device_of(data) != out.device:
        raise ValueError(f"{where}: gradient is on {device_of(data)} but the tensor is on {out.device}")
    if tuple(data.shape) != out.shape:
        raise ValueError(f"{where}: gradient has shape {tuple(data.shape)}, expected {out.shape}")
    if create_graph:
        return gradient if isinstance(gradient, Tensor) else Tensor(data)
    return data


def _run_backward(roots, seeds, retain_graph, create_graph, targets=None):
    """The one graph walk behind backward() and grad().

    targets None (backward()): accumulate into the .grad of every leaf that requires grad.
    targets {id: Tensor} (grad()): return {id: gradient} for those tensors and touch no .grad; only
    the Functions on a path to a target run. Gradients are arrays, or Tensors with create_graph.
    """
    grads = {}
    for root, seed in zip(roots, seeds):
        key = id(root)
        grads[key] = seed if key not in grads else grads[key] + seed
    found = {} if targets is not None else None

    def deliver(x, g):  # x is a leaf
        if found is None:
            (_accumulate_leaf_graph if create_graph else _accumulate_leaf)(x, g)
        elif id(x) in targets:
            found[id(x)] = g if id(x) not in found else found[id(x)] + g

    for root in roots:
        if root.grad_fn is None:
            g = grads.pop(id(root), None)
            if g is not None:
                deliver(root, g)
    root_fns = [r.grad_fn for r in roots if r.grad_fn is not None]
    if not root_fns:
        return found
    order = _topological_order(root_fns)
    useful = None if targets is None else _functions_reaching(order, targets)
    with (enable_grad() if create_graph else contextlib.nullcontext()):
        for fn in order:
            outs = fn.outputs
            gys = [grads.pop(id(o), None) for o in outs]
            if targets is not None:
                for o, g in zip(outs, gys):
                    if g is not None and id(o) in targets:
                        found[id(o)] = g
                if id(fn) not in useful:
                    continue
            if all(g is None for g in gys):
                continue
            if create_graph:
                gys = [Tensor(array_module(o.data).zeros_like(o.data)) if g is None else g for g, o in zip(gys, outs)]
                fn.grad_mask = (
                    fn.needs_input_grad if targets is None else
                    tuple(_reaches(x, targets, useful) for x in fn.inputs)
                )
                gxs = fn.backward_graph(*gys)
            else:
                if any(g is None for g in gys):
                    gys = [array_module(o.data).zeros_like(o.data) if g is None else g for g, o in zip(gys, outs)]
                gxs = fn.backward(*gys)
            if not isinstance(gxs, tuple):
                gxs = (gxs,)
            if len(gxs) != len(fn.inputs):
                raise RuntimeError(f"{type(fn).__name__}.backward returned {len(gxs)} gradients for {len(fn.inputs)} inputs")
            for x, gx in zip(fn.inputs, gxs):
                if gx is None or not isinstance(x, Tensor) or not x.requires_grad:
                    continue
                if create_graph and not isinstance(gx, Tensor):
                    raise TypeError(f"{type(fn).__name__}.backward_graph returned a {type(gx).__name__}, not a Tensor")
                if x.grad_fn is None:
                    deliver(x, gx)
                elif targets is None or id(x) in targets or id(x.grad_fn) in useful:
                    key = id(x)
                    grads[key] = gx if key not in grads else grads[key] + gx
            if not retain_graph:
                fn.release()
    return found


def _reaches(x, targets, useful):
    """Whether the gradient of input x is wanted by grad(): x is a target or leads to one."""
    return isinstance(x, Tensor) and x.requires_grad and (
        id(x) in targets or (x.grad_fn is not None and id(x.grad_fn) in useful))


def _functions_reaching(order, targets):
    """ids of the Functions in `order` with an input on a path to a target (those grad() must run)."""
    useful = set()
    for fn in reversed(order):  # the functions making a Function's inputs come first
        if any(_reaches(x, targets, useful) for x in fn.inputs):
            useful.add(id(fn))
    return useful


def _accumulate_leaf(x, g):
    if tuple(g.shape) != x.shape:
        g = _sum_to(g, x.shape)
    if g.dtype != x.dtype:
        g = g.astype(x.dtype)
    buf = x._grad_buffer
    if buf is not None and (x.grad is None or x.grad.data is buf):
        # the flat layout: the same additions, written into the gradient buffer's view
        if x.grad is None:
            buf[...] = g
            x.grad = Tensor(buf)
        else:
            buf += g
        return
    x.grad = Tensor(g.copy() if x.grad is None else x.grad.data + g)


def _accumulate_leaf_graph(x, g):
    """create_graph: .grad becomes (or grows by) a Tensor with a graph."""
    if tuple(g.shape) != x.shape:
        g = SumTo(x.shape)(g)
    x.grad = g if x.grad is None else x.grad + g


def _topological_order(root_fns):
    """Functions ordered so that each one comes before the functions that made its inputs."""
    if isinstance(root_fns, Function):
        root_fns = [root_fns]
    order, visited = [], set()
    stack = [(fn, False) for fn in reversed(root_fns)]
    while stack:
        fn, expanded = stack.pop()
        if expanded:
            order.append(fn)
            continue
        if id(fn) in visited:
            continue
        visited.add(id(fn))
        stack.append((fn, True))
        if fn.inputs is None:
            raise RuntimeError(
                f"backward through a graph a second time ({type(fn).__name__}'s saved values were freed); "
                "use retain_graph=True the first time"
            )
        for x in fn.inputs:
            if isinstance(x, Tensor) and x.grad_fn is not None and id(x.grad_fn) not in visited:
                stack.append((x.grad_fn, False))
    order.reverse()
    return order


class Function:
    """One differentiable operation.

    Subclasses define forward(*arrays) and backward(*grad_arrays) (the first-order path, on raw
    arrays), and backward_graph(*grad_tensors), the same gradients built from differentiable
    Functions and Tensor ops so that they can be differentiated again (create_graph=True). Inside
    backward_graph, `self.inputs`/`self.outputs` are the Tensors of the forward call and
    `self.needs_grad(i)` says whether input i's gradient is wanted (None may be returned otherwise).
    """

    inputs = ()
    outputs = ()
    needs_input_grad = ()
    grad_mask = None

    def __call__(self, *inputs):
        devices = {x.device for x in inputs if isinstance(x, Tensor)}
        if len(devices) > 1:
            shapes = ", ".join(f"{x.device} {x.shape}" for x in inputs if isinstance(x, Tensor))
            raise ValueError(f"{type(self).__name__}: tensors are on different devices ({shapes}); move them with .to()")
        arrays = [x.data if isinstance(x, Tensor) else x for x in inputs]
        ys = self.forward(*arrays)
        single = not isinstance(ys, tuple)
        outputs = [Tensor(y) for y in ((ys,) if single else ys)]
        if _grad_enabled and any(isinstance(x, Tensor) and x.requires_grad for x in inputs):
            for y in outputs:
                y.requires_grad = True
                y.grad_fn = self
            self.inputs = inputs
            self.outputs = outputs
            # backward may skip gradients nobody will read (a conv's dx for an input image)
            self.needs_input_grad = tuple(isinstance(x, Tensor) and x.requires_grad for x in inputs)
        return outputs[0] if single else tuple(outputs)

    def release(self):
        """Drop references kept for backward so their memory can go."""
        self.inputs = None
        self.outputs = ()
        for name in list(vars(self)):
            if name.startswith("saved"):
                setattr(self, name, None)

    def needs_grad(self, i):
        """In backward_graph: whether the gradient of input i is wanted."""
        mask = self.needs_input_grad if self.grad_mask is None else self.grad_mask
        return bool(mask[i])

    def forward(self, *xs):
        raise NotImplementedError

    def backward(self, *gys):
        raise NotImplementedError

    def backward_graph(self, *gys):
        raise NotImplementedError(
            f"double backward of {type(self).__name__} is not implemented: create_graph=True cannot "
            "differentiate through it"
        )


# -- elementwise arithmetic with broadcasting -------------------------------------------------


def _as_operand(other, like):
    """Tensors pass through; Python/numpy scalars become constants of `like`'s dtype and device."""
    if isinstance(other, Tensor):
        return other
    if isinstance(other, (int, float, np.integer, np.floating)):
        xp = array_module(like.data)
        if xp is np:
            return Tensor(np.asarray(other, dtype=like.dtype))
        # On the GPU a fill kernel with the value as its argument, not a host-to-device copy:
        # a copy inside a captured CUDA graph would re-read a host buffer CuPy may since have reused.
        return Tensor(xp.full((), other, dtype=like.dtype))
    if isinstance(other, np.ndarray) or is_cupy_array(other):
        return Tensor(other)
    raise TypeError(f"unsupported operand type {type(other).__name__} for a Tensor operation")


class Add(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, g):
        return _sum_to(g, self.shapes[0]), _sum_to(g, self.shapes[1])

    def backward_graph(self, g):
        return _sum_to_graph(g, self.shapes[0]), _sum_to_graph(g, self.shapes[1])


class Sub(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, g):
        return _sum_to(g, self.shapes[0]), _sum_to(-g, self.shapes[1])

    def backward_graph(self, g):
        return _sum_to_graph(g, self.shapes[0]), _sum_to_graph(-g, self.shapes[1])


class Mul(Function):
    def forward(self, a, b):
        self.saved = a, b
        return a * b

    def backward(self, g):
        a, b = self.saved
        return _sum_to(g * b, a.shape), _sum_to(g * a, b.shape)

    def backward_graph(self, g):
        a, b = self.inputs
        ga = _sum_to_graph(g * b, a.shape) if self.needs_grad(0) else None
        gb = _sum_to_graph(g * a, b.shape) if self.needs_grad(1) else None
        return ga, gb


class Div(Function):
    def forward(self, a, b):
        self.saved = a, b
        return a / b

    def backward(self, g):
        a, b = self.saved
        ga = g / b
        return _sum_to(ga, a.shape), _sum_to(-ga * a / b, b.shape)

    def backward_graph(self, g):
        a, b = self.inputs
        ga = g / b
        gb = _sum_to_graph(-ga * a / b, b.shape) if self.needs_grad(1) else None
        return _sum_to_graph(ga, a.shape), gb


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, g):
        return -g

    def backward_graph(self, g):
        return -g


class Pow(Function):
    def __init__(self, exponent):
        self.exponent = exponent

    def forward(self, a):
        self.saved = a
        return a**self.exponent

    def backward(self, g):
        a = self.saved
        return g * self.exponent * a ** (self.exponent - 1)

    def backward_graph(self, g):
        (a,) = self.inputs
        if self.exponent == 1:
            return g * 1.0
        return g * (a ** (self.exponent - 1) * float(self.exponent))


class Exp(Function):
    def forward(self, a):
        self.saved = array_module(a).exp(a)
        return self.saved

    def backward(self, g):
        return g * self.saved

    def backward_graph(self, g):
        return g * self.outputs[0]


class Log(Function):
    def forward(self, a):
        self.saved = a
        return array_module(a).log(a)

    def backward(self, g):
        return g / self.saved

    def backward_graph(self, g):
        return g / self.inputs[0]


class Abs(Function):
    def forward(self, a):
        self.saved = a
        return abs(a)

    def backward(self, g):
        return g * array_module(self.saved).sign(self.saved)

    def backward_graph(self, g):
        return g * Tensor(array_module(self.saved).sign(self.saved))  # the sign is a constant (a.e.)


class MatMul(Function):
    def forward(self, a, b):
        if a.ndim != 2 or b.ndim != 2:
            raise ValueError(f"matmul supports 2-D tensors, got shapes {a.shape} and {b.shape}")
        if a.shape[1] != b.shape[0]:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align")
        self.saved = a, b
        return a @ b

    def backward(self, g):
        a, b = self.saved
        return g @ b.T, a.T @ g

    def backward_graph(self, g):
        a, b = self.inputs
        return (g @ b.T if self.needs_grad(0) else None), (a.T @ g if self.needs_grad(1) else None)


def _normalise_axis(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    for ax in axes:
        if not -ndim <= ax < max(ndim, 1):
            raise ValueError(f"dim {ax} is out of range for a tensor with {ndim} dimensions")
    return tuple(ax % max(ndim, 1) for ax in axes)


class Sum(Function):
    def __init__(self, axis, keepdims):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, a):
        self.shape = a.shape
        self.axes = _normalise_axis(self.axis, a.ndim)
        return a.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, g):
        if not self.keepdims:
            g = g.reshape([1 if i in self.axes else n for i, n in enumerate(self.shape)])
        return array_module(g).broadcast_to(g, self.shape).copy()

    def backward_graph(self, g):
        if not self.keepdims:
            g = g.reshape([1 if i in self.axes else n for i, n in enumerate(self.shape)])
        return BroadcastTo(self.shape)(g)


class Reshape(Function):
    def __init__(self, shape):
        self.shape = shape

    def forward(self, a):
        self.in_shape = a.shape
        try:
            return a.reshape(self.shape)
        except ValueError:
            raise ValueError(f"cannot reshape a tensor of shape {a.shape} into {tuple(self.shape)}") from None

    def backward(self, g):
        return g.reshape(self.in_shape)

    def backward_graph(self, g):
        return g.reshape(self.in_shape)


class GetItem(Function):
    def __init__(self, index):
        self.index = index

    def forward(self, a):
        self.in_shape, self.dtype = a.shape, a.dtype
        out = a[self.index]
        return out.copy() if hasattr(out, "copy") else out

    def backward(self, g):
        xp = array_module(g)
        gx = xp.zeros(self.in_shape, dtype=g.dtype)
        if xp is np:
            np.add.at(gx, self.index, g)  # repeated integer indices accumulate
        else:
            import cupyx

            cupyx.scatter_add(gx, self.index, g)
        return gx

    def backward_graph(self, g):
        return GetItemBackward(self.index, self.in_shape)(g)


class GetItemBackward(Function):
    """The adjoint of indexing: g added into zeros of the indexed tensor's shape at `index`."""

    def __init__(self, index, in_shape):
        self.index, self.in_shape = index, in_shape

    def forward(self, g):
        return GetItem.backward(self, g)

    def backward(self, gg):
        out = gg[self.index]
        return out.copy() if hasattr(out, "copy") else out

    def backward_graph(self, gg):
        return GetItem(self.index)(gg)


class Concat(Function):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, *arrays):
        if not arrays:
            raise ValueError("cat: needs at least one tensor")
        self.sizes = [a.shape[self.axis] for a in arrays]
        return array_module(arrays[0]).concatenate(arrays, axis=self.axis)

    def backward(self, g):
        xp = array_module(g)
        bounds = np.cumsum(self.sizes)[:-1].tolist()
        return tuple(part.copy() for part in xp.split(g, bounds, axis=self.axis))

    def backward_graph(self, g):
        axis = self.axis % g.ndim
        parts, start = [], 0
        for size in self.sizes:
            parts.append(g[(slice(None),) * axis + (slice(start, start + size),)])
            start += size
        return tuple(parts)


class SumTo(Function):
    """Sum a broadcast tensor down to `shape` (the adjoint of broadcasting)."""

    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, a):
        self.in_shape = a.shape
        return _sum_to(a, self.shape)

    def backward(self, g):
        return array_module(g).broadcast_to(g, self.in_shape).copy()

    def backward_graph(self, g):
        return BroadcastTo(self.in_shape)(g)


class BroadcastTo(Function):
    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, a):
        self.in_shape = a.shape
        return array_module(a).broadcast_to(a, self.shape).copy()

    def backward(self, g):
        return _sum_to(g, self.in_shape)

    def backward_graph(self, g):
        return SumTo(self.in_shape)(g)


class Transpose(Function):
    """Permute the axes (a contiguous copy); default: reverse them (.T)."""

    def __init__(self, axes=None):
        self.axes = None if axes is None else tuple(axes)

    def forward(self, a):
        axes = tuple(reversed(range(a.ndim))) if self.axes is None else self.axes
        if sorted(ax % max(a.ndim, 1) for ax in axes) != list(range(a.ndim)):
            raise ValueError(f"permute: {axes} is not a permutation of the {a.ndim} dimensions")
        self.inverse = tuple(np.argsort([ax % max(a.ndim, 1) for ax in axes]).tolist())
        self.perm = axes
        return array_module(a).ascontiguousarray(a.transpose(axes))

    def backward(self, g):
        return array_module(g).ascontiguousarray(g.transpose(self.inverse))

    def backward_graph(self, g):
        return Transpose(self.inverse)(g)


def _sum_to_graph(g, shape):
    """create_graph's _sum_to: g itself when it already has `shape`."""
    return g if g.shape == tuple(shape) else SumTo(shape)(g)


def _binary(fn_cls, a, b):
    return fn_cls()(a, _as_operand(b, a))


def _rbinary(fn_cls, a, b):
    return fn_cls()(_as_operand(b, a), a)


Tensor.__add__ = lambda self, other: _binary(Add, self, other)
Tensor.__radd__ = lambda self, other: _rbinary(Add, self, other)
Tensor.__sub__ = lambda self, other: _binary(Sub, self, other)
Tensor.__rsub__ = lambda self, other: _rbinary(Sub, self, other)
Tensor.__mul__ = lambda self, other: _binary(Mul, self, other)
Tensor.__rmul__ = lambda self, other: _rbinary(Mul, self, other)
Tensor.__truediv__ = lambda self, other: _binary(Div, self, other)
Tensor.__rtruediv__ = lambda self, other: _rbinary(Div, self, other)
Tensor.__matmul__ = lambda self, other: MatMul()(self, _as_operand(other, self))
Tensor.__neg__ = lambda self: Neg()(self)
Tensor.__abs__ = lambda self: Abs()(self)
Tensor.__getitem__ = lambda self, index: GetItem(index.data if isinstance(index, Tensor) else index)(self)
Tensor.exp = lambda self: Exp()(self)
Tensor.log = lambda self: Log()(self)
Tensor.abs = Tensor.__abs__
Tensor.matmul = Tensor.__matmul__
Tensor.T = property(lambda self: Transpose()(self))
Tensor.t = lambda self: Transpose()(self)


def _permute(self, *dims):
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    return Transpose(dims)(self)


def _transpose(self, dim0, dim1):
    axes = list(range(self.ndim))
    axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
    return Transpose(axes)(self)


Tensor.permute = _permute
Tensor.transpose = _transpose


def _pow(self, exponent):
    if not isinstance(exponent, (int, float)):
        raise TypeError(f"exponent must be a Python number, got {type(exponent).__name__}")
    return Pow(exponent)(self)


def _sum(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
    axis = dim if axis is None else axis
    keep = keepdim if keepdims is None else keepdims
    return Sum(axis, bool(keep))(self)


def _mean(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
    axis = dim if axis is None else axis
    keep = keepdim if keepdims is None else keepdims
    count = 1
    for ax in _normalise_axis(axis, self.ndim):
        count *= self.shape[ax]
    return Sum(axis, bool(keep))(self) * (1.0 / count)


def _reshape(self, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return Reshape(shape)(self)


Tensor.__pow__ = _pow
Tensor.sum = _sum
Tensor.mean = _mean
Tensor.reshape = _reshape
Tensor.view = _reshape
Tensor.flatten = lambda self, start_dim=0: _reshape(self, self.shape[:start_dim] + (-1,))
