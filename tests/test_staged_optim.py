"""Updates a CUDA graph can capture (issue 16): adam_step's `hyper` and the optimisers' staged step.

The spec, checked here on the numpy reference and the default CPU backend (numba where it has it;
test_emulated_staged_optim.py: the CUDA kernels under host emulation):
- adam_step(..., hyper) with hyper = float32 [lr / (1 - b1^t), sqrt(1 - b2^t)] (reference.adam_hyper)
  is bitwise adam_step(..., step=t, lr); step and lr are then not used. The values are read when
  the op runs: the SAME call repeated (as a captured launch is), with hyper rewritten before each,
  follows the by-value trajectory over several steps, and one whose hyper kept step 1's would not;
- Optimizer.stage_step() (host: step counts + 1, the per-step values uploaded) followed by
  launch_staged() (one update per group over the flat buffers) is bitwise step() for Adam and
  RMSprop, with the step counts in state_dict; Adam's lr may change between steps, a value a
  captured launch freezes may not (ValueError naming it);
- ModelEMA.stage(t) + average_staged() is bitwise update(t).
"""

import numpy as np
import pytest

from pygan import losses, ops, optim
from pygan.autograd import Tensor
from pygan.ema import ModelEMA
from pygan.ops import reference

from test_flat_params import cpu_backend, models  # noqa: F401 -- the fixture is used by name

SHAPES = [(3,), (4, 5), (2, 3, 3, 3), (7,), (1,)]
STEPS = 6

OPTIMISERS = {
    "adam": lambda params: optim.Adam(params, lr=2e-3, betas=(0.5, 0.999), flat=True),
    "adam-wd": lambda params: optim.Adam(params, lr=1e-3, weight_decay=0.1, flat=True),
    "rmsprop": lambda params: optim.RMSprop(params, lr=5e-4, flat=True),
    "rmsprop-momentum-centered": lambda params: optim.RMSprop(params, lr=5e-4, momentum=0.9, centered=True,
                                                              weight_decay=0.01, flat=True),
}


def assert_bitwise(a, b, what=""):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), what


# -- the op ----------------------------------------------------------------------------------------


def adam_trajectory(rng_seed, hyper_mode, steps=STEPS, lr=2e-3, beta1=0.5, beta2=0.999, wd=0.01):
    """Parameters and state after `steps` adam_steps through the registry. hyper_mode: None (by
    value), "staged" (one repeated call, hyper rewritten before each) or "frozen" (written once)."""
    rng = np.random.default_rng(rng_seed)
    params = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    hyper = np.full(2, np.nan, np.float32)
    for t in range(1, steps + 1):
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
        step_lr = lr * (0.5 if t >= 4 else 1.0)  # a schedule: the staged lr changes too
        if hyper_mode is None:
            ops.adam_step(params, grads, m, v, t, step_lr, beta1, beta2, 1e-8, wd)
            continue
        if hyper_mode == "staged" or t == 1:
            hyper[...] = reference.adam_hyper(t, step_lr, beta1, beta2)
        # the captured call: the same step and lr every time (neither is used with hyper)
        ops.adam_step(params, grads, m, v, 1, 123.0, beta1, beta2, 1e-8, wd, hyper)
    return params + m + v


def test_adam_hyper_is_the_by_value_update_at_every_step(cpu_backend):
    by_value = adam_trajectory(0, None)
    staged = adam_trajectory(0, "staged")
    for a, b in zip(staged, by_value):
        assert_bitwise(a, b)
    frozen = adam_trajectory(0, "frozen")
    assert not all(np.array_equal(a, b) for a, b in zip(frozen, by_value))  # step 1's corrections differ


def test_adam_hyper_values_are_what_the_launcher_computes():
    for step, lr, b1, b2 in [(1, 2e-4, 0.5, 0.999), (7, 1e-3, 0.9, 0.999), (1000, 0.1, 0.0, 0.5)]:
        step_size, bc2_sqrt = reference.adam_hyper(step, lr, b1, b2)
        assert step_size == lr / (1.0 - b1**step) and bc2_sqrt == np.sqrt(1.0 - b2**step)


@pytest.mark.parametrize("hyper,error,message", [
    (np.zeros(2, np.float64), ValueError, r"hyper must be a float32 array of shape \(2,\)"),
    (np.zeros(3, np.float32), ValueError, r"hyper must be a float32 array of shape \(2,\).*shape \(3,\)"),
    (np.zeros((1, 2), np.float32), ValueError, r"hyper must be a float32 array of shape \(2,\)"),
    ([0.1, 1.0], TypeError, "hyper must be None or an array, got list"),
    (0.5, TypeError, "hyper must be None or an array, got float"),
])
def test_bad_hyper_is_refused_naming_it(hyper, error, message):
    p = [np.ones(3, np.float32)]
    before = p[0].copy()
    with pytest.raises(error, match=message):
        ops.adam_step(p, [np.ones(3, np.float32)], [np.zeros(3, np.float32)], [np.zeros(3, np.float32)],
                      1, 1e-3, 0.9, 0.999, 1e-8, 0.0, hyper)
    assert_bitwise(p[0], before)


# -- the optimisers ---------------------------------------------------------------------------------


def with_grads(opt, params, grads):
    """Gradients as backward leaves them in the flat layout: in the gradient buffer's views."""
    opt.zero_grad()
    for p, g in zip(params, grads):
        view = opt.flat.grad_view(p)
        view[...] = g
        p.grad = Tensor(view)


def optimiser_trajectory(kind, staged, steps=STEPS, seed=1):
    """`steps` updates of random parameters with random gradients: step() every time, or (staged)
    step() once (the state exists), then stage_step() + launch_staged()."""
    rng = np.random.default_rng(seed)
    params = [Tensor(rng.standard_normal(s).astype(np.float32), requires_grad=True) for s in SHAPES]
    opt = OPTIMISERS[kind](params)
    for t in range(1, steps + 1):
        if t == 4 and kind.startswith("adam"):
            for g in opt.param_groups:
                g["lr"] *= 0.5  # staged: lr travels with the bias corrections
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
        if staged and t > 1:
            opt.stage_step()
            with_grads(opt, params, grads)  # (a graph stages before its replay computes the gradients)
            opt.launch_staged()
        else:
            with_grads(opt, params, grads)
            opt.step()
    return [p.data.copy() for p in params], opt


@pytest.mark.parametrize("kind", sorted(OPTIMISERS))
def test_staged_steps_are_bitwise_step(cpu_backend, kind):
    (a, opt_a), (b, opt_b) = optimiser_trajectory(kind, True), optimiser_trajectory(kind, False)
    for x, y in zip(a, b):
        assert_bitwise(x, y)
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    assert [s["step"] for s in sa["state"].values()] == [STEPS] * len(SHAPES)
    assert sa["param_groups"] == sb["param_groups"]
    for i in sb["state"]:
        assert sa["state"][i]["step"] == sb["state"][i]["step"]
        for name, value in sb["state"][i].items():
            if name != "step":
                assert_bitwise(sa["state"][i][name].data, value.data, name)


def test_staged_gan_steps_are_bitwise_eager(cpu_backend):
    """A tiny DCGAN: backward through the real layers, then the staged updates."""
    runs = []
    for staged in (False, True):
        G, D = models()
        opt_g, opt_d = (optim.Adam(m.parameters(), lr=2e-3, betas=(0.5, 0.999), flat=True) for m in (G, D))
        rng = np.random.default_rng(3)
        for t in range(4):
            real = Tensor(rng.uniform(-1, 1, (4, 1, 32, 32)).astype(np.float32))
            z = Tensor(rng.standard_normal((4, 8, 1, 1)).astype(np.float32))
            for opt, net in ((opt_d, "D"), (opt_g, "G")):
                if staged and t:
                    opt.stage_step()
                D.zero_grad()
                G.zero_grad()
                fake = G(z)
                if net == "D":
                    losses.d_loss("non-saturating", D(real), D(fake.detach()), 1.0, 0.0).backward()
                else:
                    losses.g_loss("non-saturating", D(fake)).backward()
                opt.launch_staged() if staged and t else opt.step()
        runs.append([p.data.copy() for m in (G, D) for p in m.parameters()])
    for x, y in zip(*runs):
        assert_bitwise(x, y)


def stepped(kind="adam"):
    rng = np.random.default_rng(2)
    params = [Tensor(rng.standard_normal(s).astype(np.float32), requires_grad=True) for s in SHAPES]
    opt = OPTIMISERS[kind](params)
    with_grads(opt, params, [np.ones(p.shape, np.float32) for p in params])
    return params, opt


def test_launch_staged_needs_state_flat_buffers_and_every_gradient():
    params, opt = stepped()
    with pytest.raises(RuntimeError, match="has no optimiser state yet"):
        opt.launch_staged()
    with pytest.raises(RuntimeError, match="has no optimiser state yet"):
        opt.stage_step()
    opt.step()
    params[2].grad = None
    with pytest.raises(RuntimeError, match=r"shape \(2, 3, 3, 3\) has no gradient in the flat gradient buffer"):
        opt.launch_staged()
    plain = optim.Adam([Tensor(np.ones(3, np.float32), requires_grad=True)])
    with pytest.raises(RuntimeError, match="needs flat=True"):
        plain.stage_step()


@pytest.mark.parametrize("kind,key,value,allowed", [
    ("adam", "lr", 1e-4, True),
    ("adam", "betas", (0.9, 0.99), False),
    ("adam", "weight_decay", 0.5, False),
    ("rmsprop", "lr", 1e-4, False),
    ("rmsprop", "alpha", 0.9, False),
])
def test_a_value_the_captured_launch_froze_may_not_change(kind, key, value, allowed):
    params, opt = stepped(kind)
    opt.step()
    opt.stage_step()
    opt.launch_staged()  # "captured" with the current values
    opt.param_groups[0][key] = value
    if allowed:
        opt.stage_step()
        return
    steps = [st["step"] for st in opt.state.values()]
    with pytest.raises(ValueError, match=f"{key} changed after the update was captured"):
        opt.stage_step()
    assert [st["step"] for st in opt.state.values()] == steps  # refused before counting the step


def test_ema_stage_and_average_staged_are_bitwise_update():
    shadows = []
    for staged in (False, True):
        G, _ = models(5)
        G_ema, _ = models(6)
        ema = ModelEMA(G, G_ema, decay=0.999, start=2)
        rng = np.random.default_rng(0)
        for step in range(1, 7):
            for p in G.parameters():
                p.data += rng.standard_normal(p.shape).astype(np.float32) * 0.1
            if staged and step >= ema.start:
                ema.stage(step)
                ema.average_staged()
            else:
                ema.update(step)
        assert ema.updates == 6
        shadows.append({k: v.data.copy() for k, v in G_ema.state_dict().items()})
        with pytest.raises(ValueError, match="before start"):
            ema.stage(1)
    assert shadows[0].keys() == shadows[1].keys()
    for k in shadows[0]:
        assert_bitwise(shadows[0][k], shadows[1][k], k)
