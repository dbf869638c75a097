"""Time one DCGAN training step (D on real and fake, then G), and PyTorch's same step when asked.

Both run in the same process, one after the other, several times interleaved, and we report medians
and the ratio pygan/PyTorch: these machines are noisy, so only ratios measured together mean much.
"""

import platform
import statistics
import time

import numpy as np


def _pygan_step_fn(image_size, nc, batch, device):
    from . import manual_seed, optim
    from .autograd import Tensor, to_device
    from .models import Discriminator, Generator
    from .nn import functional as F

    manual_seed(0)
    G = Generator(100, 64, nc, image_size).to(device)
    D = Discriminator(64, nc, image_size).to(device)
    optG = optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optD = optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    rng = np.random.default_rng(0)
    real = Tensor(to_device(rng.uniform(-1, 1, (batch, nc, image_size, image_size)).astype(np.float32), device))
    ones = Tensor(to_device(np.ones(batch, np.float32), device))
    zeros = Tensor(to_device(np.zeros(batch, np.float32), device))

    def step():
        z = Tensor(to_device(rng.standard_normal((batch, 100, 1, 1)).astype(np.float32), device))
        D.zero_grad()
        err_d = F.binary_cross_entropy_with_logits(D(real), ones)
        fake = G(z)
        err_d = err_d + F.binary_cross_entropy_with_logits(D(fake.detach()), zeros)
        err_d.backward()
        optD.step()
        G.zero_grad()
        D.requires_grad_(False)  # as pygan train: D's weight gradients in G's step are not computed
        err_g = F.binary_cross_entropy_with_logits(D(fake), ones)
        err_g.backward()
        D.requires_grad_(True)
        optG.step()
        return err_d.item() + err_g.item()  # item() waits for the GPU, so the time is the step's

    return step


def torch_dcgan(image_size, nc, device="cpu"):
    """PyTorch's DCGAN with pygan's architecture and initialisation (convs N(0, 0.02), BatchNorm
    gamma N(1, 0.02), beta 0; D ends in a logit): (G, D) as torch.nn.Sequential, for the benchmarks
    that compare the two libraries on the same model."""
    import torch
    import torch.nn as tnn

    n = int(np.log2(image_size)) - 2
    mult = 2 ** (n - 1)
    g_layers = [tnn.ConvTranspose2d(100, 64 * mult, 4, 1, 0, bias=False), tnn.BatchNorm2d(64 * mult), tnn.ReLU(True)]
    for _ in range(n - 1):
        g_layers += [tnn.ConvTranspose2d(64 * mult, 32 * mult, 4, 2, 1, bias=False), tnn.BatchNorm2d(32 * mult), tnn.ReLU(True)]
        mult //= 2
    g_layers += [tnn.ConvTranspose2d(64, nc, 4, 2, 1, bias=False), tnn.Tanh()]
    d_layers = [tnn.Conv2d(nc, 64, 4, 2, 1, bias=False), tnn.LeakyReLU(0.2, True)]
    mult = 1
    for _ in range(n - 1):
        d_layers += [tnn.Conv2d(64 * mult, 128 * mult, 4, 2, 1, bias=False), tnn.BatchNorm2d(128 * mult), tnn.LeakyReLU(0.2, True)]
        mult *= 2
    d_layers += [tnn.Conv2d(64 * mult, 1, 4, 1, 0, bias=False)]
    dev = torch.device("cuda" if device == "cuda" else "cpu")
    G, D = tnn.Sequential(*g_layers).to(dev), tnn.Sequential(*d_layers).to(dev)
    with torch.no_grad():
        for m in list(G.modules()) + list(D.modules()):
            if isinstance(m, (tnn.Conv2d, tnn.ConvTranspose2d)):
                m.weight.normal_(0.0, 0.02)
            elif isinstance(m, tnn.BatchNorm2d):
                m.weight.normal_(1.0, 0.02)
                m.bias.zero_()
    return G, D


def _torch_step_fn(image_size, nc, batch, device):
    import torch
    import torch.nn as tnn

    torch.manual_seed(0)
    dev = torch.device("cuda" if device == "cuda" else "cpu")
    G, D = torch_dcgan(image_size, nc, device)
    optG = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optD = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real = torch.rand(batch, nc, image_size, image_size, device=dev) * 2 - 1
    ones, zeros = torch.ones(batch, device=dev), torch.zeros(batch, device=dev)
    bce = tnn.functional.binary_cross_entropy_with_logits

    def step():
        z = torch.randn(batch, 100, 1, 1, device=dev)
        D.zero_grad()
        err_d = bce(D(real).view(-1), ones)
        fake = G(z)
        err_d = err_d + bce(D(fake.detach()).view(-1), zeros)
        err_d.backward()
        optD.step()
        G.zero_grad()
        D.requires_grad_(False)  # the same work as pygan's step: no D weight gradients in G's step
        err_g = bce(D(fake).view(-1), ones)
        err_g.backward()
        D.requires_grad_(True)
        optG.step()
        return err_d.item() + err_g.item()

    return step


# The shapes `pygan bench` and benchmarks/bench_train_step.py time by default: (image size, channels)
STANDARD_SHAPES = ((32, 1), (64, 3))


def cpu_backend_name():
    """"numba" or "reference": the CPU backend numpy arrays dispatch to now."""
    from . import ops

    return "reference" if ops.cpu_backend() is ops.reference else "numba"


def machine_description():
    """CPU model, SIMD level (AVX2 or AVX-512: the pygan/PyTorch ratio moves with it), cores, load,
    Python, numpy and its BLAS, and the CPU backend's threads and GEMM."""
    import os

    from .ops import cpu_runtime

    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{blas['name']} {blas.get('version', '')}".strip()
    except Exception:  # noqa: BLE001 - the layout of show_config differs between numpy versions
        blas = "unknown BLAS"
    try:
        load = f", load average {os.getloadavg()[0]:.1f}"
    except (AttributeError, OSError):
        load = ""
    text = (f"{cpu_runtime.cpu_model()} ({cpu_runtime.simd_level()}), {cpu_runtime.available_cores()} cores{load}, "
            f"Python {platform.python_version()}, numpy {np.__version__} with {blas}")
    if cpu_backend_name() == "numba":
        from .ops import cpu

        setup = cpu.setup()
        text += (f"; CPU backend numba {setup['numba']}: {setup['numba_threads']} numba / {setup['blas_threads']} BLAS "
                 f"threads ({setup['why']}), GEMM {setup['gemm']}")
        if setup["gemm_hint"]:
            text += f". Note: {setup['gemm_hint']}"
    else:
        text += "; CPU backend: the numpy reference"
    return text


def _match_torch_threads():
    """Give PyTorch the CPU backend's thread count, so the two libraries get the same cores.

    Needed in any case: numba's OpenMP threading layer shares libgomp with PyTorch, and starting
    numba's pool raises the process's OpenMP default to that pool's size, so PyTorch's count
    would otherwise depend on which library ran first (with OMP_NUM_THREADS=1 it became 2)."""
    import torch

    from . import ops
    from .ops import cpu_runtime

    if cpu_backend_name() == "numba":
        n = ops.cpu_backend().setup()["numba_threads"]
    else:
        n = cpu_runtime.apply_thread_policy(with_numba=False)["blas_threads"]
    torch.set_num_threads(int(n))


def _quartiles(values):
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return q[0], q[2]


def time_train_step(image_size=32, nc=1, batch=64, device="cpu", repeats=10, warmup=2, with_torch=False,
                    cpu_backends=None):
    """Median seconds per step for pygan (and PyTorch), timed in interleaved rounds.

    cpu_backends: on the CPU, the pygan backends to time ("numba", "reference"; default: the one
    in effect, pygan.ops.cpu_backend()); the first is reported as "pygan", the others as
    "pygan_<name>". Each round runs every contender once, in turn; ratios are the medians of the
    per-round ratios (so a load change between rounds hits both sides), with their quartiles.
    Process CPU time per step (all threads) is reported too: under contention from other jobs it
    is the steadier measure of work."""
    from . import ops
    from .autograd import normalise_device

    device = normalise_device(device)
    if device != "cpu" or not cpu_backends:
        cpu_backends = [None]
    contenders = {}
    for k, name in enumerate(cpu_backends):
        if name is not None:
            ops.set_cpu_backend(name)
        key = "pygan" if k == 0 else f"pygan_{name}"
        contenders[key] = (_pygan_step_fn(image_size, nc, batch, device), name)
    if with_torch:
        try:
            contenders["torch"] = (_torch_step_fn(image_size, nc, batch, device), None)
            if device == "cpu":
                _match_torch_threads()
        except ImportError:
            contenders["torch"] = (None, None)
    live = {key: v for key, v in contenders.items() if v[0] is not None}
    wall = {key: [] for key in live}
    cpu = {key: [] for key in live}

    def run(key):
        fn, name = live[key]
        if name is not None:
            ops.set_cpu_backend(name)
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - t0, time.process_time() - c0

    for key in live:
        for _ in range(warmup):
            run(key)
    for _ in range(repeats):
        for key in live:
            w, c = run(key)
            wall[key].append(w)
            cpu[key].append(c)
    if cpu_backends[0] is not None:
        ops.set_cpu_backend(cpu_backends[0])
    result = {
        "shape": f"{nc}x{image_size}x{image_size} batch {batch}",
        "device": device,
        "machine": machine_description(),
        "repeats": repeats,
        "cpu_backend": cpu_backend_name() if device == "cpu" else None,
    }
    for key in live:
        result[f"{key}_ms"] = 1e3 * statistics.median(wall[key])
        result[f"{key}_ms_quartiles"] = [1e3 * q for q in _quartiles(wall[key])]
        result[f"{key}_cpu_ms"] = 1e3 * statistics.median(cpu[key])
    for key in live:
        if key == "pygan":
            continue
        base = "torch" if key == "torch" else key
        ratios = [a / b for a, b in zip(wall["pygan"], wall[base])]
        cpu_ratios = [a / b for a, b in zip(cpu["pygan"], cpu[base])]
        tag = "ratio" if key == "torch" else f"ratio_vs_{key[len('pygan_'):]}"
        result[tag] = statistics.median(ratios)
        result[f"{tag}_quartiles"] = list(_quartiles(ratios))
        result[f"{tag}_cpu_time"] = statistics.median(cpu_ratios)
    if "torch" in live:
        import torch

        result["torch_version"] = torch.__version__
        result["torch_threads"] = torch.get_num_threads()
    elif with_torch:
        result["torch_ms"] = None
    if device == "cpu" and result["cpu_backend"] == "numba":
        result["cpu_setup"] = ops.cpu_backend().setup()
    return result


def format_results(r):
    backend = f" [{r['cpu_backend']}]" if r.get("cpu_backend") else ""
    q = r["pygan_ms_quartiles"]
    line = f"D+G step {r['shape']} on {r['device']}: pygan{backend} {r['pygan_ms']:.1f} ms (quartiles {q[0]:.0f}-{q[1]:.0f})"
    for key in r:
        if key.startswith("ratio_vs_") and not key.endswith(("_quartiles", "_cpu_time")):
            name = key[len("ratio_vs_"):]
            lo, hi = r[f"{key}_quartiles"]
            line += (f", pygan[{name}] {r[f'pygan_{name}_ms']:.1f} ms (pygan/{name} {r[key]:.2f}x, "
                     f"quartiles {lo:.2f}-{hi:.2f}, CPU time {r[key + '_cpu_time']:.2f}x)")
    if r.get("torch_ms"):
        lo, hi = r["ratio_quartiles"]
        tq = r["torch_ms_quartiles"]
        line += (f", PyTorch {r['torch_version']} ({r['torch_threads']} threads) {r['torch_ms']:.1f} ms "
                 f"(quartiles {tq[0]:.0f}-{tq[1]:.0f}), "
                 f"ratio pygan/PyTorch {r['ratio']:.2f}x (quartiles {lo:.2f}-{hi:.2f}; CPU time {r['ratio_cpu_time']:.2f}x)")
    elif "torch_ms" in r:
        line += " (PyTorch not installed: no ratio)"
    return line + f" (median of {r['repeats']} interleaved rounds)"
