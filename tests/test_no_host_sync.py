"""No registry op synchronises the device with the host in its argument checks (issue 13, section 2).

On CuPy, int(a), float(a), bool(a), a.item(), a.get(), np.asarray(a) and reductions read back to
the host wait for the device: one such read in an op's checks stalls the whole pipeline on every
call. Here every array of one valid call per op (tests/test_cpu_backend.py's table) is wrapped in
DeviceArray, a stand-in whose type lives in a module named "cupy..." (as the registry's device test
reads it) and which raises on every host read-back, and the registry's backend is a stub that
records the call. Each op must reach its backend without touching the data.

The labels' range, still checked for numpy labels (test_bad_inputs.py), is left to the kernel on
the device: an out-of-range device label reaches the backend here, and the emulated kernels turn it
into a NaN loss term and gradient row (test_emulated_pool_softmax_linear.py).
"""

import numpy as np
import pytest

from pygan import ops

from test_cpu_backend import _registry_calls


class HostSync(AssertionError):
    pass


class DeviceArray:
    """Metadata of a device array (shape, dtype, ndim, size, strides): free on CuPy. Every read of
    its values raises HostSync."""

    def __init__(self, a):
        self._a = np.asarray(a)
        self.shape, self.dtype, self.ndim = self._a.shape, self._a.dtype, self._a.ndim
        self.size, self.strides, self.itemsize = self._a.size, self._a.strides, self._a.itemsize

    def _sync(self, *args, **kwargs):
        raise HostSync("an argument check read a device array's values back to the host")

    __int__ = __float__ = __bool__ = __index__ = __complex__ = __array__ = __iter__ = _sync
    item = get = tolist = min = max = any = all = sum = mean = _sync
    __lt__ = __le__ = __gt__ = __ge__ = __eq__ = __ne__ = _sync
    __hash__ = object.__hash__

    def __len__(self):
        return self.shape[0]


DeviceArray.__module__ = "cupy._core.core"


def _on_device(v):
    if isinstance(v, (np.ndarray, np.generic)):
        return DeviceArray(v)
    if isinstance(v, list):
        return [_on_device(a) for a in v]
    return v


class StubBackend:
    def __init__(self):
        self.called = []

    def __getattr__(self, name):
        def op(*args, **kwargs):
            self.called.append(name)

        return op


def _run_on_device(monkeypatch, name, args):
    stub = StubBackend()
    monkeypatch.setattr(ops, "backend_for", lambda array: stub)
    getattr(ops, name)(*[_on_device(a) for a in args])
    return stub.called


def test_the_stand_in_catches_a_host_read():
    """The check below can fail: DeviceArray refuses the reads the old label check made."""
    labels = DeviceArray(np.array([0, 1, 2]))
    assert type(labels).__module__.split(".")[0] == "cupy"
    for read in (lambda: int(labels.min()), lambda: int(labels.max()), lambda: bool(labels),
                 lambda: np.asarray(labels), lambda: float(labels), lambda: labels.item()):
        with pytest.raises(HostSync):
            read()


@pytest.mark.parametrize("name", sorted(_registry_calls(np.random.default_rng(0))))
def test_no_op_reads_device_values_in_its_checks(monkeypatch, name):
    args, _ = _registry_calls(np.random.default_rng(0))[name]
    assert _run_on_device(monkeypatch, name, args) == [name]


@pytest.mark.parametrize("name", ["softmax_cross_entropy_forward", "softmax_cross_entropy_backward"])
@pytest.mark.parametrize("bad", [-1, 4, 2**40])
def test_out_of_range_labels_are_left_to_the_device_and_refused_on_the_host(monkeypatch, name, bad):
    args, _ = _registry_calls(np.random.default_rng(0))[name]
    logits, labels = args[0], args[1].copy()
    labels[2] = bad
    args = (logits, labels) + tuple(args[2:])
    assert _run_on_device(monkeypatch, name, args) == [name]
    with pytest.raises(ValueError, match="labels must lie in"):
        getattr(ops, name)(*args)
