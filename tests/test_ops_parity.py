"""Every registry op exists in every backend with the reference's exact signature: reference,
cpu (numba; pygan/ops/cpu.py), cuda and the emulated native wrappers.

The conv/batch-norm ops get their CUDA kernels in issue 5; until then they are listed in
PENDING_ISSUE_5 and must NOT be defined in pygan.ops.cuda (no stubs). Remove a name from the
list when its CUDA wrapper lands: the list only shrinks.
"""

import inspect

import pytest

from pygan import ops
from pygan.ops import cpu, cuda, emulated, reference

PENDING_ISSUE_5 = set()  # issue 5 landed: conv2d, conv_transpose2d, batch_norm (csrc/conv2d.cu, csrc/batchnorm.cu)


def test_pending_names_are_registry_ops():
    assert PENDING_ISSUE_5 <= set(ops.OPS)


def test_reference_defines_exactly_the_registry_ops():
    assert set(reference.__all__) == set(ops.OPS)
    for name in ops.OPS:
        assert callable(getattr(reference, name)), name
        assert callable(getattr(ops, name)), name


@pytest.mark.parametrize("name", ops.OPS)
def test_registry_signature_matches_reference(name):
    assert inspect.signature(getattr(ops, name)) == inspect.signature(getattr(reference, name))


@pytest.mark.parametrize("name", sorted(set(ops.OPS) - PENDING_ISSUE_5))
def test_cuda_signature_matches_reference(name):
    assert hasattr(cuda, name), f"pygan.ops.cuda does not define {name}"
    assert inspect.signature(getattr(cuda, name)) == inspect.signature(getattr(reference, name))


def test_pending_names_not_defined_in_cuda():
    defined = sorted(name for name in PENDING_ISSUE_5 if hasattr(cuda, name))
    assert not defined, f"{defined} defined in pygan.ops.cuda: remove them from PENDING_ISSUE_5"


@pytest.mark.parametrize("name", sorted(set(ops.OPS) - PENDING_ISSUE_5))
def test_emulated_backend_matches_reference(name):
    """The shared wrappers (native.py) take the reference's parameters plus keyword-only variant."""
    if not emulated.available():
        pytest.skip("pygan._emu not built")
    params = list(inspect.signature(getattr(emulated.backend(), name)).parameters.values())
    assert params[-1].name == "variant" and params[-1].kind is inspect.Parameter.KEYWORD_ONLY
    assert inspect.Signature(params[:-1]) == inspect.signature(getattr(reference, name))


@pytest.mark.parametrize("name", ops.OPS)
def test_cpu_backend_signature_matches_reference(name):
    assert hasattr(cpu, name), f"pygan.ops.cpu does not define {name}"
    assert inspect.signature(getattr(cpu, name)) == inspect.signature(getattr(reference, name))


def test_cpu_backend_defines_exactly_the_registry_ops():
    assert set(cpu.__all__) == set(ops.OPS)
