"""The GAN training loop (DCGAN by default).

Each step: a discriminator step on a real batch (label 1, or `label_smooth`) and on G(z).detach()
(label 0); then, after every `d_steps` D steps, a generator step with the non-saturating loss
-log D(G(z)) (or the minimax loss log(1 - D(G(z)))). Losses are BCE with logits, optimisers Adam.

Everything that makes the run reproducible (weights, both Adam states, the global random
generator, the position in the data order) goes into the checkpoint, so a resumed run continues
bit-for-bit where the straight run would be.
"""

import csv
import dataclasses
import json
import math
import os
import signal
import sys
import time

import numpy as np

from . import checkpoint as ckpt
from . import data as datasets
from . import nn, optim
from .autograd import Tensor, no_grad, normalise_device, to_device
from .models import Discriminator, Generator
from .nn import functional as F
from .random import default_generator, get_rng_state, manual_seed, set_rng_state

LOG_FIELDS = ["step", "epoch", "loss_D", "loss_G", "D_x", "D_G_z1", "D_G_z2", "seconds"]
EVAL_FIELDS = ["step", "epoch", "n", "frechet_distance", "precision", "recall", "density", "coverage",
               "class_kl_to_uniform", "inception_score", "seconds"]
CHECKPOINT = "checkpoint.safetensors"
BEST_CHECKPOINT = "checkpoint-best.safetensors"


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; training stopped and the last good checkpoint was kept."""


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
    lr: float = 2e-4
    beta1: float = 0.5
    outf: str = "runs/dcgan"
    manual_seed: int | None = None
    resume: bool = False
    dry_run: bool = False
    device: str = "auto"
    max_steps: int | None = None
    g_loss: str = "non-saturating"
    d_steps: int = 1
    label_smooth: float = 1.0
    channels: int | None = None
    fake_size: int = 1024
    progress: bool = True
    eval_every: int | None = None  # D steps between evaluations; None: each epoch on the GPU, never on the CPU; 0: off
    eval_n: int = 10000  # samples per evaluation (fewer is faster but biased)
    keep_best: bool = True  # with evaluation on: keep checkpoint-best.safetensors, the lowest Frechet distance

    def validate(self):
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
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.beta1 < 1:
            raise ValueError(f"beta1 must be in [0, 1), got {self.beta1}")
        if self.g_loss not in ("non-saturating", "minimax"):
            raise ValueError(f"g_loss must be 'non-saturating' or 'minimax', got {self.g_loss!r}")
        if not 0 < self.label_smooth <= 1:
            raise ValueError(f"label_smooth must be in (0, 1], got {self.label_smooth}")
        normalise_device(self.device)


class Trainer:
    def __init__(self, config, log=print):
        config.validate()
        self.config = c = config
        self.log = log
        self.device = normalise_device(c.device)
        if c.manual_seed is None:
            c.manual_seed = int(np.random.SeedSequence().entropy % (2**31))
        self.dataset = datasets.load_dataset(c.dataset, dataroot=c.dataroot, image_size=c.image_size, channels=c.channels,
                                             fake_size=c.fake_size)
        if len(self.dataset) < c.batch_size:
            raise ValueError(f"batchSize {c.batch_size} is larger than the dataset ({len(self.dataset)} images)")
        self.nc = self.dataset.num_channels
        self.loader = datasets.DataLoader(self.dataset, batch_size=c.batch_size, shuffle=True, drop_last=True, seed=c.manual_seed)

        manual_seed(c.manual_seed)
        self.G = Generator(c.nz, c.ngf, self.nc, c.image_size).to(self.device)
        self.D = Discriminator(c.ndf, self.nc, c.image_size).to(self.device)
        self.optG = optim.Adam(self.G.parameters(), lr=c.lr, betas=(c.beta1, 0.999))
        self.optD = optim.Adam(self.D.parameters(), lr=c.lr, betas=(c.beta1, 0.999))
        self.fixed_noise = self._noise(64)
        self.step = 0  # optimisation steps (D steps) done
        self.epoch = 0  # current epoch
        self.batch = 0  # batches of the current epoch done
        self.g_steps = 0
        os.makedirs(c.outf, exist_ok=True)
        self.checkpoint_path = os.path.join(c.outf, CHECKPOINT)
        self.log_path = os.path.join(c.outf, "log.csv")
        self.eval_path = os.path.join(c.outf, "eval.csv")
        self.best_path = os.path.join(c.outf, BEST_CHECKPOINT)
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
        if self.eval_every:
            self._extractor = classifier.load(c.dataset, device=self.device)  # fails now, not after an epoch
        if c.resume:
            self.load_checkpoint(self.checkpoint_path)

    # -- pieces --------------------------------------------------------------------------------
    def _noise(self, n):
        z = default_generator().standard_normal((n, self.config.nz, 1, 1)).astype(np.float32)
        return Tensor(to_device(z, self.device))

    def _labels(self, n, value):
        return Tensor(to_device(np.full(n, value, dtype=np.float32), self.device))

    @staticmethod
    def _mean_sigmoid(logits):
        xp_data = logits.data
        return float((1.0 / (1.0 + np.exp(-np.clip(to_device(xp_data, "cpu").astype(np.float64), -500, 500)))).mean())

    def train_step(self, real_images):
        """One D step, and a G step when due. Returns the row for the log."""
        c = self.config
        t0 = time.perf_counter()
        real = Tensor(to_device(real_images, self.device))
        n = real.shape[0]
        # D: maximise log D(x) + log(1 - D(G(z)))
        self.D.zero_grad()
        out_real = self.D(real)
        err_real = F.binary_cross_entropy_with_logits(out_real, self._labels(n, c.label_smooth))
        fake = self.G(self._noise(n))
        out_fake = self.D(fake.detach())
        err_fake = F.binary_cross_entropy_with_logits(out_fake, self._labels(n, 0.0))
        err_d = err_real + err_fake
        err_d.backward()
        self.optD.step()
        row = {"step": self.step + 1, "epoch": self.epoch, "loss_D": err_d.item(),
               "D_x": self._mean_sigmoid(out_real), "D_G_z1": self._mean_sigmoid(out_fake), "loss_G": "", "D_G_z2": ""}
        self._check_finite("loss_D", row["loss_D"])
        # G: after every d_steps D steps
        if (self.step + 1) % c.d_steps == 0:
            self.G.zero_grad()
            out = self.D(fake)
            if c.g_loss == "non-saturating":
                err_g = F.binary_cross_entropy_with_logits(out, self._labels(n, 1.0))  # -log D(G(z))
            else:
                err_g = -F.binary_cross_entropy_with_logits(out, self._labels(n, 0.0))  # log(1 - D(G(z)))
            err_g.backward()
            self.optG.step()
            self.g_steps += 1
            row["loss_G"] = err_g.item()
            row["D_G_z2"] = self._mean_sigmoid(out)
            self._check_finite("loss_G", row["loss_G"])
        self.step += 1
        row["seconds"] = round(time.perf_counter() - t0, 6)
        return row

    def _check_finite(self, name, value):
        if not math.isfinite(value):
            kept = f"the last good checkpoint {self.checkpoint_path} is kept" if os.path.exists(self.checkpoint_path) else "no checkpoint was written yet"
            raise TrainingDiverged(f"{name} is {value} at step {self.step + 1} (epoch {self.epoch}): training stopped; {kept}")

    # -- outputs -------------------------------------------------------------------------------
    def sample_fixed(self):
        """G(fixed_noise) in eval mode (running BatchNorm statistics), as a numpy array."""
        self.G.eval()
        with no_grad():
            images = self.G(self.fixed_noise).numpy()
        self.G.train()
        return images

    def write_grid(self, epoch):
        path = os.path.join(self.config.outf, f"fake_samples_epoch_{epoch:03d}.png")
        datasets.save_image_grid(self.sample_fixed(), path, nrow=8)
        return path

    def write_plot(self):
        from .plot import plot_log

        plot_log(self.log_path, os.path.join(self.config.outf, "losses.png"))

    def checkpoint_tensors_and_meta(self):
        tensors = {"fixed_noise": self.fixed_noise.data}
        tensors.update(ckpt.module_tensors("G", self.G))
        tensors.update(ckpt.module_tensors("D", self.D))
        optg, optg_meta = ckpt.optimizer_tensors("optG", self.optG)
        optd, optd_meta = ckpt.optimizer_tensors("optD", self.optD)
        tensors.update(optg)
        tensors.update(optd)
        config = dataclasses.asdict(self.config)
        meta = {
            "epoch": self.epoch, "batch": self.batch, "step": self.step, "g_steps": self.g_steps,
            "best_frechet_distance": self.best_fd, "rng_state": get_rng_state(), "optG": optg_meta, "optD": optd_meta, "config": config,
            "model": {"kind": "dcgan", "nz": self.config.nz, "ngf": self.config.ngf, "ndf": self.config.ndf,
                      "nc": self.nc, "image_size": self.config.image_size},
        }
        return tensors, meta

    def save_checkpoint(self, path=None):
        path = path or self.checkpoint_path
        tensors, meta = self.checkpoint_tensors_and_meta()
        ckpt.save(path, tensors, meta)
        return path

    def load_checkpoint(self, path):
        tensors, meta = ckpt.load(path)
        model = meta.get("model", {})
        expected = {"nz": self.config.nz, "ngf": self.config.ngf, "ndf": self.config.ndf, "nc": self.nc,
                    "image_size": self.config.image_size}
        for key, value in expected.items():
            if model.get(key) != value:
                raise ckpt.CheckpointError(
                    f"checkpoint {path} was made with {key}={model.get(key)} but this run has {key}={value}; "
                    "use the same options to resume, or a new --outf"
                )
        ckpt.load_module("G", self.G, tensors, path)
        ckpt.load_module("D", self.D, tensors, path)
        ckpt.load_optimizer("optG", self.optG, tensors, meta["optG"], path)
        ckpt.load_optimizer("optD", self.optD, tensors, meta["optD"], path)
        self.fixed_noise = Tensor(to_device(tensors["fixed_noise"], self.device))
        set_rng_state(meta["rng_state"])
        self.epoch, self.batch, self.step, self.g_steps = meta["epoch"], meta["batch"], meta["step"], meta["g_steps"]
        self.best_fd = meta.get("best_frechet_distance")
        _truncate_log(self.eval_path, self.step)
        self.loader = datasets.DataLoader(self.dataset, batch_size=self.config.batch_size, shuffle=True, drop_last=True,
                                          seed=meta["config"]["manual_seed"])
        self.config.manual_seed = meta["config"]["manual_seed"]
        _truncate_log(self.log_path, self.step)
        self.log(f"resumed from {path}: epoch {self.epoch}, batch {self.batch}, step {self.step}")

    # -- the loop ------------------------------------------------------------------------------
    def fit(self):
        c = self.config
        interrupted = _InterruptFlag()
        new_log = not os.path.exists(self.log_path) or self.step == 0
        log_file = open(self.log_path, "w" if new_log else "a", newline="", buffering=1)  # line-buffered: tail -f works
        writer = csv.DictWriter(log_file, fieldnames=LOG_FIELDS)
        if new_log:
            writer.writeheader()
        if self.step == 0:
            first = next(iter(self.loader.iter_epoch(0)))
            datasets.save_image_grid(first[:64], os.path.join(c.outf, "real_samples.png"), nrow=8)
        steps_per_epoch = len(self.loader)
        stop = False
        try:
            with interrupted:
                while self.epoch < c.niter and not stop:
                    bar = _progress(steps_per_epoch, self.batch, f"epoch {self.epoch + 1}/{c.niter}", c.progress)
                    for real in self.loader.iter_epoch(self.epoch, start=self.batch):
                        row = self.train_step(real)
                        self.batch += 1
                        writer.writerow(row)
                        bar.update(1)
                        bar.set_postfix(loss_D=f"{row['loss_D']:.3f}", loss_G=_fmt(row["loss_G"]), D_x=f"{row['D_x']:.2f}")
                        if self.eval_every > 0 and self.step % self.eval_every == 0:
                            self.evaluate()
                        if interrupted.hit:
                            bar.close()
                            log_file.flush()
                            path = self.save_checkpoint()
                            self.log(f"\ninterrupted at step {self.step}: checkpoint written to {path}; resume with --resume")
                            raise KeyboardInterrupt
                        if c.dry_run or (c.max_steps is not None and self.step >= c.max_steps):
                            stop = True
                            break
                    bar.close()
                    if self.batch >= steps_per_epoch:
                        self.epoch, self.batch = self.epoch + 1, 0
                        self._end_of_epoch(log_file, epoch_done=self.epoch - 1)
                    else:
                        self._end_of_epoch(log_file, epoch_done=self.epoch)
        finally:
            log_file.close()
        return self

    def _end_of_epoch(self, log_file, epoch_done):
        log_file.flush()
        grid = self.write_grid(epoch_done)
        self.write_plot()
        if self.eval_every < 0:
            self.evaluate()
        path = self.save_checkpoint()
        self.log(f"epoch {epoch_done + 1}: step {self.step}, samples {grid}, checkpoint {path}")

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(self):
        """Score eval_n samples (z from a fixed seed; the training RNG is untouched) against the test
        images in the shipped classifier's feature space; log a row to eval.csv; keep the best
        checkpoint by Frechet distance. Returns the result dict."""
        from . import evaluate as ev

        started = time.perf_counter()
        if self._eval_reference is None:
            self._eval_reference = ev.RealReference(self._extractor, self.config.dataroot, floor=False)
        images = ev.generate(self.G, self.config.eval_n, seed=0, device=self.device)
        result = ev.evaluate_images(images, self._eval_reference)
        row = {key: result.get(key) for key in EVAL_FIELDS}
        row.update(step=self.step, epoch=self.epoch, seconds=round(time.perf_counter() - started, 2))
        new = not os.path.exists(self.eval_path)
        with open(self.eval_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=EVAL_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)
        fd = result["frechet_distance"]
        note = ""
        if self.config.keep_best and (self.best_fd is None or fd < self.best_fd):
            self.best_fd = fd
            self.save_checkpoint(self.best_path)
            note = f"; new best, saved {self.best_path}"
        self.log(f"eval at step {self.step}: FD[{result['metric_prefix']}] {fd:.3f}, precision {result['precision']:.3f}, "
                 f"recall {result['recall']:.3f}, coverage {result['coverage']:.3f} (n={result['n']}){note}")
        return result


def _fmt(v):
    return f"{v:.3f}" if isinstance(v, float) else "-"


class _NullBar:
    def update(self, n):
        pass

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass


def _progress(total, done, desc, enabled):
    if not enabled:
        return _NullBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc=desc, dynamic_ncols=True, file=sys.stderr)


class _InterruptFlag:
    """Defers Ctrl-C to the end of the current step, so a checkpoint never holds a half update."""

    def __init__(self):
        self.hit = False
        self._previous = None

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.hit:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.hit = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def _truncate_log(path, step):
    """Keep the log rows up to the checkpoint's step, so a resumed run does not repeat rows."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r.get("step", "").isdigit() and int(r["step"]) <= step]
        fields = reader.fieldnames or LOG_FIELDS
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def load_generator(path, device="cpu"):
    """The generator stored in a training checkpoint, in eval mode, and the checkpoint's meta."""
    tensors, meta = ckpt.load(path)
    model = meta.get("model")
    if not model or model.get("kind") != "dcgan":
        raise ckpt.CheckpointError(f"checkpoint {path} holds no DCGAN generator description")
    G = Generator(model["nz"], model["ngf"], model["nc"], model["image_size"])
    ckpt.load_module("G", G, tensors, path)
    return G.to(device).eval(), meta


def describe(config):
    return json.dumps(dataclasses.asdict(config), indent=1, sort_keys=True)
