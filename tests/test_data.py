"""Datasets: float32 NCHW in [-1, 1] at the requested size; damaged files name themselves; the
DataLoader's order depends only on (seed, epoch); sample grids are written atomically.

Every test writes its own small IDX / CIFAR-binary / image files into tmp_path; only the last one
reads the Debian package `dataset-fashion-mnist`, and it is skipped where that is not installed.
"""

import gzip
import os

import numpy as np
import pytest
from PIL import Image

from pygan import data
from pygan.data import DataLoader, Dataset, load_dataset, make_grid, save_image_grid

ATOL = 1e-6  # u8 -> v / 127.5 - 1 is within 1 float32 ulp of the exact value; 0 and 255 are exact


def expected(u8):
    return u8.astype(np.float64) / 127.5 - 1


# -- helpers that write the file formats ----------------------------------------------------------


def idx_bytes(array, magic=None):
    array = np.ascontiguousarray(array, np.uint8)
    magic = (0x800 | array.ndim) if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def write_idx_set(folder, images, labels, split="train", gz=True, img_magic=None):
    folder.mkdir(parents=True, exist_ok=True)
    prefix = "train" if split == "train" else "t10k"
    paths = []
    files = ((f"{prefix}-images-idx3-ubyte", images, img_magic), (f"{prefix}-labels-idx1-ubyte", labels, None))
    for name, arr, magic in files:
        blob = idx_bytes(arr, magic)
        path = folder / (name + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(blob, compresslevel=1) if gz else blob)
        paths.append(path)
    return paths


@pytest.fixture
def idx_set(rng):
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    images[0, 0, :2] = (0, 255)
    labels = rng.integers(0, 10, 7, dtype=np.uint8)
    return images, labels


def cifar_bytes(images, labels):
    return b"".join(bytes([int(lab)]) + img.tobytes() for img, lab in zip(images, labels))


# -- IDX: Fashion-MNIST and MNIST ------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_idx_round_trip_maps_0_to_minus1_and_255_to_1(tmp_path, idx_set, gz):
    images, labels = idx_set
    write_idx_set(tmp_path, images, labels, gz=gz)
    ds = load_dataset("fashion-mnist", dataroot=tmp_path, image_size=28)
    assert ds.images.shape == (7, 1, 28, 28) and ds.images.dtype == np.float32
    assert ds.labels.dtype == np.int64 and np.array_equal(ds.labels, labels)
    assert ds.name == "fashion-mnist" and ds.num_channels == 1 and len(ds) == 7
    np.testing.assert_allclose(ds.images[:, 0], expected(images), rtol=0, atol=ATOL)
    assert ds.images[0, 0, 0, 0] == -1.0 and ds.images[0, 0, 0, 1] == 1.0


def test_read_idx_returns_header_dims(tmp_path, rng):
    arr = rng.integers(0, 256, (3, 4, 5), dtype=np.uint8)
    (tmp_path / "x.idx").write_bytes(idx_bytes(arr))
    assert np.array_equal(data.read_idx(tmp_path / "x.idx", 0x803), arr)


def test_28_is_padded_to_32_with_background(tmp_path, idx_set):
    images, labels = idx_set
    write_idx_set(tmp_path, images, labels)
    ds = load_dataset("fashion_mnist", dataroot=tmp_path)            # image_size=32 is the default
    assert ds.images.shape == (7, 1, 32, 32)
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert (ds.images[:, 0][:, border] == -1.0).all()
    np.testing.assert_allclose(ds.images[:, 0, 2:30, 2:30], expected(images), rtol=0, atol=ATOL)


def test_other_sizes_pad_then_resize_and_grey_to_rgb(tmp_path, idx_set):
    images, labels = idx_set
    write_idx_set(tmp_path, images, labels)
    ds = load_dataset("fashionmnist", dataroot=tmp_path, image_size=64, channels=3)
    assert ds.images.shape == (7, 3, 64, 64) and ds.images.dtype == np.float32
    assert ds.images.min() >= -1 and ds.images.max() <= 1
    assert (ds.images[:, :, :3] == -1).all()                          # the padding, scaled up
    assert np.array_equal(ds.images[:, 0], ds.images[:, 2])            # grey repeated
    # Same coefficients as Pillow's bilinear resize of the padded 32x32 float image.
    padded = np.full((32, 32), -1, np.float32)
    padded[2:30, 2:30] = expected(images[3])
    ref = np.asarray(Image.fromarray(padded).resize((64, 64), Image.BILINEAR))
    np.testing.assert_allclose(ds.images[3, 0], ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name,sub", [("fashion-mnist", "fashion-mnist"), ("fashion-mnist", "FashionMNIST/raw"),
                                      ("mnist", "MNIST/raw"), ("mnist", "")])
def test_idx_subfolders_and_test_split(tmp_path, idx_set, name, sub):
    images, labels = idx_set
    write_idx_set(tmp_path / sub, images[:5], labels[:5], split="train")
    write_idx_set(tmp_path / sub, images[5:], labels[5:], split="test", gz=False)
    assert len(load_dataset(name, dataroot=tmp_path)) == 5
    test = load_dataset(name, dataroot=tmp_path, train=False, image_size=28)
    assert np.array_equal(test.labels, labels[5:]) and test.name == name


def test_missing_idx_files_say_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as e:
        load_dataset("fashion-mnist", dataroot=tmp_path)
    assert "--dataroot" in str(e.value) and str(tmp_path) in str(e.value)
    with pytest.raises(FileNotFoundError, match="--dataroot"):
        load_dataset("mnist")                                          # MNIST has no default location


def test_bad_idx_magic_names_the_file(tmp_path, idx_set):
    images, labels = idx_set
    img_path, _ = write_idx_set(tmp_path, images, labels, img_magic=0x00000801)   # a labels magic
    with pytest.raises(ValueError, match=rf"{img_path.name}.*magic 0x00000801.*0x00000803"):
        load_dataset("fashion-mnist", dataroot=tmp_path)
    img_path.write_bytes(b"GIF89a" + bytes(100))
    with pytest.raises(ValueError, match=rf"{img_path.name}.*magic"):
        load_dataset("fashion-mnist", dataroot=tmp_path)


def test_truncated_gzip_names_the_file(tmp_path, idx_set):
    images, labels = idx_set
    img_path, _ = write_idx_set(tmp_path, images, labels)
    blob = img_path.read_bytes()
    img_path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match=rf"{img_path.name}.*gzip"):
        load_dataset("fashion-mnist", dataroot=tmp_path)


def test_truncated_raw_idx_names_the_file(tmp_path, idx_set):
    images, labels = idx_set
    img_path, _ = write_idx_set(tmp_path, images, labels, gz=False)
    img_path.write_bytes(img_path.read_bytes()[:-10])
    with pytest.raises(ValueError, match=rf"{img_path.name}.*truncated"):
        load_dataset("fashion-mnist", dataroot=tmp_path)
    img_path.write_bytes(idx_bytes(images) + b"\x00")
    with pytest.raises(ValueError, match=rf"{img_path.name}.*too long"):
        load_dataset("fashion-mnist", dataroot=tmp_path)


def test_image_label_count_mismatch_names_both_files(tmp_path, idx_set):
    images, labels = idx_set
    img_path, lab_path = write_idx_set(tmp_path, images, labels[:6])
    with pytest.raises(ValueError, match=rf"{img_path.name} has 7 images but .*{lab_path.name} has 6 labels"):
        load_dataset("mnist", dataroot=tmp_path)


# -- CIFAR-10 binary --------------------------------------------------------------------------------


def test_cifar_records_are_channel_planar(tmp_path, rng):
    images = rng.integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    images[0, 0, 0, 0], images[0, 2, 31, 31] = 0, 255
    labels = np.array([3, 0, 9])
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for i in range(1, 6):                                    # batch i holds record i % 3 .. as a marker
        order = [i % 3, (i + 1) % 3]
        (folder / f"data_batch_{i}.bin").write_bytes(cifar_bytes(images[order], labels[order]))
    (folder / "test_batch.bin").write_bytes(cifar_bytes(images, labels))
    test = load_dataset("cifar10", dataroot=tmp_path, train=False)
    assert test.images.shape == (3, 3, 32, 32) and test.name == "cifar10"
    np.testing.assert_allclose(test.images, expected(images), rtol=0, atol=ATOL)
    assert np.array_equal(test.labels, labels)
    assert test.images[0, 0, 0, 0] == -1 and test.images[0, 2, 31, 31] == 1
    train = load_dataset("cifar-10", dataroot=folder)       # the folder itself works too
    order = [j for i in range(1, 6) for j in (i % 3, (i + 1) % 3)]
    assert len(train) == 10 and np.array_equal(train.labels, labels[order])
    np.testing.assert_allclose(train.images, expected(images[order]), rtol=0, atol=ATOL)

    grey = load_dataset("cifar10", dataroot=tmp_path, train=False, channels=1)
    pil_l = np.stack([np.asarray(Image.fromarray(im.transpose(1, 2, 0)).convert("L")) for im in images])
    np.testing.assert_allclose(grey.images[:, 0], expected(pil_l), rtol=0, atol=ATOL)
    small = load_dataset("cifar10", dataroot=tmp_path, train=False, image_size=16)
    assert small.images.shape == (3, 3, 16, 16) and small.images.min() >= -1 and small.images.max() <= 1


def test_cifar_wrong_size_names_the_file(tmp_path, rng):
    path = tmp_path / "test_batch.bin"
    path.write_bytes(cifar_bytes(rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8), [1, 2])[:-1])
    with pytest.raises(ValueError, match=r"test_batch\.bin.*wrong size.*3073"):
        load_dataset("cifar10", dataroot=tmp_path, train=False)
    with pytest.raises(FileNotFoundError, match="data_batch_1.bin"):
        load_dataset("cifar10", dataroot=tmp_path)


# -- image folder ----------------------------------------------------------------------------------


def test_folder_centre_crops_and_resizes(tmp_path):
    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, 20:40] = (255, 0, 0)                        # only the centre third is red
    Image.fromarray(wide).save(tmp_path / "b_wide.PNG")
    tall = np.zeros((40, 20, 3), np.uint8)
    tall[10:30] = (0, 0, 255)
    sub = tmp_path / "sub"
    sub.mkdir()
    Image.fromarray(tall).save(sub / "a_tall.bmp")
    (tmp_path / "notes.txt").write_text("not an image")
    ds = load_dataset("folder", dataroot=tmp_path, image_size=8)
    assert ds.images.shape == (2, 3, 8, 8) and ds.labels is None and ds.name == "folder"
    # sorted by relative path: "b_wide.PNG" < "sub/a_tall.bmp"
    red, blue = ds.images
    assert (red[0] == 1).all() and (red[1:] == -1).all()
    assert (blue[2] == 1).all() and (blue[:2] == -1).all()


def test_folder_grey_and_rgb_conversions(tmp_path, rng):
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    grey = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    as_rgb = load_dataset("folder", dataroot=tmp_path, image_size=16)
    np.testing.assert_allclose(as_rgb.images[0], expected(rgb.transpose(2, 0, 1)), rtol=0, atol=ATOL)
    np.testing.assert_allclose(as_rgb.images[1], expected(np.stack([grey] * 3)), rtol=0, atol=ATOL)
    as_l = load_dataset("folder", dataroot=tmp_path, image_size=16, channels=1)
    assert as_l.images.shape == (2, 1, 16, 16)
    ref_l = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_allclose(as_l.images[0, 0], expected(ref_l), rtol=0, atol=ATOL)
    np.testing.assert_allclose(as_l.images[1, 0], expected(grey), rtol=0, atol=ATOL)


def test_folder_corrupt_image_names_it(tmp_path, rng):
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(ValueError, match=r"broken\.jpg"):
        load_dataset("folder", dataroot=tmp_path, image_size=8)


def test_folder_empty_or_missing_names_it(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}.*no images"):
        load_dataset("folder", dataroot=tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_dataset("folder", dataroot=tmp_path / "nowhere")


# -- fake and argument checks ----------------------------------------------------------------------


def test_fake_is_deterministic_in_range_and_shaped():
    a = load_dataset("fake", image_size=16, fake_size=40, seed=3)
    b = load_dataset("fake", image_size=16, fake_size=40, seed=3)
    c = load_dataset("fake", image_size=16, fake_size=40, seed=4)
    assert a.images.shape == (40, 3, 16, 16) and a.images.dtype == np.float32
    assert np.array_equal(a.images, b.images) and not np.array_equal(a.images, c.images)
    assert a.images.min() >= -1 and a.images.max() <= 1 and a.images.std() > 0.1
    assert load_dataset("fake", fake_size=5, channels=1).images.shape == (5, 1, 32, 32)
    assert len(load_dataset("fake")) == 1024


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match=r"dataset must be one of .*fashion-mnist.*cifar10.*'imagenet'"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="image_size"):
        load_dataset("fake", image_size=0)
    with pytest.raises(ValueError, match="channels"):
        load_dataset("fake", channels=2)
    with pytest.raises(ValueError, match="fake_size"):
        load_dataset("fake", fake_size=-1)


# -- DataLoader ------------------------------------------------------------------------------------


def indexed(n):
    """A dataset whose image i is filled with the value i, so a batch says which samples it holds."""
    images = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, 1, 2, 2)).copy()
    return Dataset(images, np.arange(n), "indexed")


def ids(batch):
    return batch[:, 0, 0, 0].astype(int)


def test_loader_covers_each_sample_once_without_drop_last():
    loader = DataLoader(indexed(10), batch_size=4, drop_last=False, seed=1)
    assert len(loader) == 3
    batches = list(loader.iter_epoch(0))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert all(b.dtype == np.float32 and b.shape[1:] == (1, 2, 2) for b in batches)
    assert sorted(np.concatenate([ids(b) for b in batches])) == list(range(10))


def test_loader_order_depends_only_on_seed_and_epoch():
    ds = indexed(50)
    seen = lambda loader, e: np.concatenate([ids(b) for b in loader.iter_epoch(e)])  # noqa: E731
    a, b = DataLoader(ds, 8, seed=7), DataLoader(ds, 8, seed=7)
    list(b.iter_epoch(5))                                       # history does not matter
    assert np.array_equal(seen(a, 3), seen(b, 3))
    assert not np.array_equal(seen(a, 3), seen(a, 4))
    assert not np.array_equal(seen(a, 3), seen(DataLoader(ds, 8, seed=8), 3))
    # set_epoch + iter, and iter() advancing the epoch, agree with iter_epoch
    a.set_epoch(3)
    assert np.array_equal(np.concatenate([ids(x) for x in a]), seen(b, 3))
    assert np.array_equal(np.concatenate([ids(x) for x in a]), seen(b, 4))
    # resuming mid-epoch yields the rest of the same epoch
    rest = list(a.iter_epoch(3, start=2))
    assert np.array_equal(np.concatenate([ids(x) for x in rest]), seen(b, 3)[16:48])
    unshuffled = DataLoader(ds, 10, shuffle=False)
    assert np.array_equal(seen(unshuffled, 0), np.arange(50)) and np.array_equal(seen(unshuffled, 9), np.arange(50))


def test_loader_drop_last_labels_and_arrays():
    loader = DataLoader(indexed(10), batch_size=4, return_labels=True)
    assert len(loader) == 2
    batches = list(loader)
    assert len(batches) == 2
    for images, labels in batches:
        assert images.shape == (4, 1, 2, 2) and np.array_equal(ids(images), labels)
    from_array = DataLoader(np.zeros((6, 3, 4, 4)), batch_size=3)
    assert [b.dtype for b in from_array] == [np.float32, np.float32]


@pytest.mark.parametrize("kwargs", [dict(batch_size=0), dict(batch_size=-2), dict(batch_size=11),
                                    dict(batch_size=2.5)])
def test_loader_bad_batch_size(kwargs):
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(indexed(10), **kwargs)


def test_loader_batch_larger_than_data_without_drop_last():
    assert [len(b) for b in DataLoader(indexed(10), batch_size=11, drop_last=False)] == [10]


# -- grids -----------------------------------------------------------------------------------------


def test_make_grid_layout_and_values():
    images = np.full((10, 1, 4, 5), 1.0, np.float32)
    images[3] = -1.0
    grid = make_grid(images, nrow=4, padding=2)
    assert grid.dtype == np.uint8 and grid.shape == (3 * 6 + 2, 4 * 7 + 2)
    assert grid[2:6, 2:7].min() == 255 and grid[0:2].max() == 0              # image 0; top padding
    assert grid[2:6, 2 + 3 * 7:7 + 3 * 7].max() == 0                         # image 3 is black
    assert make_grid(np.zeros((3, 3, 4, 4)), nrow=8, padding=1).shape == (6, 16, 3)
    with pytest.raises(ValueError, match="images"):
        make_grid(np.zeros((2, 2, 4, 4)))


class FakeDeviceArray:
    """Stands for a CuPy array: only .get() gives the host copy."""

    def __init__(self, array):
        self._array = array

    def get(self):
        return self._array


@pytest.mark.parametrize("channels,mode", [(1, "L"), (3, "RGB")])
def test_save_image_grid_is_atomic_and_readable(tmp_path, rng, channels, mode):
    images = rng.uniform(-1, 1, (5, channels, 6, 6)).astype(np.float32)
    path = tmp_path / "out" / "fake_samples_epoch_001.png"
    save_image_grid(FakeDeviceArray(images), path, nrow=3)
    save_image_grid(images, path, nrow=3)                                   # overwriting is fine
    with Image.open(path) as img:
        assert img.format == "PNG" and img.mode == mode and img.size == (3 * 8 + 2, 2 * 8 + 2)
        pixels = np.asarray(img)
    assert np.array_equal(pixels, make_grid(images, nrow=3))
    assert os.listdir(path.parent) == [path.name]                          # no temp files left


# -- the real thing, where installed --------------------------------------------------------------


@pytest.mark.skipif(not os.path.isfile(os.path.join(data.FASHION_MNIST_SYSTEM_DIR, "train-images-idx3-ubyte.gz")),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_from_the_debian_package():
    ds = load_dataset()
    assert ds.images.shape == (60000, 1, 32, 32) and ds.images.dtype == np.float32
    assert ds.images.min() == -1.0 and ds.images.max() == 1.0
    assert (ds.images[:, :, :2] == -1).all() and (ds.images[:, :, :, -2:] == -1).all()
    assert np.array_equal(np.unique(ds.labels), np.arange(10))
