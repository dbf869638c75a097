"""--recipe: the published settings of each variant, explicit flags override, nonsense is an error."""

import pytest

from pygan.recipes import DEFAULTS, RECIPES, resolve


def test_no_recipe_is_dcgan_and_dcgan_is_the_defaults():
    assert resolve(None, {})[0] == DEFAULTS
    assert resolve("dcgan", {})[0] == DEFAULTS


def test_published_settings():
    wgan = resolve("wgan", {})[0]
    assert (wgan["loss"], wgan["optimizer"], wgan["lr"], wgan["clip"], wgan["d_steps"]) == ("wgan", "rmsprop", 5e-5, 0.01, 5)
    gp = resolve("wgan-gp", {})[0]
    assert (gp["loss"], gp["optimizer"], gp["lr"], gp["beta1"], gp["beta2"], gp["d_steps"], gp["d_norm"], gp["gp_weight"]) == \
        ("wgan-gp", "adam", 1e-4, 0.0, 0.9, 5, "layer", 10.0)
    sn = resolve("hinge-sn", {})[0]
    assert (sn["loss"], sn["spectral_norm"], sn["d_norm"]) == ("hinge", True, "none")
    assert resolve("lsgan", {})[0]["loss"] == "lsgan"


def test_explicit_flags_override_the_recipe_and_sources_say_so():
    settings, source = resolve("wgan-gp", {"lr": 3e-4, "d_steps": None, "gp_weight": 5.0})
    assert settings["lr"] == 3e-4 and source["lr"] == "flag"
    assert settings["d_steps"] == 5 and source["d_steps"] == "recipe wgan-gp"
    assert settings["gp_weight"] == 5.0
    assert source["r1"] == "default"


@pytest.mark.parametrize("recipe, flags, message", [
    ("wgan-gp", {"d_norm": "batch"}, "gradient penalty is per sample.*--d-norm layer"),
    (None, {"r1": 10.0}, "R1 penalty is per sample"),
    ("wgan", {"clip": 0.0}, "clip must be positive"),
    ("wgan", {"clip": -1.0}, "clip must be positive"),
    (None, {"loss": "wasserstein"}, "loss must be one of"),
    ("bigan", {}, "recipe must be one of dcgan, lsgan, wgan, wgan-gp, hinge-sn"),
    ("hinge-sn", {"label_smooth": 0.9}, "hinge loss has none"),
    (None, {"label_flip": 0.5}, r"label_flip must be in \[0, 0.5\)"),
    (None, {"clip": 0.02}, "--clip applies to the wgan loss only"),
    ("wgan", {"gp_weight": 1.0}, "--gp-weight applies to the wgan-gp loss only"),
    ("wgan", {"spectral_norm": True}, "spectral norm would fight the clipping"),
    (None, {"optimizer": "sgd"}, "optimizer must be one of adam, rmsprop"),
    (None, {"d_norm": "group"}, "d_norm must be one of"),
    (None, {"beta2": 1.0}, r"beta2 must be in \[0, 1\)"),
])
def test_nonsense_is_a_clear_error(recipe, flags, message):
    with pytest.raises(ValueError, match=message):
        resolve(recipe, flags)


def test_r1_with_a_layer_norm_critic_is_fine():
    assert resolve(None, {"r1": 10.0, "d_norm": "layer"})[0]["r1"] == 10.0


def test_every_recipe_resolves():
    for name in RECIPES:
        resolve(name, {})
