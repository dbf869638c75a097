"""Adam and RMSprop with torch.optim's semantics (L2 weight decay added to the gradient).

The updates themselves are the registry's `adam_step` / `rmsprop_step`, which update a list of
tensors at once (one launch on the GPU); these classes keep the per-parameter state and the
hyper-parameters. `Optimizer` holds what both share: parameter groups, the per-parameter state
(a "step" count plus named arrays shaped like the parameter), `zero_grad`, and `state_dict` /
`load_state_dict` in PyTorch's layout (state by parameter index, param_groups with indices).
"""

from . import ops
from .autograd import Tensor, array_module, to_device


class Optimizer:
    """Base class. A subclass sets `defaults` through __init__ and defines:

    _check_hyper(group)       ValueError naming a bad hyper-parameter (normalise it in place first)
    _state_names(group)       the names of the state arrays a parameter of this group needs
    _update(group, items)     one update of [(param, state)], all with the same step, device, dtype
    """

    def __init__(self, params, defaults):
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

    def _params(self):
        for group in self.param_groups:
            for p in group["params"]:
                yield group, p

    def zero_grad(self, set_to_none=True):
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
                st[n] = array_module(p.data).zeros_like(p.data)
        return st

    def step(self):
        """One update of every parameter that has a gradient; parameters with the same step count,
        device and dtype go to the kernel together."""
        for group in self.param_groups:
            batches = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.device != p.device:
                    raise ValueError(
                        f"{type(self).__name__}: a gradient is on {p.grad.device} but its parameter is on {p.device}"
                    )
                st = self._param_state(group, p)
                st["step"] += 1
                batches.setdefault((st["step"], p.device, p.dtype), []).append((p, st))
            for items in batches.values():
                self._update(group, items)

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
                new_state[id(p)] = {"step": int(st["step"]), **arrays}
        for hyper, group in zip(hypers, self.param_groups):
            group.update(hyper)
        self.state = new_state

    # -- what a subclass defines ---------------------------------------------------------------
    def _check_hyper(self, h):
        raise NotImplementedError

    def _state_names(self, group):
        raise NotImplementedError

    def _update(self, group, items):
        raise NotImplementedError


def _nonnegative(opt, h, *names):
    for n in names:
        if not h[n] >= 0:
            raise ValueError(f"{opt}: {n} must be >= 0, got {h[n]}")


class Adam(Optimizer):
    """torch.optim.Adam (amsgrad=False): state exp_avg, exp_avg_sq per parameter."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def _check_hyper(self, h):
        h["betas"] = tuple(h["betas"])
        _nonnegative("Adam", h, "lr")
        if len(h["betas"]) != 2 or not all(0.0 <= b < 1.0 for b in h["betas"]):
            raise ValueError(f"Adam: betas must be two numbers in [0, 1), got {h['betas']}")
        _nonnegative("Adam", h, "eps", "weight_decay")

    def _state_names(self, group):
        return ("exp_avg", "exp_avg_sq")

    def _update(self, group, items):
        beta1, beta2 = group["betas"]
        ops.adam_step(
            [p.data for p, _ in items], [p.grad.data for p, _ in items],
            [s["exp_avg"] for _, s in items], [s["exp_avg_sq"] for _, s in items],
            items[0][1]["step"], group["lr"], beta1, beta2, group["eps"], group["weight_decay"],
        )


class RMSprop(Optimizer):
    """torch.optim.RMSprop: state square_avg, plus momentum_buffer when momentum > 0 and grad_avg
    when centered (PyTorch's names, so state dicts line up)."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered))

    def _check_hyper(self, h):
        _nonnegative("RMSprop", h, "lr", "alpha", "eps", "weight_decay", "momentum")
        h["centered"] = bool(h["centered"])

    def _state_names(self, group):
        return ("square_avg",) + (("momentum_buffer",) if group["momentum"] > 0 else ()) + (
            ("grad_avg",) if group["centered"] else ())

    def _update(self, group, items):
        ops.rmsprop_step(
            [p.data for p, _ in items], [p.grad.data for p, _ in items], [s["square_avg"] for _, s in items],
            [s["momentum_buffer"] for _, s in items] if group["momentum"] > 0 else [],
            [s["grad_avg"] for _, s in items] if group["centered"] else [],
            group["lr"], group["alpha"], group["eps"], group["weight_decay"], group["momentum"], group["centered"],
        )
