"""Whole models through the CUDA kernels' wrappers, run under host emulation, against the reference.

Per-op tests check each kernel; these check that the models compose them correctly (layouts, the
1x1-conv linear, int64 labels, batch-norm modes, gradient accumulation): the registry is pointed at
the emulated backend for the test, so every op of a forward and backward pass goes through
pygan/ops/native.py and the kernels in csrc/. Tiny sizes: every CUDA thread is a host thread.
Tolerance: |emulated - reference| <= 1e-4 * max|reference| + 1e-5 (float32 sums in other orders).
"""

import numpy as np
import pytest

from pygan import classifier, nn, ops
from pygan.autograd import Tensor
from pygan.models import Discriminator, Generator
from pygan.nn import functional as F
from pygan.ops import emulated
from pygan.random import manual_seed

pytestmark = pytest.mark.skipif(not emulated.available(), reason="pygan._emu (host emulation) not built")


@pytest.fixture
def on_emulation(monkeypatch):
    """Run `fn()` once on the reference and once with every registry op on the emulated kernels."""

    def run(fn):
        reference = fn()
        monkeypatch.setattr(ops, "backend_for", lambda array: emulated.backend(poison=True))
        try:
            return reference, fn()
        finally:
            monkeypatch.undo()

    return run


def close(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * max(np.abs(b).max(), 1.0) + 1e-5)


def test_classifier_features_and_a_training_step(on_emulation):
    extractor = classifier.load("fashion-mnist")
    model = extractor.model
    x = np.random.default_rng(0).uniform(-1, 1, (2, 1, 32, 32)).astype(np.float32)
    labels = np.array([3, 7], dtype=np.int32)  # the wrapper widens labels to int64

    def features():
        model.eval()
        return extractor(x)

    (f_ref, p_ref), (f_emu, p_emu) = on_emulation(features)
    close(f_emu, f_ref)
    close(p_emu, p_ref)

    def step():
        model.train()
        model.zero_grad()
        loss = F.cross_entropy(model(Tensor(x)), labels)
        loss.backward()
        return [loss.item()] + [p.grad.numpy().copy() for p in model.parameters()]

    ref, emu = on_emulation(step)
    for a, b in zip(emu, ref):
        close(a, b)


def test_dcgan_discriminator_and_generator_step(on_emulation):
    manual_seed(0)
    G, D = Generator(nz=8, ngf=4, nc=1, image_size=32), Discriminator(ndf=4, nc=1, image_size=32)
    z = np.random.default_rng(1).standard_normal((2, 8, 1, 1)).astype(np.float32)
    real = np.random.default_rng(2).uniform(-1, 1, (2, 1, 32, 32)).astype(np.float32)

    def step():
        G.zero_grad()
        D.zero_grad()
        fake = G(Tensor(z))
        logits = D(fake)
        loss = F.binary_cross_entropy_with_logits(logits, Tensor(np.ones(2, np.float32)))
        loss = loss + F.binary_cross_entropy_with_logits(D(Tensor(real)), Tensor(np.zeros(2, np.float32)))
        loss.backward()  # D is applied twice: its gradients accumulate
        return [fake.numpy().copy(), loss.item()] + [p.grad.numpy().copy() for p in G.parameters()] + \
               [p.grad.numpy().copy() for p in D.parameters()]

    ref, emu = on_emulation(step)
    for a, b in zip(emu, ref):
        close(a, b)
