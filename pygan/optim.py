"""Adam and RMSprop with torch.optim's semantics (L2 weight decay added to the gradient).

The updates themselves are the registry's `adam_step` / `rmsprop_step`, which update a list of
tensors at once (one launch on the GPU); these classes keep the per-parameter state and the
hyper-parameters. `Optimizer` holds what both share: parameter groups, the per-parameter state
(a "step" count plus named arrays shaped like the parameter), `zero_grad`, and `state_dict` /
`load_state_dict` in PyTorch's layout (state by parameter index, param_groups with indices).

`flat=True` keeps every parameter, its gradient and each optimiser state array as a view into one
contiguous buffer per role (FlatBuffers): the Tensors module.parameters() hands out stay the same
objects, their `.data` becomes a view of the parameter buffer, backward accumulates into views of
the gradient buffer, and zero_grad clears that buffer in one call. A step whose parameters all have
a gradient at the same step count is then ONE kernel launch over one tensor per role; any other
step updates the views one by one. The update is elementwise, so both give bitwise the same result,
and state_dict / load_state_dict (hence checkpoints) are the same in both layouts.

Inside a CUDA graph (`pygan train --cuda-graph`) a captured launch repeats its by-value arguments
at every replay, so a flat optimiser's step splits in two there: `stage_step()` on the host before
each replay (the step counts, which stay on the host for state_dict, and the numbers that change
with them, for Adam the bias corrections, uploaded into a small device array per group) and
`launch_staged()` inside the captured body (the one launch per group, whose kernel reads that
array when it runs). The two together are bitwise `step()`: the uploaded float32 values are the
ones the launcher computes by value. RMSprop's kernel takes nothing that changes with the step.
"""

import numpy as np

from . import ops
from .autograd import Tensor, array_module, to_device, write_host_values


class Optimizer:
    """Base class. A subclass sets `defaults` through __init__ and defines:

    _check_hyper(group)       ValueError naming a bad hyper-parameter (normalise it in place first)
    _state_names(group)       the names of the state arrays a parameter of this group needs
    _kernel(group, params, grads, states, step, hyper=None)
                              one update of those arrays ({state name: arrays}), all at `step`;
                              hyper: the group's device array of STAGED per-step values, or None
    STAGED, _staged_values(group, step), _by_value_keys
                              for stage_step/launch_staged: how many per-step floats the kernel
                              can read from device memory, their values at `step`, and the
                              hyper-parameters a captured launch freezes (passed by value)
    """

    STAGED = 0
    _by_value_keys = ()

    def __init__(self, params, defaults, flat=False):
        name = type(self).__name__
        self._check_hyper(defaults)
        params = list(params)
        if not params:
            raise ValueError(f"{name}: params is an empty list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = defaults
        self.param_groups = []
        seen = set()
        for g in groups:
            group = dict(defaults, **{k: v for k, v in g.items() if k != "params"})
            self._check_hyper(group)
            group["params"] = list(g["params"])
            for p in group["params"]:
                if not isinstance(p, Tensor):
                    raise TypeError(f"{name}: params must be Tensors, got {type(p).__name__}")
                if not p.requires_grad:
                    raise ValueError(f"{name}: a parameter of shape {p.shape} does not require grad")
                if id(p) in seen:
                    raise ValueError(f"{name}: a parameter appears twice")
                seen.add(id(p))
            self.param_groups.append(group)
        self.state = {}  # id(param) -> {"step": int, <state name>: array, ...}
        self.flat = FlatBuffers(self.param_groups, name) if flat else None
        # stage_step/launch_staged: one small device array per group (made here, never during a
        # capture) and the by-value hyper-parameters each group's captured launch was made with
        self._staged_hyper = ([self.flat.xp.zeros(self.STAGED, dtype=np.float32) for _ in self.param_groups]
                              if flat and self.STAGED else None)
        self._captured_with = {}

    def _params(self):
        for group in self.param_groups:
            for p in group["params"]:
                yield group, p

    def zero_grad(self, set_to_none=True):
        if self.flat is not None:
            self.flat.adopt()
            self.flat.grads.fill(0)  # one call for every gradient
            for _, p in self._params():
                p.grad = None if set_to_none else Tensor(self.flat.grad_view(p))
            return
        for _, p in self._params():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad.data[...] = 0

    def _param_state(self, group, p):
        """p's state, (re)initialised to zeros when missing or no longer fitting p."""
        st = self.state.get(id(p))
        names = self._state_names(group)
        if st is not None:
            arrays = [v for k, v in st.items() if k != "step"]
            if any(a.shape != p.data.shape or array_module(a) is not array_module(p.data) for a in arrays):
                st = None
        if st is None:
            st = {"step": 0}
            self.state[id(p)] = st
        for n in names:  # e.g. a momentum buffer once momentum is turned on
            if n not in st:
                if self.flat is not None:
                    st[n] = self.flat.state_view(n, p)
                    st[n][...] = 0
                else:
                    st[n] = array_module(p.data).zeros_like(p.data)
        return st

    def step(self):
        """One update of every parameter that has a gradient; parameters with the same step count,
        device and dtype go to the kernel together (flat: the whole group as one tensor when it can)."""
        if self.flat is not None:
            self.flat.adopt()
        for gi, group in enumerate(self.param_groups):
            batches = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.device != p.device:
                    raise ValueError(
                        f"{type(self).__name__}: a gradient is on {p.grad.device} but its parameter is on {p.device}"
                    )
                if self.flat is not None:
                    self.flat.adopt_grad(p)
                st = self._param_state(group, p)
                st["step"] += 1
                batches.setdefault((st["step"], p.device, p.dtype), []).append((p, st))
            if self.flat is not None and self._flat_update(gi, group, batches):
                continue
            for (step, _, _), items in batches.items():
                states = {n: [s[n] for _, s in items] for n in self._state_names(group)}
                self._kernel(group, [p.data for p, _ in items], [p.grad.data for p, _ in items], states, step)

    # -- the step as two halves, for a CUDA graph (see the module docstring) ----------------------
    def stage_step(self):
        """The host half of a captured step, before each replay: every parameter's step count + 1
        (all of a group's counts must be equal: a graph updates every parameter every step) and, for
        a kernel that reads per-step values from device memory, this step's into the group's array
        (an upload on the current stream; nothing is read back)."""
        name = type(self).__name__
        self._check_stageable("stage_step")
        self.flat.adopt()
        steps = []
        for gi, group in enumerate(self.param_groups):  # every check first: a refusal counts nothing
            steps.append(self._common_step(group, "stage_step"))
            frozen = self._captured_with.get(gi)
            if frozen is not None and frozen != self._by_value(group):
                raise ValueError(f"{name}.stage_step: {', '.join(k for k in self._by_value_keys if frozen[k] != group[k])} "
                                 "changed after the update was captured (a replay would use the old value); "
                                 "capture again")
        for gi, (group, step) in enumerate(zip(self.param_groups, steps)):
            for p in group["params"]:
                self.state[id(p)]["step"] = step + 1
            if self.STAGED:
                write_host_values(self._staged_hyper[gi], self._staged_values(group, step + 1))

    def launch_staged(self):
        """The device half, inside a captured body after backward: one launch per group over the flat
        buffers, reading the per-step values stage_step wrote (so each replay gets its own step's),
        no host work a replay would skip. Every parameter must have its gradient in the flat buffer
        and its state already (one eager step first); else RuntimeError (a capture then falls back)."""
        name = type(self).__name__
        self._check_stageable("launch_staged")
        for gi, group in enumerate(self.param_groups):
            for p in group["params"]:
                if p.grad is None or p.grad.data is not self.flat.grad_view(p):
                    raise RuntimeError(f"{name}.launch_staged: a parameter of shape {p.shape} has no gradient in the flat "
                                       "gradient buffer (a captured update changes every parameter)")
            step = self._common_step(group, "launch_staged")
            self._captured_with[gi] = self._by_value(group)
            lo, hi = self.flat.group_ranges[gi]
            states = {n: [self.flat.state[n][lo:hi]] for n in self._state_names(group)}
            self._kernel(group, [self.flat.params[lo:hi]], [self.flat.grads[lo:hi]], states, max(step, 1),
                         hyper=self._staged_hyper[gi] if self.STAGED else None)

    def _check_stageable(self, what):
        name = type(self).__name__
        if self.flat is None:
            raise RuntimeError(f"{name}.{what}: a staged (capturable) step needs flat=True")
        for group in self.param_groups:
            if not self._flat_ok(group):
                raise RuntimeError(f"{name}.{what}: eps must be > 0 for the flat update")

    def _common_step(self, group, what):
        """The group's step count, which every parameter shares, with its state made."""
        name = type(self).__name__
        steps = set()
        for p in group["params"]:
            st = self.state.get(id(p))
            if st is None or any(n not in st for n in self._state_names(group)):
                raise RuntimeError(f"{name}.{what}: a parameter of shape {p.shape} has no optimiser state yet "
                                   "(take one ordinary step() first)")
            steps.add(st["step"])
        if len(steps) != 1:
            raise RuntimeError(f"{name}.{what}: the parameters are at different step counts {sorted(steps)}")
        return steps.pop()

    def _by_value(self, group):
        return {k: group[k] for k in self._by_value_keys}

    def _flat_update(self, gi, group, batches):
        """The whole group as one tensor per role, when every parameter has a gradient at the same
        step (a parameter without one must not move: the per-tensor path skips it)."""
        if len(batches) != 1 or not self._flat_ok(group):
            return False
        ((step, _, _), items), = batches.items()
        if len(items) != len(group["params"]):
            return False
        lo, hi = self.flat.group_ranges[gi]
        states = {n: [self.flat.state[n][lo:hi]] for n in self._state_names(group)}
        self._kernel(group, [self.flat.params[lo:hi]], [self.flat.grads[lo:hi]], states, step)
        return True

    def _flat_ok(self, group):
        """Whether the padding between tensors stays finite (zero) under the update."""
        return group["eps"] > 0

    def state_dict(self):
        """PyTorch's layout: state by parameter index, param_groups with indices."""
        index, state, groups = 0, {}, []
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                st = self.state.get(id(p))
                if st is not None:
                    state[index] = {k: v if k == "step" else Tensor(v) for k, v in st.items()}
                ids.append(index)
                index += 1
            groups.append({k: v for k, v in group.items() if k != "params"} | {"params": ids})
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        name = type(self).__name__
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"{name}.load_state_dict: {len(groups)} parameter groups given, the optimiser has {len(self.param_groups)}")
        hypers = []
        for saved, group in zip(groups, self.param_groups):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"{name}.load_state_dict: a group has {len(saved['params'])} parameters, the optimiser's has {len(group['params'])}"
                )
            hyper = dict({k: v for k, v in group.items() if k != "params"},
                         **{k: v for k, v in saved.items() if k != "params"})
            self._check_hyper(hyper)
            hypers.append(hyper)
        new_state = {}
        for saved, hyper, group in zip(groups, hypers, self.param_groups):
            for key, p in zip(saved["params"], group["params"]):
                st = state_dict["state"].get(key, state_dict["state"].get(str(key)))
                if st is None:
                    continue
                missing = [n for n in self._state_names(hyper) if n not in st]
                if missing:
                    raise ValueError(f"{name}.load_state_dict: parameter {key} has no {', '.join(missing)}")
                arrays = {}
                for n, a in st.items():
                    if n == "step":
                        continue
                    a = a.data if isinstance(a, Tensor) else a
                    if tuple(a.shape) != p.shape:
                        raise ValueError(f"{name}.load_state_dict: {n} of parameter {key} has shape {tuple(a.shape)}, expected {p.shape}")
                    arrays[n] = to_device(a, p.device).astype(p.dtype, copy=True)
                    if self.flat is not None:  # into the state buffer's view: the layout is kept
                        view = self.flat.state_view(n, p)
                        view[...] = arrays[n]
                        arrays[n] = view
                new_state[id(p)] = {"step": int(st["step"]), **arrays}
        for hyper, group in zip(hypers, self.param_groups):
            group.update(hyper)
        self.state = new_state

    # -- what a subclass defines ---------------------------------------------------------------
    def _check_hyper(self, h):
        raise NotImplementedError

    def _state_names(self, group):
        raise NotImplementedError

    def _kernel(self, group, params, grads, states, step, hyper=None):
        """One update of the arrays `params` (with `grads` and `states`: {state name: arrays}),
        all at step count `step` (or with the per-step values in the device array `hyper`)."""
        raise NotImplementedError

    def _staged_values(self, group, step):
        raise NotImplementedError


class FlatBuffers:
    """All of an optimiser's parameters, gradients and state arrays as views into one contiguous
    1-D buffer per role (params, grads, one per state name), in param_groups order; each tensor
    starts at a multiple of 4 elements (16-byte aligned views for the float4 kernels). The padding
    is zero in every buffer and an update keeps it zero. group_ranges[i]: group i's [start, end).

    The parameters keep their identity: p.data becomes a view of `params` (its values copied in),
    p._grad_buffer a view of `grads` that autograd accumulates into. Code that replaces p.data or
    p.grad instead of writing into them is tolerated: adopt() / adopt_grad() copy the new array
    into the buffer and restore the view (same values, so the update is unchanged)."""

    ALIGN = 4

    def __init__(self, param_groups, owner="optimiser"):
        params = [p for g in param_groups for p in g["params"]]
        kinds = {(p.device, p.dtype) for p in params}
        if len(kinds) != 1:
            raise ValueError(f"{owner}(flat=True): every parameter must be on one device with one dtype, got "
                             + ", ".join(sorted(f"{d} {t}" for d, t in kinds)))
        self.xp = array_module(params[0].data)
        self.dtype = params[0].dtype
        self.offsets = {}
        self.group_ranges = []
        at = 0
        for g in param_groups:
            start = at
            for p in g["params"]:
                self.offsets[id(p)] = (at, p.shape)
                at += -(-max(p.numel(), 1) // self.ALIGN) * self.ALIGN
            self.group_ranges.append((start, at))
        self.size = at
        self.params = self.xp.zeros(at, dtype=self.dtype)
        self.grads = self.xp.zeros(at, dtype=self.dtype)
        self.state = {}
        self._params = params
        self._param_views, self._grad_views = {}, {}
        for p in params:
            view = self._view(self.params, p)
            view[...] = p.data
            p.data = view
            self._param_views[id(p)] = view
            self._grad_views[id(p)] = p._grad_buffer = self._view(self.grads, p)
            if p.grad is not None:
                self.adopt_grad(p)

    def _view(self, buffer, p):
        start, shape = self.offsets[id(p)]
        n = 1
        for s in shape:
            n *= s
        return buffer[start:start + n].reshape(shape)

    def grad_view(self, p):
        return self._grad_views[id(p)]

    def state_view(self, name, p):
        """p's slice of the buffer for state `name` (the buffer made, zeroed, on first use)."""
        if name not in self.state:
            self.state[name] = self.xp.zeros(self.size, dtype=self.dtype)
        return self._view(self.state[name], p)

    def adopt(self):
        """Parameters whose .data was replaced (p.data = new array) get their view back."""
        for p in self._params:
            view = self._param_views[id(p)]
            if p.data is not view:
                self._check_fits(p, p.data, "data")
                view[...] = p.data
                p.data = view
            if p._grad_buffer is not self._grad_views[id(p)]:
                p._grad_buffer = self._grad_views[id(p)]

    def adopt_grad(self, p):
        """p.grad as the gradient buffer's view (copied in when something replaced it)."""
        view = self._grad_views[id(p)]
        if p.grad is not None and p.grad.data is not view:
            self._check_fits(p, p.grad.data, "grad")
            view[...] = p.grad.data
            p.grad = Tensor(view)

    def _check_fits(self, p, a, what):
        shape = self.offsets[id(p)][1]
        if tuple(a.shape) != shape or array_module(a) is not self.xp or a.dtype != self.dtype:
            raise ValueError(
                f"flat parameters: a parameter's {what} was replaced by a {a.dtype} array of shape {tuple(a.shape)} "
                f"({array_module(a).__name__}); the flat layout needs shape {shape}, {self.dtype}, "
                f"on {self.xp.__name__} (write into it in place, or build the optimiser without flat=True)")


def _nonnegative(opt, h, *names):
    for n in names:
        if not h[n] >= 0:
            raise ValueError(f"{opt}: {n} must be >= 0, got {h[n]}")


class Adam(Optimizer):
    """torch.optim.Adam (amsgrad=False): state exp_avg, exp_avg_sq per parameter. Staged (CUDA graph)
    steps upload [lr / (1 - beta1^step), sqrt(1 - beta2^step)]: lr may change between replays,
    betas, eps and weight_decay may not."""

    STAGED = 2
    _by_value_keys = ("betas", "eps", "weight_decay")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, flat=False):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay), flat=flat)

    def _check_hyper(self, h):
        h["betas"] = tuple(h["betas"])
        _nonnegative("Adam", h, "lr")
        if len(h["betas"]) != 2 or not all(0.0 <= b < 1.0 for b in h["betas"]):
            raise ValueError(f"Adam: betas must be two numbers in [0, 1), got {h['betas']}")
        _nonnegative("Adam", h, "eps", "weight_decay")

    def _state_names(self, group):
        return ("exp_avg", "exp_avg_sq")

    def _kernel(self, group, params, grads, states, step, hyper=None):
        beta1, beta2 = group["betas"]
        ops.adam_step(params, grads, states["exp_avg"], states["exp_avg_sq"],
                      step, group["lr"], beta1, beta2, group["eps"], group["weight_decay"], hyper)

    def _staged_values(self, group, step):
        beta1, beta2 = group["betas"]
        return ops.reference.adam_hyper(step, group["lr"], beta1, beta2)  # as float32: what the launcher uses


class RMSprop(Optimizer):
    """torch.optim.RMSprop: state square_avg, plus momentum_buffer when momentum > 0 and grad_avg
    when centered (PyTorch's names, so state dicts line up). Nothing in its update depends on the
    step count, so a staged (CUDA graph) step uploads nothing; its hyper-parameters, all passed by
    value, may not change after the capture."""

    _by_value_keys = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                 flat=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered), flat=flat)

    def _check_hyper(self, h):
        _nonnegative("RMSprop", h, "lr", "alpha", "eps", "weight_decay", "momentum")
        h["centered"] = bool(h["centered"])

    def _state_names(self, group):
        return ("square_avg",) + (("momentum_buffer",) if group["momentum"] > 0 else ()) + (
            ("grad_avg",) if group["centered"] else ())

    def _kernel(self, group, params, grads, states, step, hyper=None):
        ops.rmsprop_step(
            params, grads, states["square_avg"], states.get("momentum_buffer", []), states.get("grad_avg", []),
            group["lr"], group["alpha"], group["eps"], group["weight_decay"], group["momentum"], group["centered"],
        )
