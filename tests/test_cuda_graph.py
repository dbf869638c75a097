"""`pygan train --cuda-graph` without a GPU: what a capture needs, checked on the CPU.

pygan.cuda_graph captures D's and G's whole step (the bodies Trainer._graph_body_d/_g: forward,
backward, the optimiser update as one launch over the flat buffers, --clip, the EMA average) and
replays them; before each replay the host stages the batch, z, the step counts and the per-step
values the update and the EMA read from device memory; one read-back per step. A GPU is needed
for the capture itself (benchmarks/gpu_suite.sh runs it); here cuda_graph.HostGraphs stands in
for it, replaying a graph by running its body again, and the tests check what makes a real replay
equivalent:
- a graph-mode run gives bitwise the eager run's losses, weights, optimiser state and EMA, resumes
  exactly, and would not if a replay reused the capture step's bias corrections;
- the updates happen inside the bodies (one launch per optimiser), none between the replays;
- inside a body nothing reads device values back to the host, copies host data to the device or
  draws host random numbers, every replay makes the same op calls, and every array a body writes
  or reads that outlives it (parameters, gradients, optimiser state, BatchNorm buffers, static
  inputs, summaries, the staged per-step values) keeps its memory from one replay to the next;
- every reason to stay eager is named in one line on stderr, and training goes on.
"""

import csv
import types

import numpy as np
import pytest

import pygan.autograd
import pygan.train
from pygan import cuda_graph, ops
from pygan.autograd import Tensor
from pygan.cuda_graph import HostGraphs
from pygan.train import Trainer

from test_train import final_state, quiet, tiny_config


class HostSync(AssertionError):
    pass


def _refuse(*args, **kwargs):
    raise HostSync("a captured body read a device value back, copied host data in, or drew host random numbers")


class _RecordingBackend:
    def __init__(self, backend, calls):
        self._backend, self._calls = backend, calls

    def __getattr__(self, name):
        self._calls.append(name)
        return getattr(self._backend, name)


class GuardedGraphs(HostGraphs):
    """HostGraphs whose replays refuse host reads and record op calls and persistent memory."""

    def __init__(self, trainer_ref):
        super().__init__()
        self.trainer_ref = trainer_ref
        self.calls = {}  # graph name -> [op names of each replay]
        self.memory = {}  # graph name -> [addresses after each replay]
        self.launches = 0
        self.inside = False  # a replay is running (update_calls records where each update ran)

    def _addresses(self):
        t = self.trainer_ref()
        gs = t._graph
        arrays = [p.data for m in (t.G, t.D) for p in m.parameters()]
        arrays += [p.grad.data for m in (t.G, t.D) for p in m.parameters() if p.grad is not None]
        arrays += [b.data for m in (t.G, t.D) for b in m.buffers()]
        arrays += [gs.real, gs.z, gs.summary_d, gs.summary_g]
        for opt in (t.optD, t.optG):
            arrays += [opt.flat.params, opt.flat.grads, *opt.flat.state.values(), *(opt._staged_hyper or [])]
        if t.ema is not None:
            arrays += [t.ema._factors] + [b.data for b in t.G_ema.state_dict().values()]
        return [a.__array_interface__["data"][0] for a in arrays]

    def launch(self, name):
        calls = []
        patches = [(pygan.train, "to_device", _refuse), (pygan.autograd, "to_device", _refuse),
                   (pygan.train, "default_generator", _refuse), (Tensor, "item", _refuse),
                   (Tensor, "numpy", _refuse), (Tensor, "tolist", _refuse)]
        real_backend_for = ops.backend_for
        patches.append((ops, "backend_for", lambda a: _RecordingBackend(real_backend_for(a), calls)))
        saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in patches]
        for obj, attr, value in patches:
            setattr(obj, attr, value)
        self.inside = True
        try:
            super().launch(name)
        finally:
            self.inside = False
            for obj, attr, value in saved:
                setattr(obj, attr, value)
        self.launches += 1
        self.calls.setdefault(name, []).append(calls)
        self.memory.setdefault(name, []).append(self._addresses())


def rows(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def run(outf, graphs=None, **overrides):
    """A tiny run; with `graphs` (a HostGraphs, or a function of the Trainer making one) in graph
    mode through them (the flat layout --cuda-graph implies, without the CPU's fallback line)."""
    if graphs is not None:
        overrides.pop("cuda_graph", None)
        overrides["flat_params"] = True
    config = tiny_config(outf, eval_every=0, **overrides)
    t = Trainer(config, log=quiet)
    if graphs is not None:
        t._setup_cuda_graph(graphs(t) if callable(graphs) else graphs)
    return t.fit()


def assert_bitwise(a, b, what):
    """The same bytes (assert_array_equal alone would take -0.0 for 0.0)."""
    np.testing.assert_array_equal(a, b, err_msg=what)
    assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), what


def assert_same_run(a, b, outf_a, outf_b):
    sa, ma = final_state(a)
    sb, mb = final_state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert_bitwise(sa[k], sb[k], k)
    assert ma["optD"] == mb["optD"] and ma["optG"] == mb["optG"]
    assert rows(outf_a / "log.csv") == rows(outf_b / "log.csv")


RECIPES = {
    "dcgan": {},
    "lsgan": dict(recipe="lsgan"),
    "wgan (rmsprop, clip, 5 critic steps)": dict(recipe="wgan", fake_size=16 * 9, niter=1),
    "hinge + EMA": dict(loss="hinge", ema_decay=0.9),
    "EMA from step 5 (a copy step in graph mode first)": dict(ema_decay=0.9, ema_start=5),
}


def _spy_updates(monkeypatch, holder):
    """Record, for every optimiser update (ops.adam_step / ops.rmsprop_step), whether a replay was
    running and how many tensors it took."""
    calls = []
    for op in ("adam_step", "rmsprop_step"):
        real = getattr(ops, op)

        def spy(params, *args, _real=real, _op=op):
            g = holder.get("g")
            calls.append((_op, g is not None and g.inside, g.launches if g is not None else 0, len(params)))
            return _real(params, *args)

        monkeypatch.setattr(ops, op, spy)
    return calls


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_graph_mode_is_bitwise_the_eager_run_and_its_bodies_are_replayable(tmp_path, monkeypatch, name):
    overrides = RECIPES[name]
    eager = run(tmp_path / "eager", **overrides)
    holder = {}

    def make(t):
        holder["g"] = GuardedGraphs(lambda: t)
        return holder["g"]

    updates = _spy_updates(monkeypatch, holder)
    graph = run(tmp_path / "graph", graphs=make, cuda_graph=True, **overrides)
    assert_same_run(graph, eager, tmp_path / "graph", tmp_path / "eager")
    g = holder["g"]
    assert graph._graph is not None and graph._graph.captured == set(g.bodies)
    assert g.launches >= 2 and "D" in g.bodies
    update_op = "rmsprop_step" if overrides.get("recipe") == "wgan" else "adam_step"
    for name_, replays in g.calls.items():
        assert replays[0] and all(r == replays[0] for r in replays), name_  # the same kernels every replay
        assert replays[0].count(update_op) == 1, name_  # the body's one optimiser update
    # once the first replay ran, every update is inside one, over one flat tensor
    after = [c for c in updates if c[2] > 0 or c[1]]
    assert after and all(inside and op == update_op and n == 1 for op, inside, _, n in after)
    assert len(after) == sum(len(r) for r in g.calls.values())
    for name_, memory in g.memory.items():
        assert all(m == memory[0] for m in memory), name_  # nothing a graph writes or reads moved


def test_the_guard_catches_a_body_that_reads_back(tmp_path):
    """The checks above can fail: a body reading the loss back raises HostSync."""
    t = Trainer(tiny_config(tmp_path, eval_every=0, flat_params=True), log=quiet)
    t._setup_cuda_graph(GuardedGraphs(lambda: t))
    original = t._graph_body_d

    def reads_back():
        original()
        Tensor(t._graph.summary_d).item()

    t._graph_body_d = reads_back
    with pytest.raises(HostSync):
        t.fit()


def test_a_replay_that_kept_the_capture_steps_bias_corrections_would_differ(tmp_path, monkeypatch):
    """The bitwise check above can fail on the thing it guards: were the staged corrections (Adam's
    step size and sqrt(1 - beta2^t)) written only for the first graph step, the run would differ."""
    import pygan.optim

    eager = run(tmp_path / "eager")
    real = pygan.optim.write_host_values
    written = set()

    def first_time_only(dst, values):
        if id(dst) not in written:
            written.add(id(dst))
            real(dst, values)

    monkeypatch.setattr(pygan.optim, "write_host_values", first_time_only)
    frozen = run(tmp_path / "frozen", graphs=HostGraphs(), cuda_graph=True)
    monkeypatch.undo()
    with pytest.raises(AssertionError):
        assert_same_run(frozen, eager, tmp_path / "frozen", tmp_path / "eager")


def test_step_counts_and_ema_updates_stay_on_the_host_and_right(tmp_path):
    eager = run(tmp_path / "eager", ema_decay=0.9)
    graph = run(tmp_path / "graph", graphs=HostGraphs(), cuda_graph=True, ema_decay=0.9)
    for t in (eager, graph):
        steps = {st["step"] for opt in (t.optD, t.optG) for st in opt.state.values()}
        assert steps == {6} and t.ema.updates == 6  # 3 steps x 2 epochs, G every step
    assert graph.optD.state_dict()["state"].keys() == eager.optD.state_dict()["state"].keys()


PLATFORM_CASES = [
    ("cpu", None, "the device is the CPU"),
    ("cuda", None, "CuPy is not importable"),
    ("cuda", types.SimpleNamespace(__version__="9.6.0", cuda=types.SimpleNamespace(Stream=object)),
     "CuPy 9.6.0 has no stream capture"),
]


@pytest.mark.parametrize("device,cupy_module,message", PLATFORM_CASES)
def test_platform_reasons(device, cupy_module, message):
    assert message in cuda_graph.platform_reason(device, cupy_module)


def _capturing_cupy():
    cuda = types.SimpleNamespace(Stream=type("Stream", (), {"begin_capture": lambda self: None}),
                                 using_allocator=lambda allocator: None)
    return types.SimpleNamespace(__version__="13.0.0", cuda=cuda)


CONFIG_CASES = [
    (dict(label_flip=0.1), "--label-flip draws D's targets on the host"),
    (dict(instance_noise=0.1), "--instance-noise"),
    (dict(recipe="wgan-gp"), "the gradient penalty"),
    (dict(r1=1.0, d_norm="layer"), "the R1 penalty"),
    (dict(spectral_norm=True), "spectral norm"),
    (dict(conditional=True), "--conditional"),
]


@pytest.mark.parametrize("overrides,message", CONFIG_CASES)
def test_config_reasons(tmp_path, overrides, message):
    config = tiny_config(tmp_path, **overrides)
    config.resolve()
    assert cuda_graph.platform_reason("cuda", _capturing_cupy()) is None
    assert message in cuda_graph.unsupported_reason(config, "cuda", None, _capturing_cupy())
    assert "data-parallel" in cuda_graph.config_reason(tiny_config(tmp_path), comm=object())
    plain = tiny_config(tmp_path)
    plain.resolve()
    assert cuda_graph.unsupported_reason(plain, "cuda", None, _capturing_cupy()) is None


@pytest.mark.parametrize("overrides,graphs,message", [
    (dict(), None, "the device is the CPU"),
    (dict(label_flip=0.2), HostGraphs, "--label-flip draws D's targets on the host"),
    (dict(recipe="wgan-gp", d_norm="layer"), HostGraphs, "the gradient penalty"),
])
def test_a_run_that_cannot_capture_says_why_in_one_line_and_trains_eagerly(tmp_path, capsys, overrides, graphs, message):
    eager = run(tmp_path / "eager", **overrides)
    capsys.readouterr()
    graph = run(tmp_path / "graph", graphs=graphs and graphs(), cuda_graph=True, **overrides)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pygan: --cuda-graph: training eagerly: ") and message in err[0]
    assert graph._graph is None
    assert_same_run(graph, eager, tmp_path / "graph", tmp_path / "eager")


class FailingGraphs(HostGraphs):
    def __init__(self, fail_on):
        super().__init__()
        self.fail_on = fail_on

    def capture(self, name, fn):
        if name in self.fail_on:
            raise RuntimeError("operation not permitted when stream is capturing\nmore detail")
        super().capture(name, fn)


@pytest.mark.parametrize("fail_on", [("D",), ("G",)])
def test_a_capture_that_raises_says_why_and_training_goes_on_eagerly(tmp_path, capsys, fail_on):
    eager = run(tmp_path / "eager")
    capsys.readouterr()
    graph = run(tmp_path / "graph", graphs=FailingGraphs(fail_on), cuda_graph=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["pygan: --cuda-graph: training eagerly: the capture failed (RuntimeError: operation not "
                   "permitted when stream is capturing)"]
    assert graph._graph is None
    assert_same_run(graph, eager, tmp_path / "graph", tmp_path / "eager")


def test_a_graph_mode_checkpoint_resumes_eagerly_bit_exactly(tmp_path):
    straight = run(tmp_path / "a")
    run(tmp_path / "b", graphs=HostGraphs(), cuda_graph=True, niter=1)
    resumed = run(tmp_path / "b", niter=2, resume=True)
    sa, _ = final_state(straight)
    sb, _ = final_state(resumed)
    for k in sa:
        assert_bitwise(sa[k], sb[k], k)


def test_a_graph_mode_run_resumed_in_graph_mode_is_the_straight_eager_run(tmp_path, monkeypatch):
    """Step counts saved by a graph run and restored into another: its replays stage the right
    bias corrections (one eager warm-up step, then graph steps on both sides of the resume)."""
    monkeypatch.setattr(cuda_graph, "WARMUP_STEPS", 1)
    straight = run(tmp_path / "a", niter=3, ema_decay=0.9)
    first = run(tmp_path / "b", graphs=HostGraphs(), cuda_graph=True, niter=2, ema_decay=0.9)
    assert "D" in first._graph.captured
    holder = {}

    def make(t):
        holder["g"] = HostGraphs()
        return holder["g"]

    resumed = run(tmp_path / "b", graphs=make, cuda_graph=True, niter=3, ema_decay=0.9, resume=True)
    assert "D" in holder["g"].bodies
    assert_same_run(resumed, straight, tmp_path / "b", tmp_path / "a")
