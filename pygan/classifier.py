"""The feature network behind `pygan eval`: a small (Fashion-)MNIST classifier trained by pygan.

Inception weights cannot be downloaded here, so, like TF-GAN's MNIST Frechet distance, pygan trains
and ships its own classifier and measures samples in its feature space. Images are 1x32x32 in
[-1, 1], exactly what `pygan train` produces at its default size (28x28 data is padded to 32).

    conv3x3(1->32)+BN+ReLU, avgpool 2     32x32 -> 16x16
    conv3x3(32->64)+BN+ReLU, avgpool 2    16x16 -> 8x8
    conv3x3(64->64)+BN+ReLU, avgpool 2    8x8   -> 4x4
    linear(1024->64)                      the 64-d FEATURES (taken before the ReLU: no dead, all-zero
    ReLU, linear(64->10)                  dimensions, so their covariance stays full rank)

Train it (fixed seed; writes pygan/assets/classifier-<dataset>.safetensors, about 490 KB):

    python -m pygan.classifier --dataset fashion-mnist
    python -m pygan.classifier --dataset mnist --dataroot DIR     # when you have the MNIST files

The file's `weights_id` (a short hash of its tensors) goes into every metric's printed name, so two
numbers are comparable only when they were measured with the same weights.
"""

import argparse
import hashlib
import json
import math
import os
import sys
import time

import numpy as np

from . import checkpoint as ckpt
from . import data, nn
from .autograd import Tensor, no_grad, normalise_device, to_device
from .nn import functional as F
from .optim import Adam
from .random import manual_seed

FORMAT_KIND = "pygan-classifier-1"
IMAGE_SIZE = 32
ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
# the data sets a feature classifier is trained for (their class names are the data module's)
CLASS_NAMES = {key: data.CLASS_NAMES[key] for key in ("fashion-mnist", "mnist")}


class Classifier(nn.Module):
    """Conv stack + pooling + linear head; `features` are the penultimate layer's 64 values."""

    def __init__(self, nc=1, num_classes=10, widths=(32, 64, 64), feature_dim=64):
        super().__init__()
        self.nc, self.num_classes, self.widths, self.feature_dim = nc, num_classes, tuple(widths), feature_dim
        layers, cin = [], nc
        for cout in self.widths:
            layers += [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.AvgPool2d(2)]
            cin = cout
        self.body = nn.Sequential(*layers, nn.Flatten())
        side = IMAGE_SIZE // 2 ** len(self.widths)
        self.fc1 = nn.Linear(cin * side * side, feature_dim)
        self.fc2 = nn.Linear(feature_dim, num_classes)

    def features_and_logits(self, x):
        f = self.fc1(self.body(x))
        return f, self.fc2(F.relu(f))

    def forward(self, x):
        return self.features_and_logits(x)[1]

    def description(self):
        return {"kind": FORMAT_KIND, "nc": self.nc, "num_classes": self.num_classes, "widths": list(self.widths),
                "feature_dim": self.feature_dim, "image_size": IMAGE_SIZE}


def weights_id(tensors):
    """8 hex digits of SHA-256 over the tensors (names, dtypes, shapes, bytes) in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:8]


def default_path(dataset):
    return os.path.join(ASSETS, f"classifier-{data._canonical_name(dataset)}.safetensors")


class FeatureExtractor:
    """A trained classifier in eval mode: images -> (features float64, class probabilities float64)."""

    def __init__(self, model, meta, path, device="cpu"):
        self.model, self.meta, self.path, self.device = model.to(device).eval(), meta, path, device
        self.id = meta["weights_id"]
        self.dataset = meta["dataset"]

    def __call__(self, images, batch_size=500):
        images = _as_classifier_input(images)
        feats, probs = [], []
        with no_grad():
            for i in range(0, len(images), batch_size):
                x = Tensor(to_device(np.ascontiguousarray(images[i : i + batch_size]), self.device))
                f, logits = self.model.features_and_logits(x)
                feats.append(f.numpy().astype(np.float64))
                probs.append(softmax(logits.numpy().astype(np.float64)))
        return np.concatenate(feats), np.concatenate(probs)


def softmax(logits):
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _as_classifier_input(images):
    """float32 (N, 1, 32, 32) in [-1, 1] from grey or RGB images of any square size."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be 4-D (N, C, H, W), got shape {images.shape}")
    if images.shape[1] == 3:  # ITU-R 601-2 luma, as Pillow's "L"
        images = (0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2])[:, None]
    elif images.shape[1] != 1:
        raise ValueError(f"images must have 1 or 3 channels, got {images.shape[1]} (shape {images.shape})")
    if images.shape[2] != images.shape[3]:
        raise ValueError(f"images must be square, got {images.shape[2]}x{images.shape[3]}")
    if images.shape[2] == 28:  # the data sets' own size: pad like data.load_dataset does
        images = np.pad(images, ((0, 0), (0, 0), (2, 2), (2, 2)), constant_values=-1.0)
    elif images.shape[2] != IMAGE_SIZE:
        images = data.resize_images(images, IMAGE_SIZE, "bilinear")
    return np.ascontiguousarray(images, dtype=np.float32)


def load(dataset="fashion-mnist", path=None, device="cpu"):
    """The shipped (or a given) classifier as a FeatureExtractor; its id is checked against its tensors."""
    path = path or default_path(dataset)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"no evaluation classifier for {dataset!r} at {path}; train one with "
            f"`python -m pygan.classifier --dataset {data._canonical_name(dataset)}`"
        )
    tensors, meta = ckpt.load(path)
    desc = meta.get("model", {})
    if desc.get("kind") != FORMAT_KIND:
        raise ckpt.CheckpointError(f"{path} is not a pygan classifier (kind {desc.get('kind')!r})")
    if weights_id(tensors) != meta.get("weights_id"):
        raise ckpt.CheckpointError(f"{path}: its tensors do not match the weights_id in its header (modified file?)")
    model = Classifier(desc["nc"], desc["num_classes"], desc["widths"], desc["feature_dim"])
    ckpt.load_module("classifier", model, tensors, path)
    return FeatureExtractor(model, meta, path, normalise_device(device))


def accuracy(model, images, labels, device, batch_size=500):
    model.eval()
    correct = 0
    with no_grad():
        for i in range(0, len(images), batch_size):
            logits = model(Tensor(to_device(images[i : i + batch_size], device))).numpy()
            correct += int((logits.argmax(axis=1) == labels[i : i + batch_size]).sum())
    return correct / len(images)


def train(dataset="fashion-mnist", dataroot=None, epochs=8, batch_size=128, lr=2e-3, seed=0, device="auto",
          out=None, log=print, limit=None):
    """Train the classifier with a fixed seed; write it to `out` (safetensors); return its meta dict.

    Adam with a cosine learning-rate decay to 0 and random horizontal flips. `limit` trains on the
    first `limit` images only (tests).
    """
    device = normalise_device(device)
    key = data._canonical_name(dataset)
    train_set = data.load_dataset(key, dataroot, IMAGE_SIZE, train=True)
    test_set = data.load_dataset(key, dataroot, IMAGE_SIZE, train=False)
    if train_set.labels is None:
        raise ValueError(f"dataset {dataset!r} has no labels; the classifier needs fashion-mnist or mnist")
    images, labels = train_set.images, train_set.labels
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    manual_seed(seed)
    model = Classifier(train_set.num_channels, int(labels.max()) + 1).to(device)
    opt = Adam(model.parameters(), lr=lr)
    loader = data.DataLoader(data.Dataset(images, labels), batch_size, seed=seed, return_labels=True)
    flips = np.random.default_rng([seed, 1])
    total, step, started = epochs * len(loader), 0, time.perf_counter()
    for epoch in range(epochs):
        model.train()
        losses = []
        for x, y in loader.iter_epoch(epoch):
            flip = flips.random(len(x)) < 0.5
            x = np.where(flip[:, None, None, None], x[..., ::-1], x)
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(model(Tensor(to_device(np.ascontiguousarray(x), device))), to_device(y, device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            step += 1
        acc = accuracy(model, test_set.images, test_set.labels, device)
        log(f"epoch {epoch + 1}/{epochs}: train loss {np.mean(losses):.4f}, test accuracy {acc:.4f} "
            f"({time.perf_counter() - started:.0f} s)")
    tensors = ckpt.module_tensors("classifier", model)
    meta = {
        "model": model.description(),
        "dataset": key,
        "classes": CLASS_NAMES.get(key, [str(i) for i in range(model.num_classes)]),
        "test_accuracy": acc,
        "train_images": len(images),
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
        "weights_id": weights_id(tensors),
        "trained_with": "python -m pygan.classifier",
    }
    if out is not None:
        ckpt.save(out, tensors, meta)
        log(f"wrote {out} ({os.path.getsize(out) / 1024:.0f} KB), weights_id {meta['weights_id']}, "
            f"test accuracy {acc:.4f}")
    return meta


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m pygan.classifier", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist | mnist")
    p.add_argument("--dataroot", default=None, help="where the IDX files are (default: the system's Fashion-MNIST)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument("--out", default=None, help="output file (default: pygan/assets/classifier-<dataset>.safetensors)")
    p.add_argument("--min-accuracy", type=float, default=0.9, help="exit with status 1 below this test accuracy")
    args = p.parse_args(argv)
    if data._canonical_name(args.dataset) not in CLASS_NAMES:
        p.error(f"--dataset must be fashion-mnist or mnist, got {args.dataset!r}")
    out = args.out or default_path(args.dataset)
    meta = train(args.dataset, args.dataroot, args.epochs, args.batch_size, args.lr, args.seed, args.device, out)
    print(json.dumps({k: meta[k] for k in ("dataset", "test_accuracy", "weights_id")}))
    if meta["test_accuracy"] < args.min_accuracy:
        print(f"test accuracy {meta['test_accuracy']:.4f} is below --min-accuracy {args.min_accuracy}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
