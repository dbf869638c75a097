"""The Python users of issue 11's ops: F.group_norm, nn.GroupNorm / LayerNorm2d / InstanceNorm2d,
optim.RMSprop and generic optimiser checkpoints.

Against torch (skipped without it), float64: modules' outputs and gradients (rtol 1e-9, atol 1e-9),
RMSprop trajectories for every momentum/centered/weight-decay combination (rtol 1e-10, atol 1e-12).
RMSprop against the reference op's numbers exactly (the same float64 code path, rtol 0).
"""

import numpy as np
import pytest

import pygan
from pygan import checkpoint as ckpt
from pygan import nn, optim
from pygan.nn import functional as F
from pygan.ops import reference as R


def tensor64(rng, shape, requires_grad=True):
    return pygan.tensor(rng.standard_normal(shape), requires_grad=requires_grad)


# -- group norm ----------------------------------------------------------------------------------


def test_functional_group_norm_matches_reference(rng):
    x, w, b = tensor64(rng, (3, 6, 4, 2)), tensor64(rng, (6,)), tensor64(rng, (6,))
    y = F.group_norm(x, 3, w, b, 1e-5)
    yr, mean, rstd = R.group_norm_forward(x.data, w.data, b.data, 3, 1e-5)
    np.testing.assert_array_equal(y.data, yr)
    dy = rng.standard_normal(y.shape)
    (y * pygan.tensor(dy)).sum().backward()
    for got, want in zip((x.grad, w.grad, b.grad), R.group_norm_backward(x.data, w.data, dy, mean, rstd, 3)):
        np.testing.assert_allclose(got.data, want, rtol=1e-12, atol=1e-12)


def test_functional_group_norm_without_affine_and_bad_args(rng):
    x = tensor64(rng, (2, 4, 3))
    F.group_norm(x, 2).sum().backward()
    assert x.grad is not None
    with pytest.raises(ValueError, match="num_groups 3 must divide the 4 channels"):
        F.group_norm(x, 3)
    with pytest.raises(TypeError, match="weight must be a pygan Tensor"):
        F.group_norm(x, 2, np.ones(4))


@pytest.mark.parametrize("kind", ["group", "layer", "instance", "instance-affine"])
def test_norm_modules_match_torch(rng, kind):
    torch = pytest.importorskip("torch")
    c = 8
    ours = {"group": lambda: nn.GroupNorm(4, c), "layer": lambda: nn.LayerNorm2d(c),
            "instance": lambda: nn.InstanceNorm2d(c), "instance-affine": lambda: nn.InstanceNorm2d(c, affine=True)}[kind]()
    theirs = {"group": lambda: torch.nn.GroupNorm(4, c), "layer": lambda: torch.nn.GroupNorm(1, c),
              "instance": lambda: torch.nn.InstanceNorm2d(c),
              "instance-affine": lambda: torch.nn.InstanceNorm2d(c, affine=True)}[kind]().double()
    assert set(ours.state_dict()) == set(theirs.state_dict())
    for name, p in ours.named_parameters():  # random affine parameters, the same on both sides
        p.data = rng.standard_normal(p.shape)
        getattr(theirs, name).data = torch.tensor(p.data)
    x = rng.standard_normal((4, c, 5, 3))
    xt = torch.tensor(x, requires_grad=True)
    xo = pygan.tensor(x, requires_grad=True)
    for mode in ("train", "eval"):  # no running statistics: both modes compute the same
        getattr(ours, mode)()
        getattr(theirs, mode)()
        np.testing.assert_allclose(ours(xo).data, theirs(xt).detach().numpy(), rtol=1e-9, atol=1e-9)
    dy = rng.standard_normal(x.shape)
    (ours(xo) * pygan.tensor(dy)).sum().backward()
    theirs(xt).backward(torch.tensor(dy))
    np.testing.assert_allclose(xo.grad.data, xt.grad.numpy(), rtol=1e-9, atol=1e-9)
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.data, getattr(theirs, name).grad.numpy(), rtol=1e-9, atol=1e-9)


def test_norm_module_options_and_errors():
    assert nn.InstanceNorm2d(4).weight is None and list(nn.InstanceNorm2d(4).state_dict()) == []
    ln = nn.LayerNorm2d(4)
    assert ln.num_groups == 1 and set(ln.state_dict()) == {"weight", "bias"} and ln.weight.shape == (4,)
    assert "GroupNorm(2, 4, eps=1e-05, affine=True)" in repr(nn.GroupNorm(2, 4))
    with pytest.raises(ValueError, match="num_groups 3 must divide num_channels 4"):
        nn.GroupNorm(3, 4)
    with pytest.raises(ValueError, match="num_groups must be a positive int"):
        nn.GroupNorm(0, 4)
    with pytest.raises(ValueError, match="track_running_stats"):
        nn.InstanceNorm2d(4, track_running_stats=True)
    with pytest.raises(ValueError, match=r"LayerNorm2d: expected 4-D input"):
        ln(pygan.tensor(np.ones((2, 4, 3), np.float32)))
    with pytest.raises(ValueError, match=r"GroupNorm: expected input \(N, 4, ...\)"):
        nn.GroupNorm(2, 4)(pygan.tensor(np.ones((2, 6, 3), np.float32)))


@pytest.mark.parametrize("norm", ["layer", "instance"])
def test_dcgan_critic_with_per_sample_norms_trains(norm):
    """The Discriminator's norm="layer"/"instance" options build on these modules: one sample's
    score does not depend on the others (no batch statistics), and gradients flow."""
    pygan.manual_seed(0)
    D = pygan.models.Discriminator(ndf=4, nc=1, image_size=32, norm=norm)
    x = pygan.tensor(np.random.default_rng(1).standard_normal((3, 1, 32, 32)).astype(np.float32))
    full = D(x).data.reshape(-1)
    np.testing.assert_allclose(D(x[1:2]).data.reshape(-1), full[1:2], rtol=1e-5, atol=1e-6)
    D(x).sum().backward()
    assert all(p.grad is not None for p in D.parameters())


# -- RMSprop -------------------------------------------------------------------------------------

COMBOS = [dict(momentum=m, centered=c, weight_decay=wd) for m in (0.0, 0.9) for c in (False, True) for wd in (0.0, 0.01)]


@pytest.mark.parametrize("combo", COMBOS, ids=lambda d: "-".join(f"{k}{v}" for k, v in d.items()))
def test_rmsprop_matches_torch(rng, combo):
    torch = pytest.importorskip("torch")
    shapes = [(3, 4), (5,)]
    init = [rng.standard_normal(s) for s in shapes]
    ours = [nn.Parameter(a.copy()) for a in init]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    hyper = dict(lr=1e-2, alpha=0.9, eps=1e-6, **combo)
    opt, topt = optim.RMSprop(ours, **hyper), torch.optim.RMSprop(theirs, **hyper)
    for _ in range(6):
        grads = [rng.standard_normal(s) for s in shapes]
        for p, t, g in zip(ours, theirs, grads):
            p.grad, t.grad = pygan.tensor(g), torch.tensor(g)
        opt.step()
        topt.step()
        for p, t in zip(ours, theirs):
            np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-10, atol=1e-12)
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert set(sd["state"][0]) == set(tsd["state"][0])  # PyTorch's state names
    ours_group = {k for k in sd["param_groups"][0]}
    assert ours_group <= set(tsd["param_groups"][0]) and sd["param_groups"][0]["params"] == [0, 1]
    for name, value in sd["state"][1].items():
        if name != "step":
            np.testing.assert_allclose(value.data, tsd["state"][1][name].numpy(), rtol=1e-10, atol=1e-12)


def test_rmsprop_is_the_reference_op(rng):
    """Two steps of optim.RMSprop give exactly the reference rmsprop_step's numbers."""
    p0, grads = rng.standard_normal(7), [rng.standard_normal(7) for _ in range(2)]
    p = nn.Parameter(p0.copy())
    opt = optim.RMSprop([p], lr=0.05, alpha=0.8, momentum=0.5, centered=True, weight_decay=0.1)
    ref = [p0.copy()], [np.zeros(7)], [np.zeros(7)], [np.zeros(7)]
    for g in grads:
        p.grad = pygan.tensor(g)
        opt.step()
        R.rmsprop_step(ref[0], [g], ref[1], ref[2], ref[3], 0.05, 0.8, 1e-8, 0.1, 0.5, True)
    np.testing.assert_array_equal(p.data, ref[0][0])
    st = opt.state_dict()["state"][0]
    assert st["step"] == 2
    for name, want in zip(("square_avg", "momentum_buffer", "grad_avg"), ref[1:]):
        np.testing.assert_array_equal(st[name].data, want[0])


def test_rmsprop_small_loss_falls(rng):
    """A conv + layer-norm + linear regression on fixed data: RMSprop with momentum lowers the loss."""
    pygan.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.LayerNorm2d(4), nn.LeakyReLU(0.2), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 1))
    x = pygan.tensor(rng.standard_normal((16, 1, 6, 6)).astype(np.float32))
    target = pygan.tensor(rng.standard_normal((16, 1)).astype(np.float32))
    opt = optim.RMSprop(model.parameters(), lr=1e-3, momentum=0.5)
    losses = []
    for _ in range(30):
        diff = model(x) - target
        loss = (diff * diff).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_rmsprop_state_dict_resumes_exactly(rng):
    p0 = rng.standard_normal(5).astype(np.float32)
    grads = [rng.standard_normal(5).astype(np.float32) for _ in range(6)]
    hyper = dict(lr=1e-2, alpha=0.9, momentum=0.9, centered=True)
    straight = nn.Parameter(p0.copy())
    opt = optim.RMSprop([straight], **hyper)
    for g in grads:
        straight.grad = pygan.tensor(g)
        opt.step()
    first = nn.Parameter(p0.copy())
    opt1 = optim.RMSprop([first], **hyper)
    for g in grads[:3]:
        first.grad = pygan.tensor(g)
        opt1.step()
    resumed = nn.Parameter(first.numpy().copy())
    opt2 = optim.RMSprop([resumed], lr=0.5)  # hyper-parameters come back from the state dict too
    opt2.load_state_dict(opt1.state_dict())
    assert opt2.param_groups[0]["centered"] is True and opt2.param_groups[0]["momentum"] == 0.9
    for g in grads[3:]:
        resumed.grad = pygan.tensor(g)
        opt2.step()
    np.testing.assert_array_equal(straight.numpy(), resumed.numpy())


def test_rmsprop_load_state_dict_checks_state_names(rng):
    p = nn.Parameter(rng.standard_normal(3))
    opt = optim.RMSprop([p])
    p.grad = pygan.tensor(rng.standard_normal(3))
    opt.step()
    sd = opt.state_dict()
    sd["param_groups"][0]["momentum"] = 0.9  # now a momentum_buffer is required
    with pytest.raises(ValueError, match="parameter 0 has no momentum_buffer"):
        optim.RMSprop([nn.Parameter(np.zeros(3))]).load_state_dict(sd)
    # turning momentum on later starts a zero buffer
    opt.param_groups[0]["momentum"] = 0.9
    opt.step()
    assert "momentum_buffer" in opt.state_dict()["state"][0]


@pytest.mark.parametrize("kwargs, word", [({"lr": -1.0}, "lr"), ({"alpha": -0.5}, "alpha"), ({"eps": -1.0}, "eps"),
                                          ({"weight_decay": -1.0}, "weight_decay"), ({"momentum": -0.1}, "momentum")])
def test_rmsprop_bad_hyper_parameters_are_named(kwargs, word):
    with pytest.raises(ValueError, match=f"RMSprop: {word} must be >= 0"):
        optim.RMSprop([nn.Parameter(np.ones(2))], **kwargs)


# -- checkpoints of any optimiser ------------------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda ps: optim.Adam(ps, lr=1e-2, betas=(0.5, 0.999)),
    lambda ps: optim.RMSprop(ps, lr=1e-2),
    lambda ps: optim.RMSprop(ps, lr=1e-2, momentum=0.9, centered=True),
], ids=["adam", "rmsprop", "rmsprop-momentum-centered"])
def test_optimizer_checkpoint_round_trip(tmp_path, rng, make):
    params = [nn.Parameter(rng.standard_normal(s).astype(np.float32)) for s in ((2, 3), (4,))]
    opt = make(params)
    for _ in range(2):
        for p in params:
            p.grad = pygan.tensor(rng.standard_normal(p.shape).astype(np.float32))
        opt.step()
    tensors, meta = ckpt.optimizer_tensors("optD", opt)
    ckpt.save(tmp_path / "c.safetensors", tensors, {"optD": meta})
    loaded, lmeta = ckpt.load(tmp_path / "c.safetensors")
    copies = [nn.Parameter(p.numpy().copy()) for p in params]
    opt2 = make(copies)
    ckpt.load_optimizer("optD", opt2, loaded, lmeta["optD"], "c.safetensors")
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for i in a["state"]:
        assert set(a["state"][i]) == set(b["state"][i])
        for name, v in a["state"][i].items():
            if name == "step":
                assert v == b["state"][i][name]
            else:
                np.testing.assert_array_equal(v.data, b["state"][i][name].data)


def test_old_adam_checkpoint_layout_loads(rng):
    """Checkpoints written before the generic code: optG.<i>.exp_avg / .exp_avg_sq and meta steps."""
    p = nn.Parameter(rng.standard_normal(3).astype(np.float32))
    tensors = {"optG.0.exp_avg": np.full(3, 0.5, np.float32), "optG.0.exp_avg_sq": np.full(3, 0.25, np.float32),
               "optG.0.extra.thing": np.zeros(1, np.float32)}  # a deeper name is not this optimiser's
    meta = {"steps": {"0": 7}, "param_groups": [{"lr": 2e-4, "betas": [0.5, 0.999], "eps": 1e-8, "weight_decay": 0.0,
                                                 "params": [0]}]}
    opt = optim.Adam([p])
    ckpt.load_optimizer("optG", opt, tensors, meta, "old.safetensors")
    st = opt.state_dict()["state"][0]
    assert st["step"] == 7 and set(st) == {"step", "exp_avg", "exp_avg_sq"}
    assert opt.param_groups[0]["betas"] == (0.5, 0.999)
    with pytest.raises(ckpt.CheckpointError, match="exp_avg_sq"):
        ckpt.load_optimizer("optG", optim.Adam([p]), {"optG.0.exp_avg": tensors["optG.0.exp_avg"]}, meta, "x")
    with pytest.raises(ckpt.CheckpointError, match="lacks the optimiser tensors"):
        ckpt.load_optimizer("optG", optim.Adam([p]), {}, meta, "x")


@pytest.mark.parametrize("norm", ["layer", "instance"])
def test_wgan_gp_penalty_through_per_sample_norm_critic(norm):
    """The WGAN-GP critic step: gradient_penalty differentiates D's input gradient (create_graph),
    so the norm layers' double backward (GroupNormFunction.backward_graph) is on the path. Every
    parameter gets a finite gradient, and the penalty's parameter gradient matches central
    differences along a random direction (float64, |analytic - numeric| <= 1e-6 + 1e-4 |numeric|)."""
    from pygan import losses

    pygan.manual_seed(0)
    D = pygan.models.Discriminator(ndf=2, nc=1, image_size=32, norm=norm)
    for p in D.parameters():
        p.data = p.data.astype(np.float64)
    rng = np.random.default_rng(3)
    real, fake = (pygan.tensor(rng.standard_normal((2, 1, 32, 32))) for _ in range(2))

    def penalty():
        return losses.gradient_penalty(D, real, fake, rng=np.random.default_rng(7))

    D.zero_grad()
    penalty().backward()
    params = list(D.parameters())
    # the last norm layer's bias only shifts D's output locally: it has no gradient (None)
    assert sum(p.grad is None for p in params) <= 1
    assert all(p.grad is None or np.isfinite(p.grad.data).all() for p in params)
    direction = [rng.standard_normal(p.shape) for p in params]
    analytic = sum(float((p.grad.data * d).sum()) for p, d in zip(params, direction) if p.grad is not None)
    eps, base = 1e-6, [p.data.copy() for p in params]
    values = []
    for sign in (1, -1):
        for p, b, d in zip(params, base, direction):
            p.data = b + sign * eps * d
        values.append(penalty().item())
    for p, b in zip(params, base):
        p.data = b
    numeric = (values[0] - values[1]) / (2 * eps)
    assert abs(analytic - numeric) <= 1e-6 + 1e-4 * abs(numeric), (analytic, numeric)
