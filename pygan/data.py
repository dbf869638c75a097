"""Datasets for GAN training: images as float32 NCHW in [-1, 1] at a requested size.

    ds = load_dataset("fashion-mnist", image_size=32)      # ds.images (60000, 1, 32, 32), ds.labels
    loader = DataLoader(ds, batch_size=128, seed=0)
    for epoch in range(start_epoch, epochs):
        for batch in loader.iter_epoch(epoch):             # float32 (128, 1, 32, 32)
            ...
    save_image_grid(batch[:64], "real_samples.png")

Sources: Fashion-MNIST and MNIST (IDX files, gzip or raw), CIFAR-10 (the *binary* version; pickles
are never loaded, since unpickling a file can run code), a folder of images, and procedural fake
images that need no files. Pixel values v in 0..255 map to v / 127.5 - 1, so 0 -> -1 and 255 -> 1
exactly. Everything is read into memory with vectorised numpy; nothing is cached on disk. Damaged
files raise ValueError naming the file and what is wrong; missing ones raise FileNotFoundError
saying where we looked and how to get them.
"""

import gzip
import math
import os
import zlib

import numpy as np

__all__ = [
    "Dataset", "DataLoader", "load_dataset", "read_idx", "make_grid", "save_image_grid",
    "make_fake_images", "resize_images", "DATASETS", "FASHION_MNIST_SYSTEM_DIR",
]

# Where the Debian/Ubuntu package `dataset-fashion-mnist` installs the four IDX .gz files.
FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"

DATASETS = ("fashion-mnist", "mnist", "cifar10", "folder", "fake")
_ALIASES = {
    "fashion-mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist",
    "mnist": "mnist",
    "cifar10": "cifar10", "cifar-10": "cifar10",
    "folder": "folder", "image-folder": "folder", "imagefolder": "folder",
    "fake": "fake",
}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

_INV_127_5 = np.float32(1 / 127.5)


def _to_float(u8, out=None):
    """uint8 array -> float32 v / 127.5 - 1 (0 -> -1 and 255 -> 1 exactly; others within 1 ulp).

    Writes into `out` (any float32 view of the same shape) when given: no temporaries.
    """
    if out is None:
        out = np.empty(u8.shape, np.float32)
    np.multiply(u8, _INV_127_5, out=out, dtype=np.float32)
    out -= np.float32(1)
    return out


# ------------------------------------------------------------------------------------------------
# Dataset
# ------------------------------------------------------------------------------------------------


CLASS_NAMES = {
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
    "mnist": [str(d) for d in range(10)],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    "fake": ["blob", "ring", "stripes"],
}


class Dataset:
    """Images in memory: `images` float32 (N, C, S, S) in [-1, 1], `labels` int64 (N,) or None,
    `classes` the class names (labels index them) or None."""

    def __init__(self, images, labels=None, name="custom", classes=None):
        images = np.asarray(images)
        if images.ndim != 4:
            raise ValueError(f"images must be 4-D (N, C, H, W), got shape {images.shape}")
        if images.dtype != np.float32:
            images = images.astype(np.float32)
        if labels is not None:
            labels = np.asarray(labels, dtype=np.int64)
            if labels.shape != (images.shape[0],):
                raise ValueError(f"labels must have shape ({images.shape[0]},), got {labels.shape}")
        self.images = images
        self.labels = labels
        self.name = name
        if labels is not None and classes is None:
            classes = [str(k) for k in range(int(labels.max()) + 1 if labels.size else 0)]
        self.classes = None if labels is None else list(classes)

    @property
    def num_classes(self):
        """Number of classes (0 for an unlabelled data set)."""
        return 0 if self.classes is None else len(self.classes)

    @property
    def num_channels(self):
        return int(self.images.shape[1])

    @property
    def image_size(self):
        return int(self.images.shape[2])

    def __len__(self):
        return int(self.images.shape[0])

    def __getitem__(self, index):
        """Image(s) at `index`, or (image(s), label(s)) when the dataset has labels."""
        if self.labels is None:
            return self.images[index]
        return self.images[index], self.labels[index]

    def __repr__(self):
        return (f"Dataset(name={self.name!r}, n={len(self)}, channels={self.num_channels}, "
                f"size={self.image_size}, labels={self.labels is not None})")


def load_dataset(name="fashion-mnist", dataroot=None, image_size=32, train=True, download_hint=True,
                 fake_size=1024, channels=None, seed=0):
    """Load a dataset into memory as float32 NCHW in [-1, 1].

    name: "fashion-mnist" (also "fashion_mnist", "fashionmnist"), "mnist", "cifar10", "folder", "fake".
    dataroot: where the files are. Fashion-MNIST defaults to FASHION_MNIST_SYSTEM_DIR (Debian package
        `dataset-fashion-mnist`); MNIST and CIFAR-10 need it; for "folder" it is the image folder.
        IDX files may sit in dataroot itself or in dataroot/fashion-mnist, dataroot/FashionMNIST/raw
        (dataroot/mnist, dataroot/MNIST/raw for MNIST), gzip-compressed or not. CIFAR-10 binary files
        may sit in dataroot or dataroot/cifar-10-batches-bin.
    image_size: side S of the square output images.
        (Fashion-)MNIST 28x28: 28 keeps them as stored; 32 pads 2 pixels of background (-1) on each
        side; any other size pads to 32 and then resizes bilinearly, so the object fills the same
        fraction of the frame at every size.
        CIFAR-10 32x32: resized bicubically when S != 32.
        (Both in float, vectorised, with Pillow's filter coefficients: see resize_images.)
        folder: centre-cropped to a square, resized with Pillow bicubic per image.
    train: the training split (else the test split: t10k-* or test_batch.bin). Ignored for folder/fake.
    download_hint: include how to obtain missing files in the FileNotFoundError message.
    fake_size: number of procedural images for "fake".
    channels: None (1 for (fashion-)mnist, 3 for cifar10/folder/fake), 1 or 3. Grey -> 3 repeats
        the grey channel; RGB -> 1 uses Pillow's "L" conversion (ITU-R 601-2 luma).
    seed: the seed of the "fake" images (same seed -> same images).
    """
    key = _canonical_name(name)
    image_size = _check_positive_int(image_size, "image_size")
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise ValueError(f"channels must be None, 1 or 3, got {channels!r}")
    if key in ("fashion-mnist", "mnist"):
        images, labels = _load_idx_dataset(key, dataroot, train, download_hint)
        images = _idx_to_float(images, image_size)           # (N, 1, S, S)
        if channels == 3:
            images = np.repeat(images, 3, axis=1)
    elif key == "cifar10":
        images, labels = _load_cifar10(dataroot, train, download_hint)   # uint8 (N, 3, 32, 32)
        if channels == 1:
            images = _rgb_to_l(images)[:, None]
        images = _to_float(images)
        if image_size != 32:
            images = resize_images(images, image_size, "bicubic")
    elif key == "folder":
        images, labels, classes = _load_folder(dataroot, image_size, 3 if channels is None else channels)
        return Dataset(images, labels, key, classes)
    else:
        fake_size = _check_positive_int(fake_size, "fake_size")
        images, labels = make_fake_images(fake_size, image_size, 3 if channels is None else channels, seed)
    return Dataset(images, labels, key, CLASS_NAMES[key])


def _canonical_name(name):
    if not isinstance(name, str):
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {name!r}")
    key = _ALIASES.get(name.strip().lower().replace("_", "-"))
    if key is None:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {name!r}")
    return key


def _check_positive_int(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return int(value)


def _pil():
    import PIL.Image
    import PIL.ImageOps

    return PIL


# ------------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)
# ------------------------------------------------------------------------------------------------

_IDX_IMAGES_MAGIC = 0x00000803   # unsigned bytes, 3 dims
_IDX_LABELS_MAGIC = 0x00000801   # unsigned bytes, 1 dim


def _read_bytes(path):
    """The file's bytes, gunzipped when it starts with the gzip magic (whatever its name)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{path}: corrupt or truncated gzip file ({e})") from None
    return data


def read_idx(path, magic=None):
    """Read an IDX file of unsigned bytes (gzip or raw) -> uint8 array with the header's dims.

    magic: the expected 4-byte magic (0x00000803 images, 0x00000801 labels), checked when given.
    Any header or length problem raises ValueError naming the file.
    """
    path = os.fspath(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    found = int.from_bytes(data[:4], "big")
    ndim = data[3]
    if data[:2] != b"\x00\x00" or data[2] != 0x08 or ndim == 0 or (magic is not None and found != magic):
        want = f"0x{magic:08x}" if magic is not None else "0x000008NN (unsigned bytes, NN dims)"
        raise ValueError(f"{path}: bad IDX magic 0x{found:08x}, expected {want}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes, need {header})")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(dims)
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "too long"
        raise ValueError(f"{path}: {what}: header says dims {dims}, i.e. {expected} bytes, "
                         f"but the data is {len(data)} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


_IDX_FILES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IDX_SUBDIRS = {"fashion-mnist": ("", "fashion-mnist", "fashion_mnist", os.path.join("FashionMNIST", "raw")),
                "mnist": ("", "mnist", os.path.join("MNIST", "raw"))}


def _find_file(directory, base):
    """directory/base, base.gz or the dotted variant (train-images.idx3-ubyte); None if none exists."""
    dotted = base.replace("-idx", ".idx")
    for name in (base, base + ".gz", dotted, dotted + ".gz"):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


def _idx_missing_message(key, searched, download_hint):
    title = "Fashion-MNIST" if key == "fashion-mnist" else "MNIST"
    files = ", ".join(f"{b}[.gz]" for b in _IDX_FILES[True] + _IDX_FILES[False])
    msg = f"{title} IDX files not found (looked in: {', '.join(searched) or 'nowhere'})."
    if download_hint:
        if key == "fashion-mnist":
            msg += (" Install them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu, puts them in "
                    f"{FASHION_MNIST_SYSTEM_DIR}) or pass --dataroot to a folder with the four IDX files "
                    f"({files}).")
        else:
            msg += f" MNIST needs --dataroot pointing at a folder with the four IDX files ({files})."
    return msg


def _load_idx_dataset(key, dataroot, train, download_hint):
    """uint8 images (N, H, W) and int64 labels (N,) of one split."""
    if dataroot is None and key == "mnist":
        raise FileNotFoundError(_idx_missing_message(key, [], download_hint).replace(
            "(looked in: nowhere)", "(no dataroot given)"))
    roots = [FASHION_MNIST_SYSTEM_DIR] if dataroot is None else [os.fspath(dataroot)]
    images_name, labels_name = _IDX_FILES[bool(train)]
    searched = []
    for root in roots:
        for sub in _IDX_SUBDIRS[key]:
            directory = os.path.join(root, sub) if sub else root
            searched.append(directory)
            images_path, labels_path = _find_file(directory, images_name), _find_file(directory, labels_name)
            if images_path and labels_path:
                images = read_idx(images_path, _IDX_IMAGES_MAGIC)
                labels = read_idx(labels_path, _IDX_LABELS_MAGIC)
                if images.shape[0] != labels.shape[0]:
                    raise ValueError(f"{images_path} has {images.shape[0]} images but {labels_path} has "
                                     f"{labels.shape[0]} labels")
                if images.shape[1] != images.shape[2] or images.shape[1] == 0:
                    raise ValueError(f"{images_path}: expected square images, header says {images.shape[1:]}")
                if labels.size and labels.max() > 9:
                    raise ValueError(f"{labels_path}: labels must be 0..9, found {int(labels.max())}")
                return images, labels.astype(np.int64)
    raise FileNotFoundError(_idx_missing_message(key, searched, download_hint))


def _idx_to_float(images, size):
    """uint8 (N, H, H) -> float32 (N, 1, S, S): see load_dataset's image_size."""
    n, h, _ = images.shape
    if size == h:
        return _to_float(images)[:, None]
    if h == 28:
        out = np.full((n, 1, 32, 32), -1.0, np.float32)   # the background value
        _to_float(images, out=out[:, 0, 2:30, 2:30])
        if size == 32:
            return out
    else:
        out = _to_float(images)[:, None]
    return resize_images(out, size, "bilinear")


# ------------------------------------------------------------------------------------------------
# CIFAR-10 (binary version)
# ------------------------------------------------------------------------------------------------

_CIFAR_RECORD = 1 + 3 * 32 * 32


def read_cifar10_bin(path):
    """One CIFAR-10 binary batch -> uint8 images (N, 3, 32, 32), int64 labels (N,)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    if len(data) == 0 or len(data) % _CIFAR_RECORD:
        raise ValueError(f"{path}: wrong size for a CIFAR-10 binary batch: {len(data)} bytes is not a positive "
                         f"multiple of the {_CIFAR_RECORD}-byte record (1 label byte + 3072 pixel bytes)")
    records = np.frombuffer(data, np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise ValueError(f"{path}: label byte {int(labels.max())} out of range 0..9 (not a CIFAR-10 binary file?)")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def _load_cifar10(dataroot, train, download_hint):
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if train else ["test_batch.bin"]
    hint = (" Download the binary version (cifar-10-binary.tar.gz) from https://www.cs.toronto.edu/~kriz/cifar.html,"
            " extract it and pass --dataroot to the extracted folder." if download_hint else "")
    if dataroot is None:
        raise FileNotFoundError("CIFAR-10 needs --dataroot: a folder with data_batch_1.bin..data_batch_5.bin and "
                                "test_batch.bin (or its cifar-10-batches-bin subfolder)." + hint)
    root = os.fspath(dataroot)
    candidates = [root, os.path.join(root, "cifar-10-batches-bin")]
    for directory in candidates:
        paths = [os.path.join(directory, n) for n in names]
        present = [p for p in paths if os.path.isfile(p)]
        if not present:
            continue
        if len(present) != len(paths):
            missing = [os.path.basename(p) for p in paths if p not in present]
            raise FileNotFoundError(f"CIFAR-10 in {directory}: missing {', '.join(missing)}." + hint)
        parts = [read_cifar10_bin(p) for p in paths]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    raise FileNotFoundError(f"CIFAR-10 binary files ({', '.join(names)}) not found in "
                            f"{' or '.join(candidates)}." + hint)


# ------------------------------------------------------------------------------------------------
# Image folder
# ------------------------------------------------------------------------------------------------


def list_images(folder):
    """Every .png/.jpg/.jpeg/.bmp/.webp (any case) under folder, recursively, sorted by relative path."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in filenames:
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.join(dirpath, name))
    return sorted(found, key=lambda p: os.path.relpath(p, folder).split(os.sep))


def _load_image(path, size, channels):
    """One image file -> uint8 (S, S) or (S, S, 3): centre square crop, bicubic resize."""
    PIL = _pil()
    mode = "L" if channels == 1 else "RGB"
    try:
        with PIL.Image.open(path) as img:
            img.draft(mode, (size, size))            # JPEG: let the decoder downscale (stays >= size)
            img = PIL.ImageOps.exif_transpose(img)
            if img.mode in ("P", "PA", "LA", "RGBA") or "transparency" in img.info:
                img = img.convert("RGBA")            # alpha is dropped below
            img = img.convert(mode)
            w, h = img.size
            s = min(w, h)
            left, top = (w - s) // 2, (h - s) // 2
            if (w, h) != (s, s):
                img = img.crop((left, top, left + s, top + s))   # crop first: resize(box=) reads outside it
            if s != size:
                img = img.resize((size, size), PIL.Image.BICUBIC)
            return np.asarray(img, dtype=np.uint8)
    except Exception as e:  # Pillow raises many kinds (UnidentifiedImageError, OSError, SyntaxError, ...)
        raise ValueError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None


def _load_folder(dataroot, size, channels):
    if dataroot is None:
        raise FileNotFoundError("dataset 'folder' needs --dataroot: the folder of images")
    folder = os.fspath(dataroot)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder {folder} does not exist or is not a directory")
    paths = list_images(folder)
    if not paths:
        raise FileNotFoundError(f"image folder {folder} contains no images "
                                f"({'/'.join(IMAGE_EXTENSIONS)}, searched recursively)")
    shape = (len(paths), 1, size, size) if channels == 1 else (len(paths), size, size, 3)
    out = np.empty(shape, np.uint8)
    for i, path in enumerate(paths):
        out[i] = _load_image(path, size, channels).reshape(shape[1:])
    if channels == 3:
        out = out.transpose(0, 3, 1, 2)
    labels, classes = _folder_labels(folder, paths)
    return _to_float(out), labels, classes


def _folder_labels(folder, paths):
    """(labels, class names) when every image lies in a sub-folder of `folder` (one sub-folder per
    class, as torchvision's ImageFolder; classes sorted by name), else (None, None)."""
    parts = [os.path.relpath(p, folder).split(os.sep) for p in paths]
    if any(len(q) < 2 for q in parts):
        return None, None
    classes = sorted({q[0] for q in parts})
    index = {name: k for k, name in enumerate(classes)}
    return np.array([index[q[0]] for q in parts], dtype=np.int64), classes


# ------------------------------------------------------------------------------------------------
# Fake (procedural) images
# ------------------------------------------------------------------------------------------------


def make_fake_images(n, size=32, channels=3, seed=0):
    """n structured images (blobs, rings, stripes), float32 (n, C, S, S) in [-1, 1], and their kind
    (0 blob, 1 ring, 2 stripes) as int64 labels. Deterministic in (n, size, channels, seed)."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 3, n)
    col = lambda lo, hi: rng.uniform(lo, hi, (n, 1, 1)).astype(np.float32)  # noqa: E731
    cy, cx, radius, width = col(-0.5, 0.5), col(-0.5, 0.5), col(0.2, 0.6), col(0.06, 0.2)
    angle, freq, phase = col(0, np.pi), col(2.0, 6.0), col(0, 2 * np.pi)
    coords = np.linspace(-1, 1, size, dtype=np.float32)
    y, x = coords[None, :, None], coords[None, None, :]
    dist = np.sqrt((y - cy) ** 2 + (x - cx) ** 2)
    blob = np.exp(-(dist / radius) ** 2 * 2)
    ring = np.exp(-((dist - radius) / width) ** 2)
    along = x * np.cos(angle) + y * np.sin(angle)
    stripes = 0.5 + 0.5 * np.sin(along * freq * np.pi + phase)
    pattern = np.choose(kind[:, None, None], [blob, ring, stripes])        # (n, S, S) in [0, 1]
    colour = rng.uniform(0.35, 1.0, (n, channels, 1, 1)).astype(np.float32)
    background = rng.uniform(-1.0, -0.6, (n, channels, 1, 1)).astype(np.float32)
    images = background + (2 * colour - 1 - background) * pattern[:, None]  # blend background -> colour
    noise = rng.normal(0, 0.02, images.shape).astype(np.float32)
    images = np.clip(images + noise, -1, 1).astype(np.float32)
    return images, kind.astype(np.int64)


# ------------------------------------------------------------------------------------------------
# Resizing / colour helpers (uint8 in, uint8 out; Pillow clips)
# ------------------------------------------------------------------------------------------------


def _bilinear(x):
    x = np.abs(x)
    return np.where(x < 1, 1 - x, 0.0)


def _bicubic(x, a=-0.5):
    x = np.abs(x)
    return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


_FILTERS = {"bilinear": (_bilinear, 1.0), "bicubic": (_bicubic, 2.0)}


def resize_matrix(in_size, out_size, kind="bilinear"):
    """(out_size, in_size) float64 matrix M with resized = M @ signal, the same coefficients as
    Pillow's resample (ImagingResample's precompute_coeffs): antialiased when shrinking."""
    fn, support = _FILTERS[kind]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support *= filterscale
    m = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        w = fn((np.arange(lo, hi) - center + 0.5) / filterscale)
        if w.sum() != 0:
            w = w / w.sum()
        m[i, lo:hi] = w
    return m


def resize_images(images, size, kind="bilinear", chunk=256):
    """float32 (N, C, H, W) -> (N, C, S, S) by separable Pillow-equivalent filtering (bilinear or
    bicubic), vectorised over the batch; clipped to [-1, 1] (bicubic overshoots)."""
    n, c, h, w = images.shape
    my = resize_matrix(h, size, kind).astype(np.float32)
    mxt = resize_matrix(w, size, kind).T.astype(np.float32).copy()
    out = np.empty((n, c, size, size), np.float32)
    for i in range(0, n, chunk):
        np.matmul(my, images[i:i + chunk] @ mxt, out=out[i:i + chunk])
    return np.clip(out, -1, 1, out=out)


def _rgb_to_l(images):
    """uint8 (N, 3, H, W) -> (N, H, W), the same integer formula as Pillow's convert("L")."""
    r, g, b = (images[:, k].astype(np.uint32) for k in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


# ------------------------------------------------------------------------------------------------
# DataLoader
# ------------------------------------------------------------------------------------------------


class DataLoader:
    """Seeded shuffling batches of a Dataset (or an (N, C, H, W) array) as float32 numpy arrays.

    The order of epoch e depends only on (seed, e), so a run resumed at (epoch, batch) sees exactly
    the batches it would have seen: `for batch in loader.iter_epoch(epoch, start=batch): ...`.
    Plain `iter(loader)` uses `loader.epoch` and then advances it by one; `set_epoch(e)` sets it.
    With return_labels=True each item is (images, labels).
    """

    def __init__(self, dataset, batch_size=64, shuffle=True, drop_last=True, seed=0, return_labels=False):
        if isinstance(dataset, Dataset):
            images, labels = dataset.images, dataset.labels
        else:
            images, labels = np.asarray(dataset), None
            if images.ndim != 4:
                raise ValueError(f"dataset must be a Dataset or a 4-D (N, C, H, W) array, got shape {images.shape}")
            if images.dtype != np.float32:
                images = images.astype(np.float32)
        n = int(images.shape[0])
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if drop_last and batch_size > n:
            raise ValueError(f"batch_size {batch_size} is larger than the dataset ({n} samples) with "
                             "drop_last=True: an epoch would have no batches")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if return_labels and labels is None:
            raise ValueError("return_labels=True but the dataset has no labels")
        self.dataset = dataset
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), bool(shuffle), bool(drop_last)
        self.seed, self.return_labels = int(seed), bool(return_labels)
        self.epoch = 0

    def __len__(self):
        n = self.images.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch):
        self.epoch = _check_epoch(epoch)

    def order(self, epoch):
        """The sample indices of epoch `epoch`, in the order they are served."""
        n = self.images.shape[0]
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, _check_epoch(epoch)]).permutation(n)

    def iter_epoch(self, epoch, start=0):
        """Batches of epoch `epoch`, beginning at batch index `start` (for resuming mid-epoch)."""
        order = self.order(epoch)
        if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or not 0 <= start <= len(self):
            raise ValueError(f"start must be an int in [0, {len(self)}], got {start!r}")
        return self._batches(order, int(start))

    def _batches(self, order, start):
        for b in range(start, len(self)):
            idx = order[b * self.batch_size: (b + 1) * self.batch_size]
            batch = self.images[idx]
            yield (batch, self.labels[idx]) if self.return_labels else batch

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        return self.iter_epoch(epoch)


def _check_epoch(epoch):
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
    return int(epoch)


# ------------------------------------------------------------------------------------------------
# Image grids
# ------------------------------------------------------------------------------------------------


def _as_numpy(images):
    if isinstance(images, np.ndarray):
        return images
    if hasattr(images, "get"):          # CuPy
        return images.get()
    if hasattr(images, "numpy"):        # pygan.Tensor
        images = images.numpy()
        return images.get() if hasattr(images, "get") else images
    return np.asarray(images)


def make_grid(images, nrow=8, padding=2):
    """(N, C, H, W) floats in [-1, 1] -> uint8 grid: (Hg, Wg) for C == 1, (Hg, Wg, 3) for C == 3.

    `nrow` images per row, `padding` black pixels around and between them (torchvision's layout):
    Hg = rows * (H + padding) + padding, Wg = min(nrow, N) * (W + padding) + padding.
    Values are clipped to [-1, 1]; NaN shows as mid-grey.
    """
    x = _as_numpy(images)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0:
        raise ValueError(f"images must be (N, C, H, W) with N >= 1 and C in (1, 3), got shape {x.shape}")
    nrow = _check_positive_int(nrow, "nrow")
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise ValueError(f"padding must be a non-negative int, got {padding!r}")
    n, c, h, w = x.shape
    u8 = np.rint((np.clip(np.nan_to_num(x.astype(np.float32), nan=0.0), -1, 1) + 1) * 127.5).astype(np.uint8)
    cols = min(nrow, n)
    rows = -(-n // cols)
    grid = np.zeros((c, rows * (h + padding) + padding, cols * (w + padding) + padding), np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        top, left = padding + r * (h + padding), padding + q * (w + padding)
        grid[:, top:top + h, left:left + w] = u8[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0).copy()


def save_image_grid(images, path, nrow=8, padding=2, row_labels=None):
    """Write make_grid(images) to `path` atomically (checkpoint.atomic_write).

    Grayscale images give an 'L' PNG, 3-channel ones an 'RGB' PNG. `row_labels` (one string per
    row) are written in a white margin left of the rows (a conditional model's class names).
    Returns the path.
    """
    pil = _pil()
    Image = pil.Image
    grid = make_grid(images, nrow, padding)
    picture = Image.fromarray(grid)  # 2-D -> "L", (H, W, 3) -> "RGB"
    if row_labels is not None:
        picture = _label_rows(picture, list(row_labels), _as_numpy(images).shape[2], padding)
    from .checkpoint import atomic_write

    path = os.fspath(path)
    fmt = Image.registered_extensions().get(os.path.splitext(path)[1].lower(), "PNG")
    with atomic_write(path) as f:
        picture.save(f, format=fmt)
    return path


def _label_rows(picture, labels, h, padding):
    """The grid with a white margin on the left holding one label per row of images."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    draw = ImageDraw.Draw(picture)
    width = max((int(draw.textlength(str(t), font=font)) for t in labels), default=0) + 8
    out = Image.new(picture.mode, (picture.width + width, picture.height), 255 if picture.mode == "L" else (255, 255, 255))
    out.paste(picture, (width, 0))
    draw = ImageDraw.Draw(out)
    for r, text in enumerate(labels):
        top = padding + r * (h + padding)
        draw.text((4, top + h // 2), str(text), fill=0 if out.mode == "L" else (0, 0, 0), font=font, anchor="lm")
    return out
