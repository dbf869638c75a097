"""The training step as CUDA graphs (`pygan train --cuda-graph`, issue 16).

A DCGAN step at 32x32 is ~100 small kernels launched from Python; replaying them as a captured CUDA
graph costs one launch. After `warmup` eager steps (CuPy compiles its kernels, the optimiser state
exists, every shape is static), the step is split at its two host-side decisions:

    stage (host)    the next batch copied into a static device buffer, z drawn from pygan's global
                    generator on the host (as eager does: the same numbers) and copied into another;
                    optD.stage_step(): the step counts (on the host) and Adam's bias corrections
                    uploaded into a small device array
    graph "D"       D.zero_grad, D(x), G(z), D(G(z).detach()), D's loss, backward, the log summary
                    (loss, D(x), D(G(z)), running-statistics check) into a device array,
                    optD.launch_staged() (ONE launch over the flat buffers, reading the corrections
                    from that array), --clip
    stage (host)    optG.stage_step(), and the EMA's decay (ema.stage) once it averages
    graph "G"       (when a G step is due) G.zero_grad, D(G(z)), G's loss, backward, its summary,
    ("G+EMA")       optG.launch_staged(), the EMA average (decay read from device memory); before
                    --ema-start graph "G" and the EMA's plain copy eagerly after it
    read back       both summaries in one transfer: the step's only synchronisation

A captured launch repeats its by-value arguments at every replay, so what changes per step (Adam's
step size and sqrt(1 - beta2^t), the EMA decay) goes through device memory, written by the host
before the replay as the batch and z are; the values are the float32 numbers an eager launch
computes, hence graph mode is bitwise eager mode. Capture uses a non-default CuPy stream (the legacy
default stream cannot capture) in relaxed mode (CuPy's default: its pool may cudaMalloc), and a
private memory pool that nothing else allocates from, kept as long as the graphs: memory a graph
reads or writes is never handed to anyone else. Everything the graphs write that outlives them
(parameters, gradients, BatchNorm statistics, the summaries) keeps its address across steps.

Where capture is impossible (`unsupported_reason`), or the capture itself raises, the run says why
in one line on stderr and stays eager. The capture/replay part (`CupyGraphs`) is small; the rest is
tested on the CPU with a stand-in (`tests/test_cuda_graph.py`). Untimed (no GPU has run it).
"""

import sys

WARMUP_STEPS = 3


def platform_reason(device, cupy_module=None):
    """Why this machine cannot capture (a short phrase), or None."""
    if device != "cuda":
        return "the device is the CPU (numpy arrays run eagerly; there is nothing to capture)"
    if cupy_module is None:
        return "CuPy is not importable"
    cuda = getattr(cupy_module, "cuda", None)
    stream_cls = getattr(cuda, "Stream", None)
    if stream_cls is None or not hasattr(stream_cls, "begin_capture") or not hasattr(cuda, "using_allocator"):
        version = getattr(cupy_module, "__version__", "?")
        return f"CuPy {version} has no stream capture (cupy.cuda.Stream.begin_capture needs CuPy >= 10)"
    return None


def config_reason(config, comm=None):
    """Why this run's step has host work between its kernels (a short phrase), or None."""
    c = config
    if comm is not None:
        return "data-parallel training all-reduces gradients through the host every step"
    if c.label_flip:
        return "--label-flip draws D's targets on the host every step"
    if c.instance_noise:
        return "--instance-noise anneals its scale and draws its noise on the host every step"
    if c.loss == "wgan-gp":
        return "the gradient penalty draws its interpolation weights on the host every step"
    if c.r1:
        return "the R1 penalty's double backward is not checked for capture"
    if c.spectral_norm:
        return "spectral norm's power iteration reads vector norms back to the host"
    if c.conditional:
        return "--conditional draws G's class labels on the host every step"
    return None


def unsupported_reason(config, device, comm=None, cupy_module=None):
    """Why this run cannot capture its step, or None when it can."""
    return platform_reason(device, cupy_module) or config_reason(config, comm)


def fallback_line(reason):
    return f"pygan: --cuda-graph: training eagerly: {reason}"


def say_fallback(reason, stream=None):
    """The one line a run prints when it falls back to eager steps."""
    print(fallback_line(reason), file=stream or sys.stderr, flush=True)


class CupyGraphs:
    """Capture and replay on CuPy: a non-default stream, a private memory pool kept alive with the
    graphs, relaxed capture mode. `capture(name, fn)` records fn's device work as graph `name`
    (nothing runs) and returns fn's result; `launch(name)` replays it on the stream."""

    def __init__(self, cp):
        self.cp = cp
        self.stream = cp.cuda.Stream(non_blocking=True)
        self.pool = cp.cuda.MemoryPool()  # only captures allocate from it: its memory is the graphs'
        self.graphs = {}

    def context(self):
        """Every step of a graph-mode run runs on this stream: staging, replays, eager updates."""
        return self.stream

    def capture(self, name, fn):
        """Record fn's device work as graph `name` (fn's Python runs once, its kernels do not)."""
        cp = self.cp
        with self.stream, cp.cuda.using_allocator(self.pool.malloc):
            self.stream.synchronize()
            self.stream.begin_capture(cp.cuda.runtime.streamCaptureModeRelaxed)
            try:
                out = fn()
            except BaseException:
                try:
                    self.stream.end_capture()
                except Exception:  # noqa: BLE001 -- an invalidated capture also raises here
                    pass
                raise
            self.graphs[name] = self.stream.end_capture()
        return out

    def begin_step(self):
        """The stream waits for work queued on the default stream before this step."""
        self.stream.wait_event(self.cp.cuda.Stream.null.record())

    def launch(self, name):
        self.graphs[name].launch(stream=self.stream)

    def copy_in(self, dst, host):
        """host (numpy) -> dst (a static device buffer), ordered on the stream."""
        import numpy as np

        dst.set(np.ascontiguousarray(host, dtype=dst.dtype), stream=self.stream)

    def read(self, arrays):
        """The summaries, as one host array: the step's one synchronisation."""
        return self.cp.concatenate(arrays).get(stream=self.stream)


class HostGraphs:
    """The same interface with no GPU: `capture` keeps fn (as a capture, it runs nothing) and
    `launch` runs it. A replay that re-runs the Python is what a captured graph must be equivalent
    to; tests wrap `launch` to check the bodies read nothing back and keep their memory."""

    def __init__(self):
        self.bodies = {}

    def context(self):
        import contextlib

        return contextlib.nullcontext()

    def capture(self, name, fn):
        self.bodies[name] = fn

    def launch(self, name):
        self.bodies[name]()

    def begin_step(self):
        pass

    def copy_in(self, dst, host):
        dst[...] = host

    def read(self, arrays):
        import numpy as np

        return np.concatenate(arrays)


