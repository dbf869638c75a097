"""Flat parameter buffers through the CUDA optimiser kernels under host emulation.

The same tiny DCGAN steps as tests/test_flat_params.py, every registry op on the emulated kernels
(outputs poisoned): the flat layout's single launch over one tensor per role gives bitwise the
per-tensor launches' parameters and state, and the kernels did run (the result is close to the
reference's, far from the initial weights).
"""

import numpy as np
import pytest

from pygan import ops
from pygan.ops import emulated

from test_flat_params import assert_same, gan_steps

pytestmark = pytest.mark.skipif(not emulated.available(), reason="pygan._emu (host emulation) not built")


@pytest.mark.parametrize("kind", ["adam", pytest.param("rmsprop-momentum-centered", marks=pytest.mark.slow)])
def test_flat_training_is_bitwise_the_per_tensor_training_under_emulation(monkeypatch, kind):
    initial = gan_steps(kind, flat=False, steps=0)
    monkeypatch.setattr(ops, "backend_for", lambda array: emulated.backend(poison=True))
    a, b = gan_steps(kind, flat=True, steps=1), gan_steps(kind, flat=False, steps=1)
    assert_same(a, b)
    monkeypatch.undo()
    reference = gan_steps(kind, flat=False, steps=1)
    for x, y, x0 in zip(a["D"], reference["D"], initial["D"]):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-4)
        assert np.abs(x - x0).max() > 1e-4  # the update happened
