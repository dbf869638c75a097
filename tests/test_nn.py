"""nn: module bookkeeping, PyTorch's layer semantics, functional ops through autograd, training."""

import numpy as np
import pytest

import pygan
from pygan import nn, optim
from pygan.autograd import Tensor
from pygan.gradcheck import check_backward
from pygan.nn import functional as F


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.LeakyReLU(0.2))
        self.head = nn.Conv2d(4, 1, 4, stride=2, padding=1)

    def forward(self, x):
        return self.head(self.body(x))


def test_parameters_register_on_assignment():
    m = Tiny()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["body.0.weight", "body.1.weight", "body.1.bias", "head.weight", "head.bias"]
    assert [n for n, _ in m.named_buffers()] == ["body.1.running_mean", "body.1.running_var", "body.1.num_batches_tracked"]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in m.parameters())


def test_train_and_eval_reach_every_submodule():
    m = Tiny().eval()
    assert not any(sub.training for sub in m.modules())
    m.train()
    assert all(sub.training for sub in m.modules())


def test_state_dict_round_trip(rng):
    a, b = Tiny(), Tiny()
    a(pygan.tensor(rng.standard_normal((2, 1, 8, 8)).astype(np.float32)))  # moves running stats
    b.load_state_dict(a.state_dict())
    for (na, ta), (nb, tb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb
        np.testing.assert_array_equal(ta.numpy(), tb.numpy())
    with pytest.raises(KeyError, match="missing"):
        b.load_state_dict({"head.weight": a.head.weight})
    bad = a.state_dict()
    bad["head.weight"] = pygan.zeros(1, 4, 3, 3)
    with pytest.raises(ValueError, match="head.weight"):
        b.load_state_dict(bad)


def test_conv_default_init_is_pytorchs_uniform_bound():
    conv = nn.Conv2d(8, 16, 3)
    bound = 1 / np.sqrt(8 * 9)
    w = conv.weight.numpy()
    assert w.shape == (16, 8, 3, 3) and w.dtype == np.float32
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound
    convT = nn.ConvTranspose2d(8, 16, 4, 2, 1, bias=False)
    assert convT.weight.shape == (8, 16, 4, 4) and convT.bias is None


def test_batchnorm2d_running_statistics_and_eval(rng):
    bn = nn.BatchNorm2d(3)
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32) * 2 + 1
    y = bn(pygan.tensor(x)).numpy()
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * x.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.9 + 0.1 * x.var(axis=(0, 2, 3), ddof=1), rtol=1e-5)
    assert bn.num_batches_tracked.item() == 1
    bn.eval()
    y_eval = bn(pygan.tensor(x)).numpy()
    rm, rv = bn.running_mean.numpy(), bn.running_var.numpy()
    expected = (x - rm[None, :, None, None]) / np.sqrt(rv[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(y_eval, expected, rtol=1e-5, atol=1e-5)
    assert bn.num_batches_tracked.item() == 1


def functional_pair(fn, n_diff):
    """check_backward's (forward, backward) for a functional op of n_diff differentiable tensors."""

    def forward(*xs):
        with pygan.no_grad():
            return fn(*[Tensor(x) for x in xs]).data

    def backward(*args):
        *xs, dy = args
        ts = [Tensor(x.copy(), requires_grad=i < n_diff) for i, x in enumerate(xs)]
        fn(*ts).backward(dy)
        return tuple(t.grad.data if t.grad is not None else None for t in ts)

    return forward, backward


@pytest.mark.parametrize(
    "name, fn, shapes",
    [
        ("conv2d+bias", lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), [(2, 3, 6, 6), (4, 3, 3, 3), (4,)]),
        ("conv_transpose2d", lambda x, w: F.conv_transpose2d(x, w, None, 2, 1, 1), [(2, 3, 3, 3), (3, 2, 4, 4)]),
        ("batch_norm", lambda x, g, b: F.batch_norm(x, None, None, g, b, training=True), [(4, 3, 2, 2), (3,), (3,)]),
        ("leaky_relu", lambda x: F.leaky_relu(x, 0.2), [(3, 4)]),
        ("relu", lambda x: F.relu(x), [(3, 4)]),
        ("tanh", lambda x: F.tanh(x), [(3, 4)]),
        ("sigmoid", lambda x: F.sigmoid(x), [(3, 4)]),
    ],
)
def test_functional_ops_backward_through_autograd(name, fn, shapes, rng):
    arrays = [rng.uniform(0.1, 1.0, s) * rng.choice([-1.0, 1.0], s) for s in shapes]  # away from 0 for ReLU
    forward, backward = functional_pair(fn, len(shapes))
    check_backward(forward, backward, arrays, rng=rng)


def test_bce_with_logits_backward_through_autograd(rng):
    target = (rng.random(6) > 0.5).astype(np.float64)
    forward, backward = functional_pair(lambda x: F.binary_cross_entropy_with_logits(x, Tensor(target)), 1)
    check_backward(forward, backward, [rng.standard_normal(6)], rng=rng)
    loss_sum = F.binary_cross_entropy_with_logits(Tensor(np.zeros(6)), Tensor(target), reduction="sum")
    np.testing.assert_allclose(loss_sum.item(), 6 * np.log(2))


def test_a_small_conv_model_learns(rng):
    """Classify which half of an 8x8 image is brighter: the loss must fall clearly."""
    pygan.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(8), nn.LeakyReLU(0.2),
        nn.Conv2d(8, 8, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 1, 4, stride=1, padding=0),
    )
    opt = optim.Adam(model.parameters(), lr=1e-2, betas=(0.5, 0.999))
    losses = []
    for step in range(60):
        labels = (rng.random(32) > 0.5).astype(np.float32)
        x = rng.standard_normal((32, 1, 8, 8)).astype(np.float32) * 0.5
        x[:, :, :4, :] += (2 * labels - 1)[:, None, None, None]
        logits = model(pygan.tensor(x)).reshape(32)
        loss = F.binary_cross_entropy_with_logits(logits, pygan.tensor(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 0.5  # about log 2: chance
    assert np.mean(losses[-5:]) < 0.1


def test_layers_match_torch_when_available(rng):
    torch = pytest.importorskip("torch")
    pygan.manual_seed(1)
    ours = nn.Sequential(nn.ConvTranspose2d(5, 4, 4, 1, 0, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 2, 4, 2, 1), nn.LeakyReLU(0.2), nn.Tanh())
    theirs = torch.nn.Sequential(torch.nn.ConvTranspose2d(5, 4, 4, 1, 0, bias=False), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                 torch.nn.Conv2d(4, 2, 4, 2, 1), torch.nn.LeakyReLU(0.2), torch.nn.Tanh()).double()
    theirs.load_state_dict({k: torch.from_numpy(v.numpy().astype(np.float64) if v.dtype.kind == "f" else v.numpy())
                            for k, v in ours.state_dict().items()})
    x = rng.standard_normal((3, 5, 1, 1))
    for p in ours.parameters():
        p.data = p.data.astype(np.float64)
    for b in ours.buffers():
        if b.dtype.kind == "f":
            b.data = b.data.astype(np.float64)
    y = ours(pygan.tensor(x))
    xt = torch.from_numpy(x)
    yt = theirs(xt)
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    y.backward(dy)
    yt.backward(torch.from_numpy(dy))
    for (name, p), pt in zip(ours.named_parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), pt.grad.numpy(), rtol=1e-8, atol=1e-10, err_msg=name)


def test_conv_skips_the_input_gradient_nobody_reads_and_weights_match():
    """An input that does not require grad (data) gets no gradient; the weight's is unchanged."""
    import pygan
    from pygan import nn as pnn

    rng = np.random.default_rng(11)
    conv = pnn.Conv2d(2, 3, 4, stride=2, padding=1)
    x_data = rng.standard_normal((2, 2, 8, 8)).astype(np.float32)
    grads = []
    for needs in (False, True):
        conv.zero_grad()
        x = pygan.tensor(x_data, requires_grad=needs)
        (conv(x) * 1.5).sum().backward()
        grads.append((conv.weight.grad.numpy().copy(), conv.bias.grad.numpy().copy(), x.grad))
    (w0, b0, gx0), (w1, b1, gx1) = grads
    assert gx0 is None and gx1 is not None
    np.testing.assert_array_equal(w0, w1)
    np.testing.assert_allclose(b0, b1, rtol=1e-6)


class _CountingBackend:
    """A backend module's stand-in that records the name of every op called on it."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __getattr__(self, name):
        self.calls.append(name)
        return getattr(self.inner, name)


def _inner_backend(which):
    """The backend a counting test wraps: the CPU one, or host emulation with poisoned outputs."""
    from pygan import ops

    if which == "emulated":
        from pygan.ops import emulated

        if not emulated.available():
            pytest.skip("pygan._emu (host emulation) not built")
        return emulated.backend(poison=True)
    return ops.cpu_backend()


@pytest.mark.parametrize("which", ["cpu", "emulated"])
@pytest.mark.parametrize(
    "cin, cout, k, stride, padding, output_padding, hw, bias",
    [
        (5, 4, 4, 1, 0, 0, 1, False),  # G's first layer: noise (N, nz, 1, 1) -> 4x4
        (3, 2, 4, 2, 1, 0, 4, True),  # G's upsampling layers
        (2, 3, 3, 2, 1, 1, 3, True),  # output_padding: rows the forward conv never reads
    ],
)
def test_conv_transpose_skips_the_input_gradient_nobody_reads(monkeypatch, rng, which, cin, cout, k, stride,
                                                              padding, output_padding, hw, bias):
    """ConvTranspose2d on an input that needs no gradient (G's noise) runs only the weight-gradient
    op in backward, never conv_transpose2d_backward nor its input-gradient conv; the weight and bias
    gradients are those of the full backward (computed with the input requiring grad)."""
    from pygan import ops

    inner = _inner_backend(which)
    layer = nn.ConvTranspose2d(cin, cout, k, stride, padding, output_padding, bias=bias)
    x_data = rng.standard_normal((2, cin, hw, hw)).astype(np.float32)
    results = []
    for needs in (False, True):
        backend = _CountingBackend(inner)
        monkeypatch.setattr(ops, "backend_for", lambda array: backend)
        layer.zero_grad()
        x = pygan.tensor(x_data, requires_grad=needs)
        y = layer(x)
        forward_calls = list(backend.calls)
        (y * y).sum().backward()
        monkeypatch.undo()
        grads = [layer.weight.grad.numpy().copy()] + ([layer.bias.grad.numpy().copy()] if bias else [])
        results.append((backend.calls[len(forward_calls):], grads, x.grad))
    (calls0, grads0, gx0), (calls1, grads1, gx1) = results
    assert gx0 is None and gx1 is not None and gx1.shape == x_data.shape
    assert "conv_transpose2d_backward" in calls1
    assert "conv_transpose2d_backward" not in calls0 and "conv2d_forward" not in calls0, calls0
    assert "conv2d_backward_weight" in calls0, calls0
    for g0, g1 in zip(grads0, grads1):
        assert np.isfinite(g0).all()
        np.testing.assert_allclose(g0, g1, rtol=1e-5, atol=1e-5 * max(np.abs(g1).max(), 1.0))


@pytest.mark.parametrize("which", ["cpu", "emulated"])
@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_frozen_conv_computes_only_the_input_gradient(monkeypatch, rng, which, transpose, bias):
    """A conv whose weight needs no gradient (D frozen in G's step) runs no weight-gradient op in
    backward; its input gradient is the full backward's, and the weight keeps no gradient."""
    from pygan import ops

    inner = _inner_backend(which)
    layer = (nn.ConvTranspose2d(3, 2, 4, 2, 1, bias=bias) if transpose else nn.Conv2d(3, 2, 4, 2, 1, bias=bias))
    x_data = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    full = {"conv_transpose2d_backward"} if transpose else {"conv2d_backward"}
    results = []
    for frozen in (True, False):
        backend = _CountingBackend(inner)
        monkeypatch.setattr(ops, "backend_for", lambda array: backend)
        layer.zero_grad()
        layer.requires_grad_(not frozen)
        x = pygan.tensor(x_data, requires_grad=True)
        y = layer(x)
        n_forward = len(backend.calls)
        (y * y).sum().backward()
        monkeypatch.undo()
        results.append((backend.calls[n_forward:], x.grad.numpy().copy(), layer.weight.grad))
    layer.requires_grad_(True)
    (calls_frozen, gx_frozen, gw_frozen), (calls_full, gx_full, gw_full) = results
    assert full & set(calls_full), calls_full
    assert not full & set(calls_frozen) and "conv2d_backward_weight" not in calls_frozen, calls_frozen
    assert gw_frozen is None and gw_full is not None
    assert np.isfinite(gx_frozen).all()
    np.testing.assert_allclose(gx_frozen, gx_full, rtol=1e-5, atol=1e-5 * max(np.abs(gx_full).max(), 1.0))


def _unfused_forward(seq, x):
    """What nn.Sequential computed before fusing: each module in turn."""
    for m in seq:
        x = m(x)
    return x


@pytest.mark.parametrize("which", ["cpu", "reference", "emulated"])
@pytest.mark.parametrize("act", ["leaky", "relu"])
@pytest.mark.parametrize("training", [True, False])
def test_sequential_fuses_batch_norm_and_activation(monkeypatch, rng, which, act, training):
    """A BatchNorm2d followed by a LeakyReLU or ReLU in nn.Sequential runs as the fused op (one call,
    no separate activation op) and gives the unfused result: outputs, input and parameter gradients,
    running statistics."""
    from pygan import ops
    from pygan.ops import reference

    if which == "emulated":
        from pygan.ops import emulated

        if not emulated.available():
            pytest.skip("pygan._emu (host emulation) not built")
        inner = emulated.backend(poison=True)
    else:
        inner = reference if which == "reference" else ops.cpu_backend()
    activation = nn.LeakyReLU(0.2) if act == "leaky" else nn.ReLU()
    seq = nn.Sequential(nn.Conv2d(2, 3, 3, 1, 1), nn.BatchNorm2d(3), activation, nn.Conv2d(3, 2, 1))
    seq.train(training)
    bn = seq[1]
    bn.weight.data[...] = rng.uniform(0.5, 1.5, 3)
    bn.bias.data[...] = rng.standard_normal(3)
    bn.running_mean.data[...] = rng.standard_normal(3)
    bn.running_var.data[...] = rng.uniform(0.5, 2.0, 3)
    x_data = rng.standard_normal((4, 2, 5, 5)).astype(np.float32)
    dy = rng.standard_normal((4, 2, 5, 5)).astype(np.float32)
    results = []
    for forward in (seq.forward, lambda x: _unfused_forward(seq, x)):
        state = {k: v.numpy().copy() for k, v in seq.state_dict().items()}
        backend = _CountingBackend(inner)
        monkeypatch.setattr(ops, "backend_for", lambda array: backend)
        seq.zero_grad()
        x = pygan.tensor(x_data, requires_grad=True)
        y = forward(x)
        y.backward(pygan.tensor(dy))
        monkeypatch.undo()
        results.append((backend.calls, y.numpy().copy(), x.grad.numpy().copy(),
                        {n: p.grad.numpy().copy() for n, p in seq.named_parameters()},
                        {k: v.numpy().copy() for k, v in seq.state_dict().items()}))
        for k, v in seq.state_dict().items():  # the same starting point for the second run
            v.data[...] = state[k]
    (calls_f, y_f, gx_f, gp_f, st_f), (calls_u, y_u, gx_u, gp_u, st_u) = results
    assert "batch_norm_leaky_relu_forward" in calls_f and "batch_norm_leaky_relu_backward" in calls_f
    assert "leaky_relu_forward" not in calls_f and "batch_norm_forward" not in calls_f, calls_f
    assert "leaky_relu_forward" in calls_u
    tol = dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y_f, y_u, **tol)
    np.testing.assert_allclose(gx_f, gx_u, **tol)
    for name in gp_u:
        np.testing.assert_allclose(gp_f[name], gp_u[name], rtol=1e-4, atol=1e-4, err_msg=name)
    for name in st_u:
        np.testing.assert_allclose(st_f[name], st_u[name], rtol=1e-6, atol=1e-6, err_msg=name)


def test_fused_batch_norm_activation_double_backward_matches_unfused(rng):
    """create_graph through the fused op (what a gradient penalty on a batch-norm D does) gives the
    unfused composition's second-order gradients (float64 reference)."""
    seq = nn.Sequential(nn.BatchNorm2d(3), nn.LeakyReLU(0.2))
    seq.to("cpu")
    for t in list(seq.parameters()) + [seq[0].running_mean, seq[0].running_var]:
        t.data = t.data.astype(np.float64)
    seq[0].weight.data[...] = rng.uniform(0.5, 1.5, 3)
    seq[0].bias.data[...] = rng.standard_normal(3)
    x_data = rng.standard_normal((4, 3, 3, 3))
    w_out = rng.standard_normal((4, 3, 3, 3))
    grads = []
    for forward in (seq.forward, lambda x: _unfused_forward(seq, x)):
        seq.zero_grad()
        x = pygan.tensor(x_data, requires_grad=True)
        y = forward(x)
        (gx,) = pygan.autograd.grad((y * pygan.tensor(w_out)).sum(), [x], create_graph=True)
        (gx * gx).sum().backward()
        grads.append([t.grad if t.grad is None else t.grad.numpy().copy() for t in [x, *seq.parameters()]])
    assert grads[0][0] is not None and grads[0][1] is not None  # x and gamma get second-order gradients
    for a, b in zip(*grads):
        assert (a is None) == (b is None)  # beta's (0: it enters gx only through the constant mask) in both
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)
