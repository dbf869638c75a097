"""The global random generator behind pygan.randn, module initialisation and data shuffling.

Random numbers are drawn on the host (numpy's PCG64) and moved to the device when asked, so a seed
gives the same numbers on every backend. The state is a JSON-able dict, saved in checkpoints.
"""

import numpy as np

_generator = np.random.Generator(np.random.PCG64(0))


def default_generator():
    return _generator


def manual_seed(seed):
    """Reseed the global generator; returns it."""
    global _generator
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"manual_seed: seed must be a non-negative int, got {seed!r}")
    _generator = np.random.Generator(np.random.PCG64(int(seed)))
    return _generator


def get_rng_state():
    """The generator's state as a plain dict (ints and strings only)."""
    return _generator.bit_generator.state


def set_rng_state(state):
    if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
        raise ValueError("set_rng_state: state must be a dict from get_rng_state() (a PCG64 state)")
    _generator.bit_generator.state = state
