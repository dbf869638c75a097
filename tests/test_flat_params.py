"""Optimisers over flat parameter buffers (optim.Adam/RMSprop(flat=True), optim.FlatBuffers).

The spec: with flat=True the parameters module.parameters() hands out are the same Tensors, their
data and gradients are views of one contiguous buffer per role, backward accumulates into the
gradient buffer, zero_grad clears it in one call, and a step whose parameters all have a gradient
is ONE update over one tensor per role. The update is elementwise, so the trajectory is bitwise
the per-tensor one on the same backend: checked on the numpy reference and the default CPU backend
(test_emulated_flat_params.py: the emulated CUDA kernels); state dicts (hence checkpoints) are the same in both layouts.
"""

import numpy as np
import pytest

from pygan import checkpoint as ckpt
from pygan import losses, nn, ops, optim
from pygan.autograd import Tensor
from pygan.models import Discriminator, Generator
from pygan.random import manual_seed

OPTIMISERS = {
    "adam": lambda params, flat: optim.Adam(params, lr=2e-3, betas=(0.5, 0.999), flat=flat),
    "adam-wd": lambda params, flat: optim.Adam(params, lr=1e-3, weight_decay=0.1, flat=flat),
    "rmsprop": lambda params, flat: optim.RMSprop(params, lr=5e-4, flat=flat),
    "rmsprop-momentum-centered": lambda params, flat: optim.RMSprop(params, lr=5e-4, momentum=0.9, centered=True,
                                                                   weight_decay=0.01, flat=flat),
}


@pytest.fixture(params=["reference", "default"])
def cpu_backend(request, monkeypatch):
    """Every registry op on the numpy reference, or on the default CPU backend (numba where it has it)."""
    if request.param == "reference":
        monkeypatch.setattr(ops, "_cpu_module", ops.reference)
    else:
        monkeypatch.setattr(ops, "_cpu_module", None)
        ops.cpu_backend()
    return request.param


def models(seed=3):
    manual_seed(seed)
    return Generator(nz=8, ngf=4, nc=1, image_size=32), Discriminator(ndf=4, nc=1, image_size=32)


def gan_steps(kind, flat, steps=3, seed=3):
    """A few D and G steps of a tiny DCGAN (D applied twice per D step, G's backward through D);
    returns everything that should not depend on the layout."""
    G, D = models(seed)
    opt_g, opt_d = OPTIMISERS[kind](G.parameters(), flat), OPTIMISERS[kind](D.parameters(), flat)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        real = Tensor(rng.uniform(-1, 1, (4, 1, 32, 32)).astype(np.float32))
        z = Tensor(rng.standard_normal((4, 8, 1, 1)).astype(np.float32))
        D.zero_grad()
        fake = G(z)
        err_d = losses.d_loss("non-saturating", D(real), D(fake.detach()), 1.0, 0.0)
        err_d.backward()
        opt_d.step()
        G.zero_grad()
        err_g = losses.g_loss("non-saturating", D(fake))
        err_g.backward()
        opt_g.step()
    return {"G": [p.numpy().copy() for p in G.parameters()], "D": [p.numpy().copy() for p in D.parameters()],
            "optG": ckpt.optimizer_tensors("optG", opt_g), "optD": ckpt.optimizer_tensors("optD", opt_d)}


def assert_same(a, b):
    for net in ("G", "D"):
        assert len(a[net]) == len(b[net])
        for x, y in zip(a[net], b[net]):
            np.testing.assert_array_equal(x, y, err_msg=net)
    for name in ("optG", "optD"):
        (ta, ma), (tb, mb) = a[name], b[name]
        assert ma == mb, name
        assert ta.keys() == tb.keys()
        for k in ta:
            np.testing.assert_array_equal(np.asarray(ta[k]), np.asarray(tb[k]), err_msg=k)


@pytest.mark.parametrize("kind", sorted(OPTIMISERS))
def test_flat_training_is_bitwise_the_per_tensor_training(cpu_backend, kind):
    assert_same(gan_steps(kind, flat=True), gan_steps(kind, flat=False))


def test_parameters_stay_the_same_tensors_and_become_views_of_one_buffer(rng):
    G, _ = models()
    params = list(G.parameters())
    before = [p.numpy().copy() for p in params]
    opt = optim.Adam(G.parameters(), flat=True)
    flat = opt.flat
    assert [id(p) for p in G.parameters()] == [id(p) for p in params]
    for p, b in zip(params, before):
        assert np.shares_memory(p.data, flat.params) and p.data.flags.c_contiguous
        np.testing.assert_array_equal(p.data, b)
        start, _ = flat.offsets[id(p)]
        assert start % 4 == 0  # 16-byte aligned views
    assert flat.params.ndim == 1 and flat.params.size >= sum(p.numel() for p in params)
    # writing into the buffer is writing into the parameters, and back
    flat.params[...] = 0
    assert all(not p.data.any() for p in params)


def test_backward_accumulates_into_the_gradient_buffer_and_zero_grad_clears_it_in_one_call(monkeypatch):
    G, D = models()
    opt = optim.Adam(D.parameters(), flat=True)
    x = Tensor(np.random.default_rng(0).uniform(-1, 1, (2, 1, 32, 32)).astype(np.float32))
    D(x).sum().backward()
    once = [p.grad.numpy().copy() for p in D.parameters()]
    D(x).sum().backward()  # accumulates: twice the first gradient
    for p, g in zip(D.parameters(), once):
        assert p.grad.data is opt.flat.grad_view(p)
        assert np.shares_memory(p.grad.data, opt.flat.grads)
        np.testing.assert_array_equal(p.grad.numpy(), g + g)
    calls = []
    monkeypatch.setattr(opt.flat, "grads", _Spy(opt.flat.grads, calls))
    opt.zero_grad(set_to_none=False)
    assert calls == ["fill"]
    monkeypatch.undo()
    assert not opt.flat.grads.any()
    assert all(p.grad is not None and not p.grad.data.any() for p in D.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in D.parameters()) and not opt.flat.grads.any()


class _Spy:
    """The gradient buffer, recording the calls made on it."""

    def __init__(self, a, calls):
        self._a, self._calls = a, calls

    def fill(self, value):
        self._calls.append("fill")
        self._a.fill(value)

    def __getattr__(self, name):
        return getattr(self._a, name)


@pytest.mark.parametrize("kind", ["adam", "rmsprop-momentum-centered"])
def test_a_full_step_is_one_update_over_one_tensor_per_role(monkeypatch, kind):
    _, D = models()
    opt = OPTIMISERS[kind](D.parameters(), True)
    x = Tensor(np.random.default_rng(0).uniform(-1, 1, (2, 1, 32, 32)).astype(np.float32))
    op = "adam_step" if kind == "adam" else "rmsprop_step"
    calls = []
    real = getattr(ops, op)

    def spy(params, *args):
        calls.append([a.size for a in params])
        return real(params, *args)

    monkeypatch.setattr(ops, op, spy)
    for _ in range(2):
        D.zero_grad()
        D(x).sum().backward()
        opt.step()
    assert calls == [[opt.flat.size]] * 2


def test_a_parameter_without_a_gradient_does_not_move_and_the_step_is_still_exact():
    x = Tensor(np.random.default_rng(1).uniform(-1, 1, (2, 1, 32, 32)).astype(np.float32))
    results = []
    for layout in (False, True):
        _, D = models()
        opt = OPTIMISERS["adam"](D.parameters(), layout)
        for step in range(3):
            D.zero_grad()
            D(x).sum().backward()
            frozen = list(D.parameters())[0]
            if step == 1:
                frozen.grad = None  # no gradient this step: Adam must not touch it
                before = frozen.numpy().copy()
            opt.step()
            if step == 1:
                np.testing.assert_array_equal(frozen.numpy(), before)
        results.append([p.numpy().copy() for p in D.parameters()] + [opt.state_dict()])
    for a, b in zip(results[0][:-1], results[1][:-1]):
        np.testing.assert_array_equal(a, b)
    steps = [[st["step"] for st in r[-1]["state"].values()] for r in results]
    assert steps[0] == steps[1] and steps[0][0] == 2 and steps[0][1] == 3


def test_replaced_data_and_gradients_are_copied_into_the_buffers():
    _, D = models()
    opt = optim.Adam(D.parameters(), flat=True)
    p = list(D.parameters())[0]
    new = np.full(p.shape, 0.25, dtype=np.float32)
    p.data = new  # as code that assigns instead of writing in place
    p.grad = Tensor(np.ones(p.shape, dtype=np.float32))
    for q in list(D.parameters())[1:]:
        q.grad = Tensor(np.zeros(q.shape, dtype=np.float32))
    opt.step()
    assert p.data is not new and np.shares_memory(p.data, opt.flat.params)
    assert np.shares_memory(p.grad.data, opt.flat.grads)
    assert np.all(p.data < 0.25)  # stepped from the assigned values
    p.data = np.zeros((3,), dtype=np.float32)
    with pytest.raises(ValueError, match="flat layout needs shape"):
        opt.step()


def test_flat_needs_one_device_and_one_dtype():
    a = nn.Parameter(np.zeros(3, dtype=np.float32))
    b = nn.Parameter(np.zeros(3, dtype=np.float64))
    with pytest.raises(ValueError, match="one device with one dtype"):
        optim.Adam([a, b], flat=True)


def test_param_groups_are_contiguous_ranges_each_updated_at_once():
    G, D = models()
    g_params, d_params = list(G.parameters()), list(D.parameters())
    results = []
    for layout in (False, True):
        G, D = models()
        opt = optim.Adam([{"params": G.parameters()}, {"params": D.parameters(), "lr": 1e-2}], lr=1e-3, flat=layout)
        z = Tensor(np.random.default_rng(0).standard_normal((2, 8, 1, 1)).astype(np.float32))
        for _ in range(2):
            opt.zero_grad()
            D(G(z)).sum().backward()
            opt.step()
        results.append([p.numpy().copy() for p in list(G.parameters()) + list(D.parameters())])
    assert len(g_params) + len(d_params) == len(results[0])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    (g0, g1), (d0, d1) = opt.flat.group_ranges
    assert g0 == 0 and g1 == d0 and d1 == opt.flat.size


@pytest.mark.parametrize("save_flat,load_flat", [(True, False), (False, True), (True, True)])
def test_optimiser_checkpoints_load_and_resume_identically_in_either_layout(tmp_path, save_flat, load_flat):
    """Save after 2 steps in one layout, load into the other, continue 2 steps: bitwise the straight
    run's 4 steps."""
    straight = gan_steps("adam", flat=False, steps=4)
    G, D = models()
    opt_g, opt_d = OPTIMISERS["adam"](G.parameters(), save_flat), OPTIMISERS["adam"](D.parameters(), save_flat)
    rng = np.random.default_rng(3)

    def step(G, D, opt_g, opt_d):
        real = Tensor(rng.uniform(-1, 1, (4, 1, 32, 32)).astype(np.float32))
        z = Tensor(rng.standard_normal((4, 8, 1, 1)).astype(np.float32))
        D.zero_grad()
        fake = G(z)
        losses.d_loss("non-saturating", D(real), D(fake.detach()), 1.0, 0.0).backward()
        opt_d.step()
        G.zero_grad()
        losses.g_loss("non-saturating", D(fake)).backward()
        opt_g.step()

    for _ in range(2):
        step(G, D, opt_g, opt_d)
    path = str(tmp_path / "c.safetensors")
    tensors = {}
    for prefix, m in (("G", G), ("D", D)):
        tensors.update(ckpt.module_tensors(prefix, m))
    tg, mg = ckpt.optimizer_tensors("optG", opt_g)
    td, md = ckpt.optimizer_tensors("optD", opt_d)
    tensors.update(tg)
    tensors.update(td)
    ckpt.save(path, {k: np.asarray(v) for k, v in tensors.items()}, {"optG": mg, "optD": md})
    loaded, meta = ckpt.load(path)
    G2, D2 = models(seed=99)  # other initial weights: everything must come from the checkpoint
    opt_g2, opt_d2 = OPTIMISERS["adam"](G2.parameters(), load_flat), OPTIMISERS["adam"](D2.parameters(), load_flat)
    ckpt.load_module("G", G2, loaded, path)
    ckpt.load_module("D", D2, loaded, path)
    ckpt.load_optimizer("optG", opt_g2, loaded, meta["optG"], path)
    ckpt.load_optimizer("optD", opt_d2, loaded, meta["optD"], path)
    if load_flat:
        for p in D2.parameters():
            assert np.shares_memory(p.data, opt_d2.flat.params)
        for st in opt_d2.state.values():
            assert np.shares_memory(st["exp_avg"], opt_d2.flat.state["exp_avg"])
    for _ in range(2):
        step(G2, D2, opt_g2, opt_d2)
    resumed = {"G": [p.numpy() for p in G2.parameters()], "D": [p.numpy() for p in D2.parameters()],
               "optG": ckpt.optimizer_tensors("optG", opt_g2), "optD": ckpt.optimizer_tensors("optD", opt_d2)}
    assert_same(resumed, straight)
