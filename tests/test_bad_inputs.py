"""Hostile and malformed inputs get a clear error naming the file or argument, before any work.

Checkpoint metadata of the wrong JSON type, samples files that are empty, truncated or whose header
claims more data than the file holds (no allocation of the claimed size), samples of the wrong
layout (rejected before the classifier or the real reference is built), and stride / padding /
kernel_size arguments that are not ints.
"""

import json
import os
import time

import numpy as np
import pytest

from pygan import checkpoint as ckpt
from pygan import evaluate, nn, ops, optim
from pygan.cli import main

# -- checkpoint metadata ---------------------------------------------------------------------------


def _write_meta(path, meta_json):
    """A safetensors checkpoint whose 'meta' header entry is the given JSON text."""
    from safetensors.numpy import save

    blob = save({"x": np.zeros(2, np.float32)}, metadata={"format": ckpt.FORMAT, "meta": meta_json})
    path.write_bytes(blob)
    return str(path)


@pytest.mark.parametrize("meta_json", ["null", "[1, 2]", '"text"', "3", "true"])
def test_checkpoint_meta_that_is_not_an_object_is_refused(tmp_path, meta_json):
    path = _write_meta(tmp_path / "c.safetensors", meta_json)
    with pytest.raises(ckpt.CheckpointError, match=r"c\.safetensors.*expected a JSON object"):
        ckpt.load(path)


@pytest.mark.parametrize("key", ["optG", "optD", "config", "rng_state"])
@pytest.mark.parametrize("value", [None, [1, 2], "x", 5])
def test_checkpoint_meta_entries_of_the_wrong_type_are_refused(tmp_path, key, value):
    path = _write_meta(tmp_path / "c.safetensors", json.dumps({key: value}))
    with pytest.raises(ckpt.CheckpointError, match=f"c\\.safetensors.*'{key}' must be a JSON object"):
        ckpt.load(path)


def test_checkpoint_header_that_is_not_an_object_is_refused(tmp_path):
    header = b"[1, 2]"
    path = tmp_path / "h.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(ckpt.CheckpointError, match=r"h\.safetensors"):
        ckpt.load(str(path))


def _adam():
    p = nn.Parameter(np.ones(3, np.float32))
    p.grad = None
    return optim.Adam([p], lr=1e-3)


def _opt_tensors():
    return {"opt.0.exp_avg": np.zeros(3, np.float32), "opt.0.exp_avg_sq": np.zeros(3, np.float32)}


GOOD_GROUPS = [{"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0, "params": [0]}]


@pytest.mark.parametrize(
    "meta",
    [
        None,
        [1],
        {"steps": [1], "param_groups": GOOD_GROUPS},
        {"steps": {"0": 1}, "param_groups": {"lr": 1}},
        {"steps": {"0": 1}, "param_groups": [5]},
        {"steps": {"0": 1}, "param_groups": [{"params": "0"}]},
        {"steps": {"x": 1}, "param_groups": GOOD_GROUPS},
        {"steps": {"0": "1"}, "param_groups": GOOD_GROUPS},
        {"steps": {"0": True}, "param_groups": GOOD_GROUPS},
        {"steps": {"0": -1}, "param_groups": GOOD_GROUPS},
        {"steps": {"0": 1}, "param_groups": [{**GOOD_GROUPS[0], "betas": 5}]},
        {"steps": {"0": 1}},
    ],
)
def test_load_optimizer_refuses_malformed_state(meta):
    with pytest.raises(ckpt.CheckpointError, match="ck.safetensors"):
        ckpt.load_optimizer("opt", _adam(), _opt_tensors(), meta, "ck.safetensors")


def test_load_optimizer_accepts_its_own_state():
    opt = _adam()
    tensors, meta = ckpt.optimizer_tensors("opt", opt)
    ckpt.load_optimizer("opt", _adam(), tensors, meta, "ck.safetensors")
    ckpt.load_optimizer("opt", _adam(), _opt_tensors(), {"steps": {"0": 1}, "param_groups": GOOD_GROUPS}, "c")


# -- samples files ---------------------------------------------------------------------------------


def _npy_with_header(path, shape, dtype="<f4", payload=b"\0" * 64):
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": dtype, "fortran_order": False, "shape": shape})
        f.write(payload)
    return str(path)


def _images(n=12, size=28, dtype=np.float32):
    return np.random.default_rng(0).uniform(-1, 1, (n, 1, size, size)).astype(dtype)


def test_empty_npy_file_is_refused(tmp_path):
    (tmp_path / "e.npy").write_bytes(b"")
    with pytest.raises(ValueError, match=r"e\.npy.*empty \(0 bytes\)"):
        evaluate.load_samples(str(tmp_path / "e.npy"))


def test_npy_claiming_a_trillion_images_is_refused_without_allocating(tmp_path):
    path = _npy_with_header(tmp_path / "big.npy", (10**12, 1, 28, 28))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"big\.npy.*claims shape .*truncated or corrupt"):
        evaluate.load_samples(path)
    assert time.perf_counter() - start < 2.0


def test_npz_member_claiming_too_much_is_refused(tmp_path):
    import zipfile

    member = tmp_path / "images.npy"
    _npy_with_header(member, (10**12, 28, 28), "|u1")
    with zipfile.ZipFile(tmp_path / "big.npz", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(member, "images.npy")
    with pytest.raises(ValueError, match=r"big\.npz.*claims shape"):
        evaluate.load_samples(str(tmp_path / "big.npz"))


def test_truncated_npy_is_refused(tmp_path):
    np.save(tmp_path / "t.npy", _images())
    data = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"t\.npy.*truncated"):
        evaluate.load_samples(str(tmp_path / "t.npy"))


@pytest.mark.parametrize("cut", [4, 20, 200, -100])
def test_truncated_safetensors_samples_are_refused(tmp_path, cut):
    from safetensors.numpy import save_file

    save_file({"images": _images()}, str(tmp_path / "s.safetensors"))
    data = (tmp_path / "s.safetensors").read_bytes()
    (tmp_path / "s.safetensors").write_bytes(data[:cut])
    with pytest.raises(ValueError, match=r"s\.safetensors"):
        evaluate.load_samples(str(tmp_path / "s.safetensors"))


def test_safetensors_claiming_more_than_it_holds_is_refused(tmp_path):
    header = json.dumps({"images": {"dtype": "F32", "shape": [10**12, 1, 28, 28], "data_offsets": [0, 3136 * 10**12]}})
    blob = header.encode()
    (tmp_path / "h.safetensors").write_bytes(len(blob).to_bytes(8, "little") + blob + b"\0" * 64)
    with pytest.raises(ValueError, match=r"h\.safetensors.*claims shape"):
        evaluate.load_samples(str(tmp_path / "h.safetensors"))


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((0, 1, 28, 28), np.float32), "at least 10 images"),
        (np.zeros((12, 1, 0, 0), np.float32), "empty"),
        (np.zeros((12,), np.float32), "expected images"),
        (np.zeros((12, 28), np.float32), "expected images"),
        (np.zeros((2, 12, 1, 28, 28), np.float32), "expected images"),
        (np.zeros((12, 5, 28, 28), np.float32), "expected images"),
        (np.zeros((12, 1, 28, 28), np.int32), "float .* or uint8"),
        (np.zeros((12, 1, 28, 28), np.bool_), "float .* or uint8"),
        (np.zeros((12, 1, 28, 28), np.complex64), "float .* or uint8"),
        (np.zeros((12, 1, 28, 32), np.float32), "square"),
        (np.zeros((12, 28, 32), np.uint8), "square"),
    ],
)
@pytest.mark.parametrize("ext", [".npy", ".npz", ".safetensors"])
def test_samples_of_the_wrong_layout_are_refused(tmp_path, images, message, ext):
    path = str(tmp_path / f"s{ext}")
    if ext == ".npy":
        np.save(path, images)
    elif ext == ".npz":
        np.savez(path, images=images)
    else:
        if images.dtype in (np.complex64,):
            pytest.skip("safetensors stores no complex")
        from safetensors.numpy import save_file

        save_file({"images": images}, path)
    with pytest.raises(ValueError, match=f"s\\{ext}.*{message}"):
        evaluate.load_samples(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_are_refused(tmp_path, bad):
    images = _images()
    images[3, 0, 5, 5] = bad
    np.save(tmp_path / "n.npy", images)
    with pytest.raises(ValueError, match=r"n\.npy.*NaN or Inf"):
        evaluate.load_samples(str(tmp_path / "n.npy"))


def test_good_samples_still_load(tmp_path):
    from safetensors.numpy import save_file

    images = _images(dtype=np.float64)
    np.save(tmp_path / "a.npy", images)
    np.savez(tmp_path / "a.npz", images=images)
    save_file({"images": images.astype(np.float32)}, str(tmp_path / "a.safetensors"))
    for name in ("a.npy", "a.npz", "a.safetensors"):
        out = evaluate.load_samples(str(tmp_path / name))
        assert out.shape == (12, 1, 28, 28) and out.dtype == np.float32
        np.testing.assert_allclose(out, images, atol=1e-6)


def test_eval_cli_rejects_non_square_samples_before_any_work(tmp_path, capsys, monkeypatch):
    """Non-square samples used to be refused only after the real reference was built (~20 s)."""
    np.save(tmp_path / "ns.npy", np.zeros((12, 1, 28, 32), np.float32))

    def must_not_run(*args, **kwargs):
        raise AssertionError("built before the samples were checked")

    from pygan import classifier

    monkeypatch.setattr(evaluate, "RealReference", must_not_run)
    monkeypatch.setattr(classifier, "load", must_not_run)
    assert main(["eval", "--samples", str(tmp_path / "ns.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pygan: error:") and "ns.npy" in err and "square" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("name, content", [("e.npy", b""), ("g.npy", b"\x93NUMPY garbage"), ("g.npz", b"PK\x03\x04xx"),
                                           ("g.safetensors", b"\xff" * 8 + b"{}")])
def test_eval_cli_reports_corrupt_samples_files(tmp_path, capsys, name, content):
    (tmp_path / name).write_bytes(content)
    assert main(["eval", "--samples", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pygan: error:") and name in err


# -- stride / padding / kernel_size arguments of the ops ------------------------------------------

X = np.zeros((1, 1, 6, 6), np.float32)
W = np.zeros((1, 1, 2, 2), np.float32)
BAD_PAIRS = ["22", "2", b"22", True, False, 2.0, 2.7, [2, 2.7], (2, 2.0), (2,), (2, 2, 2), (True, 1), None, {2: 2},
             np.float32(2)]


@pytest.mark.parametrize("bad", BAD_PAIRS, ids=repr)
@pytest.mark.parametrize("which", ["stride", "padding"])
def test_conv_geometry_must_be_ints(bad, which):
    kwargs = {"stride": 1, "padding": 0, which: bad}
    with pytest.raises(ValueError, match=f"{which} must be an int or a pair of ints"):
        ops.conv2d_forward(X, W, None, **kwargs)
    with pytest.raises(ValueError, match=f"{which} must be an int or a pair of ints"):
        ops.conv_transpose2d_forward(X, W, None, output_padding=0, **kwargs)


@pytest.mark.parametrize("bad", BAD_PAIRS, ids=repr)
def test_output_padding_and_pool_sizes_must_be_ints(bad):
    with pytest.raises(ValueError, match="output_padding must be an int or a pair of ints"):
        ops.conv_transpose2d_forward(X, W, None, 2, 0, bad)
    with pytest.raises(ValueError, match="kernel_size must be an int or a pair of ints"):
        ops.avg_pool2d_forward(X, bad, 1)
    with pytest.raises(ValueError, match="stride must be an int or a pair of ints"):
        ops.avg_pool2d_forward(X, 2, bad)


def test_int_geometry_still_accepted():
    assert ops.conv2d_forward(X, W, None, np.int64(2), [1, 0]).shape == (1, 1, 4, 3)
    assert ops.conv2d_forward(X, W, None, (2, 2), (0, 0)).shape == (1, 1, 3, 3)
    assert ops.avg_pool2d_forward(X, np.array([2, 3]), 1).shape == (1, 1, 5, 4)


@pytest.mark.parametrize("bad", ["1234", (1, 1, 6), (1, 1, 6, -6), (1, 1, 6, 6.0), None, (1, 1, 6, True)], ids=repr)
def test_shape_arguments_must_be_ints(bad):
    dy = np.zeros((1, 1, 5, 5), np.float32)
    with pytest.raises(ValueError, match="x_shape"):
        ops.conv2d_backward_data(dy, W, bad, 1, 0)
    with pytest.raises(ValueError, match="w_shape"):
        ops.conv2d_backward_weight(X, dy, bad, 1, 0)
    with pytest.raises(ValueError, match="x_shape"):
        ops.avg_pool2d_backward(dy, bad, 2, 1)


@pytest.mark.parametrize("bad", ["22", [2, 2.7], True], ids=repr)
def test_module_stride_is_checked_when_the_module_is_built(bad):
    with pytest.raises(ValueError, match="stride must be an int or a pair of ints"):
        nn.Conv2d(1, 1, 2, stride=bad)
    with pytest.raises(ValueError, match="stride must be an int or a pair of ints"):
        nn.ConvTranspose2d(1, 1, 2, stride=bad)
