"""Conditional generation, the EMA generator and the truncation trick, end to end: training with
--conditional and --ema-decay (checkpointed, resumed bit-exactly), `pygan sample --class` by index
and by name, `pygan eval` of a conditional model, and the errors a user meets on bad input."""

import json
import os

import numpy as np
import pytest

from pygan import classifier, data, evaluate
from pygan.cli import main
from pygan.train import Config, Trainer, load_generator

from test_eval import needs_fashion
from test_variants import assert_resume_is_bit_exact, quiet, tiny_config

FAKE_CLASSES = ["blob", "ring", "stripes"]


def train_cli(out, *extra):
    args = ["train", "--dataset", "fake", "--nc", "1", "--fake-size", "32", "--batchSize", "8", "--ngf", "4",
            "--ndf", "4", "--nz", "8", "--niter", "1", "--manualSeed", "1", "--no-progress", "--device", "cpu",
            "--outf", str(out), *extra]
    assert main(args) == 0
    return out / "checkpoint.safetensors"


@pytest.fixture(scope="module")
def conditional_checkpoint(tmp_path_factory):
    return train_cli(tmp_path_factory.mktemp("cond") / "run", "--conditional", "--ema-decay", "0.9")


@pytest.fixture(scope="module")
def plain_checkpoint(tmp_path_factory):
    return train_cli(tmp_path_factory.mktemp("plain") / "run")


# -- training ----------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [
    dict(conditional=True, ema_decay=0.9),
    dict(conditional=True, ema_decay=0.99, ema_start=3, recipe="hinge-sn"),
    dict(conditional=True, recipe="wgan-gp"),
    dict(ema_decay=0.5),
])
def test_conditional_and_ema_runs_resume_bit_exactly(tmp_path, options):
    trainer, state = assert_resume_is_bit_exact(tmp_path, **options)
    if options.get("conditional"):
        assert trainer.classes == FAKE_CLASSES
        assert state["G.embed.weight"].shape == (3, trainer.G.embed_dim)
        assert state["D.embed.weight" if not trainer.config.spectral_norm else "D.embed.weight_orig"].shape[0] == 3
        np.testing.assert_array_equal(state["fixed_labels"], np.repeat(np.arange(3), 8))
    if options.get("ema_decay"):
        ema = {k[len("G_ema."):]: v for k, v in state.items() if k.startswith("G_ema.")}
        raw = {k[len("G."):]: v for k, v in state.items() if k.startswith("G.")}
        assert ema.keys() == raw.keys()
        # the average lags G: after a few steps its weights differ, but stay close
        assert any(not np.array_equal(ema[k], raw[k]) for k in ema)


def test_ema_is_the_average_of_gs_weights_step_by_step(tmp_path):
    """Replaying G's weights after every G step through the EMA formula gives the checkpoint's G_ema."""
    decay = 0.8
    t = Trainer(tiny_config(tmp_path, ema_decay=decay, ema_start=2, niter=1), log=quiet)
    shadow, updates = None, 0
    original_update = t.ema.update

    def update(step):
        nonlocal shadow, updates
        original_update(step)
        g = {k: np.asarray(v.data).copy() for k, v in t.G.state_dict().items()}
        updates += 1
        d = min(decay, (1 + step - 2) / (10 + step - 2))  # the warm-up
        shadow = g if step < 2 else {k: d * shadow[k] + (1 - d) * g[k] for k in g}

    t.ema.update = update
    t.fit()
    assert updates == t.g_steps == 4
    for k, v in t.G_ema.state_dict().items():
        if np.asarray(v.data).dtype.kind == "f":
            np.testing.assert_allclose(np.asarray(v.data), shadow[k], rtol=1e-6, atol=1e-7, err_msg=k)


def test_epoch_grids_show_one_row_per_class_and_an_ema_grid(conditional_checkpoint):
    from PIL import Image

    run = conditional_checkpoint.parent
    plain = Image.open(run / "fake_samples_epoch_001.png")
    ema = Image.open(run / "fake_samples_ema_epoch_001.png")
    assert plain.size == ema.size
    # 3 rows of 8 32x32 images (padding 2) and a label margin on the left
    assert plain.size[1] == 3 * 34 + 2 and plain.size[0] > 8 * 34 + 2


def test_conditional_needs_labels(tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    images, _ = data.make_fake_images(4, size=32, channels=3)
    for i, im in enumerate(images):
        data.save_image_grid(im[None], folder / f"{i}.png", nrow=1, padding=0)
    with pytest.raises(ValueError, match="--conditional needs a labelled data set"):
        Trainer(Config(dataset="folder", dataroot=str(folder), outf=str(tmp_path / "o"), conditional=True,
                       batch_size=2, device="cpu", progress=False), log=quiet)


def test_a_folder_of_class_subfolders_is_labelled(tmp_path):
    images, kind = data.make_fake_images(12, size=32, channels=3, seed=2)
    for i, (im, k) in enumerate(zip(images, kind)):
        os.makedirs(tmp_path / "pics" / FAKE_CLASSES[k], exist_ok=True)
        data.save_image_grid(im[None], tmp_path / "pics" / FAKE_CLASSES[k] / f"{i}.png", nrow=1, padding=0)
    ds = data.load_dataset("folder", str(tmp_path / "pics"), 32)
    assert ds.classes == sorted(set(FAKE_CLASSES[k] for k in kind)) and ds.num_classes == len(ds.classes)
    for i, path in enumerate(ds.paths if hasattr(ds, "paths") else []):
        assert ds.classes[ds.labels[i]] == os.path.basename(os.path.dirname(path))
    t = Trainer(Config(dataset="folder", dataroot=str(tmp_path / "pics"), outf=str(tmp_path / "o"), conditional=True,
                       batch_size=4, ngf=4, ndf=4, nz=8, niter=1, device="cpu", progress=False), log=quiet)
    t.fit()
    assert t.classes == ds.classes


# -- pygan sample --------------------------------------------------------------------------------


def test_sample_by_index_and_by_name_are_the_same_class(conditional_checkpoint, tmp_path, capsys):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert main(["sample", "--checkpoint", str(conditional_checkpoint), "--class", "1", "--n", "6",
                 "--out", str(a), "--device", "cpu"]) == 0
    assert "of class ring from the EMA generator" in capsys.readouterr().out
    assert main(["sample", "--checkpoint", str(conditional_checkpoint), "--class", "RING", "--n", "6",
                 "--out", str(b), "--device", "cpu"]) == 0
    with np.load(a) as za, np.load(b) as zb:
        np.testing.assert_array_equal(za["images"], zb["images"])
        np.testing.assert_array_equal(za["labels"], np.ones(6))
        assert za["images"].shape == (6, 1, 32, 32)


def test_the_class_changes_the_samples_and_no_ema_changes_the_generator(conditional_checkpoint, tmp_path):
    def draw(*extra):
        out = tmp_path / "s.npy"
        assert main(["sample", "--checkpoint", str(conditional_checkpoint), "--n", "4", "--out", str(out),
                     "--device", "cpu", *extra]) == 0
        return np.load(out)

    blob, ring = draw("--class", "blob"), draw("--class", "ring")
    assert not np.array_equal(blob, ring)
    assert not np.array_equal(blob, draw("--class", "blob", "--no-ema"))
    np.testing.assert_array_equal(blob, draw("--class", "0"))


def test_a_conditional_grid_has_one_labelled_row_per_class(conditional_checkpoint, tmp_path):
    from PIL import Image

    out = tmp_path / "grid.png"
    assert main(["sample", "--checkpoint", str(conditional_checkpoint), "--nrow", "5", "--out", str(out),
                 "--device", "cpu"]) == 0
    w, h = Image.open(out).size
    assert h == 3 * 34 + 2 and w > 5 * 34 + 2


def test_interpolation_stays_within_the_class(conditional_checkpoint, tmp_path):
    out = tmp_path / "i.npz"
    assert main(["sample", "--checkpoint", str(conditional_checkpoint), "--interpolate", "--n", "2", "--steps", "4",
                 "--class", "stripes", "--out", str(out), "--device", "cpu"]) == 0
    with np.load(out) as z:
        assert z["images"].shape == (8, 1, 32, 32)
        np.testing.assert_array_equal(z["labels"], np.full(8, 2))


def test_load_generator_picks_the_ema_generator_unless_asked_not_to(conditional_checkpoint, plain_checkpoint):
    G, _ = load_generator(str(conditional_checkpoint))
    assert G.is_ema and G.num_classes == 3 and G.classes == FAKE_CLASSES
    G, _ = load_generator(str(conditional_checkpoint), ema=False)
    assert not G.is_ema
    G, _ = load_generator(str(plain_checkpoint))
    assert not G.is_ema and G.num_classes == 0 and G.classes is None


@pytest.mark.parametrize("psi", [0.25, 1.0])
def test_truncated_samples_come_from_z_within_psi(conditional_checkpoint, psi, monkeypatch):
    seen = []
    real_run = evaluate.run_generator

    def spy(G, z, *args, **kwargs):
        seen.append(np.asarray(z))
        return real_run(G, z, *args, **kwargs)

    monkeypatch.setattr(evaluate, "run_generator", spy)
    G, _ = load_generator(str(conditional_checkpoint))
    images, labels = evaluate.generate(G, 30, seed=4, truncation=psi)
    assert images.shape == (30, 1, 32, 32) and np.bincount(labels).tolist() == [10, 10, 10]
    z = np.concatenate(seen)
    assert z.shape == (30, G.nz) and np.abs(z).max() <= psi


@pytest.mark.parametrize("args, message", [
    (["--class", "3"], "--class must be an index in [0, 3) or one of blob, ring, stripes; got '3'"),
    (["--class", "-1"], "--class must be an index in [0, 3)"),
    (["--class", "Sandal"], "one of blob, ring, stripes; got 'Sandal'"),
    (["--truncation", "0"], "--truncation must be positive"),
    (["--truncation", "-0.5"], "--truncation must be positive"),
])
def test_bad_sample_arguments_are_clear_errors(conditional_checkpoint, tmp_path, capsys, args, message):
    out = tmp_path / "x.png"
    assert main(["sample", "--checkpoint", str(conditional_checkpoint), "--out", str(out), "--device", "cpu",
                 *args]) != 0
    err = capsys.readouterr().err
    assert "pygan: error:" in err and message in err
    assert not out.exists()


def test_class_on_an_unconditional_checkpoint_is_a_clear_error(plain_checkpoint, tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(plain_checkpoint), "--class", "0", "--out", str(tmp_path / "x.png"),
                 "--device", "cpu"]) != 0
    assert "--class needs a conditional model" in capsys.readouterr().err


def test_eval_refuses_truncation_with_given_samples(tmp_path, capsys):
    samples = tmp_path / "s.npy"
    np.save(samples, np.zeros((40, 1, 28, 28), np.float32))
    assert main(["eval", "--samples", str(samples), "--truncation", "0.5", "--device", "cpu"]) != 0
    assert "--truncation and --no-ema choose how a --checkpoint's generator is sampled" in capsys.readouterr().err


# -- pygan eval of a conditional model ------------------------------------------------------------


@needs_fashion
def test_shipped_classifier_recognises_real_test_images_by_class():
    """The class-accuracy metric on real test images is the classifier's test accuracy: the sanity
    floor for a conditional generator's score (a perfect G would get about this)."""
    ex = classifier.load("fashion-mnist")
    reference = evaluate.RealReference(ex, floor=False)
    test = data.load_dataset("fashion-mnist", train=False)
    pick = np.random.default_rng(0).choice(len(test), 2000, replace=False)
    out = evaluate.conditional_metrics(test.images[pick], test.labels[pick], reference, test.classes)
    assert abs(out["class_accuracy"] - ex.meta["test_accuracy"]) < 0.03
    assert out["class_accuracy"] > 0.85
    # the same images with the labels shuffled are recognised at chance
    shuffled = np.random.default_rng(1).permutation(test.labels[pick])
    assert evaluate.conditional_metrics(test.images[pick], shuffled, reference)["class_accuracy"] < 0.2
    # real images of class k against the test images of class k: a small intra-FD
    assert out["intra_fd"] < 5.0 and len(out["intra_fd_per_class"]) == 10


@needs_fashion
def test_eval_of_a_conditional_checkpoint_adds_class_accuracy_and_intra_fd(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "fashion-mnist", "--conditional", "--ema-decay", "0.9", "--batchSize", "16",
                 "--ngf", "4", "--ndf", "4", "--nz", "8", "--max-steps", "2", "--manualSeed", "0", "--no-progress",
                 "--device", "cpu", "--outf", str(out)]) == 0
    capsys.readouterr()
    result_path = tmp_path / "m.json"
    assert main(["eval", "--checkpoint", str(out / "checkpoint.safetensors"), "--n", "100", "--no-floor",
                 "--truncation", "1.5", "--device", "cpu", "--out", str(result_path)]) == 0
    text = capsys.readouterr().out
    result = json.loads(result_path.read_text())
    assert "EMA generator" in result["source"] and "truncation 1.5" in result["source"]
    assert "10 per class" in result["source"]
    assert 0 <= result["class_accuracy"] <= 1 and np.isfinite(result["intra_fd"])
    assert "class accuracy" in text.lower()
