"""Gradient penalties (WGAN-GP, R1) against torch.autograd.grad(..., create_graph=True), and the
README's WGAN-GP snippet, executed as written.

The torch tests are skipped where torch is not installed (it is never a dependency). Both sides run
in float64 with the same weights and inputs; |pygan - torch| <= 1e-9 * max(|torch|, 1) per array.
"""

import re
from pathlib import Path

import numpy as np
import pytest

import pygan
from pygan import losses, nn
from pygan.autograd import Tensor, grad
from pygan.nn import functional as F

README = Path(__file__).resolve().parent.parent / "README.md"


def close(a, b, tol=1e-9):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * max(np.abs(b).max(), 1.0))


def critic_weights(rng):
    return {
        "w1": rng.standard_normal((4, 1, 4, 4)) * 0.3, "b1": rng.standard_normal(4) * 0.1,
        "w2": rng.standard_normal((8, 4, 4, 4)) * 0.3,
        "gamma": rng.uniform(0.5, 1.5, 8), "beta": rng.standard_normal(8) * 0.1,
        "rm": rng.standard_normal(8) * 0.1, "rv": rng.uniform(0.5, 2.0, 8),
        "wl": rng.standard_normal((1, 8)) * 0.3, "bl": rng.standard_normal(1) * 0.1,
    }


def pygan_critic(p, norm):
    """conv(4,2,1)+bias -> leaky ReLU -> conv(4,2,1) -> [batch norm] -> leaky ReLU -> avg pool -> linear."""

    def D(x):
        h = F.leaky_relu(F.conv2d(x, p["w1"], p["b1"], 2, 1), 0.2)
        h = F.conv2d(h, p["w2"], None, 2, 1)
        if norm != "none":
            h = F.batch_norm(h, p["rm"], p["rv"], p["gamma"], p["beta"], training=norm == "batch-train")
        h = F.avg_pool2d(F.leaky_relu(h, 0.2), 2)
        return F.linear(h.reshape(h.shape[0], -1), p["wl"], p["bl"]).reshape(-1)

    return D


def torch_critic(torch, p, norm):
    tf = torch.nn.functional

    def D(x):
        h = tf.leaky_relu(tf.conv2d(x, p["w1"], p["b1"], 2, 1), 0.2)
        h = tf.conv2d(h, p["w2"], None, 2, 1)
        if norm != "none":
            h = tf.batch_norm(h, p["rm"], p["rv"], p["gamma"], p["beta"], training=norm == "batch-train")
        h = tf.avg_pool2d(tf.leaky_relu(h, 0.2), 2)
        return tf.linear(h.reshape(h.shape[0], -1), p["wl"], p["bl"]).reshape(-1)

    return D


TRAINED = ("w1", "b1", "w2", "gamma", "beta", "wl", "bl")


@pytest.mark.parametrize("norm", ["none", "batch-train", "batch-eval"])
def test_wgan_gp_penalty_matches_torch(rng, norm):
    torch = pytest.importorskip("torch")
    weights = critic_weights(rng)
    x = rng.uniform(-1, 1, (3, 1, 8, 8))

    p = {k: Tensor(v.copy(), requires_grad=k in TRAINED) for k, v in weights.items()}
    xt = Tensor(x.copy(), requires_grad=True)
    (g,) = grad(pygan_critic(p, norm)(xt).sum(), xt, create_graph=True)
    gp = ((((g * g).reshape(3, -1).sum(axis=1)) ** 0.5 - 1.0) ** 2).mean()
    gp.backward()

    q = {k: torch.tensor(v.copy(), requires_grad=k in TRAINED) for k, v in weights.items()}
    xq = torch.tensor(x.copy(), requires_grad=True)
    (gq,) = torch.autograd.grad(torch_critic(torch, q, norm)(xq).sum(), xq, create_graph=True)
    gpq = ((gq.reshape(3, -1).norm(dim=1) - 1) ** 2).mean()
    gpq.backward()

    close(g.data, gq.detach().numpy())
    close(gp.item(), gpq.item())
    for k in TRAINED:
        # a weight the penalty does not depend on (the last bias; gamma/beta unused) gets no gradient
        mine = np.zeros(weights[k].shape) if p[k].grad is None else p[k].grad.data
        theirs = np.zeros(weights[k].shape) if q[k].grad is None else q[k].grad.numpy()
        close(mine, theirs)
    assert p["w1"].grad is not None and p["wl"].grad is not None
    # the penalty's own gradient in x: second order in x, zero (None here) unless batch norm uses
    # batch statistics; otherwise D is piecewise linear in x
    close(np.zeros(x.shape) if xt.grad is None else xt.grad.data, xq.grad.numpy())
    assert (xt.grad is None) == (norm != "batch-train")


def _penalty_and_gradients(weights, x, norm, device, dtype):
    from pygan.autograd import to_device

    p = {k: Tensor(to_device(v.astype(dtype), device), requires_grad=k in TRAINED) for k, v in weights.items()}
    xt = Tensor(to_device(x.astype(dtype), device), requires_grad=True)
    (g,) = grad(pygan_critic(p, norm)(xt).sum(), xt, create_graph=True)
    gp = ((((g * g).reshape(x.shape[0], -1).sum(axis=1)) ** 0.5 - 1.0) ** 2).mean()
    gp.backward()
    grads = [p[k].grad for k in ("w1", "b1", "w2", "gamma", "wl")] + [xt.grad]
    shapes = [weights[k].shape for k in ("w1", "b1", "w2", "gamma", "wl")] + [x.shape]
    return [g.numpy(), gp.numpy()] + [np.zeros(s) if t is None else t.numpy() for t, s in zip(grads, shapes)]


@pytest.mark.cuda
@pytest.mark.parametrize("norm", ["batch-train", "batch-eval"])
def test_gradient_penalty_on_the_gpu_matches_the_reference(rng, norm):
    """create_graph through our CUDA kernels (CuPy arrays, float32) against the float64 reference;
    tolerance 1e-4 * max(|reference|, 1) per array."""
    weights, x = critic_weights(rng), rng.uniform(-1, 1, (3, 1, 8, 8))
    reference = _penalty_and_gradients(weights, x, norm, "cpu", np.float64)
    on_gpu = _penalty_and_gradients(weights, x, norm, "cuda", np.float32)
    for mine, ref in zip(on_gpu, reference):
        close(mine, ref, tol=1e-4)


def test_conv_transpose_and_tanh_penalty_matches_torch(rng):
    """A generator-like path: ||d/dz sum(tanh(convT(z))^2)||^2 and its gradients in w and z."""
    torch = pytest.importorskip("torch")
    z, w, b = rng.standard_normal((2, 3, 3, 3)), rng.standard_normal((3, 2, 4, 4)) * 0.3, rng.standard_normal(2)

    zp, wp, bp = (Tensor(a.copy(), requires_grad=True) for a in (z, w, b))
    (gp_,) = grad((F.sigmoid(F.tanh(F.conv_transpose2d(zp, wp, bp, 2, 1, 1))) ** 2).sum(), zp, create_graph=True)
    (gp_ * gp_).sum().backward()

    zq, wq, bq = (torch.tensor(a.copy(), requires_grad=True) for a in (z, w, b))
    tf = torch.nn.functional
    (gq,) = torch.autograd.grad((torch.sigmoid(torch.tanh(tf.conv_transpose2d(zq, wq, bq, 2, 1, 1))) ** 2).sum(), zq,
                                create_graph=True)
    (gq * gq).sum().backward()
    for mine, theirs in ((gp_.data, gq.detach()), (zp.grad.data, zq.grad), (wp.grad.data, wq.grad), (bp.grad.data, bq.grad)):
        close(mine, theirs.numpy())


def test_classifier_losses_second_order_match_torch(rng):
    """cross_entropy and BCE-with-logits (with a soft target that requires grad) under create_graph."""
    torch = pytest.importorskip("torch")
    x, w, t = rng.standard_normal((4, 5)), rng.standard_normal((3, 5)), rng.uniform(0, 1, (4, 3))
    labels = np.array([0, 2, 1, 2])

    xp, wp, tp = (Tensor(a.copy(), requires_grad=True) for a in (x, w, t))
    logits = F.linear(xp, wp)
    loss = F.cross_entropy(logits, labels) + F.binary_cross_entropy_with_logits(logits, tp)
    (gx,) = grad(loss, xp, create_graph=True)
    (gx * gx).sum().backward()

    xq, wq, tq = (torch.tensor(a.copy(), requires_grad=True) for a in (x, w, t))
    tf = torch.nn.functional
    lq = tf.linear(xq, wq)
    loss_q = tf.cross_entropy(lq, torch.tensor(labels)) + tf.binary_cross_entropy_with_logits(lq, tq)
    (gq,) = torch.autograd.grad(loss_q, xq, create_graph=True)
    (gq * gq).sum().backward()
    for mine, theirs in ((gx.data, gq.detach()), (xp.grad.data, xq.grad), (wp.grad.data, wq.grad), (tp.grad.data, tq.grad)):
        close(mine, theirs.numpy())


def test_r1_penalty_of_a_module_critic_matches_torch(rng):
    """pygan.losses.r1_penalty on an nn.Module critic (float32) against torch's same critic."""
    torch = pytest.importorskip("torch")
    pygan.manual_seed(0)
    D = nn.Sequential(nn.Conv2d(1, 4, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(4, 8, 4, 2, 1, bias=False),
                      nn.BatchNorm2d(8), nn.LeakyReLU(0.2), nn.Conv2d(8, 1, 2, 1, 0, bias=False), nn.Flatten())
    Dq = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 4, 2, 1), torch.nn.LeakyReLU(0.2), torch.nn.Conv2d(4, 8, 4, 2, 1, bias=False),
                             torch.nn.BatchNorm2d(8), torch.nn.LeakyReLU(0.2), torch.nn.Conv2d(8, 1, 2, 1, 0, bias=False),
                             torch.nn.Flatten())
    with torch.no_grad():
        for (name, mine), theirs in zip(D.named_parameters(), Dq.parameters()):
            theirs.copy_(torch.from_numpy(mine.numpy().copy()))
    real = rng.uniform(-1, 1, (4, 1, 8, 8)).astype(np.float32)

    r1 = losses.r1_penalty(D, Tensor(real))
    r1.backward()

    xq = torch.tensor(real, requires_grad=True)
    (gq,) = torch.autograd.grad(Dq(xq).sum(), xq, create_graph=True)
    r1q = (gq * gq).reshape(4, -1).sum(dim=1).mean()
    r1q.backward()
    close(r1.item(), r1q.item(), tol=1e-5)
    for (name, mine), theirs in zip(D.named_parameters(), Dq.parameters()):
        # BatchNorm's beta moves only leaky-ReLU masks: no gradient (torch: zeros)
        assert (mine.grad is None) == (name == "3.bias"), name
        close(np.zeros(mine.shape) if mine.grad is None else mine.grad.numpy(), theirs.grad.numpy(), tol=1e-4)


def readme_snippet():
    """The WGAN-GP code block of README.md's "Using the library" section (marked by a comment)."""
    text = README.read_text()
    section = text[text.index("## Using the library"):]
    section = section[: section.index("\n## ", 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    marked = [b for b in blocks if "WGAN-GP" in b.splitlines()[0]]
    assert len(marked) == 1, "README's Using-the-library section needs exactly one block starting with a WGAN-GP comment"
    return marked[0]


def test_readme_wgan_gp_snippet_runs(rng):
    code = readme_snippet()
    images = rng.uniform(-1, 1, (8, 1, 32, 32)).astype(np.float32)
    namespace = {"images": images}
    exec(compile(code, str(README) + ":wgan-gp", "exec"), namespace)
    loss_d, D = namespace["loss_d"], namespace["D"]
    assert np.isfinite(loss_d.item())
    for name, prm in D.named_parameters():
        assert prm.grad is not None and np.isfinite(prm.grad.numpy()).all(), name


def test_losses_gradient_penalty_matches_torch(rng):
    """pygan.losses.gradient_penalty (WGAN-GP, interpolates drawn from the given generator) against
    torch on the same interpolates, with a batch-norm DCGAN-style critic."""
    torch = pytest.importorskip("torch")
    weights = critic_weights(rng)
    real, fake = rng.uniform(-1, 1, (3, 1, 8, 8)), rng.uniform(-1, 1, (3, 1, 8, 8))

    p = {k: Tensor(v.copy(), requires_grad=k in TRAINED) for k, v in weights.items()}
    gp = losses.gradient_penalty(pygan_critic(p, "batch-train"), Tensor(real), Tensor(fake), rng=np.random.default_rng(7))
    gp.backward()

    e = np.random.default_rng(7).random((3, 1, 1, 1))  # the draw gradient_penalty makes
    q = {k: torch.tensor(v.copy(), requires_grad=k in TRAINED) for k, v in weights.items()}
    x_hat = torch.tensor(e * real + (1 - e) * fake, requires_grad=True)
    (gq,) = torch.autograd.grad(torch_critic(torch, q, "batch-train")(x_hat).sum(), x_hat, create_graph=True)
    gpq = ((((gq * gq).reshape(3, -1).sum(dim=1) + 1e-12) ** 0.5 - 1) ** 2).mean()
    gpq.backward()
    close(gp.item(), gpq.item())
    for k in TRAINED:
        close(np.zeros(weights[k].shape) if p[k].grad is None else p[k].grad.data,
              np.zeros(weights[k].shape) if q[k].grad is None else q[k].grad.numpy())
