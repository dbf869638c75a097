"""Adam's device-memory `hyper` and the staged optimiser step on the CUDA kernels, under host emulation.

The same spec as tests/test_staged_optim.py, on csrc/adam.cu and csrc/rmsprop.cu through
pygan._emu (outputs poisoned): one repeated adam_step call whose hyper array is rewritten before
each launch follows the reference's by-value trajectory over several steps (a kernel that kept the
capture step's corrections, or never ran, fails), both variants, tensors that are misaligned or
more than one launch holds; the binding refuses a bad hyper with a ValueError naming it; and
stage_step + launch_staged is bitwise step() on the kernels and close to the reference.
"""

import numpy as np
import pytest

from pygan import ops
from pygan.ops import emulated, reference

from test_staged_optim import OPTIMISERS, STEPS, assert_bitwise, optimiser_trajectory

pytestmark = pytest.mark.skipif(not emulated.available(), reason="pygan._emu (host emulation) not built")

TOL = dict(rtol=1e-5, atol=1e-6)


def variants():
    if not emulated.available():
        return []
    return list(range(1, len(emulated.backend().variants()["adam"]) + 1))


def state(rng, sizes, misaligned=()):
    def arr(n, i, scale, positive=False):
        a = rng.standard_normal(n + (i in misaligned)) * scale
        a = (np.abs(a) if positive else a).astype(np.float32)
        return a[1:] if i in misaligned else a  # a 4-byte offset: not 16-byte aligned

    return ([arr(n, i, 1.0) for i, n in enumerate(sizes)], [arr(n, i, 0.1) for i, n in enumerate(sizes)],
            [arr(n, i, 0.1, True) for i, n in enumerate(sizes)])


@pytest.mark.parametrize("variant", variants())
@pytest.mark.parametrize("sizes,misaligned", [([1, 3, 257, 2049, 6], (2, 4)), ([(i % 5) + 1 for i in range(40)], ())],
                         ids=["sizes", "40-tensors"])
def test_adam_reads_each_steps_corrections_from_device_memory(variant, sizes, misaligned):
    emu = emulated.backend(poison=True)
    rng = np.random.default_rng(variant)
    params, m, v = state(rng, sizes, misaligned)
    ref = [[a.copy() for a in group] for group in (params, m, v)]
    start = [a.copy() for a in params]
    hyper = np.full(2, np.nan, np.float32)
    lr, beta1, beta2, wd = 1e-2, 0.5, 0.9, 0.05
    for t in range(1, STEPS + 1):
        grads = [rng.standard_normal(a.shape).astype(np.float32) for a in params]
        hyper[...] = reference.adam_hyper(t, lr, beta1, beta2)  # what stage_step uploads
        emu.adam_step(params, grads, m, v, 1, 123.0, beta1, beta2, 1e-8, wd, hyper, variant=variant)
        reference.adam_step(ref[0], grads, ref[1], ref[2], t, lr, beta1, beta2, 1e-8, wd)
        for got, want in zip(params + m + v, ref[0] + ref[1] + ref[2]):
            np.testing.assert_allclose(got, want, **TOL)
    assert all(np.abs(a - a0).max() > 1e-5 for a, a0 in zip(params, start))  # the kernel did run


@pytest.mark.parametrize("variant", variants())
def test_adam_hyper_is_bitwise_the_by_value_kernel(variant):
    emu = emulated.backend(poison=True)
    rng = np.random.default_rng(10 + variant)
    a = state(rng, [5, 130, 8])
    b, ref = ([[x.copy() for x in group] for group in a] for _ in range(2))
    hyper = np.empty(2, np.float32)
    for t in range(1, 4):
        grads = [rng.standard_normal(x.shape).astype(np.float32) for x in a[0]]
        emu.adam_step(*a[:1], grads, *a[1:], t, 2e-3, 0.5, 0.999, 1e-8, 0.0, variant=variant)
        hyper[...] = reference.adam_hyper(t, 2e-3, 0.5, 0.999)
        emu.adam_step(*b[:1], grads, *b[1:], 1, 0.0, 0.5, 0.999, 1e-8, 0.0, hyper, variant=variant)
        reference.adam_step(*ref[:1], grads, *ref[1:], t, 2e-3, 0.5, 0.999, 1e-8, 0.0)
    for x, y, r in zip(sum(a, []), sum(b, []), sum(ref, [])):
        assert_bitwise(x, y)
        np.testing.assert_allclose(y, r, **TOL)  # and the kernels did run


@pytest.mark.parametrize("hyper,message", [
    (np.zeros(2, np.float64), "adam_step: hyper must be float32, got float64"),
    (np.zeros(3, np.float32), r"adam_step: hyper must have shape \(2,\) \(\[step_size, bias_correction2_sqrt\]\), got \(3,\)"),
    (np.zeros((2, 1), np.float32), r"adam_step: hyper must have shape \(2,\)"),
    (np.zeros(4, np.float32)[::2], "adam_step: hyper must be C-contiguous"),
    ([0.1, 1.0], "adam_step: hyper must be"),
])
def test_the_binding_refuses_a_bad_hyper_naming_it(hyper, message):
    from pygan import _emu

    p = np.ones(3, np.float32)
    before = p.copy()
    with pytest.raises(ValueError, match=message):
        _emu.adam_step([p], [np.ones(3, np.float32)], [np.zeros(3, np.float32)], [np.zeros(3, np.float32)],
                       1, 1e-3, 0.9, 0.999, 1e-8, 0.0, hyper)
    assert_bitwise(p, before)


@pytest.mark.parametrize("kind", ["adam", "rmsprop-momentum-centered"])
def test_staged_steps_on_the_kernels_are_bitwise_step_and_close_to_the_reference(monkeypatch, kind):
    assert kind in OPTIMISERS
    reference_run, _ = optimiser_trajectory(kind, False)  # numpy (the CPU backend)
    monkeypatch.setattr(ops, "backend_for", lambda array: emulated.backend(poison=True))
    staged, opt = optimiser_trajectory(kind, True)
    eager, _ = optimiser_trajectory(kind, False)
    monkeypatch.undo()
    for x, y, r in zip(staged, eager, reference_run):
        assert_bitwise(x, y)
        np.testing.assert_allclose(x, r, **TOL)
    initial, _ = optimiser_trajectory(kind, False, steps=0)
    assert all(np.abs(x - x0).max() > 1e-4 for x, x0 in zip(staged, initial))  # the updates happened
    assert {st["step"] for st in opt.state.values()} == {STEPS}
