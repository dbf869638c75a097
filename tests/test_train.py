"""The training loop at a tiny size: files appear, losses move, resume is bit-exact, failures are clear."""

import csv
import os

import numpy as np
import pytest

from pygan import checkpoint as ckpt
from pygan.train import Config, Trainer, TrainingDiverged, load_generator


def tiny_config(outf, **overrides):
    base = dict(dataset="fake", fake_size=48, channels=1, batch_size=16, image_size=32, nz=8, ngf=4, ndf=4,
                niter=2, outf=str(outf), manual_seed=7, device="cpu", progress=False)
    base.update(overrides)
    return Config(**base)


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def final_state(trainer):
    tensors, meta = trainer.checkpoint_tensors_and_meta()
    return {k: np.asarray(v) for k, v in tensors.items()}, meta


def quiet(*args, **kwargs):
    pass


def test_a_tiny_run_writes_everything_and_losses_move(tmp_path):
    t = Trainer(tiny_config(tmp_path), log=quiet).fit()
    for name in ("real_samples.png", "fake_samples_epoch_001.png", "fake_samples_epoch_002.png", "losses.png",
                 "log.csv", "checkpoint.safetensors"):
        assert (tmp_path / name).exists(), name
    rows = read_rows(tmp_path / "log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 7))  # 48 images / 16 = 3 steps x 2 epochs
    assert set(rows[0]) == {"step", "epoch", "loss_D", "loss_G", "D_x", "D_G_z1", "D_G_z2", "seconds"}
    loss_d = [float(r["loss_D"]) for r in rows]
    loss_g = [float(r["loss_G"]) for r in rows]
    assert len(set(loss_d)) == len(loss_d) and len(set(loss_g)) == len(loss_g)
    assert all(0 < float(r["D_x"]) < 1 for r in rows)
    assert t.step == 6 and t.epoch == 2
    assert not (tmp_path / "fake_samples_epoch_000.png").exists()  # epochs are numbered from 1
    assert [r["epoch"] for r in rows] == ["1"] * 3 + ["2"] * 3
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # no temporary files left


def test_resume_is_bit_identical_to_a_straight_run(tmp_path):
    straight = Trainer(tiny_config(tmp_path / "a"), log=quiet).fit()
    Trainer(tiny_config(tmp_path / "b", niter=1), log=quiet).fit()
    resumed = Trainer(tiny_config(tmp_path / "b", niter=2, resume=True), log=quiet).fit()
    a, meta_a = final_state(straight)
    b, meta_b = final_state(resumed)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert meta_a["rng_state"] == meta_b["rng_state"] and meta_a["step"] == meta_b["step"] == 6
    rows_a = [(r["step"], r["loss_D"], r["loss_G"]) for r in read_rows(tmp_path / "a" / "log.csv")]
    rows_b = [(r["step"], r["loss_D"], r["loss_G"]) for r in read_rows(tmp_path / "b" / "log.csv")]
    assert rows_a == rows_b


def test_resume_mid_epoch_is_bit_identical(tmp_path):
    straight = Trainer(tiny_config(tmp_path / "a", niter=1), log=quiet).fit()
    Trainer(tiny_config(tmp_path / "b", niter=1, max_steps=2), log=quiet).fit()
    resumed = Trainer(tiny_config(tmp_path / "b", niter=1, resume=True), log=quiet).fit()
    a, _ = final_state(straight)
    b, _ = final_state(resumed)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_d_steps_and_minimax_and_label_smoothing(tmp_path):
    t = Trainer(tiny_config(tmp_path, niter=1, d_steps=3, g_loss="minimax", label_smooth=0.9), log=quiet).fit()
    rows = read_rows(tmp_path / "log.csv")
    assert [r["loss_G"] != "" for r in rows] == [False, False, True]
    assert t.g_steps == 1
    assert float(rows[2]["loss_G"]) < 0  # minimax: log(1 - D(G(z))) is negative


def test_a_nan_loss_stops_training_and_keeps_the_last_checkpoint(tmp_path):
    Trainer(tiny_config(tmp_path, niter=1), log=quiet).fit()
    path = tmp_path / "checkpoint.safetensors"
    before = path.read_bytes()
    t = Trainer(tiny_config(tmp_path, niter=2, resume=True), log=quiet)
    t.D.main[0].weight.data[...] = np.nan
    with pytest.raises(TrainingDiverged, match=r"loss_D is nan .*at step 4 \(epoch 2\).*last finite checkpoint.*step 3"):
        t.fit()
    assert path.read_bytes() == before


def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path):
    Trainer(tiny_config(tmp_path, niter=1), log=quiet).fit()
    path = tmp_path / "checkpoint.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ckpt.CheckpointError, match="checkpoint.*corrupt"):
        Trainer(tiny_config(tmp_path, resume=True), log=quiet)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ckpt.CheckpointError, match=str(path)):
        load_generator(str(path))


def test_resume_with_other_model_options_is_refused(tmp_path):
    Trainer(tiny_config(tmp_path, niter=1), log=quiet).fit()
    with pytest.raises(ckpt.CheckpointError, match="--nz: checkpoint 8, this run 9"):
        Trainer(tiny_config(tmp_path, nz=9, resume=True), log=quiet)


def test_resume_without_a_checkpoint(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        Trainer(tiny_config(tmp_path, resume=True), log=quiet)


def test_checkpoints_hold_no_pickle(tmp_path):
    Trainer(tiny_config(tmp_path, niter=1), log=quiet).fit()
    tensors, meta = ckpt.load(str(tmp_path / "checkpoint.safetensors"))
    assert all(isinstance(v, np.ndarray) for v in tensors.values())
    assert meta["model"] == {"kind": "dcgan", "nz": 8, "ngf": 4, "ndf": 4, "nc": 1, "image_size": 32}
    G, _ = load_generator(str(tmp_path / "checkpoint.safetensors"))
    assert not G.training


@pytest.mark.parametrize(
    "overrides, word",
    [({"batch_size": 0}, "batch_size"), ({"image_size": 48}, "imageSize"), ({"lr": -1.0}, "lr"),
     ({"g_loss": "hinge"}, "g_loss"), ({"label_smooth": 1.5}, "label_smooth"), ({"device": "tpu"}, "device"),
     ({"batch_size": 1000}, "batchSize 1000 is larger")],
)
def test_bad_options_are_named(tmp_path, overrides, word):
    with pytest.raises(ValueError, match=word):
        Trainer(tiny_config(tmp_path, **overrides), log=quiet)
