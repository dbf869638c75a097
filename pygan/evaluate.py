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
        self.labels = test.labels
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
    if result.get("class_accuracy") is not None:
        names = classes
        per = ", ".join(f"{name} {v:.2f}" for name, v in zip(names, result["intra_fd_per_class"]) if v is not None)
        lines.append(f"conditional: class accuracy {result['class_accuracy']:.4f} (samples recognised as the class asked "
                     f"for), intra-FD {result['intra_fd']:.4f} (per class: {per})")
    if result["biased"]:
        lines.append(f"note: n < {FULL_N}: these numbers are BIASED (FD up, recall and coverage down) and are "
                     f"comparable only with runs at the same n")
    return "\n".join(lines)


def write_json(result, path):
    """Write the result atomically (checkpoint.atomic_write)."""
    with atomic_write(path) as f:
        f.write((json.dumps(result, indent=1, sort_keys=True) + "\n").encode())


def balanced_labels(n, num_classes):
    """n class labels with every class equally often (the first n % K classes once more), sorted."""
    return np.sort(np.arange(n) % num_classes)


def generate(G, n, seed=0, batch_size=500, device="cpu", truncation=None, labels=None):
    """n images from generator G with z ~ N(0, I) drawn from a fixed seed (as `pygan sample --seed`),
    every component redrawn beyond `truncation` (the truncation trick) when given. A conditional
    G gets `labels`, by default balanced_labels(n, G.num_classes). Returns images, or (images,
    labels) for a conditional G."""
    from .ema import truncated_normal

    z = truncated_normal(np.random.default_rng(seed), (n, G.nz), truncation)
    if not getattr(G, "num_classes", 0):
        return run_generator(G, z, batch_size, device)
    labels = balanced_labels(n, G.num_classes) if labels is None else np.asarray(labels)
    return run_generator(G, z, batch_size, device, labels), labels


def run_generator(G, z, batch_size=500, device="cpu", labels=None):
    """G(z) (or G(z, labels)) in eval mode (running BatchNorm statistics), batch by batch, as float32
    numpy images."""
    from .autograd import Tensor, no_grad, to_device

    z = np.asarray(z, dtype=np.float32).reshape(len(z), G.nz)
    was_training = G.training
    G.eval()
    out = []
    with no_grad():
        for i in range(0, len(z), batch_size):
            zb = Tensor(to_device(z[i : i + batch_size], device))
            if labels is None:
                out.append(G(zb).numpy())
            else:
                out.append(G(zb, to_device(np.asarray(labels[i : i + batch_size], dtype=np.int64), device)).numpy())
    G.train(was_training)
    return np.concatenate(out)


def conditional_metrics(images, labels, reference, class_names=None):
    """For samples asked of a conditional G: the classifier's accuracy on them (how often a sample is
    recognised as the class asked for) and the per-class Frechet distance against the test images
    of that class (intra-FD; Miyato & Koyama 2018), averaged over classes. Both need the model's
    classes to be the classifier's (the same data set)."""
    ex = reference.extractor
    classes = ex.meta.get("classes")
    if class_names is not None and classes is not None and list(class_names) != list(classes):
        raise ValueError(f"the generator's classes {list(class_names)} are not the classifier's {list(classes)} "
                         "(class accuracy and intra-FD need the same data set)")
    features, probs = ex(images)
    labels = np.asarray(labels)
    accuracy = float((probs.argmax(axis=1) == labels).mean())
    per_class = []
    for k in range(probs.shape[1]):
        fake, real = features[labels == k], reference.features[reference.labels == k]
        if len(fake) < 2 or len(real) < 2:
            per_class.append(None)
            continue
        per_class.append(metrics.frechet_distance(*metrics.feature_statistics(real), *metrics.feature_statistics(fake)))
    scored = [v for v in per_class if v is not None]
    return {"class_accuracy": accuracy, "intra_fd": float(np.mean(scored)) if scored else None,
            "intra_fd_per_class": per_class}


SAMPLE_DTYPES = ("uint8", "float16", "float32", "float64")


def load_samples(path):
    """Images from a .npy, .npz (array 'images' or the only array) or .safetensors ('images') file.

    float images are taken as [-1, 1] (what `pygan sample --out x.npz` writes); uint8 as [0, 255].
    Accepted layouts: (N, C, H, W), (N, H, W) grey, (N, H, W, C) with C of 1 or 3; square images,
    at least 2 * K_DENSITY_COVERAGE of them. The array's header (shape, dtype, byte size) is checked
    against the layout and the file's size before the array is read, so a hostile or truncated
    file gets a ValueError naming it, never a huge allocation; the values are checked after.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"samples file {path} does not exist")
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".npy", ".npz", ".safetensors"):
        raise ValueError(f"cannot read samples from {path}: expected a .npy, .npz or .safetensors file")
    if os.path.getsize(path) == 0:
        raise ValueError(f"cannot read samples from {path}: the file is empty (0 bytes)")
    try:
        if ext == ".npy":
            images = _load_npy(path)
        elif ext == ".npz":
            images = _load_npz(path)
        else:
            images = _load_safetensors(path)
    except (_BadSamples, ValueError) as exc:
        raise ValueError(f"cannot read samples from {path}: {exc}") from None
    except Exception as exc:  # numpy, zipfile and safetensors each raise their own kinds on a corrupt file
        raise ValueError(f"cannot read samples from {path}: {type(exc).__name__}: {exc}") from None
    return normalise_images(images, path)


class _BadSamples(Exception):
    """A samples file whose header does not describe images this command can score."""


def check_sample_layout(shape, dtype, what="samples"):
    """Raise ValueError unless (shape, dtype) is a layout load_samples accepts; needs no data."""
    dtype = np.dtype(dtype)
    shape = tuple(int(n) for n in shape)
    if dtype.name not in SAMPLE_DTYPES:
        raise ValueError(f"{what}: images must be float (in [-1, 1]) or uint8, got {dtype}")
    if len(shape) == 3:
        shape = (shape[0], 1) + shape[1:]
    elif len(shape) == 4 and shape[1] not in (1, 3) and shape[3] in (1, 3):
        shape = (shape[0], shape[3], shape[1], shape[2])
    if len(shape) != 4 or shape[1] not in (1, 3):
        raise ValueError(f"{what}: expected images (N, C, H, W), (N, H, W) or (N, H, W, C) with 1 or 3 channels, "
                         f"got shape {shape}")
    n, _, h, w = shape
    if h == 0 or w == 0:
        raise ValueError(f"{what}: images are empty (shape {shape})")
    if h != w:
        raise ValueError(f"{what}: images must be square (the classifier takes HxH images), got {h}x{w} "
                         f"(shape {shape})")
    if n < 2 * K_DENSITY_COVERAGE:
        raise ValueError(f"{what}: need at least {2 * K_DENSITY_COVERAGE} images, got {n} (shape {shape})")


def _claimed_bytes(shape, dtype):
    return int(np.prod([int(n) for n in shape], dtype=object)) * np.dtype(dtype).itemsize


def _npy_header(f):
    """(shape, fortran_order, dtype) of the .npy stream f, positioned at its data."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version == (1, 0):
        return fmt.read_array_header_1_0(f)
    if version == (2, 0):
        return fmt.read_array_header_2_0(f)
    return fmt._read_array_header(f, version)  # (3, 0): no public reader


def _check_npy_stream(f, data_bytes, what):
    """Check a .npy header against the bytes that follow it; returns (shape, dtype)."""
    try:
        shape, _, dtype = _npy_header(f)
    except ValueError as exc:
        raise _BadSamples(f"{what} is not a valid .npy array ({exc})") from None
    if dtype.hasobject:
        raise _BadSamples(f"{what} holds Python objects, not images")
    check_sample_layout(shape, dtype, what)
    claimed = _claimed_bytes(shape, dtype)
    available = data_bytes - f.tell()
    if claimed > available:
        raise _BadSamples(f"{what}: its header claims shape {shape} {dtype} ({claimed} bytes) but only "
                          f"{max(available, 0)} bytes follow (truncated or corrupt file?)")
    return shape, dtype


def _load_npy(path):
    with open(path, "rb") as f:
        _check_npy_stream(f, os.path.getsize(path), "the .npy file")
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _load_npz(path):
    import zipfile

    with zipfile.ZipFile(path) as zf:
        names = [n[:-4] if n.endswith(".npy") else n for n in zf.namelist()]
        if "images" in names:
            name = "images"
        elif len(names) == 1:
            name = names[0]
        else:
            raise _BadSamples(f"it holds arrays {names}; name the images 'images'")
        info = zf.getinfo(name + ".npy" if name + ".npy" in zf.namelist() else name)
        # The zip directory's sizes could lie too: deflate cannot expand more than ~1032x.
        limit = info.file_size if info.compress_type == zipfile.ZIP_STORED else min(info.file_size, 1100 * info.compress_size + 4096)
        with zf.open(info) as f:
            _check_npy_stream(f, limit, f"array {name!r}")
    with np.load(path, allow_pickle=False) as z:
        return z[name]


def _load_safetensors(path):
    import json

    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _BadSamples("it is not a safetensors file (shorter than its 8-byte header length)")
        n = int.from_bytes(head, "little")
        if n <= 0 or n > size - 8:
            raise _BadSamples(f"its header length {n} does not fit the file's {size} bytes (truncated?)")
        try:
            header = json.loads(f.read(n))
        except ValueError:
            raise _BadSamples("its header is not JSON (not a safetensors file?)") from None
    if not isinstance(header, dict):
        raise _BadSamples("its header is not a JSON object (not a safetensors file?)")
    entry = header.get("images")
    if not isinstance(entry, dict):
        raise _BadSamples(f"it has no tensor named 'images' (it has {sorted(k for k in header if k != '__metadata__')})")
    dtypes = {"U8": "uint8", "F16": "float16", "F32": "float32", "F64": "float64"}
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if entry.get("dtype") not in dtypes:
        raise _BadSamples(f"tensor 'images' has dtype {entry.get('dtype')!r}; images must be float (in [-1, 1]) or uint8")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)
            and isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
        raise _BadSamples("tensor 'images' has a malformed shape or data_offsets")
    dtype = np.dtype(dtypes[entry["dtype"]])
    check_sample_layout(shape, dtype, "tensor 'images'")
    claimed = _claimed_bytes(shape, dtype)
    start, stop = offsets
    if not 0 <= start <= stop or stop - start != claimed or 8 + n + stop > size:
        raise _BadSamples(f"tensor 'images' claims shape {tuple(shape)} {dtype} ({claimed} bytes at offsets "
                          f"{offsets}) but the file has {size - 8 - n} data bytes (truncated or corrupt file?)")
    from safetensors import safe_open

    with safe_open(path, framework="numpy") as f:
        return f.get_tensor("images")


def normalise_images(images, what="samples"):
    images = np.asarray(images)
    check_sample_layout(images.shape, images.dtype, what)
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 127.5 - 1.0
    else:
        images = images.astype(np.float32)
        finite = np.isfinite(images)
        if not finite.all():
            bad = int(np.size(finite) - np.count_nonzero(finite))
            raise ValueError(f"{what}: images contain NaN or Inf ({bad} values)")
        if images.min() < -1.01 or images.max() > 1.01:
            raise ValueError(f"{what}: float images must lie in [-1, 1], got values from {images.min():.3g} to "
                             f"{images.max():.3g} (uint8 images are read as [0, 255])")
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[1] not in (1, 3) and images.shape[3] in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(images)
