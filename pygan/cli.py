"""`pygan train|sample|eval|bench` (also `python -m pygan ...`).

train's flags and defaults follow PyTorch's dcgan example where they apply (--batchSize 64,
--nz 100, --ngf 64, --ndf 64, --lr 0.0002, --beta1 0.5, ...).
"""

import argparse
import sys

import numpy as np


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except None/False ones and where the help already says what the default is."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _add_train(sub):
    p = sub.add_parser("train", help="train a DCGAN", formatter_class=_Defaults)
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist | mnist | cifar10 | folder | fake")
    p.add_argument("--dataroot", default=None, help="path to the data set (default: the system's Fashion-MNIST)")
    p.add_argument("--batchSize", type=_positive_int, default=64, help="input batch size")
    p.add_argument("--imageSize", type=int, default=32, choices=(32, 64, 128), help="height/width of the images")
    p.add_argument("--nc", type=_positive_int, default=None, help="image channels (default: the data set's)")
    p.add_argument("--nz", type=_positive_int, default=100, help="size of the latent z vector")
    p.add_argument("--ngf", type=_positive_int, default=64,
                   help="generator width: feature maps of G's last hidden layer (doubling towards z)")
    p.add_argument("--ndf", type=_positive_int, default=64,
                   help="discriminator width: feature maps of D's first layer (doubling towards the logit)")
    p.add_argument("--niter", type=_positive_int, default=25, help="number of epochs to train for")
    p.add_argument("--outf", default="runs/dcgan", help="folder for images, logs and checkpoints")
    p.add_argument("--manualSeed", type=int, default=None, help="random seed (default: a random one, printed)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUTF/checkpoint.safetensors (model, data and optimiser-kind options must match "
                        "it; learning rates, betas, loss, penalties, label and noise tricks, d-steps, niter and "
                        "max-steps may change)")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --outf that holds a run, replacing its checkpoints, log and images")
    p.add_argument("--dry-run", action="store_true", help="check a single training step works")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto (the GPU when there is one)")
    p.add_argument("--max-steps", type=_positive_int, default=None, help="stop after this many D steps")
    _add_variant_options(p)
    g = p.add_argument_group("conditional generation and the EMA generator")
    g.add_argument("--conditional", action="store_true",
                   help="G(z, y) and a projection D(x, y) on the data set's class labels (Mirza & Osindero 2014; "
                        "Miyato & Koyama 2018); grids show one row per class")
    g.add_argument("--ema-decay", type=float, default=0.0, metavar="DECAY",
                   help="keep an exponential moving average of G's weights (e.g. 0.999); sample/eval use it (0: off)")
    g.add_argument("--ema-start", type=int, default=0, metavar="STEP", help="the EMA copies G until this step")
    p.add_argument("--fake-size", type=_positive_int, default=1024, help="images in the `fake` data set")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (there is none either when stderr is not a terminal)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="evaluate (pygan eval's metrics) every N D steps; 0: never; default: at each epoch's end "
                        "on the GPU, never on the CPU")
    p.add_argument("--eval-n", type=int, default=10000, help="samples per evaluation (< 10000 is biased)")
    g = p.add_argument_group("speed (the numbers do not change; a checkpoint resumes with or without them)")
    g.add_argument("--cuda-graph", action="store_true",
                   help="after a few eager steps, replay D's and G's forward and backward as captured CUDA graphs "
                        "(implies --flat-params); where a run cannot, one line says why and it trains eagerly")
    g.add_argument("--flat-params", action="store_true",
                   help="each optimiser keeps parameters, gradients and state in one buffer per role: one update "
                        "launch per step")
    p.add_argument("--no-keep-best", action="store_true",
                   help="do not keep OUTF/checkpoint-best.safetensors (the lowest Frechet distance so far)")
    g = p.add_argument_group("data-parallel training (mpirun -np N pygan train ...; --batchSize is the global batch)")
    g.add_argument("--distributed", action="store_true",
                   help="data-parallel even when no MPI launcher or srun is detected (one rank without one)")
    g.add_argument("--sync-bn", action="store_true",
                   help="BatchNorm statistics over the global batch (all ranks): N ranks compute what one process does")
    g.add_argument("--dist-timeout", type=float, default=600.0, metavar="SECONDS",
                   help="end the job when a collective waits longer than this (a rank died or hangs)")
    p.set_defaults(func=cmd_train)


def _add_variant_options(p):
    """The GAN-variant options. Their defaults are None ("not given"): --recipe fills them, then
    pygan.recipes.DEFAULTS; the effective values are printed at start."""
    from .recipes import D_NORMS, LOSSES, OPTIMIZERS, RECIPES

    g = p.add_argument_group("GAN variant (defaults: the recipe's, else DCGAN's)")
    g.add_argument("--recipe", default=None, choices=tuple(RECIPES),
                   help="a published configuration in one word; explicit flags override it (default: dcgan)")
    g.add_argument("--loss", default=None, choices=LOSSES, help="the GAN loss (default: non-saturating)")
    g.add_argument("--g-loss", default=None, choices=LOSSES, help="the older name of --loss")
    g.add_argument("--optimizer", default=None, choices=OPTIMIZERS, help="for both networks (default: adam)")
    g.add_argument("--lr", type=float, default=None, help="learning rate of both networks (default: 0.0002)")
    g.add_argument("--lrD", type=float, default=None, help="D's learning rate (two time-scale updates; default: --lr)")
    g.add_argument("--lrG", type=float, default=None, help="G's learning rate (default: --lr)")
    g.add_argument("--beta1", type=float, default=None, help="Adam's beta1 (default: 0.5)")
    g.add_argument("--beta2", type=float, default=None, help="Adam's beta2 (default: 0.999)")
    g.add_argument("--d-steps", type=_positive_int, default=None, help="D (critic) steps per G step (default: 1)")
    g.add_argument("--clip", type=float, default=None, help="wgan: clip the critic's weights to +-CLIP (default: 0.01)")
    g.add_argument("--gp-weight", type=float, default=None, help="wgan-gp: the gradient penalty's lambda (default: 10)")
    g.add_argument("--r1", type=float, default=None, metavar="GAMMA",
                   help="R1 penalty gamma/2 * E||grad D(x)||^2 on real images, with any loss (default: 0, off)")
    g.add_argument("--d-norm", default=None, choices=D_NORMS, help="D's normalisation layers (default: batch)")
    g.add_argument("--spectral-norm", action="store_const", const=True, default=None,
                   help="spectral normalisation of every conv in D (Miyato et al. 2018)")
    g.add_argument("--label-smooth", type=float, default=None,
                   help="target for real images (one-sided smoothing, e.g. 0.9; default: 1)")
    g.add_argument("--label-flip", type=float, default=None, metavar="P",
                   help="swap D's real/fake labels of each sample with probability P (default: 0)")
    g.add_argument("--instance-noise", type=float, default=None, metavar="SIGMA",
                   help="Gaussian noise of std SIGMA on D's inputs, annealed linearly to 0 over the run (default: 0)")


def _add_sample(sub):
    p = sub.add_parser("sample", help="write a grid of samples from a checkpoint",
                       formatter_class=_Defaults)
    p.add_argument("--checkpoint", required=True, help="a checkpoint.safetensors written by `pygan train`")
    p.add_argument("--n", type=_positive_int, default=64, help="number of samples")
    p.add_argument("--nrow", type=_positive_int, default=8, help="images per row")
    p.add_argument("--out", default="samples.png",
                   help="output: an image grid (.png, .jpg), or the images themselves as .npy/.npz (for `pygan eval`)")
    p.add_argument("--seed", type=int, default=0, help="seed for z")
    p.add_argument("--interpolate", action="store_true",
                   help="rows that walk (spherically) between two random z; --n rows of --steps images")
    p.add_argument("--steps", type=_positive_int, default=8, help="images per interpolation row")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    _add_generator_options(p)
    p.add_argument("--class", dest="class_", default=None, metavar="K",
                   help="a conditional model's class, by index or name (e.g. Sandal); default: one row per class")
    p.set_defaults(func=cmd_sample)


def _add_generator_options(p):
    p.add_argument("--truncation", type=float, default=None, metavar="PSI",
                   help="the truncation trick: redraw every z component with |z| > PSI (Brock et al. 2019)")
    p.add_argument("--no-ema", action="store_true", help="use the trained G even when the checkpoint has an EMA generator")


def _add_eval(sub):
    p = sub.add_parser("eval", help="measure sample quality (Frechet distance, precision/recall, ...) offline",
                       formatter_class=_Defaults)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a checkpoint.safetensors written by `pygan train`: --n samples are drawn")
    src.add_argument("--samples", help="images in a .npy/.npz/.safetensors file (e.g. from `pygan sample --out x.npz`)")
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist | mnist: the real images and classifier")
    p.add_argument("--dataroot", default=None, help="where the data set's IDX files are (default: the system's)")
    p.add_argument("--n", type=_positive_int, default=10000, help="samples drawn from --checkpoint (< 10000 is biased)")
    p.add_argument("--seed", type=int, default=0, help="seed for z (and for the training images of the floor)")
    p.add_argument("--batch-size", type=_positive_int, default=500, help="images per forward pass")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument("--classifier", default=None, help="classifier weights (default: the one shipped for --dataset)")
    p.add_argument("--no-floor", action="store_true", help="skip the real-vs-real floor (10k training images)")
    _add_generator_options(p)
    p.add_argument("--out", default=None, help="JSON file for the results (default: beside the input, *-eval.json)")
    p.set_defaults(func=cmd_eval)


def _add_bench(sub):
    p = sub.add_parser("bench", help="time one D+G training step", formatter_class=_Defaults)
    p.add_argument("--imageSize", type=int, default=None, choices=(32, 64, 128),
                   help="one shape (default: both standard ones, 1x32x32 and 3x64x64)")
    p.add_argument("--nc", type=_positive_int, default=None, help="channels with --imageSize (default 1)")
    p.add_argument("--batchSize", type=_positive_int, default=64)
    p.add_argument("--repeats", type=_positive_int, default=10)
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--torch", action="store_true", help="also time PyTorch's same model (needs torch)")
    p.add_argument("--cpu-backends", default=None,
                   help="comma-separated CPU backends to time against each other, the first as 'pygan' "
                        "(numba, reference; default: the one in effect, see PYGAN_CPU_BACKEND)")
    p.set_defaults(func=cmd_bench)


def build_parser():
    parser = argparse.ArgumentParser(prog="pygan", description="Train and sample GANs with no deep-learning framework.")
    sub = parser.add_subparsers(dest="command", metavar="{train,sample,eval,bench}")
    sub.required = True
    _add_train(sub)
    _add_sample(sub)
    _add_eval(sub)
    _add_bench(sub)
    return parser


def cmd_train(args):
    from .distributed import detect_launch

    if not args.distributed and detect_launch() is None:
        return _train(args, None)  # one process: nothing distributed is imported or touched
    from . import distributed

    if not args.dist_timeout > 0:
        raise ValueError(f"--dist-timeout must be positive, got {args.dist_timeout}")
    comm = distributed.init(args.device, force=args.distributed, timeout=args.dist_timeout)
    try:
        return _train(args, comm)
    except BaseException as exc:
        status = _status(exc)
        if getattr(exc, "pygan_collective", False):  # every rank raised it at the same point
            if comm.rank != 0 or isinstance(exc, distributed.PeerFailed):
                if comm.rank == 0:
                    print(f"pygan: error: {exc}", file=sys.stderr)
                return status
            raise
        if comm.size == 1:
            raise
        # one rank failed on its own: end the whole job now, so no rank waits for this one
        print(f"pygan: error: rank {comm.rank} of {comm.size}: {type(exc).__name__}: {exc}; aborting the job "
              f"(status {status})", file=sys.stderr)
        comm.abort(status)
        raise


def _status(exc):
    from .checkpoint import CheckpointError
    from .distributed import PeerFailed
    from .train import TrainingDiverged

    if isinstance(exc, PeerFailed):
        return exc.status
    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, TrainingDiverged):
        return 3
    if isinstance(exc, (ValueError, TypeError, CheckpointError, RuntimeError, OSError)):
        return 2
    return 1


def _train(args, comm):
    from .train import Config, Trainer, describe

    say = print if comm is None or comm.rank == 0 else (lambda *a, **k: None)

    config = Config(
        dataset=args.dataset, dataroot=args.dataroot, batch_size=args.batchSize, image_size=args.imageSize,
        nz=args.nz, ngf=args.ngf, ndf=args.ndf, niter=args.niter, outf=args.outf,
        manual_seed=args.manualSeed, resume=args.resume, overwrite=args.overwrite, dry_run=args.dry_run, device=args.device,
        max_steps=args.max_steps, recipe=args.recipe, loss=args.loss, g_loss=args.g_loss, optimizer=args.optimizer,
        lr=args.lr, lr_d=args.lrD, lr_g=args.lrG, beta1=args.beta1, beta2=args.beta2, d_steps=args.d_steps,
        clip=args.clip, gp_weight=args.gp_weight, r1=args.r1, d_norm=args.d_norm, spectral_norm=args.spectral_norm,
        label_smooth=args.label_smooth, label_flip=args.label_flip, instance_noise=args.instance_noise,
        conditional=args.conditional, ema_decay=args.ema_decay, ema_start=args.ema_start,
        channels=args.nc, fake_size=args.fake_size, progress=not args.no_progress, eval_every=args.eval_every,
        eval_n=args.eval_n, keep_best=not args.no_keep_best,
        distributed=comm is not None, sync_bn=args.sync_bn, dist_timeout=args.dist_timeout,
        cuda_graph=args.cuda_graph, flat_params=args.flat_params,
    )
    trainer = Trainer(config, comm=comm)
    say(f"options: {describe(config)}")
    say(f"GAN variant: {config.describe_variant()}")
    say(f"device: {trainer.device}; data: {trainer.dataset.name}, {len(trainer.dataset)} images "
        f"{trainer.nc}x{config.image_size}x{config.image_size}; {len(trainer.loader)} steps per epoch; writing to {config.outf}")
    if comm is not None:
        say(f"data-parallel: {comm.size} rank(s) launched by {comm.launcher}, {comm.backend} all-reduce; global batch "
            f"{config.batch_size} = {comm.size} x {trainer.local_batch}; BatchNorm statistics "
            f"{'over the global batch (--sync-bn)' if config.sync_bn else 'per rank (no --sync-bn)'}; rank 0 writes")
    trainer.fit()
    partial = ""
    if trainer.batch:
        partial = f" and {trainer.batch} of {len(trainer.loader)} batches of epoch {trainer.epoch + 1}"
    say(f"done: {trainer.step} steps; {trainer.epoch} of {config.niter} epochs complete{partial}; "
          f"checkpoint {trainer.checkpoint_path}")
    return 0


def _check_truncation(psi):
    if psi is not None and not psi > 0:
        raise ValueError(f"--truncation must be positive (|z| <= PSI), got {psi}")


def _class_index(G, text):
    """The class --class names (an index or a name) for a conditional G; ValueError otherwise."""
    if not G.num_classes:
        raise ValueError("--class needs a conditional model (trained with --conditional); this checkpoint's is not")
    names = G.classes or [str(k) for k in range(G.num_classes)]
    if text in names:
        return names.index(text)
    lowered = [n.lower() for n in names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    try:
        k = int(text)
    except ValueError:
        k = None
    if k is None or not 0 <= k < G.num_classes:
        raise ValueError(f"--class must be an index in [0, {G.num_classes}) or one of {', '.join(names)}; got {text!r}")
    return k


def cmd_sample(args):
    from . import data
    from .autograd import normalise_device
    from .ema import truncated_normal
    from .evaluate import run_generator
    from .train import load_generator

    _check_truncation(args.truncation)
    device = normalise_device(args.device)
    G, _ = load_generator(args.checkpoint, device, ema=not args.no_ema)
    k = None if args.class_ is None else _class_index(G, args.class_)
    rng = np.random.default_rng(args.seed)
    row_labels = None
    if args.interpolate:
        a, b = truncated_normal(rng, (2, args.n, G.nz), args.truncation)
        t = np.linspace(0.0, 1.0, args.steps)
        z = np.stack([_slerp(a[i], b[i], t) for i in range(args.n)]).reshape(-1, G.nz)
        nrow = args.steps
        rows = np.full(args.n, k) if k is not None else np.arange(args.n) % max(G.num_classes, 1)
    elif G.num_classes and k is None:  # one row of --nrow per class
        rows = np.arange(G.num_classes)
        z = truncated_normal(rng, (G.num_classes * args.nrow, G.nz), args.truncation)
        nrow = args.nrow
    else:
        z = truncated_normal(rng, (args.n, G.nz), args.truncation)
        nrow = args.nrow
        rows = None
    labels = None
    if G.num_classes:  # rows: the class of each row of the grid (None: every image is class k)
        labels = np.full(len(z), k) if rows is None else np.repeat(rows, len(z) // len(rows))
        names = G.classes or [str(c) for c in range(G.num_classes)]
        row_labels = None if rows is None else [names[r] for r in rows]
    images = run_generator(G, z, device=device, labels=labels)
    if args.out.lower().endswith((".npy", ".npz")):
        _save_arrays(args.out, images, labels)
    else:
        data.save_image_grid(images, args.out, nrow=nrow, row_labels=row_labels)
    which = "the EMA generator" if G.is_ema else "G"
    asked = f" of class {(G.classes or [])[k] if G.classes else k}" if k is not None else ""
    print(f"wrote {len(images)} samples{asked} from {which} to {args.out}")
    return 0


def _save_arrays(path, images, labels=None):
    """images (float32 in [-1, 1]) as .npy or .npz ('images', and 'labels' for a conditional model),
    written atomically."""
    from .checkpoint import atomic_write

    with atomic_write(path) as f:
        if path.lower().endswith(".npz"):
            np.savez(f, images=images, **({} if labels is None else {"labels": labels}))
        else:
            np.save(f, images)


def cmd_eval(args):
    import os
    import time

    from . import classifier, evaluate
    from .autograd import normalise_device
    from .train import load_generator

    if args.n < 2 * evaluate.K_DENSITY_COVERAGE:
        raise ValueError(f"--n must be at least {2 * evaluate.K_DENSITY_COVERAGE} (k-NN metrics), got {args.n}")
    _check_truncation(args.truncation)
    device = normalise_device(args.device)
    started = time.perf_counter()
    if args.samples and (args.truncation is not None or args.no_ema):
        raise ValueError("--truncation and --no-ema choose how a --checkpoint's generator is sampled; with --samples "
                         "the images are given")
    # Samples are read and checked (layout, size, values) before the classifier or anything else is built.
    samples = None if args.checkpoint else evaluate.load_samples(args.samples)
    extractor = classifier.load(args.dataset, args.classifier, device)
    if args.checkpoint:
        G, meta = load_generator(args.checkpoint, device, ema=not args.no_ema)
        trained_on = (meta.get("config") or {}).get("dataset")
        if trained_on and trained_on.replace("_", "-").lower() != extractor.dataset:
            print(f"pygan: warning: {args.checkpoint} was trained on {trained_on!r} but is being compared with "
                  f"{extractor.dataset!r} (--dataset)", file=sys.stderr)
        images = evaluate.generate(G, args.n, args.seed, args.batch_size, device, truncation=args.truncation)
        labels = None
        if G.num_classes:
            images, labels = images
        trunc = f", truncation {args.truncation}" if args.truncation else ""
        which = "the EMA generator of " if G.is_ema else ""
        per_class = f", {args.n // G.num_classes} per class" if G.num_classes else ""
        source, what = args.checkpoint, f"{args.n} samples from {which}{args.checkpoint} (z seed {args.seed}{trunc}{per_class})"
    else:
        images = samples
        source, what = args.samples, f"{len(images)} images from {args.samples}"
    print(f"evaluating {what} with classifier {evaluate.metric_prefix(extractor)} on {device}")
    reference = evaluate.RealReference(extractor, args.dataroot, floor=not args.no_floor, seed=args.seed)
    result = evaluate.evaluate_images(images, reference)
    if args.checkpoint and labels is not None:
        result.update(evaluate.conditional_metrics(images, labels, reference, G.classes))
    result["source"] = what
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(evaluate.format_table(result))
    out = args.out or os.path.splitext(source)[0] + "-eval.json"
    evaluate.write_json(result, out)
    print(f"wrote {out}")
    return 0


def _slerp(a, b, t):
    """Spherical interpolation between latent vectors (Gaussian z live near a sphere)."""
    omega = np.arccos(np.clip(np.dot(a / np.linalg.norm(a), b / np.linalg.norm(b)), -1.0, 1.0))
    if omega < 1e-6:
        return np.outer(1 - t, a) + np.outer(t, b)
    return (np.outer(np.sin((1 - t) * omega), a) + np.outer(np.sin(t * omega), b)) / np.sin(omega)


def cmd_bench(args):
    from .bench import STANDARD_SHAPES, format_results, machine_description, time_train_step

    if args.imageSize is None:
        if args.nc is not None:
            raise ValueError("--nc needs --imageSize")
        shapes = STANDARD_SHAPES
    else:
        shapes = ((args.imageSize, args.nc or 1),)
    backends = [b.strip() for b in args.cpu_backends.split(",")] if args.cpu_backends else None
    print(f"machine: {machine_description()}")
    for size, nc in shapes:
        results = time_train_step(size, nc, args.batchSize, device=args.device, repeats=args.repeats,
                                  with_torch=args.torch, cpu_backends=backends)
        print(format_results(results), flush=True)
    return 0


def main(argv=None):
    from .checkpoint import CheckpointError
    from .train import TrainingDiverged

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("pygan: interrupted", file=sys.stderr)
        return 130
    except TrainingDiverged as exc:
        print(f"pygan: training diverged: {exc}", file=sys.stderr)
        return 3
    except (ValueError, TypeError, CheckpointError, RuntimeError) as exc:
        print(f"pygan: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only or missing folder, a file where a folder should be, ...
        print(f"pygan: error: {_describe_os_error(exc)}", file=sys.stderr)
        return 2


def _describe_os_error(exc):
    """'<what> (<path>)' for an OSError: no errno number, no traceback."""
    what = exc.strerror or str(exc)
    paths = [p for p in (exc.filename, exc.filename2) if p is not None]
    return f"{what} ({', '.join(map(str, paths))})" if paths else what


if __name__ == "__main__":
    sys.exit(main())
