"""`pygan eval`: how good is a generator, measured offline in the shipped classifier's feature space.

The generated images are compared with the data set's 10k TEST images. Beside every number stands the
real-vs-real floor: 10k TRAINING images compared the same way, which is what a perfect generator would
score at this sample size. Metric names carry the classifier's weights_id (e.g. FD[fmnist-3f2a9c1e]),
since a Frechet distance in another feature space is another number.
"""

import json
import os

import numpy as np

from . import classifier as classifier_mod
from .checkpoint import atomic_write
from . import data as datasets
from . import metrics

FULL_N = 10000
K_PRECISION_RECALL = 3
K_DENSITY_COVERAGE = 5
SHORT_NAMES = {"fashion-mnist": "fmnist", "mnist": "mnist"}


class RealReference:
    """Features of the test split (and, for the floor, of n training images) of a data set, computed once."""

    def __init__(self, extractor, dataroot=None, floor=True, n_floor=FULL_N, seed=0):
        key = extractor.dataset
        test = datasets.load_dataset(key, dataroot, classifier_mod.IMAGE_SIZE, train=False)
        self.extractor = extractor
        self.features, self.probs = extractor(test.images)
        self.radii = metrics.knn_radii(self.features, [K_PRECISION_RECALL, K_DENSITY_COVERAGE])
        self.stats = metrics.feature_statistics(self.features)
        self.floor = None
        if floor:
            train = datasets.load_dataset(key, dataroot, classifier_mod.IMAGE_SIZE, train=True)
            pick = np.random.default_rng(seed).choice(len(train), size=min(n_floor, len(train)), replace=False)
            self.floor = self.compare(*extractor(train.images[np.sort(pick)]))

    def compare(self, features, probs):
        """Every metric of (features, probs) of some images against the test split."""
        knn = metrics.knn_metrics(self.features, features, K_PRECISION_RECALL, K_DENSITY_COVERAGE, self.radii)
        hist, kl = metrics.class_histogram(probs)
        return {
            "n": int(len(features)),
            "frechet_distance": metrics.frechet_distance(*self.stats, *metrics.feature_statistics(features)),
            **knn,
            "class_kl_to_uniform": kl, "inception_score": metrics.inception_score(probs),
            "class_histogram": [float(h) for h in hist],
        }


def metric_prefix(extractor):
    return f"{SHORT_NAMES.get(extractor.dataset, extractor.dataset)}-{extractor.id}"


def evaluate_images(images, reference):
    """{metrics..., 'floor': {...}, 'biased': bool, 'classifier': {...}} for generated images in [-1, 1]."""
    features, probs = reference.extractor(images)
    result = reference.compare(features, probs)
    ex = reference.extractor
    result.update({
        "biased": result["n"] < FULL_N,
        "classifier": {"weights_id": ex.id, "dataset": ex.dataset, "test_accuracy": ex.meta.get("test_accuracy"),
                       "classes": ex.meta.get("classes")},
        "metric_prefix": metric_prefix(ex),
        "real_reference": f"{len(reference.features)} {ex.dataset} test images",
        "floor": reference.floor,
    })
    return result


ROWS = [  # (key, label, which way is better)
    ("frechet_distance", "FD", "lower"),
    ("precision", "precision (k=3)", "higher"),
    ("recall", "recall (k=3)", "higher"),
    ("density", "density (k=5)", "~1"),
    ("coverage", "coverage (k=5)", "higher"),
    ("class_kl_to_uniform", "class KL to uniform", "lower"),
    ("inception_score", "inception score", "higher"),
]


def format_table(result):
    prefix = result["metric_prefix"]
    floor = result.get("floor")
    width = max(len(label) for _, label, _ in ROWS) + len(prefix) + 3
    lines = [f"{'metric':<{width}} {'samples':>10} {'real floor':>11}  better"]
    for key, label, better in ROWS:
        f = f"{floor[key]:>11.4f}" if floor else f"{'-':>11}"
        lines.append(f"{label + ' [' + prefix + ']':<{width}} {result[key]:>10.4f} {f}  {better}")
    classes = result["classifier"].get("classes") or [str(i) for i in range(len(result["class_histogram"]))]
    hist = ", ".join(f"{name} {100 * h:.1f}%" for name, h in zip(classes, result["class_histogram"]))
    lines.append(f"class histogram: {hist}")
    floor_n = f"; real floor: {floor['n']} training images scored the same way" if floor else ""
    lines.append(f"{result['n']} samples scored against {result['real_reference']}{floor_n}")
    lines.append(f"classifier {prefix}: test accuracy {result['classifier']['test_accuracy']:.4f}")
    if result["biased"]:
        lines.append(f"note: n < {FULL_N}: these numbers are BIASED (FD up, recall and coverage down) and are "
                     f"comparable only with runs at the same n")
    return "\n".join(lines)


def write_json(result, path):
    """Write the result atomically (checkpoint.atomic_write)."""
    with atomic_write(path) as f:
        f.write((json.dumps(result, indent=1, sort_keys=True) + "\n").encode())


def generate(G, n, seed=0, batch_size=500, device="cpu"):
    """n images from generator G with z ~ N(0, I) drawn from a fixed seed (as `pygan sample --seed`)."""
    z = np.random.default_rng(seed).standard_normal((n, G.nz))
    return run_generator(G, z, batch_size, device)


def run_generator(G, z, batch_size=500, device="cpu"):
    """G(z) in eval mode (running BatchNorm statistics), batch by batch, as float32 numpy images."""
    from .autograd import Tensor, no_grad, to_device

    z = np.asarray(z, dtype=np.float32).reshape(len(z), G.nz, 1, 1)
    was_training = G.training
    G.eval()
    with no_grad():
        out = [G(Tensor(to_device(z[i : i + batch_size], device))).numpy() for i in range(0, len(z), batch_size)]
    G.train(was_training)
    return np.concatenate(out)


def load_samples(path):
    """Images from a .npy, .npz (array 'images' or the only array) or .safetensors ('images') file.

    float images are taken as [-1, 1] (what `pygan sample --out x.npz` writes); uint8 as [0, 255].
    Accepted layouts: (N, C, H, W), (N, H, W) grey, (N, H, W, C) with C of 1 or 3.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"samples file {path} does not exist")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".npy":
            images = np.load(path, allow_pickle=False)
        elif ext == ".npz":
            with np.load(path, allow_pickle=False) as z:
                names = list(z.keys())
                if "images" in names:
                    images = z["images"]
                elif len(names) == 1:
                    images = z[names[0]]
                else:
                    raise ValueError(f"it holds arrays {names}; name the images 'images'")
        elif ext == ".safetensors":
            from safetensors.numpy import load_file

            tensors = load_file(path)
            if "images" not in tensors:
                raise ValueError(f"it has no tensor named 'images' (it has {sorted(tensors)})")
            images = tensors["images"]
        else:
            raise ValueError("expected a .npy, .npz or .safetensors file")
    except (ValueError, OSError) as exc:
        raise ValueError(f"cannot read samples from {path}: {exc}") from None
    return normalise_images(images, path)


def normalise_images(images, what="samples"):
    images = np.asarray(images)
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 127.5 - 1.0
    elif images.dtype.kind == "f":
        images = images.astype(np.float32)
        if not np.isfinite(images).all():
            raise ValueError(f"{what}: images contain NaN or Inf")
        if images.min() < -1.01 or images.max() > 1.01:
            raise ValueError(f"{what}: float images must lie in [-1, 1], got values from {images.min():.3g} to "
                             f"{images.max():.3g} (uint8 images are read as [0, 255])")
    else:
        raise ValueError(f"{what}: images must be float (in [-1, 1]) or uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[1] not in (1, 3) and images.shape[3] in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"{what}: expected images (N, C, H, W), (N, H, W) or (N, H, W, C) with 1 or 3 channels, "
                         f"got shape {images.shape}")
    if len(images) < 2 * K_DENSITY_COVERAGE:
        raise ValueError(f"{what}: need at least {2 * K_DENSITY_COVERAGE} images, got {len(images)}")
    return np.ascontiguousarray(images)
