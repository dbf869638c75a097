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
        err_g = F.binary_cross_entropy_with_logits(D(fake), ones)
        err_g.backward()
        optG.step()
        return err_d.item() + err_g.item()  # item() waits for the GPU, so the time is the step's

    return step


def _torch_step_fn(image_size, nc, batch, device):
    import torch
    import torch.nn as tnn

    torch.manual_seed(0)
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
        err_g = bce(D(fake).view(-1), ones)
        err_g.backward()
        optG.step()
        return err_d.item() + err_g.item()

    return step


def time_train_step(image_size=32, nc=1, batch=64, device="cpu", repeats=10, warmup=2, with_torch=False):
    """Median seconds per step for pygan (and PyTorch), timed in interleaved rounds."""
    from .autograd import normalise_device

    device = normalise_device(device)
    fns = {"pygan": _pygan_step_fn(image_size, nc, batch, device)}
    if with_torch:
        try:
            fns["torch"] = _torch_step_fn(image_size, nc, batch, device)
        except ImportError:
            fns["torch"] = None
    times = {name: [] for name, fn in fns.items() if fn is not None}
    for name in times:
        for _ in range(warmup):
            fns[name]()
    for _ in range(repeats):
        for name in times:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    result = {
        "shape": f"{nc}x{image_size}x{image_size} batch {batch}",
        "device": device,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "repeats": repeats,
        "pygan_ms": 1e3 * statistics.median(times["pygan"]),
    }
    if "torch" in times:
        import torch

        result["torch_ms"] = 1e3 * statistics.median(times["torch"])
        result["ratio"] = result["pygan_ms"] / result["torch_ms"]
        result["torch_version"] = torch.__version__
        result["torch_threads"] = torch.get_num_threads()
    elif with_torch:
        result["torch_ms"] = None
    return result


def format_results(r):
    line = f"D+G step {r['shape']} on {r['device']}: pygan {r['pygan_ms']:.1f} ms"
    if r.get("torch_ms"):
        line += f", PyTorch {r['torch_version']} {r['torch_ms']:.1f} ms, ratio pygan/PyTorch {r['ratio']:.2f}x"
    elif "torch_ms" in r:
        line += " (PyTorch not installed: no ratio)"
    return line + f" (median of {r['repeats']})"
