"""GAN variants in the training loop: every recipe and switch trains a few steps on `fake` data,
checkpoints, and resumes bit-exactly; the options are recorded and checked on resume."""

import csv

import numpy as np
import pytest

from pygan import checkpoint as ckpt
from pygan.models import Discriminator
from pygan.recipes import RECIPES
from pygan.train import Config, Trainer, _discriminator_shapes


def quiet(*args, **kwargs):
    pass


def tiny_config(outf, **overrides):
    # 4 steps per epoch; d_steps up to 5 still gives a G step within two epochs
    base = dict(dataset="fake", fake_size=32, channels=1, batch_size=8, image_size=32, nz=8, ngf=4, ndf=4,
                niter=2, outf=str(outf), manual_seed=5, device="cpu", progress=False)
    base.update(overrides)
    return Config(**base)


def final_state(trainer):
    tensors, meta = trainer.checkpoint_tensors_and_meta()
    return {k: np.asarray(v) for k, v in tensors.items()}, meta


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_resume_is_bit_exact(tmp_path, **options):
    straight = Trainer(tiny_config(tmp_path / "a", **options), log=quiet).fit()
    Trainer(tiny_config(tmp_path / "b", max_steps=3, **options), log=quiet).fit()  # stops mid-epoch
    resumed = Trainer(tiny_config(tmp_path / "b", resume=True, max_steps=None, **options), log=quiet).fit()
    a, meta_a = final_state(straight)
    b, meta_b = final_state(resumed)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        assert np.isfinite(a[name]).all(), name
    assert meta_a["rng_state"] == meta_b["rng_state"] and meta_a["step"] == 8
    log_a = [(r["step"], r["loss_D"], r["loss_G"]) for r in rows(tmp_path / "a" / "log.csv")]
    log_b = [(r["step"], r["loss_D"], r["loss_G"]) for r in rows(tmp_path / "b" / "log.csv")]
    assert log_a == log_b
    return straight, a


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_trains_and_resumes_bit_exactly(tmp_path, recipe):
    trainer, state = assert_resume_is_bit_exact(tmp_path, recipe=recipe)
    c = trainer.config
    assert trainer.g_steps == 8 // c.d_steps
    if recipe == "wgan":
        d_weights = [v for k, v in state.items() if k.startswith("D.") and k.endswith("weight")]
        assert max(np.abs(w).max() for w in d_weights) <= 0.01 + 1e-7  # clipped after every critic step
        assert type(trainer.optD).__name__ == "RMSprop"
    if recipe == "hinge-sn":
        assert any(k.endswith("weight_u") for k in state)


@pytest.mark.parametrize("options", [
    dict(loss="minimax", label_flip=0.2, label_smooth=0.9),
    dict(loss="lsgan", instance_noise=0.1),
    dict(r1=1.0, d_norm="instance"),
    dict(lr_d=4e-4, lr_g=1e-4, beta2=0.99, d_norm="none"),
    dict(loss="hinge", spectral_norm=True, d_norm="layer", d_steps=2),
])
def test_switches_train_and_resume_bit_exactly(tmp_path, options):
    assert_resume_is_bit_exact(tmp_path, **options)


def test_two_time_scale_learning_rates_reach_the_optimisers(tmp_path):
    t = Trainer(tiny_config(tmp_path, lr_d=4e-4, lr_g=1e-4, beta2=0.9, niter=1, max_steps=1), log=quiet)
    assert t.optD.param_groups[0]["lr"] == 4e-4 and t.optG.param_groups[0]["lr"] == 1e-4
    assert t.optD.param_groups[0]["betas"] == (0.5, 0.9)
    t.close()


def test_instance_noise_anneals_to_zero(tmp_path):
    t = Trainer(tiny_config(tmp_path, instance_noise=0.2), log=quiet)
    assert t._noise_sigma() == pytest.approx(0.2)
    t.step = t.total_steps // 2
    assert t._noise_sigma() == pytest.approx(0.1)
    t.step = t.total_steps
    assert t._noise_sigma() == 0.0
    t.close()


def test_critic_columns_hold_raw_scores_for_non_bce_losses(tmp_path):
    Trainer(tiny_config(tmp_path, loss="wgan", niter=1), log=quiet).fit()
    d_x = [float(r["D_x"]) for r in rows(tmp_path / "log.csv")]
    assert all(np.isfinite(d_x))  # a critic score, not a probability: no [0, 1] bound asserted


def test_the_effective_configuration_is_stored_and_resume_checks_the_model_options(tmp_path):
    Trainer(tiny_config(tmp_path, recipe="hinge-sn", niter=1), log=quiet).fit()
    _, meta = ckpt.load(str(tmp_path / "checkpoint.safetensors"))
    assert meta["config"]["loss"] == "hinge" and meta["config"]["recipe"] == "hinge-sn"
    assert meta["model"]["spectral_norm"] is True and meta["model"]["d_norm"] == "none"
    with pytest.raises(ckpt.CheckpointError, match=r"--d-norm: checkpoint 'none', this run 'batch'; --spectral-norm: checkpoint True, this run False"):
        Trainer(tiny_config(tmp_path, resume=True, spectral_norm=False, d_norm="batch"), log=quiet)
    messages = []
    Trainer(tiny_config(tmp_path, recipe="hinge-sn", resume=True, lr=1e-4), log=messages.append).close()
    assert any("resume: lr 0.0002 -> 0.0001" in m for m in messages)


def test_resume_refuses_another_optimiser_kind(tmp_path):
    Trainer(tiny_config(tmp_path, niter=1), log=quiet).fit()
    with pytest.raises(ckpt.CheckpointError, match="--optimizer: checkpoint 'adam', this run 'rmsprop'"):
        Trainer(tiny_config(tmp_path, resume=True, optimizer="rmsprop"), log=quiet)


def test_nonsense_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="per sample"):
        Trainer(tiny_config(tmp_path / "x", recipe="wgan-gp", d_norm="batch"), log=quiet)
    with pytest.raises(ValueError, match="disagree"):
        Trainer(tiny_config(tmp_path / "y", loss="hinge", g_loss="minimax"), log=quiet)
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


@pytest.mark.parametrize("norm", ["batch", "layer", "instance", "none"])
@pytest.mark.parametrize("sn", [False, True])
@pytest.mark.parametrize("size", [32, 64])
def test_checked_discriminator_shapes_are_the_models(norm, sn, size):
    D = Discriminator(4, 3, size, norm=norm, spectral_norm=sn)
    assert {k: tuple(v.shape) for k, v in D.state_dict().items()} == _discriminator_shapes(4, 3, size, norm, sn)


def test_cli_recipe_prints_the_effective_configuration(tmp_path, capsys):
    from pygan.cli import main

    rc = main(["train", "--dataset", "fake", "--fake-size", "16", "--batchSize", "8", "--nz", "8", "--ngf", "4",
               "--ndf", "4", "--niter", "1", "--max-steps", "1", "--outf", str(tmp_path), "--device", "cpu",
               "--recipe", "wgan", "--lr", "1e-4"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "loss 'wgan' (recipe wgan)" in out and "lr 0.0001 (flag)" in out and "d_norm 'batch' (default)" in out
    rc = main(["train", "--dataset", "fake", "--outf", str(tmp_path / "n"), "--recipe", "wgan-gp", "--d-norm", "batch"])
    assert rc == 2
    assert "--d-norm layer" in capsys.readouterr().err
