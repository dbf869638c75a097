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
    assert meta["model"] == {"kind": "dcgan", "nz": 8, "ngf": 4, "ndf": 4, "nc": 1, "image_size": 32, "d_norm": "batch",
                             "spectral_norm": False, "num_classes": 0, "embed_dim": 0, "classes": None}
    G, _ = load_generator(str(tmp_path / "checkpoint.safetensors"))
    assert not G.training


@pytest.mark.parametrize(
    "overrides, word",
    [({"batch_size": 0}, "batch_size"), ({"image_size": 48}, "imageSize"), ({"lr": -1.0}, "lr"),
     ({"g_loss": "bce"}, "loss must be one of"), ({"label_smooth": 1.5}, "label_smooth"), ({"device": "tpu"}, "device"),
     ({"batch_size": 1000}, "batchSize 1000 is larger")],
)
def test_bad_options_are_named(tmp_path, overrides, word):
    with pytest.raises(ValueError, match=word):
        Trainer(tiny_config(tmp_path, **overrides), log=quiet)


def test_resume_applies_changed_optimiser_options_and_records_them(tmp_path):
    Trainer(tiny_config(tmp_path, niter=1), log=quiet).fit()
    said = []
    t = Trainer(tiny_config(tmp_path, niter=2, resume=True, lr=0.5, beta1=0.0, d_steps=2, max_steps=5), log=said.append)
    assert "resume: lr 0.0002 -> 0.5" in said and "resume: beta1 0.5 -> 0.0" in said
    assert "resume: d_steps 1 -> 2" in said and "resume: niter 1 -> 2" in said and "resume: max_steps None -> 5" in said
    for opt in (t.optG, t.optD):
        assert all(g["lr"] == 0.5 and g["betas"] == (0.0, 0.999) for g in opt.param_groups)
    t.fit()
    _, meta = ckpt.load(str(tmp_path / "checkpoint.safetensors"))
    assert meta["config"]["lr"] == 0.5 and meta["config"]["d_steps"] == 2 and meta["step"] == 5
    assert meta["optG"]["param_groups"][0]["lr"] == 0.5 and meta["optD"]["param_groups"][0]["betas"] == [0.0, 0.999]
    assert t.g_steps == 3 + 1  # 3 in the first epoch, then one per two D steps (steps 4 and 5: G at step 4)


def test_resume_names_every_option_that_fixes_the_model_or_the_data(tmp_path):
    Trainer(tiny_config(tmp_path, niter=1), log=quiet).fit()
    with pytest.raises(ckpt.CheckpointError) as exc:
        Trainer(tiny_config(tmp_path, resume=True, batch_size=8, ngf=5, manual_seed=8, fake_size=64), log=quiet)
    message = str(exc.value)
    for part in ("--batchSize: checkpoint 16, this run 8", "--ngf: checkpoint 4, this run 5",
                 "--manualSeed: checkpoint 7, this run 8", "--fake-size: checkpoint 48, this run 64"):
        assert part in message
    assert "--nz" not in message and "--ndf" not in message
    t = Trainer(tiny_config(tmp_path, resume=True, manual_seed=None), log=quiet)  # an unset seed is the checkpoint's
    assert t.config.manual_seed == 7
    t.close()


def test_the_progress_bar_only_on_a_terminal(monkeypatch):
    import io

    from pygan import train

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert isinstance(train._progress(10, 0, "epoch 1/1", True), train._NullBar)
    monkeypatch.setattr("sys.stderr", Terminal())
    bar = train._progress(10, 0, "epoch 1/1", True)
    assert not isinstance(bar, train._NullBar)
    bar.close()
    assert isinstance(train._progress(10, 0, "epoch 1/1", False), train._NullBar)


def test_the_loss_plot_smooths_and_survives_odd_rows(tmp_path):
    from pygan import plot

    assert plot.ema([2.0] * 5, 0.9) == pytest.approx([2.0] * 5)  # bias-corrected: no pull towards 0
    assert plot.ema_weight(5) == 0.0 and 0.5 < plot.ema_weight(1000) <= 0.99
    log = tmp_path / "log.csv"
    rows = ["step,epoch,loss_D,loss_G,D_x,D_G_z1,D_G_z2,seconds"]
    rows += [f"{i},1,{1 + 0.1 * (i % 3)},{'' if i % 2 else 0.7},0.6,0.4,{'' if i % 2 else 0.45},0.01" for i in range(1, 40)]
    rows += ["40,1,nan,inf,0.5,0.5,0.5,0.01", "garbage"]
    log.write_text("\n".join(rows) + "\n")
    out = plot.plot_log(str(log), str(tmp_path / "losses.png"))
    assert os.path.getsize(out) > 10_000


def test_resume_at_max_steps_takes_no_step(tmp_path):
    Trainer(tiny_config(tmp_path, niter=1, max_steps=2), log=quiet).fit()
    said = []
    t = Trainer(tiny_config(tmp_path, niter=1, max_steps=2, resume=True), log=said.append).fit()
    assert t.step == 2 and len(read_rows(tmp_path / "log.csv")) == 2
    assert any("nothing to do" in line for line in said)


@pytest.mark.parametrize("loss", ["dcgan", "hinge-sn", "wgan-gp"])
def test_g_step_freezes_d_without_changing_the_run(tmp_path, monkeypatch, loss):
    """G's step computes no D weight gradients (D's parameters are frozen inside it), and that changes
    nothing: the run ends bit-identical to one where D stays trainable in G's step, and D's
    parameters require grad again afterwards."""
    import contextlib

    from pygan import train

    overrides = dict(recipe=loss, niter=2)  # 6 steps: wgan-gp takes its G step at step 5
    frozen = Trainer(tiny_config(tmp_path / "frozen", **overrides), log=quiet).fit()
    assert all(p.requires_grad for p in frozen.D.parameters())
    monkeypatch.setattr(train, "_frozen", lambda params: contextlib.nullcontext())
    trainable = Trainer(tiny_config(tmp_path / "trainable", **overrides), log=quiet).fit()
    a, _ = final_state(frozen)
    b, _ = final_state(trainable)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
