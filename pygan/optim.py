"""Adam with torch.optim.Adam's semantics (L2 weight decay added to the gradient, bias correction).

The update itself is the registry's `adam_step`, which updates a list of tensors at once (one
launch on the GPU); this class keeps the per-parameter state and the hyper-parameters.
"""

from . import ops
from .autograd import Tensor, array_module, to_device


class Adam:
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        _check_hyper(defaults)
        params = list(params)
        if not params:
            raise ValueError("Adam: params is an empty list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = defaults
        self.param_groups = []
        seen = set()
        for g in groups:
            group = dict(defaults, **{k: v for k, v in g.items() if k != "params"})
            group["betas"] = tuple(group["betas"])
            _check_hyper(group)
            group["params"] = list(g["params"])
            for p in group["params"]:
                if not isinstance(p, Tensor):
                    raise TypeError(f"Adam: params must be Tensors, got {type(p).__name__}")
                if not p.requires_grad:
                    raise ValueError(f"Adam: a parameter of shape {p.shape} does not require grad")
                if id(p) in seen:
                    raise ValueError("Adam: a parameter appears twice")
                seen.add(id(p))
            self.param_groups.append(group)
        self.state = {}  # id(param) -> {"step": int, "exp_avg": array, "exp_avg_sq": array}

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

    def step(self):
        """One update of every parameter that has a gradient; parameters with the same step count
        and hyper-parameters go to the kernel together."""
        for group in self.param_groups:
            batches = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.device != p.device:
                    raise ValueError(f"Adam: a gradient is on {p.grad.device} but its parameter is on {p.device}")
                st = self.state.get(id(p))
                if st is None or st["exp_avg"].shape != p.data.shape or array_module(st["exp_avg"]) is not array_module(p.data):
                    xp = array_module(p.data)
                    st = {"step": 0, "exp_avg": xp.zeros_like(p.data), "exp_avg_sq": xp.zeros_like(p.data)}
                    self.state[id(p)] = st
                st["step"] += 1
                batches.setdefault((st["step"], p.device, p.dtype), []).append((p, st))
            beta1, beta2 = group["betas"]
            for (step, _, _), items in batches.items():
                ops.adam_step(
                    [p.data for p, _ in items], [p.grad.data for p, _ in items],
                    [s["exp_avg"] for _, s in items], [s["exp_avg_sq"] for _, s in items],
                    step, group["lr"], beta1, beta2, group["eps"], group["weight_decay"],
                )

    def state_dict(self):
        """PyTorch's layout: state by parameter index, param_groups with indices."""
        index, state, groups = 0, {}, []
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                st = self.state.get(id(p))
                if st is not None:
                    state[index] = {"step": st["step"], "exp_avg": Tensor(st["exp_avg"]), "exp_avg_sq": Tensor(st["exp_avg_sq"])}
                ids.append(index)
                index += 1
            groups.append({k: v for k, v in group.items() if k != "params"} | {"params": ids})
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"Adam.load_state_dict: {len(groups)} parameter groups given, the optimiser has {len(self.param_groups)}")
        params = []
        for saved, group in zip(groups, self.param_groups):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"Adam.load_state_dict: a group has {len(saved['params'])} parameters, the optimiser's has {len(group['params'])}"
                )
            params.extend(zip(saved["params"], group["params"]))
        new_state = {}
        for key, p in params:
            st = state_dict["state"].get(key, state_dict["state"].get(str(key)))
            if st is None:
                continue
            arrays = {}
            for name in ("exp_avg", "exp_avg_sq"):
                a = st[name].data if isinstance(st[name], Tensor) else st[name]
                if tuple(a.shape) != p.shape:
                    raise ValueError(f"Adam.load_state_dict: {name} of parameter {key} has shape {tuple(a.shape)}, expected {p.shape}")
                arrays[name] = to_device(a, p.device).astype(p.dtype, copy=True)
            new_state[id(p)] = {"step": int(st["step"]), **arrays}
        for saved, group in zip(groups, self.param_groups):
            hyper = {k: v for k, v in saved.items() if k != "params"}
            hyper["betas"] = tuple(hyper.get("betas", group["betas"]))
            _check_hyper(hyper)
            group.update(hyper)
        self.state = new_state


def _check_hyper(h):
    if not h["lr"] >= 0:
        raise ValueError(f"Adam: lr must be >= 0, got {h['lr']}")
    if len(h["betas"]) != 2 or not all(0.0 <= b < 1.0 for b in h["betas"]):
        raise ValueError(f"Adam: betas must be two numbers in [0, 1), got {h['betas']}")
    if not h["eps"] >= 0:
        raise ValueError(f"Adam: eps must be >= 0, got {h['eps']}")
    if not h["weight_decay"] >= 0:
        raise ValueError(f"Adam: weight_decay must be >= 0, got {h['weight_decay']}")
