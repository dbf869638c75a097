"""Time one DCGAN D+G training step with pygan and, when importable, PyTorch's same model.

    python benchmarks/bench_train_step.py [--device cpu|cuda] [--repeats 10] [--out results.json]

Shapes: 1x32x32 batch 64 (Fashion-MNIST) and 3x64x64 batch 64 (PyTorch's dcgan example); with
--device cuda also 3x64x64 batch 128. Both libraries run in the same process, interleaved, and the
ratio pygan/PyTorch is printed: on these noisy machines only ratios taken together mean much.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pygan.bench import STANDARD_SHAPES, format_results, machine_description, time_train_step  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    p.add_argument("--cpu-backends", default="numba,reference",
                   help="CPU backends timed against each other (and PyTorch), the first reported as 'pygan'")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--no-graph", action="store_true", help="--device cuda: skip the CUDA-graph comparison")
    args = p.parse_args(argv)
    from pygan.autograd import normalise_device

    try:
        device = normalise_device(args.device)
        if device == "cuda":
            from pygan.backend import require_cupy

            require_cupy()
    except (ValueError, RuntimeError) as exc:
        print(f"bench_train_step: {exc}")
        return 0 if args.device == "cuda" else 2
    shapes = [(size, nc, 64) for size, nc in STANDARD_SHAPES] + ([(64, 3, 128)] if device == "cuda" else [])
    backends = [b.strip() for b in args.cpu_backends.split(",") if b.strip()]
    print(f"machine: {machine_description()}")
    results = []
    for size, nc, batch in shapes:
        r = time_train_step(size, nc, batch, device=device, repeats=args.repeats, with_torch=not args.no_torch,
                            cpu_backends=backends)
        print(format_results(r), flush=True)
        results.append(r)
    graph_results = []
    if device == "cuda" and not args.no_graph:
        for size, nc, batch in shapes:
            r = time_graph_steps(size, nc, batch, repeats=max(args.repeats, 20), with_torch=not args.no_torch)
            print(format_graph_results(r), flush=True)
            graph_results.append(r)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"machine": machine_description(), "results": results, "cuda_graph": graph_results}, f, indent=1)
    return 0


# -- --device cuda: eager vs CUDA graph, pygan and PyTorch (issue 16) --------------------------------


def _pygan_trainer(size, nc, batch, cuda_graph, outf):
    from pygan.train import Config, Trainer

    config = Config(dataset="fake", fake_size=batch * 64, channels=nc, batch_size=batch, image_size=size, niter=1,
                    outf=outf, manual_seed=0, device="cuda", progress=False, eval_every=0, overwrite=True,
                    cuda_graph=cuda_graph)
    t = Trainer(config, log=lambda *a, **k: None)
    batches = t.loader.iter_epoch(0)
    return lambda: t._train_step(next(batches))


def _torch_graph_step_fn(size, nc, batch):
    """PyTorch's same D+G step (pygan.bench's model), the whole step captured with torch.cuda.graph
    (capturable Adam, noise drawn inside the graph) and replayed."""
    import torch

    from pygan.bench import _torch_step_fn

    step = _torch_step_fn(size, nc, batch, "cuda")
    cells = step.__closure__
    env = dict(zip(step.__code__.co_freevars, (c.cell_contents for c in cells)))
    G, D, real = env["G"], env["D"], env["real"]
    ones, zeros, bce = env["ones"], env["zeros"], env["bce"]
    optG = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999), capturable=True)
    optD = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999), capturable=True)
    losses = torch.zeros(2, device="cuda")

    def body():
        z = torch.randn(batch, 100, 1, 1, device="cuda")
        D.zero_grad(set_to_none=False)
        fake = G(z)
        err_d = bce(D(real).view(-1), ones) + bce(D(fake.detach()).view(-1), zeros)
        err_d.backward()
        optD.step()
        G.zero_grad(set_to_none=False)
        err_g = bce(D(fake).view(-1), ones)
        err_g.backward()
        optG.step()
        losses[0].copy_(err_d.detach())
        losses[1].copy_(err_g.detach())

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm-up on a side stream, as torch.cuda.graphs asks
            body()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        body()

    def replay():
        graph.replay()
        return float(losses.sum().item())

    return replay


def time_graph_steps(size, nc, batch, repeats=20, warmup=5, with_torch=True):
    """Median ms per D+G step: pygan eager, pygan --cuda-graph, PyTorch eager, PyTorch graph, in
    interleaved rounds; ratios against PyTorch eager."""
    import statistics
    import tempfile
    import time

    contenders = {}
    with tempfile.TemporaryDirectory() as tmp:
        contenders["pygan_eager"] = _pygan_trainer(size, nc, batch, False, os.path.join(tmp, "eager"))
        contenders["pygan_graph"] = _pygan_trainer(size, nc, batch, True, os.path.join(tmp, "graph"))
        errors = {}
        if with_torch:
            try:
                from pygan.bench import _torch_step_fn

                contenders["torch_eager"] = _torch_step_fn(size, nc, batch, "cuda")
                contenders["torch_graph"] = _torch_graph_step_fn(size, nc, batch)
            except Exception as exc:  # noqa: BLE001 -- no torch, or its capture failed: say so
                errors["torch"] = f"{type(exc).__name__}: {exc}"
        for fn in contenders.values():
            for _ in range(warmup):
                fn()
        times = {k: [] for k in contenders}
        for _ in range(repeats):
            for key, fn in contenders.items():
                t0 = time.perf_counter()
                fn()  # every contender reads its losses back: one synchronisation per step
                times[key].append(time.perf_counter() - t0)
    result = {"shape": f"{nc}x{size}x{size} batch {batch}", "device": "cuda", "repeats": repeats, "errors": errors}
    for key, ts in times.items():
        result[f"{key}_ms"] = 1e3 * statistics.median(ts)
    base = result.get("torch_eager_ms")
    if base:
        for key in times:
            result[f"{key}_vs_torch_eager"] = result[f"{key}_ms"] / base
    return result


def format_graph_results(r):
    parts = [f"{k[:-3]} {r[k]:.3f} ms" + (f" ({r[k[:-3] + '_vs_torch_eager']:.2f}x torch eager)"
                                         if k[:-3] + "_vs_torch_eager" in r else "")
             for k in r if k.endswith("_ms")]
    errors = "; ".join(f"{k}: {v}" for k, v in r["errors"].items())
    return f"cuda graph, {r['shape']}: " + ", ".join(parts) + (f"; not timed: {errors}" if errors else "")


if __name__ == "__main__":
    sys.exit(main())
