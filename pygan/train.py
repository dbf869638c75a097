"""The GAN training loop (DCGAN by default, and its variants).

Each step: a discriminator (critic) step on a real batch and on G(z).detach(); then, after every
`d_steps` D steps, a generator step. The losses are pygan.losses' (`loss`: non-saturating BCE by
default, minimax, lsgan, hinge, wgan, wgan-gp), with optional penalties (wgan-gp's gradient
penalty, R1), weight clipping (wgan), label smoothing and flipping, and instance noise on D's
inputs. `recipe` sets a published configuration in one word (pygan.recipes); explicit options
override it.

Everything that makes the run reproducible (weights, both Adam states, the global random
generator, the position in the data order) goes into the checkpoint, so a resumed run continues
bit-for-bit where the straight run would be.

Reliability rules (see README, Training):
- one run per output folder: `OUTF/.lock` is held with flock for the run's lifetime (the OS
  releases it when the process dies, so a killed run leaves no stale lock);
- a fresh run refuses a folder that holds a checkpoint unless told --resume or --overwrite;
- every step checks the losses and every BatchNorm running statistic are finite (one reduction,
  folded into the loss's host transfer), and no checkpoint with a non-finite tensor is written;
- resuming refuses options that change the model or the data order, and applies (and prints)
  changed optimiser and loop options;
- epochs are numbered from 1 for people: console, progress bar, image names, log.csv.
"""

import contextlib
import csv
import dataclasses
import errno
import io
import json
import math
import os
import re
import signal
import sys
import time

import numpy as np

from . import checkpoint as ckpt
from . import data as datasets
from . import losses, optim, recipes
from .ema import ModelEMA
from .autograd import Tensor, array_module, no_grad, normalise_device, to_device
from .models import Discriminator, Generator
from .random import default_generator, get_rng_state, manual_seed, set_rng_state

LOG_FIELDS = ["step", "epoch", "loss_D", "loss_G", "D_x", "D_G_z1", "D_G_z2", "seconds"]
EVAL_FIELDS = ["step", "epoch", "n", "frechet_distance", "precision", "recall", "density", "coverage",
               "class_kl_to_uniform", "inception_score", "seconds", "generator", "class_accuracy", "intra_fd"]
CHECKPOINT = "checkpoint.safetensors"
BEST_CHECKPOINT = "checkpoint-best.safetensors"
LOCK = ".lock"
GRID_NAME = "fake_samples_epoch_{:03d}.png"  # the epoch number is 1-based: the grid after the first epoch is _001
# What `pygan train` writes; a fresh run (no --resume) starts by removing these.
_OUTPUT_NAMES = (CHECKPOINT, BEST_CHECKPOINT, "log.csv", "eval.csv", "losses.png", "real_samples.png")
EMA_GRID_NAME = "fake_samples_ema_epoch_{:03d}.png"  # the EMA generator's grid, when --ema-decay is on
_GRID_RE = re.compile(r"^fake_samples_(ema_)?epoch_\d+\.png$")
# Temporary files of checkpoint.atomic_write (".<name>.<pid>.<8 hex>.tmp") and of older versions'
# log truncation ("log.csv.tmp"): what a killed run can leave behind.
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")
_OLD_TEMP_NAMES = ("log.csv.tmp", "eval.csv.tmp")

# Options that fix the model or the order of the data: a resumed run must use the checkpoint's.
_FIXED_OPTIONS = {"nz": "--nz", "ngf": "--ngf", "ndf": "--ndf", "image_size": "--imageSize", "nc": "--nc",
                  "dataset": "--dataset", "batch_size": "--batchSize", "fake_size": "--fake-size",
                  "manual_seed": "--manualSeed", "d_norm": "--d-norm", "spectral_norm": "--spectral-norm",
                  "optimizer": "--optimizer", "conditional": "--conditional"}
# Options a resumed run may change: applied, printed, recorded in the next checkpoint.
_CHANGEABLE_OPTIONS = {"lr": "lr", "lr_d": "lrD", "lr_g": "lrG", "beta1": "beta1", "beta2": "beta2",
                       "d_steps": "d_steps", "label_smooth": "label_smooth", "label_flip": "label_flip",
                       "instance_noise": "instance_noise", "loss": "loss", "clip": "clip", "gp_weight": "gp_weight",
                       "r1": "r1", "niter": "niter", "max_steps": "max_steps", "ema_decay": "ema_decay",
                       "ema_start": "ema_start", "sync_bn": "sync_bn", "flat_params": "flat_params",
                       "cuda_graph": "cuda_graph"}
# Model options recorded in the checkpoint's model description after the first DCGAN version:
# a checkpoint without them was made with these values.
_MODEL_VARIANT_DEFAULTS = {"d_norm": "batch", "spectral_norm": False, "num_classes": 0, "embed_dim": 0}
_NEWER_OPTION_DEFAULTS = {"optimizer": "adam", "conditional": False}  # options older checkpoints do not record
# Model sizes beyond these are not DCGANs anyone trains here; metadata claiming them is refused
# before anything is allocated (the tensor shapes are checked as well).
_MAX_WIDTH = 1 << 16
_MISSING = object()  # an option the checkpoint does not record
_MAX_CHANNELS = 4


@dataclasses.dataclass
class _GraphState:
    """A graph-mode run's static buffers and graphs (pygan.cuda_graph)."""

    graphs: object
    warmup: int
    real: object  # the batch, copied in before each replay
    z: object  # G's noise, drawn on the host (pygan's generator) and copied in
    summary_d: object  # [loss_D, D(x), D(G(z)), stats check], written by the D graph
    summary_g: object  # [loss_G, D(G(z)), stats check], written by the G graph
    fake: object = None  # G(z) of the D graph, the G graph's input
    captured: set = dataclasses.field(default_factory=set)


class TrainingDiverged(RuntimeError):
    """A loss or a tensor became NaN or infinite; training stopped, and no non-finite checkpoint
    was written. The message says whether a finite checkpoint is on disk."""


class OutputFolderBusy(RuntimeError):
    """Another process holds the output folder's lock."""


@dataclasses.dataclass
class Config:
    dataset: str = "fashion-mnist"
    dataroot: str | None = None
    batch_size: int = 64
    image_size: int = 32
    nz: int = 100
    ngf: int = 64
    ndf: int = 64
    niter: int = 25
    outf: str = "runs/dcgan"
    manual_seed: int | None = None
    resume: bool = False
    overwrite: bool = False  # a fresh run may replace a folder that holds a checkpoint
    dry_run: bool = False
    device: str = "auto"
    max_steps: int | None = None
    channels: int | None = None
    fake_size: int = 1024
    progress: bool = True  # a progress bar, when stderr is a terminal
    eval_every: int | None = None  # D steps between evaluations; None: each epoch on the GPU, never on the CPU; 0: off
    eval_n: int = 10000  # samples per evaluation (fewer is faster but biased)
    keep_best: bool = True  # with evaluation on: keep checkpoint-best.safetensors, the lowest Frechet distance
    # The GAN variant. None means "not given": resolve() fills it from `recipe`, then pygan.recipes.DEFAULTS.
    recipe: str | None = None  # dcgan | lsgan | wgan | wgan-gp | hinge-sn
    loss: str | None = None  # non-saturating | minimax | lsgan | hinge | wgan | wgan-gp
    g_loss: str | None = None  # the older name of `loss` (PyTorch's dcgan example has only the G loss to choose)
    optimizer: str | None = None  # adam | rmsprop
    lr: float | None = None  # both networks' learning rate, unless lr_d / lr_g is given
    lr_d: float | None = None
    lr_g: float | None = None
    beta1: float | None = None
    beta2: float | None = None
    d_steps: int | None = None  # D (critic) steps per G step
    clip: float | None = None  # wgan: the critic's weights are clipped to +-clip after each critic step
    gp_weight: float | None = None  # wgan-gp: lambda
    r1: float | None = None  # R1 penalty gamma (0: off)
    d_norm: str | None = None  # batch | layer | instance | none
    spectral_norm: bool | None = None  # spectral norm on D's convs
    label_smooth: float | None = None  # target for real images (one-sided smoothing)
    label_flip: float | None = None  # probability of swapping D's real/fake labels per sample
    instance_noise: float | None = None  # std of Gaussian noise on D's inputs, annealed linearly to 0
    # Conditional generation and the EMA generator (the conditional-generation issue).
    conditional: bool = False  # G(z, y) and a projection D(x, y) on the data set's class labels
    ema_decay: float = 0.0  # > 0: keep an exponential moving average of G's weights (e.g. 0.999)
    ema_start: int = 0  # the EMA copies G until this step, then averages
    # Data parallelism (pygan.distributed): the communicator is passed to the Trainer; these record how.
    distributed: bool = False  # --distributed: data-parallel even without a detected launcher
    sync_bn: bool = False  # BatchNorm statistics over every rank's slice of the global batch
    dist_timeout: float = 600.0  # seconds a collective may wait before the job is ended
    # Speed (issue 16): neither changes the numbers; a checkpoint resumes in either layout.
    flat_params: bool = False  # each optimiser keeps parameters, gradients and state in one buffer per role
    cuda_graph: bool = False  # replay the step as CUDA graphs (implies flat_params); eager where impossible

    def resolve(self):
        """Fill the variant options left unset from the recipe, then the defaults (once); returns
        {option: "default" | "recipe NAME" | "flag"}."""
        if getattr(self, "_sources", None) is not None:
            return self._sources
        if self.g_loss is not None:
            if self.loss is not None and self.loss != self.g_loss:
                raise ValueError(f"--loss {self.loss} and --g-loss {self.g_loss} disagree (--g-loss is the old name of --loss)")
            self.loss = self.g_loss
        settings, sources = recipes.resolve(self.recipe, {name: getattr(self, name) for name in recipes.DEFAULTS})
        for name, value in settings.items():
            setattr(self, name, value)
        self.g_loss = self.loss
        self._sources = sources
        return sources

    def describe_variant(self):
        """One line per variant option: value and where it came from."""
        sources = self.resolve()
        return "; ".join(f"{name} {getattr(self, name)!r} ({sources[name]})" for name in recipes.DEFAULTS)

    def validate(self):
        self.resolve()

        def positive(name):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")

        for name in ("batch_size", "nz", "ngf", "ndf", "niter", "d_steps", "fake_size"):
            positive(name)
        if self.max_steps is not None:
            positive("max_steps")
        if self.eval_every is not None and (not isinstance(self.eval_every, int) or self.eval_every < 0):
            raise ValueError(f"eval_every must be a non-negative integer (0: off), got {self.eval_every!r}")
        if not isinstance(self.eval_n, int) or self.eval_n < 10:
            raise ValueError(f"eval_n must be an integer >= 10, got {self.eval_n!r}")
        if self.image_size not in (32, 64, 128):
            raise ValueError(f"imageSize must be 32, 64 or 128 (DCGAN's sizes), got {self.image_size}")
        recipes.validate({name: getattr(self, name) for name in recipes.DEFAULTS})
        if isinstance(self.ema_decay, bool) or not isinstance(self.ema_decay, (int, float)) or not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1) (0: no EMA generator), got {self.ema_decay!r}")
        if isinstance(self.ema_start, bool) or not isinstance(self.ema_start, int) or self.ema_start < 0:
            raise ValueError(f"ema_start must be a non-negative integer step, got {self.ema_start!r}")
        if isinstance(self.dist_timeout, bool) or not isinstance(self.dist_timeout, (int, float)) \
                or not self.dist_timeout > 0:
            raise ValueError(f"dist_timeout must be a positive number of seconds, got {self.dist_timeout!r}")
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite exclude each other: continue the run, or replace it")
        normalise_device(self.device)


class Trainer:
    """Owns the output folder from construction until fit() returns (or close()): its lock is held
    that long. A Trainer that fails to construct holds nothing."""

    def __init__(self, config, log=print, comm=None):
        """`comm`: a pygan.distributed communicator for data-parallel training (None: one process).
        Then every rank constructs a Trainer; rank 0 alone owns (locks and writes) the folder."""
        self.comm = comm
        self.rank, self.world = (0, 1) if comm is None else (comm.rank, comm.size)
        self.config = c = config
        self.log = log if self.rank == 0 else _quiet
        self._lock = None
        self._good_step = None  # step of the finite checkpoint on disk that this run wrote or resumed from
        self._stop_agreed = False  # distributed: every rank saw a Ctrl-C request by the last step
        self._interrupt = None
        self.checkpoint_path = os.path.join(c.outf, CHECKPOINT)
        self.log_path = os.path.join(c.outf, "log.csv")
        self.eval_path = os.path.join(c.outf, "eval.csv")
        self.best_path = os.path.join(c.outf, BEST_CHECKPOINT)
        if comm is not None:
            self._init_distributed()
            return
        config.validate()
        self.device = normalise_device(c.device)
        _prepare_output_folder(c.outf)
        self._lock = _RunLock(c.outf)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _init_distributed(self):
        """Rank 0 checks the options, takes the folder (lock, resume checkpoint, seed) and
        broadcasts what it read; then every rank builds the same state, rank 0's parameters are
        broadcast, and every failure is agreed on so that no rank waits for one that gave up."""
        from . import distributed

        c, comm = self.config, self.comm
        error = payload = None
        if self.rank == 0:
            try:
                c.validate()
                distributed.local_batch_size(c.batch_size, self.world)
                _prepare_output_folder(c.outf)
                self._lock = _RunLock(c.outf)
                resume = self._setup_folder()
                payload = (resume, c.manual_seed, c.dataroot)
            except BaseException as exc:  # noqa: BLE001 -- every rank must learn of it
                error = exc
        summary = comm.bcast_object(distributed.error_summary(error) if error is not None else payload,
                                    what="rank 0's set-up")
        if error is not None:
            self.close()
            raise distributed.collective(error)
        if isinstance(summary, dict):
            raise distributed.collective(distributed.PeerFailed(summary["message"], summary["status"]))
        resume, c.manual_seed, c.dataroot = summary
        error = None
        try:
            if self.rank != 0:
                c.validate()
            self.device = normalise_device(c.device)
            self.local_batch = distributed.local_batch_size(c.batch_size, self.world)
            self._setup_state(resume)
        except BaseException as exc:  # noqa: BLE001
            error = exc
        try:
            distributed.agree(comm, error, "building the model and data on every rank")
        except BaseException:
            self.close()
            raise
        for model in (self.G, self.D) + ((self.G_ema,) if self.G_ema is not None else ()):
            distributed.broadcast_module(comm, model)
        if c.sync_bn:
            distributed.convert_sync_batchnorm(self.G, comm)
            distributed.convert_sync_batchnorm(self.D, comm)
        self._d_params, self._g_params = list(self.D.parameters()), list(self.G.parameters())

    def close(self):
        """Release the output folder's lock (fit() does this when it returns or fails)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _setup(self):
        self._setup_state(self._setup_folder())

    def _setup_folder(self):
        """The output folder's part of the set-up (rank 0's alone when distributed): stale temporary
        files, the checkpoint to resume from (checked) or the refusal to reuse a run's folder, the
        seed. Returns the checkpoint read for --resume, or None."""
        c = self.config
        removed = _remove_stale_temp_files(c.outf)
        if removed:
            self.log(f"removed {len(removed)} temporary file(s) left by an interrupted run: {', '.join(removed)}")
        resume = None
        if c.resume:
            resume = self._read_resume_checkpoint()
        else:
            existing = [p for p in (self.checkpoint_path, self.best_path) if os.path.exists(p)]
            if existing and not c.overwrite:
                raise FileExistsError(
                    errno.EEXIST,
                    f"--outf {c.outf} already holds a run's checkpoint; continue it with --resume, replace it with "
                    "--overwrite, or choose another --outf", existing[0])
        if c.manual_seed is None:
            c.manual_seed = int(np.random.SeedSequence().entropy % (2**31))
        return resume

    def _setup_state(self, resume):
        """Data, models, optimisers and, with `resume`, the checkpoint's state (every rank's part)."""
        c = self.config
        self.dataset = datasets.load_dataset(c.dataset, dataroot=c.dataroot, image_size=c.image_size, channels=c.channels,
                                             fake_size=c.fake_size)
        if len(self.dataset) < c.batch_size:
            raise ValueError(f"batchSize {c.batch_size} is larger than the dataset ({len(self.dataset)} images)")
        self.nc = self.dataset.num_channels
        if resume is not None and resume[2]["nc"] != self.nc:
            raise ckpt.CheckpointError(
                f"cannot resume from {self.checkpoint_path}: it was made with {resume[2]['nc']} image channels, this "
                f"run's data has {self.nc} (--nc); use the checkpoint's options, or a new --outf")
        self.classes = None
        if c.conditional:
            if self.dataset.num_classes < 2:
                raise ValueError(
                    f"--conditional needs a labelled data set with at least 2 classes; {c.dataset!r} has no labels here "
                    "(for --dataset folder, put each class's images in its own sub-folder of --dataroot)")
            self.classes = list(self.dataset.classes)
        self.num_classes = len(self.classes) if self.classes else 0
        self.loader = datasets.DataLoader(self.dataset, batch_size=c.batch_size, shuffle=True, drop_last=True, seed=c.manual_seed,
                                          return_labels=c.conditional)

        manual_seed(c.manual_seed)
        self.G = Generator(c.nz, c.ngf, self.nc, c.image_size, num_classes=self.num_classes).to(self.device)
        self.D = Discriminator(c.ndf, self.nc, c.image_size, norm=c.d_norm, spectral_norm=c.spectral_norm,
                               num_classes=self.num_classes).to(self.device)
        self.optG = self._optimizer(self.G, c.lr_g or c.lr)
        self.optD = self._optimizer(self.D, c.lr_d or c.lr)
        self.total_steps = c.niter * len(self.loader)  # instance noise anneals over --niter epochs (not --max-steps)
        # BatchNorm running statistics: checked for finiteness every step (they go inf long before
        # a loss does when the learning rate is far too high).
        self._running_stats = [(f"{prefix}.{name}", b) for prefix, m in (("G", self.G), ("D", self.D))
                               for name, b in m.named_buffers() if name.endswith(("running_mean", "running_var"))]
        self.fixed_noise = self._noise(64 if not self.num_classes else 8 * min(self.num_classes, 16))
        # a conditional grid has one row of 8 per class (the first 16 classes)
        self.fixed_labels = (np.repeat(np.arange(min(self.num_classes, 16)), 8) if self.num_classes else None)
        self.G_ema = self.ema = None
        if c.ema_decay:
            self.G_ema = Generator(c.nz, c.ngf, self.nc, c.image_size, num_classes=self.num_classes).to(self.device)
            self.ema = ModelEMA(self.G, self.G_ema, c.ema_decay, c.ema_start)
        self.step = 0  # optimisation steps (D steps) done
        self.epoch = 0  # epochs completed (0-based index of the current epoch)
        self.batch = 0  # batches of the current epoch done
        self.g_steps = 0
        self.best_fd = None
        self._eval_reference = None
        # None: at each epoch's end on the GPU (cheap there) when the data set has a shipped classifier;
        # never on the CPU (10k samples cost ~30 s). -1 means "at each epoch's end".
        from . import classifier

        if c.eval_every is None:
            key = datasets._canonical_name(c.dataset)
            has_classifier = key in classifier.CLASS_NAMES and os.path.isfile(classifier.default_path(key))
            self.eval_every = -1 if self.device != "cpu" and has_classifier else 0
        else:
            self.eval_every = c.eval_every
        if self.eval_every and self.rank == 0:
            self._extractor = classifier.load(c.dataset, device=self.device)  # fails now, not after an epoch
        self._graph = None
        if c.cuda_graph:
            self._setup_cuda_graph()
        if resume is not None:
            self._apply_checkpoint(*resume)
        elif self.rank == 0:  # a fresh run starts clean, once everything above has worked
            removed = _clear_outputs(c.outf)
            if removed and c.overwrite:
                self.log(f"--overwrite: removed {len(removed)} file(s) of the earlier run in {c.outf}")

    # -- pieces --------------------------------------------------------------------------------
    def _optimizer(self, model, lr):
        c = self.config
        flat = bool(c.flat_params or c.cuda_graph)
        if c.optimizer == "rmsprop":
            return optim.RMSprop(model.parameters(), lr=lr, flat=flat)
        return optim.Adam(model.parameters(), lr=lr, betas=(c.beta1, c.beta2), flat=flat)

    def _set_hyper(self):
        """Apply the config's learning rates (and Adam's betas) to both optimisers (after a resume)."""
        c = self.config
        for opt, lr in ((self.optG, c.lr_g or c.lr), (self.optD, c.lr_d or c.lr)):
            for group in opt.param_groups:
                group["lr"] = lr
                if "betas" in group:
                    group["betas"] = (c.beta1, c.beta2)

    def _targets(self, n):
        """D's targets for real and fake images: label_smooth and 0, each pair swapped with
        probability label_flip (drawn from the global generator, so a resume replays them)."""
        c = self.config
        if not c.label_flip:
            return c.label_smooth, 0.0
        real, fake = losses.flip_labels(n, c.label_smooth, 0.0, c.label_flip, self._step_rng())
        return Tensor(to_device(real, self.device)), Tensor(to_device(fake, self.device))

    def _d_input(self, images, sigma):
        """Instance noise: images + N(0, sigma^2) when sigma > 0 (the noise is a constant)."""
        if not sigma:
            return images
        noise = self._step_rng().standard_normal(images.shape).astype(np.float32) * np.float32(sigma)
        return images + Tensor(to_device(noise, self.device))

    def _noise_sigma(self):
        """instance_noise annealed linearly from its value at step 0 to 0 at the run's last step."""
        c = self.config
        if not c.instance_noise:
            return 0.0
        return c.instance_noise * max(0.0, 1.0 - self.step / max(1, self.total_steps))

    def _clip_critic(self):
        """WGAN: clip every critic parameter to [-clip, clip] in place (flat: the whole parameter
        buffer in one call, the same values; its zero padding stays zero)."""
        clip = self.config.clip
        flat = self.optD.flat
        if flat is not None:
            flat.adopt()
            flat.xp.clip(flat.params, -clip, clip, out=flat.params)
            return
        for p in self.D.parameters():
            array_module(p.data).clip(p.data, -clip, clip, out=p.data)

    def _G(self, z, y):
        return self.G(z) if y is None else self.G(z, y)

    def _D(self, x, y):
        return self.D(x) if y is None else self.D(x, y)

    def _noise(self, n, rng=None):
        rng = default_generator() if rng is None else rng
        z = rng.standard_normal((n, self.config.nz, 1, 1)).astype(np.float32)
        return Tensor(to_device(z, self.device))

    def _step_rng(self):
        """The generator a training step draws from: the global one; when distributed, a view that
        draws the global batch's numbers (as one process would) and returns this rank's slice."""
        if self.comm is None:
            return default_generator()
        from .distributed import ShardedGenerator

        return ShardedGenerator(default_generator(), self.rank, self.world)

    def _mean_over_ranks(self, values, stats_ok):
        """Distributed: the mean over the ranks of this rank's log values (each from an equal share
        of the global batch, so the mean is the global batch's), whether every rank's statistics
        are finite, and whether any rank was asked to stop (Ctrl-C): one small all-reduce."""
        hit = self._interrupt is not None and self._interrupt.hit
        total = self.comm.allreduce_host(list(values) + [0.0 if stats_ok else 1.0, 1.0 if hit else 0.0],
                                         what=f"all-reduce of step {self.step + 1}'s losses")
        k = len(values)
        self._stop_agreed = self._stop_agreed or bool(total[k + 1] > 0)
        return [float(v) / self.world for v in total[:k]], bool(total[k] == 0)

    def _d_summary(self, out):
        """What the log's D_x / D_G_z columns hold, as a one-element device array (read back with
        the loss): the mean probability D gives for the BCE losses, the mean raw output (score)
        for the others, whose D is no classifier. float64, as the host computed it before."""
        xp = array_module(out.data)
        x = out.data.astype(xp.float64)
        if self.config.loss in ("non-saturating", "minimax"):
            x = 1.0 / (1.0 + xp.exp(-xp.clip(x, -500, 500)))
        return x.mean().reshape(1)

    def _item_and_stats_finite(self, loss, *outputs):
        """loss.item(), whether every BatchNorm running statistic is finite, and _d_summary of each
        of D's `outputs`, in one host transfer (one synchronisation on the GPU per loss)."""
        return self._read_summary(to_device(self._summary_device(loss, *outputs), "cpu"), len(outputs))

    def _summary_device(self, loss, *outputs):
        """[loss, _d_summary of each output, (running statistics check)] as one float64 device array,
        computed on the device without reading anything back (a CUDA graph captures it).

        x * 0 is 0 for a finite x and NaN for an infinite or NaN one, so one sum over all running
        statistics (concatenated) is 0 exactly when they are all finite; it travels to the host with
        the loss, so the check costs no extra synchronisation."""
        xp = array_module(loss.data)
        parts = [loss.data.reshape(1).astype(xp.float32).astype(xp.float64)]
        parts += [self._d_summary(out) for out in outputs]
        if self._running_stats:
            stats = xp.concatenate([t.data.reshape(-1) for _, t in self._running_stats])
            with np.errstate(invalid="ignore"):  # inf * 0 is the point (numpy warns; CuPy does not)
                parts.append((stats * 0).sum().reshape(1).astype(xp.float64))
        return xp.concatenate(parts)

    def _summary_size(self, outputs):
        return 1 + outputs + (1 if self._running_stats else 0)

    @staticmethod
    def _read_summary(host, outputs):
        """(loss, statistics finite, [summary of each output]) from _summary_device's values on the host."""
        k = 1 + outputs
        summaries = [float(v) for v in host[1:k]]
        return float(host[0]), bool(len(host) == k or host[k] == 0), summaries

    def train_step(self, real_images, z=None):
        """One D step, and a G step when due. Returns the row for the log. `z`: G's noise already
        drawn for this step (by a graph step that fell back), else drawn here."""
        c = self.config
        t0 = time.perf_counter()
        y_real = y_fake = None
        if self.num_classes:
            real_images, labels = real_images
            y_real = to_device(labels, self.device)
        real = Tensor(to_device(real_images, self.device))
        n = real.shape[0]
        sigma = self._noise_sigma()
        # D (critic): minimise the loss's D part on D(x) and D(G(z)), plus any penalty
        self.D.zero_grad()
        real_target, fake_target = self._targets(n)
        out_real = self._D(self._d_input(real, sigma), y_real)
        z = self._noise(n, self._step_rng()) if z is None else Tensor(to_device(z, self.device))
        if self.num_classes:  # the classes asked of G: uniform, from the global generator
            y_fake = to_device(self._step_rng().integers(0, self.num_classes, n), self.device)
        fake = self._G(z, y_fake)
        out_fake = self._D(self._d_input(fake.detach(), sigma), y_fake)
        err_d = losses.d_loss(c.loss, out_real, out_fake, real_target, fake_target)
        # the penalties see D at the real labels (interpolates lie between a real and a fake image)
        critic = self.D if not self.num_classes else (lambda x: self.D(x, y_real))
        if c.loss == "wgan-gp":
            err_d = err_d + c.gp_weight * losses.gradient_penalty(critic, real, fake.detach(), rng=self._step_rng())
        if c.r1:
            err_d = err_d + (c.r1 / 2) * losses.r1_penalty(critic, real)
        err_d.backward()
        if self.comm is not None:
            from .distributed import average_gradients

            average_gradients(self.comm, self._d_params, "D's gradients")
        self.optD.step()
        if c.loss == "wgan":
            self._clip_critic()
        loss_d, stats_ok, (d_x, d_g_z1) = self._item_and_stats_finite(err_d, out_real, out_fake)
        row = {"step": self.step + 1, "epoch": self.epoch + 1, "loss_D": loss_d,
               "D_x": d_x, "D_G_z1": d_g_z1, "loss_G": "", "D_G_z2": ""}
        if self.comm is not None:
            (loss_d, row["D_x"], row["D_G_z1"]), stats_ok = self._mean_over_ranks(
                (loss_d, row["D_x"], row["D_G_z1"]), stats_ok)
            row["loss_D"] = loss_d
        self._check_finite("loss_D", loss_d, stats_ok)
        # G: after every d_steps D steps
        if (self.step + 1) % c.d_steps == 0:
            self._g_step(fake, y_fake, sigma, row)
        self.step += 1
        row["seconds"] = round(time.perf_counter() - t0, 6)
        return row

    def _g_step(self, fake, y_fake, sigma, row):
        c = self.config
        self.G.zero_grad()
        with _frozen(list(self.D.parameters())):  # D's weight gradients in G's step are never used: not computed
            out = self._D(self._d_input(fake, sigma), y_fake)
            err_g = losses.g_loss(c.loss, out)
            err_g.backward()
        if self.comm is not None:
            from .distributed import average_gradients

            average_gradients(self.comm, self._g_params, "G's gradients")
        self.optG.step()
        self.g_steps += 1
        if self.ema is not None:
            self.ema.update(self.step + 1)
        row["loss_G"], stats_ok, (row["D_G_z2"],) = self._item_and_stats_finite(err_g, out)
        if self.comm is not None:
            (row["loss_G"], row["D_G_z2"]), stats_ok = self._mean_over_ranks((row["loss_G"], row["D_G_z2"]), stats_ok)
        self._check_finite("loss_G", row["loss_G"], stats_ok)

    # -- the step as CUDA graphs (pygan.cuda_graph) ----------------------------------------------------
    def _setup_cuda_graph(self, graphs=None):
        """Graph mode when this run allows it, else one line on stderr saying why (eager, as without
        --cuda-graph). `graphs`: a capture/replay implementation (tests pass cuda_graph.HostGraphs)."""
        from . import cuda_graph

        c = self.config
        if graphs is None:
            cupy_module = None
            if self.device == "cuda":
                try:
                    from .backend import require_cupy

                    cupy_module = require_cupy()
                except Exception:  # noqa: BLE001 -- the reason below says it
                    cupy_module = None
            reason = cuda_graph.unsupported_reason(c, self.device, self.comm, cupy_module)
            if reason is None:
                try:
                    graphs = cuda_graph.CupyGraphs(cupy_module)
                except Exception as exc:  # noqa: BLE001
                    reason = f"no capture stream ({type(exc).__name__}: {exc})"
        else:
            reason = cuda_graph.config_reason(c, self.comm)
        if reason is None and (self.optD.flat is None or self.optG.flat is None):
            reason = "the optimisers have no flat parameter buffers (their updates cannot be captured)"
        if reason is not None:
            self._graph = None
            if self.rank == 0:
                cuda_graph.say_fallback(reason)
            return
        xp = array_module(self.fixed_noise.data)
        image = (c.batch_size, self.nc, c.image_size, c.image_size)
        self._graph = _GraphState(
            graphs=graphs, warmup=max(cuda_graph.WARMUP_STEPS, c.d_steps),  # a G step among them
            real=xp.zeros(image, dtype=np.float32), z=xp.zeros((c.batch_size, c.nz, 1, 1), dtype=np.float32),
            summary_d=xp.zeros(self._summary_size(2), dtype=np.float64),
            summary_g=xp.zeros(self._summary_size(1), dtype=np.float64))

    def _train_step(self, real_images):
        """train_step, or its graph replay once warmed up (--cuda-graph)."""
        gs = self._graph
        if gs is None:
            return self.train_step(real_images)
        with gs.graphs.context():
            if gs.warmup > 0:  # eager, on the graphs' stream: kernels compiled, state allocated
                gs.warmup -= 1
                return self.train_step(real_images)
            return self._graph_step(real_images)

    def _graph_fallback(self, exc):
        from . import cuda_graph

        self._graph = None
        if self.rank == 0:
            cuda_graph.say_fallback(f"the capture failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")

    def _graph_step(self, real_images):
        """One step as replays of captured graphs: D's forward, backward, update (and --clip), then
        G's forward, backward, update (and the EMA average). Before each replay the host stages what
        changes per step (the batch, z, the optimisers' step counts and bias corrections, the EMA
        decay); one read-back at the end."""
        c, gs = self.config, self._graph
        t0 = time.perf_counter()
        z = self._step_rng().standard_normal((c.batch_size, c.nz, 1, 1)).astype(np.float32)  # as _noise draws it
        if tuple(np.shape(real_images)) != gs.real.shape:
            raise ValueError(f"--cuda-graph: a batch of shape {tuple(np.shape(real_images))}, the graph's is {gs.real.shape}")
        gs.graphs.begin_step()
        gs.graphs.copy_in(gs.real, real_images)
        gs.graphs.copy_in(gs.z, z)
        if "D" not in gs.captured:
            try:
                gs.graphs.capture("D", self._graph_body_d)
            except Exception as exc:  # noqa: BLE001 -- say why and stay eager
                self._graph_fallback(exc)
                return self.train_step(real_images, z=z)
            gs.captured.add("D")
        self.optD.stage_step()  # after the capture: a failed one leaves the step counts alone
        gs.graphs.launch("D")
        row = {"step": self.step + 1, "epoch": self.epoch + 1, "loss_G": "", "D_G_z2": ""}
        summaries = [gs.summary_d]
        g_due = (self.step + 1) % c.d_steps == 0
        if g_due:
            # the EMA averages inside G's graph; its copy steps (before --ema-start) stay eager
            ema_in_graph = self.ema is not None and self.step + 1 >= self.ema.start
            name = "G+EMA" if ema_in_graph else "G"
            if name not in gs.captured:
                try:
                    gs.graphs.capture(name, lambda: self._graph_body_g(ema_in_graph))
                except Exception as exc:  # noqa: BLE001
                    self._graph_fallback(exc)
                    loss_d, stats_ok, (d_x, d_g_z1) = self._read_summary(to_device(gs.summary_d, "cpu"), 2)
                    row.update(loss_D=loss_d, D_x=d_x, D_G_z1=d_g_z1)
                    self._check_finite("loss_D", loss_d, stats_ok)
                    self._g_step(gs.fake, None, 0.0, row)
                    self.step += 1
                    row["seconds"] = round(time.perf_counter() - t0, 6)
                    return row
                gs.captured.add(name)
            self.optG.stage_step()
            if ema_in_graph:
                self.ema.stage(self.step + 1)
            gs.graphs.launch(name)
            self.g_steps += 1
            if self.ema is not None and not ema_in_graph:
                self.ema.update(self.step + 1)  # a copy of G (before --ema-start)
            summaries.append(gs.summary_g)
        host = gs.graphs.read(summaries)  # the step's one synchronisation
        nd = len(gs.summary_d)
        loss_d, stats_ok, (d_x, d_g_z1) = self._read_summary(host[:nd], 2)
        row.update(loss_D=loss_d, D_x=d_x, D_G_z1=d_g_z1)
        self._check_finite("loss_D", loss_d, stats_ok)
        if g_due:
            row["loss_G"], stats_ok, (row["D_G_z2"],) = self._read_summary(host[nd:], 1)
            self._check_finite("loss_G", row["loss_G"], stats_ok)
        self.step += 1
        row["seconds"] = round(time.perf_counter() - t0, 6)
        return row

    def _graph_body_d(self):
        """D's forward, backward and update (--clip too) on the static buffers, its summary into
        summary_d: device work only (no host read, no host-to-device copy, no host random numbers;
        the update reads its step's bias corrections from the device array optD.stage_step fills)."""
        c, gs = self.config, self._graph
        self.D.zero_grad()
        out_real = self._D(Tensor(gs.real), None)
        fake = self._G(Tensor(gs.z), None)
        out_fake = self._D(fake.detach(), None)
        err_d = losses.d_loss(c.loss, out_real, out_fake, c.label_smooth, 0.0)
        err_d.backward()
        self.optD.launch_staged()
        if c.loss == "wgan":
            self._clip_critic()
        gs.fake = fake  # the G graph's input: kept alive, so its memory is never reused
        gs.summary_d[...] = self._summary_device(err_d, out_real, out_fake)

    def _graph_body_g(self, ema=False):
        """G's forward (through D), backward and update from the D graph's G(z) (with `ema`, the EMA
        average too, its decay from the device array ema.stage fills), its summary into summary_g."""
        c, gs = self.config, self._graph
        self.G.zero_grad()
        with _frozen(list(self.D.parameters())):  # as _g_step: no D weight gradients
            out = self._D(gs.fake, None)
            err_g = losses.g_loss(c.loss, out)
            err_g.backward()
        self.optG.launch_staged()
        if ema:
            self.ema.average_staged()
        gs.summary_g[...] = self._summary_device(err_g, out)

    def _check_finite(self, name, value, stats_ok=True):
        if math.isfinite(value) and stats_ok:
            return
        what = []
        if not math.isfinite(value):
            what.append(f"{name} is {value}")
        if not stats_ok:
            arrays = {key: to_device(t.data, "cpu") for key, t in self._running_stats}
            bad = _first_non_finite(arrays)
            what.append(f"{bad[0]} holds {bad[1]}" if bad else "a BatchNorm running statistic is not finite")
        exc = TrainingDiverged(
            f"{' and '.join(what)} at step {self.step + 1} (epoch {self.epoch + 1}): training stopped; {self._kept()}")
        if self.comm is not None:  # the values were averaged over the ranks: every rank stops here
            exc.pygan_collective = True
        raise exc

    def _epoch_of_last_step(self):
        """The 1-based epoch of the last step done (the one just completed at an epoch's end)."""
        return self.epoch if self.batch == 0 and self.epoch > 0 else self.epoch + 1

    def _kept(self):
        """The truth about the checkpoint on disk, for a divergence message."""
        path = self.checkpoint_path
        if self._good_step is not None and os.path.exists(path):
            return (f"the last finite checkpoint, {path} (step {self._good_step}), is kept "
                    "(--resume continues from it, e.g. with a lower --lr)")
        if os.path.exists(path):
            return f"{path} was not written by this run"
        return "no checkpoint was written"

    # -- outputs -------------------------------------------------------------------------------
    def sample_fixed(self, G=None):
        """G(fixed_noise) (and the fixed labels) in eval mode (running BatchNorm statistics), as a
        numpy array; G defaults to the trained generator."""
        G = self.G if G is None else G
        was_training = G.training
        G.eval()
        with no_grad():
            if self.fixed_labels is None:
                images = G(self.fixed_noise).numpy()
            else:
                images = G(self.fixed_noise, to_device(self.fixed_labels, self.device)).numpy()
        G.train(was_training)
        return images

    def _row_labels(self):
        if self.fixed_labels is None:
            return None
        return [self.classes[k] for k in self.fixed_labels[::8]]

    def write_grid(self, epoch):
        """The sample grid for `epoch`, numbered from 1 (fake_samples_epoch_001.png after the first);
        with an EMA generator its grid too (fake_samples_ema_epoch_001.png)."""
        path = os.path.join(self.config.outf, GRID_NAME.format(epoch))
        with _writing(path):
            datasets.save_image_grid(self.sample_fixed(), path, nrow=8, row_labels=self._row_labels())
        if self.G_ema is not None:
            ema_path = os.path.join(self.config.outf, EMA_GRID_NAME.format(epoch))
            with _writing(ema_path):
                datasets.save_image_grid(self.sample_fixed(self.G_ema), ema_path, nrow=8, row_labels=self._row_labels())
        return path

    def write_plot(self):
        from .plot import plot_log

        path = os.path.join(self.config.outf, "losses.png")
        with _writing(path):
            plot_log(self.log_path, path)

    def checkpoint_tensors_and_meta(self):
        tensors = {"fixed_noise": self.fixed_noise.data}
        if self.fixed_labels is not None:
            tensors["fixed_labels"] = self.fixed_labels
        tensors.update(ckpt.module_tensors("G", self.G))
        tensors.update(ckpt.module_tensors("D", self.D))
        if self.ema is not None:
            tensors.update(ckpt.module_tensors("G_ema", self.G_ema))
        optg, optg_meta = ckpt.optimizer_tensors("optG", self.optG)
        optd, optd_meta = ckpt.optimizer_tensors("optD", self.optD)
        tensors.update(optg)
        tensors.update(optd)
        config = dataclasses.asdict(self.config)
        meta = {
            "epoch": self.epoch, "batch": self.batch, "step": self.step, "g_steps": self.g_steps,
            "best_frechet_distance": self.best_fd, "rng_state": get_rng_state(), "optG": optg_meta, "optD": optd_meta, "config": config,
            "model": {"kind": "dcgan", "nz": self.config.nz, "ngf": self.config.ngf, "ndf": self.config.ndf,
                      "nc": self.nc, "image_size": self.config.image_size, "d_norm": self.config.d_norm,
                      "spectral_norm": self.config.spectral_norm, "num_classes": self.num_classes,
                      "embed_dim": self.G.embed_dim, "classes": self.classes},
            "ema": None if self.ema is None else {"decay": self.ema.decay, "start": self.ema.start,
                                                  "updates": self.ema.updates},
            "world_size": self.world,  # data-parallel ranks: a resume needs as many
        }
        return tensors, meta

    def save_checkpoint(self, path=None):
        """Write the checkpoint, after checking every tensor in it (weights, BatchNorm buffers, Adam
        state, the fixed noise) is finite; TrainingDiverged, and nothing written, otherwise."""
        path = path or self.checkpoint_path
        tensors, meta = self.checkpoint_tensors_and_meta()
        arrays = {name: np.asarray(to_device(a, "cpu")) for name, a in tensors.items()}
        bad = _first_non_finite(arrays)
        if bad:
            raise TrainingDiverged(
                f"{bad[0]} holds {bad[1]} at step {self.step} (epoch {self._epoch_of_last_step()}): {path} was not written and "
                f"training stopped; {self._kept()}")
        with _writing(path):
            ckpt.save(path, arrays, meta)
        if path == self.checkpoint_path:
            self._good_step = self.step
        return path

    def _read_resume_checkpoint(self):
        """Read and check the checkpoint to resume from, before anything is built: the model
        description, every tensor finite, and the options that must not change."""
        c = self.config
        path = self.checkpoint_path
        tensors, meta = ckpt.load(path)
        if not isinstance(meta, dict):
            raise ckpt.CheckpointError(f"checkpoint {path} has metadata of type {type(meta).__name__}, not an object")
        model = check_model_description(meta, tensors, path, discriminator=True)
        bad = _first_non_finite(tensors)
        if bad:
            raise ckpt.CheckpointError(
                f"checkpoint {path} holds {bad[1]} in {bad[0]} (from a diverged run?); it cannot be resumed")
        stored = meta.get("config")
        if not isinstance(stored, dict):
            raise ckpt.CheckpointError(f"checkpoint {path} has no training options ('config' is {_short(stored)})")
        world = meta.get("world_size", 1)
        if isinstance(world, bool) or not isinstance(world, int) or world < 1:
            raise ckpt.CheckpointError(f"checkpoint {path} has a bad world_size {_short(world)} (not a positive integer)")
        if world != self.world:
            raise ckpt.CheckpointError(
                f"cannot resume from {path}: it was written by a data-parallel run of {world} rank(s), this run has "
                f"{self.world}; resume with the same number of ranks ("
                + ("as one process, without mpirun or --distributed" if world == 1 else f"mpirun -np {world}")
                + "), or start a new run")
        # Options the user left unset come from the checkpoint.
        if c.manual_seed is None:
            seed = stored.get("manual_seed")
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise ckpt.CheckpointError(f"checkpoint {path} has a bad manual_seed {_short(seed)} (not an integer)")
            c.manual_seed = seed
        # Options that fix the model or the data order: every difference is named.
        current = {"nz": c.nz, "ngf": c.ngf, "ndf": c.ndf, "image_size": c.image_size, "nc": c.channels,
                   "dataset": c.dataset, "batch_size": c.batch_size, "fake_size": c.fake_size, "manual_seed": c.manual_seed,
                   "d_norm": c.d_norm, "spectral_norm": c.spectral_norm, "optimizer": c.optimizer,
                   "conditional": c.conditional}
        differ = []
        for key, flag in _FIXED_OPTIONS.items():
            now = current[key]
            before = model[key] if key in model else stored.get(key, _MISSING)
            if before is _MISSING and key in _NEWER_OPTION_DEFAULTS:
                before = _NEWER_OPTION_DEFAULTS[key]
            if key == "nc" and now is None:
                continue  # the data set's channels: checked once it is loaded
            if key == "fake_size" and _canonical_dataset(c.dataset) != "fake":
                continue  # only the fake data set has a size
            if not _same_option(key, before, now):
                differ.append(f"{flag}: checkpoint {_show(before, now)}, this run {now!r}")
        if differ:
            raise ckpt.CheckpointError(
                f"cannot resume from {path}: these options fix the model or the data order and differ from the "
                f"checkpoint's: {'; '.join(differ)}. Use the checkpoint's values to resume, or start a new run "
                "(another --outf, or --overwrite)")
        stored_root = stored.get("dataroot")
        if stored_root is not None and not isinstance(stored_root, str):
            raise ckpt.CheckpointError(f"checkpoint {path} has a bad dataroot {_short(stored_root)} (not a string)")
        if c.dataroot is None:
            c.dataroot = stored_root
        elif stored_root != c.dataroot:
            self.log(f"resume: dataroot {stored_root!r} -> {c.dataroot!r} (it must hold the same images)")
        return tensors, meta, model

    def _apply_checkpoint(self, tensors, meta, model):
        c = self.config
        path = self.checkpoint_path
        stored = meta["config"]
        try:
            ckpt.load_module("G", self.G, tensors, path)
            ckpt.load_module("D", self.D, tensors, path)
            ckpt.load_optimizer("optG", self.optG, tensors, meta["optG"], path)
            ckpt.load_optimizer("optD", self.optD, tensors, meta["optD"], path)
            fixed = tensors["fixed_noise"]
            expected = tuple(self.fixed_noise.shape)
            if tuple(fixed.shape) != expected:
                raise ValueError(f"fixed_noise has shape {tuple(fixed.shape)}, expected {expected}")
            if self.fixed_labels is not None:
                labels = tensors["fixed_labels"]
                if tuple(labels.shape) != self.fixed_labels.shape or labels.dtype.kind not in "iu":
                    raise ValueError(f"fixed_labels has shape {tuple(labels.shape)} ({labels.dtype}), expected "
                                     f"{self.fixed_labels.shape} integers")
            ema_meta = meta.get("ema")
            if self.ema is not None and ema_meta is not None:
                ckpt.load_module("G_ema", self.G_ema, tensors, path)
                updates = ema_meta.get("updates") if isinstance(ema_meta, dict) else None
                if isinstance(updates, bool) or not isinstance(updates, int) or updates < 0:
                    raise ValueError(f"ema updates is {_short(updates)}, not a non-negative integer")
                self.ema.updates = updates
            elif self.ema is not None:  # EMA switched on at this resume: it starts from the resumed G
                self.ema.copy_from_model()
                self.log("resume: the checkpoint has no EMA generator; it starts from the resumed G")
            set_rng_state(meta["rng_state"])
            position = {key: meta[key] for key in ("epoch", "batch", "step", "g_steps")}
            for key, value in position.items():
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"{key} is {_short(value)}, not a non-negative integer")
            if position["batch"] > len(self.loader):
                raise ValueError(f"batch {position['batch']} is past the epoch's {len(self.loader)} batches")
            best = meta.get("best_frechet_distance")
            if best is not None and (isinstance(best, bool) or not isinstance(best, (int, float))):
                raise ValueError(f"best_frechet_distance is {_short(best)}")
        except ckpt.CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ckpt.CheckpointError(f"checkpoint {path} has bad training state: {detail}") from None
        self.fixed_noise = Tensor(to_device(np.ascontiguousarray(fixed, dtype=np.float32), self.device))
        self.epoch, self.batch, self.step, self.g_steps = (position[k] for k in ("epoch", "batch", "step", "g_steps"))
        self.best_fd = best
        self._good_step = self.step
        # Changed optimiser and loop options: applied, printed, and recorded by the next checkpoint.
        before = dict(stored)
        if before.get("loss") is None and "g_loss" in before:  # checkpoints from before --loss
            before["loss"] = before["g_loss"]
        for key, label in _CHANGEABLE_OPTIONS.items():
            now = getattr(c, key)
            if before.get(key, _MISSING) is _MISSING and now == recipes.DEFAULTS.get(key, now):
                continue  # an option newer than the checkpoint, at its default
            if not _same_option(key, before.get(key, _MISSING), now):
                self.log(f"resume: {label} {_show(before.get(key, _MISSING), now)} -> {now!r}")
        self._set_hyper()
        if self.rank == 0:
            _truncate_log(self.eval_path, self.step)
            _truncate_log(self.log_path, self.step)
        where = f"epoch {self.epoch + 1}, batch {self.batch}" if self.epoch < c.niter else f"after epoch {self.epoch}"
        self.log(f"resumed from {path}: step {self.step}, {where}")

    # -- the loop ------------------------------------------------------------------------------
    def fit(self):
        """Train until niter epochs (or max_steps) are done; releases the folder's lock at the end."""
        try:
            self._fit()
        finally:
            self.close()
        return self

    def _fit(self):
        c = self.config
        interrupted = self._interrupt = _InterruptFlag(self._abort_note)
        interrupted.doing("step", self.step + 1)
        writes = self.rank == 0  # distributed: rank 0 alone writes
        new_log = not os.path.exists(self.log_path) or self.step == 0
        if writes:
            with _writing(self.log_path):
                log_file = open(self.log_path, "w" if new_log else "a", newline="", buffering=1)  # line-buffered: tail -f works
        else:
            log_file = io.StringIO()
        writer = csv.DictWriter(log_file, fieldnames=LOG_FIELDS)
        part = None if self.comm is None else (self.rank, self.world)
        progress = c.progress and writes
        steps_per_epoch = len(self.loader)
        bar = _NullBar()
        try:
            with interrupted:
                with _writing(self.log_path):
                    if new_log and writes:
                        writer.writeheader()
                if self.step == 0 and writes:
                    first = next(iter(self.loader.iter_epoch(0)))
                    first = first[0] if self.num_classes else first  # (images, labels) for a conditional run
                    path = os.path.join(c.outf, "real_samples.png")
                    with _writing(path):
                        datasets.save_image_grid(first[:64], path, nrow=8)
                hint = _cpu_gemm_hint(self.device) if writes else None
                if hint:
                    self.log(f"note: {hint}")
                if c.max_steps is not None and self.step >= c.max_steps:
                    self.log(f"nothing to do: the checkpoint is at step {self.step}, --max-steps is {c.max_steps}")
                while self.epoch < c.niter and (c.max_steps is None or self.step < c.max_steps):
                    interrupted.doing("step", self.step + 1)
                    bar = _progress(steps_per_epoch, self.batch, f"epoch {self.epoch + 1}/{c.niter}", progress)
                    stop = False
                    for real in self.loader.iter_epoch(self.epoch, start=self.batch, part=part):
                        interrupted.doing("step", self.step + 1)
                        row = self._train_step(real)
                        self.batch += 1
                        if writes:
                            with _writing(self.log_path):
                                writer.writerow(row)
                        bar.update(1)
                        bar.set_postfix(loss_D=f"{row['loss_D']:.3f}", loss_G=_fmt(row["loss_G"]), D_x=f"{row['D_x']:.2f}")
                        if self.eval_every > 0 and self.step % self.eval_every == 0:
                            self._on_rank0("the evaluation", self.evaluate)
                        if self._interrupt_hit():
                            bar.close()
                            log_file.flush()
                            interrupted.doing("save", self.step)
                            path = self._on_rank0("the checkpoint", self.save_checkpoint)
                            self.log(f"\ninterrupted at step {self.step}: checkpoint written to {path}; resume with --resume")
                            raise self._stop_exception()
                        if c.dry_run or (c.max_steps is not None and self.step >= c.max_steps):
                            stop = True
                            break
                    bar.close()
                    interrupted.doing("save", self.step)
                    if self.batch >= steps_per_epoch:
                        self.epoch, self.batch = self.epoch + 1, 0
                        self._end_of_epoch(log_file, self.epoch, steps_per_epoch)
                    else:
                        self._end_of_epoch(log_file, self.epoch + 1, steps_per_epoch)
                    if stop:
                        break
                    if self._interrupt_hit() and self.epoch < c.niter:  # the end-of-epoch checkpoint is written
                        self.log(f"\ninterrupted at step {self.step}: checkpoint written to {self.checkpoint_path}; "
                                 "resume with --resume")
                        raise self._stop_exception()
        finally:
            bar.close()  # a bar cut short by an error ends its line before the message
            log_file.close()
        return self

    def _interrupt_hit(self):
        """Whether Ctrl-C asked to stop; distributed, what every rank agreed at the last step (a
        signal arriving between two steps on one rank only must not make it leave the others)."""
        if self.comm is None:
            return self._interrupt.hit
        return self._stop_agreed

    def _stop_exception(self):
        exc = KeyboardInterrupt()
        if self.comm is not None:
            exc.pygan_collective = True
        return exc

    def _replica_tensors(self):
        """The tensors every rank must hold bit-identically: the parameters of G, D (and G_ema)."""
        models = (("G", self.G), ("D", self.D)) + ((("G_ema", self.G_ema),) if self.G_ema is not None else ())
        return [(f"{prefix}.{name}", p.data) for prefix, m in models for name, p in m.named_parameters()]

    def _on_rank0(self, what, fn):
        """fn() on the writing rank. Distributed: first every rank checks that the replicas are
        identical (a checksum), then rank 0 runs fn (a checkpoint, grid, evaluation) and every rank
        learns whether it failed, so all stop together; returns fn's result on rank 0."""
        if self.comm is None:
            return fn()
        from . import distributed

        try:
            distributed.check_replicas(self.comm, self._replica_tensors(), f"step {self.step}")
        except distributed.DistributedError as exc:
            raise distributed.collective(exc) from None
        error = result = None
        if self.rank == 0:
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 -- the other ranks must learn of it
                error = exc
        summary = self.comm.bcast_object(None if error is None else distributed.error_summary(error),
                                         what=f"rank 0's {what} at step {self.step}")
        if error is not None:
            raise distributed.collective(error)
        if summary is not None:
            raise distributed.collective(distributed.PeerFailed(summary["message"], summary["status"]))
        return result

    def _end_of_epoch(self, log_file, epoch, steps_per_epoch):
        """Grid, plot, evaluation and checkpoint for `epoch` (1-based), complete or cut short
        (written by rank 0 alone when distributed)."""
        self._on_rank0("end of epoch", lambda: self._write_epoch(log_file, epoch, steps_per_epoch))

    def _write_epoch(self, log_file, epoch, steps_per_epoch):
        log_file.flush()
        grid = self.write_grid(epoch)
        self.write_plot()
        if self.eval_every < 0:
            self.evaluate()
        path = self.save_checkpoint()
        if self.batch == 0:
            self.log(f"epoch {epoch}/{self.config.niter} done: step {self.step}, samples {grid}, checkpoint {path}")
        else:
            self.log(f"stopped in epoch {epoch}/{self.config.niter} after batch {self.batch} of {steps_per_epoch}: "
                     f"step {self.step}, samples {grid}, checkpoint {path}")

    def _abort_note(self):
        if self._good_step is not None and os.path.exists(self.checkpoint_path):
            return (f"{self.checkpoint_path} (step {self._good_step}) stays as it was; "
                    f"the steps after it ({self.step - self._good_step} so far) are lost")
        return f"no checkpoint was written: the {self.step} finished step(s) of this run are lost"

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(self):
        """Score eval_n samples (z from a fixed seed; the training RNG is untouched) against the test
        images in the shipped classifier's feature space, for G and (when on) the EMA generator;
        log a row each to eval.csv; keep the best checkpoint by Frechet distance (the EMA
        generator's when there is one: it is what `pygan sample` uses). Returns the result dict of
        the generator the best checkpoint follows."""
        from . import evaluate as ev

        if self._eval_reference is None:
            self._eval_reference = ev.RealReference(self._extractor, self.config.dataroot, floor=False)
        results = {}
        for name, G in (("G", self.G), ("G_ema", self.G_ema)):
            if G is None:
                continue
            started = time.perf_counter()
            images = ev.generate(G, self.config.eval_n, seed=0, device=self.device)
            labels = None
            if self.num_classes:
                images, labels = images
            result = ev.evaluate_images(images, self._eval_reference)
            if labels is not None and self._extractor.meta.get("classes") == self.classes:
                result.update(ev.conditional_metrics(images, labels, self._eval_reference, self.classes))
            row = {key: result.get(key) for key in EVAL_FIELDS}
            row.update(step=self.step, epoch=self.epoch + 1, generator=name, seconds=round(time.perf_counter() - started, 2))
            _append_csv_row(self.eval_path, EVAL_FIELDS, row)
            results[name] = result
        result = results.get("G_ema", results["G"])
        fd = result["frechet_distance"]
        note = ""
        if self.config.keep_best and (self.best_fd is None or fd < self.best_fd):
            self.best_fd = fd
            self.save_checkpoint(self.best_path)
            note = f"; new best, saved {self.best_path}"
        for name, r in results.items():
            extra = f", class accuracy {r['class_accuracy']:.3f}, intra-FD {r['intra_fd']:.3f}" if "class_accuracy" in r else ""
            self.log(f"eval at step {self.step} ({name}): FD[{r['metric_prefix']}] {r['frechet_distance']:.3f}, "
                     f"precision {r['precision']:.3f}, recall {r['recall']:.3f}, coverage {r['coverage']:.3f}{extra} "
                     f"(n={r['n']}){note if r is result else ''}")
        return result


def _quiet(*args, **kwargs):
    """The log of a rank other than 0: it says nothing (rank 0 speaks for the job)."""


def _append_csv_row(path, fields, row):
    """Append `row` to the CSV at `path`, writing the header first for a new file; a file with an
    older header is rewritten (atomically) with `fields`, old rows keeping their values."""
    if os.path.exists(path):
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            old_rows, header = list(reader), reader.fieldnames
        if header != fields:
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(old_rows)
            with _writing(path), ckpt.atomic_write(path) as f:
                f.write(text.getvalue().encode("utf-8"))
    new = not os.path.exists(path)
    with _writing(path), open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if new:
            writer.writeheader()
        writer.writerow(row)


def _fmt(v):
    return f"{v:.3f}" if isinstance(v, float) else "-"


def _short(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _canonical_dataset(name):
    try:
        return datasets._canonical_name(name)
    except ValueError:
        return None


def _same_option(key, stored, now):
    """Compare a value from a checkpoint (any JSON type, possibly hostile) with this run's."""
    if key == "dataset":
        return isinstance(stored, str) and _canonical_dataset(stored) == _canonical_dataset(now)
    if isinstance(now, bool) or isinstance(stored, bool):
        return type(now) is type(stored) and now == stored
    if isinstance(now, int):
        return type(stored) is int and stored == now
    if isinstance(now, float):
        return isinstance(stored, (int, float)) and float(stored) == now
    return type(stored) is type(now) and stored == now


def _show(stored, now):
    """A stored value for a message: its repr, with its type when that differs from this run's
    (so a string "8" never reads like the number 8)."""
    if stored is _MISSING:
        return "(not recorded)"
    text = _short(stored)
    if stored is not None and now is not None and not isinstance(stored, type(now)) \
            and not (isinstance(stored, int) and isinstance(now, float)):
        text += f" (a {type(stored).__name__})"
    return text


def _first_non_finite(arrays):
    """(name, "NaN"/"inf") of the first floating-point array with a non-finite value, or None."""
    for name, a in arrays.items():
        a = np.asarray(a)
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            return name, ("NaN" if np.isnan(a).any() else "inf")
    return None


class _NullBar:
    def update(self, n):
        pass

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass


def _progress(total, done, desc, enabled):
    """A tqdm bar on stderr when enabled and stderr is a terminal: redirected to a file, a bar
    would fill it with carriage returns."""
    stream = sys.stderr
    if not enabled or stream is None or not getattr(stream, "isatty", lambda: False)():
        return _NullBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc=desc, dynamic_ncols=True, file=stream)


@contextlib.contextmanager
def _frozen(params):
    """requires_grad off for params inside the block, restored after (exceptions included)."""
    before = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad = False
    try:
        yield
    finally:
        for p, flag in zip(params, before):
            p.requires_grad = flag


def _cpu_gemm_hint(device):
    """The CPU backend's one-line hint about a pinned OpenBLAS core (pygan/ops/cpu_runtime.py), or None."""
    from . import ops

    if device != "cpu" or ops.cpu_backend() is ops.reference:
        return None
    from .ops import cpu

    return cpu.setup()["gemm_hint"]


def _say(text):
    """Write a line to stderr from a signal handler: os.write, no Python buffer (which a handler
    may interrupt mid-write) is involved."""
    with contextlib.suppress(OSError):
        os.write(2, ("\n" + text + "\n").encode())


class _InterruptFlag:
    """Defers Ctrl-C to the end of the current step, so a checkpoint never holds a half update.

    First Ctrl-C: say at once that the step is being finished and a checkpoint saved. Second: the
    save goes on (say so). Third: abort now, saying what is lost."""

    def __init__(self, abort_note=lambda: ""):
        self.count = 0
        self.phase, self.step = "step", None  # what the loop is doing: ("step", n) finishing step n; ("save", n)
        self._abort_note = abort_note
        self._previous = None

    @property
    def hit(self):
        return self.count > 0

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def doing(self, phase, step):
        self.phase, self.step = phase, step

    def _handler(self, signum, frame):
        self.count += 1
        saving = self.phase == "save"
        what = f"saving the checkpoint of step {self.step}" if saving else f"finishing step {self.step}"
        if self.count == 1:
            then = "then stopping" if saving else "then saving a checkpoint and stopping"
            _say(f"pygan: Ctrl-C: {what}, {then} (press Ctrl-C twice more to abort)")
        elif self.count == 2:
            then = "" if saving else ", then saving the checkpoint"
            _say(f"pygan: still {what}{then}; press Ctrl-C once more to abort without it")
        else:
            note = ""
            with contextlib.suppress(Exception):
                note = self._abort_note()
            _say(f"pygan: aborted while {what}: {note}")
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


@contextlib.contextmanager
def _writing(path):
    """Name `path` in an OSError that names no file (a full disk reports ENOSPC on write(), with
    no file name), so the user learns what could not be written."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise type(exc)(exc.errno, exc.strerror or os.strerror(exc.errno), os.fspath(path)) from exc
        raise


def _prepare_output_folder(outf):
    """Make sure `outf` is a folder we can write, with a clear message when it is not."""
    if os.path.exists(outf) and not os.path.isdir(outf):
        raise NotADirectoryError(errno.ENOTDIR, "--outf is a file, not a folder", outf)
    try:
        os.makedirs(outf, exist_ok=True)
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot create the --outf folder: {exc.strerror}", exc.filename or outf) from None
    if not os.access(outf, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "cannot write to the --outf folder: permission denied", outf)


class _RunLock:
    """An exclusive, non-blocking flock on OUTF/.lock, holding the owner's PID. The kernel drops it
    when the process ends in any way (kill -9 included), so it is never stale."""

    def __init__(self, folder):
        import fcntl

        self.path = os.path.join(folder, LOCK)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise type(exc)(exc.errno, f"cannot write to the --outf folder: {exc.strerror}", self.path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = os.pread(fd, 32, 0).decode().strip()
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f"process {holder}" if holder.isdigit() else "another process"
                raise OutputFolderBusy(
                    f"--outf {folder} is in use by another pygan train run ({who} holds {self.path}); wait for it "
                    "to finish or choose another --outf") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self):
        fd, self.fd = getattr(self, "fd", None), None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the last descriptor drops the flock

    __del__ = release


def _pid_alive(pid):
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _remove_stale_temp_files(folder):
    """Remove temporary files that a killed run left in `folder` (called with the lock held):
    atomic_write's `.<name>.<pid>.<hex>.tmp` whose process is gone (or is this one, which has
    written nothing yet), and older versions' `log.csv.tmp`. Returns the names removed."""
    removed = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if not entry.is_file(follow_symlinks=False):
                continue
            match = _TEMP_RE.match(entry.name)
            if match:
                pid = int(match["pid"])
                if pid != os.getpid() and _pid_alive(pid):
                    continue  # maybe another command (pygan sample --out here) writing right now
            elif entry.name not in _OLD_TEMP_NAMES:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(entry.name)
    return sorted(removed)


def _clear_outputs(folder):
    """Remove what an earlier run wrote in `folder` (a fresh run starts clean). Returns the names."""
    removed = []
    for name in sorted(os.listdir(folder)):
        if name in _OUTPUT_NAMES or _GRID_RE.match(name):
            path = os.path.join(folder, name)
            if os.path.isfile(path) and not os.path.islink(path):
                os.unlink(path)
                removed.append(name)
    return removed


def _truncate_log(path, step):
    """Keep the log rows up to the checkpoint's step, so a resumed run does not repeat rows."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if (r.get("step") or "").isdigit() and int(r["step"]) <= step]
        fields = reader.fieldnames or LOG_FIELDS
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    with _writing(path), ckpt.atomic_write(path) as f:
        f.write(text.getvalue().encode("utf-8"))


def _generator_shapes(nz, ngf, nc, image_size, num_classes=0, embed_dim=0):
    """{state name: shape} of Generator(nz, ngf, nc, image_size, num_classes, embed_dim), computed
    without building it."""
    n = int(math.log2(image_size)) - 2
    chans = [nz + (embed_dim if num_classes else 0)] + [ngf * 2 ** (n - 1 - k) for k in range(n)] + [nc]
    shapes = {"embed.weight": (num_classes, embed_dim)} if num_classes else {}
    for k in range(n + 1):
        shapes[f"main.{3 * k}.weight"] = (chans[k], chans[k + 1], 4, 4)
        if k < n:
            c = chans[k + 1]
            shapes.update({f"main.{3 * k + 1}.{p}": (c,) for p in ("weight", "bias", "running_mean", "running_var")})
            shapes[f"main.{3 * k + 1}.num_batches_tracked"] = ()
    return shapes


def _discriminator_shapes(ndf, nc, image_size, norm="batch", spectral_norm=False, num_classes=0):
    """{state name: shape} of Discriminator(ndf, nc, image_size, norm, spectral_norm, num_classes),
    computed without building it (the layer order is models.dcgan's)."""
    n = int(math.log2(image_size)) - 2
    chans = [nc] + [ndf * 2**k for k in range(n)] + [1]
    shapes, index = {}, 0

    def conv(c_in, c_out, bias):
        if spectral_norm:
            shapes.update({f"main.{index}.weight_orig": (c_out, c_in, 4, 4), f"main.{index}.weight_u": (c_out,),
                           f"main.{index}.weight_v": (c_in * 16,)})
        else:
            shapes[f"main.{index}.weight"] = (c_out, c_in, 4, 4)
        if bias:
            shapes[f"main.{index}.bias"] = (c_out,)

    for k in range(n + 1):
        has_norm = 1 <= k < n and norm != "none"
        conv(chans[k], chans[k + 1], bias=1 <= k < n and not has_norm)
        index += 1
        if has_norm:
            c = chans[k + 1]
            names = ("weight", "bias", "running_mean", "running_var") if norm == "batch" else ("weight", "bias")
            shapes.update({f"main.{index}.{p}": (c,) for p in names})
            if norm == "batch":
                shapes[f"main.{index}.num_batches_tracked"] = ()
            index += 1
        index += 1  # LeakyReLU (none after the last conv)
    if num_classes:  # the projection's class embedding, (classes, features of the last conv's input)
        if spectral_norm:
            shapes.update({"embed.weight_orig": (num_classes, chans[n]), "embed.weight_u": (num_classes,),
                           "embed.weight_v": (chans[n],)})
        else:
            shapes["embed.weight"] = (num_classes, chans[n])
    return shapes


def check_model_description(meta, tensors, path, discriminator=False):
    """The checkpoint's `model` metadata, checked before anything is built: a dict of kind "dcgan"
    with integer sizes in range, and the generator's (and with `discriminator`, D's) tensors
    present with exactly the shapes those sizes give. CheckpointError naming the problem otherwise;
    returns {nz, ngf, ndf, nc, image_size} (ndf None when absent and not needed)."""
    model = meta.get("model") if isinstance(meta, dict) else None
    if not isinstance(model, dict) or model.get("kind") != "dcgan":
        raise ckpt.CheckpointError(f"checkpoint {path} holds no DCGAN model description (its 'model' is {_short(model)})")
    keys = ("nz", "ngf", "ndf", "nc", "image_size") if discriminator else ("nz", "ngf", "nc", "image_size")
    out = {"ndf": None}
    for key in keys:
        if key not in model:
            raise ckpt.CheckpointError(f"checkpoint {path}: the model description lacks {key!r}")
        value = model[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ckpt.CheckpointError(f"checkpoint {path}: model {key} is {_short(value)}, not an integer")
        if key == "image_size":
            ok = value in (32, 64, 128)
        else:
            ok = 1 <= value <= (_MAX_CHANNELS if key == "nc" else _MAX_WIDTH)
        if not ok:
            raise ckpt.CheckpointError(f"checkpoint {path}: model {key}={value} is out of range")
        out[key] = value
    for key, default in _MODEL_VARIANT_DEFAULTS.items():
        value = model.get(key, default)
        if isinstance(default, int) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_WIDTH:
                raise ckpt.CheckpointError(f"checkpoint {path}: model {key} is {_short(value)}, not an integer in "
                                           f"[0, {_MAX_WIDTH}]")
        else:
            allowed = recipes.D_NORMS if key == "d_norm" else (True, False)
            if type(value) is not type(default) or value not in allowed:
                raise ckpt.CheckpointError(f"checkpoint {path}: model {key} is {_short(value)}, not one of {allowed}")
        out[key] = value
    if out["num_classes"] == 1 or (out["num_classes"] and not out["embed_dim"]):
        raise ckpt.CheckpointError(f"checkpoint {path}: a conditional model needs >= 2 classes and an embedding size "
                                   f"(num_classes={out['num_classes']}, embed_dim={out['embed_dim']})")
    classes = model.get("classes")
    if out["num_classes"]:
        if not (isinstance(classes, list) and len(classes) == out["num_classes"] and all(isinstance(k, str) for k in classes)):
            raise ckpt.CheckpointError(f"checkpoint {path}: model classes is {_short(classes)}, not "
                                       f"{out['num_classes']} class names")
        out["classes"] = classes
    else:
        out["classes"] = None
    expected = {f"G.{k}": v for k, v in _generator_shapes(out["nz"], out["ngf"], out["nc"], out["image_size"],
                                                          out["num_classes"], out["embed_dim"]).items()}
    if discriminator:
        d_shapes = _discriminator_shapes(out["ndf"], out["nc"], out["image_size"], out["d_norm"], out["spectral_norm"],
                                         out["num_classes"])
        expected.update({f"D.{k}": v for k, v in d_shapes.items()})
    for name, shape in expected.items():
        if name not in tensors:
            raise ckpt.CheckpointError(f"checkpoint {path} lacks tensor {name} (its model description: {_short(model)})")
        have = tuple(tensors[name].shape)
        if have != shape and not (shape == () and have in ((), (1,))):
            raise ckpt.CheckpointError(
                f"checkpoint {path}: tensor {name} has shape {have}, but the model description "
                f"(nz={out['nz']}, ngf={out['ngf']}, nc={out['nc']}, image_size={out['image_size']}"
                f"{', ndf=%d' % out['ndf'] if discriminator else ''}) needs {shape}")
    return out


def load_generator(path, device="cpu", ema=True):
    """The generator stored in a training checkpoint, in eval mode, and the checkpoint's meta.

    With `ema` (the default) and a checkpoint that holds an EMA generator (--ema-decay), that one;
    else the trained G. The model description is checked against the tensors before anything is
    built, and a generator holding NaN or inf (a diverged run) is refused, naming the tensor. The
    returned module carries `classes` (class names of a conditional G, else None) and `is_ema`."""
    tensors, meta = ckpt.load(path)
    model = check_model_description(meta, tensors, path)
    prefix = "G_ema" if ema and any(name.startswith("G_ema.") for name in tensors) else "G"
    bad = _first_non_finite({name: a for name, a in tensors.items() if name.startswith(prefix + ".")})
    if bad:
        raise ckpt.CheckpointError(f"checkpoint {path} holds {bad[1]} in {bad[0]} (from a diverged run?); refusing to use it")
    G = Generator(model["nz"], model["ngf"], model["nc"], model["image_size"], num_classes=model["num_classes"],
                  embed_dim=model["embed_dim"] or 50)
    ckpt.load_module(prefix, G, tensors, path)
    G.classes, G.is_ema = model["classes"], prefix == "G_ema"
    return G.to(device).eval(), meta


def describe(config):
    return json.dumps(dataclasses.asdict(config), indent=1, sort_keys=True)
