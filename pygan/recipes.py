"""One-word training recipes: the published configuration of each GAN variant.

`pygan train --recipe NAME` starts from RECIPES[NAME]; any flag given explicitly overrides it; the
rest comes from DEFAULTS. The effective configuration is printed at start and stored in the
checkpoint.

    dcgan     Radford et al. 2015: BCE, non-saturating G loss, Adam 2e-4 betas (0.5, 0.999), BN in D
    lsgan     Mao et al. 2017: least squares (a=0, b=1, c=1), otherwise as dcgan
    wgan      Arjovsky et al. 2017: Wasserstein critic, RMSprop 5e-5, weights clipped to +-0.01,
              5 critic steps per G step
    wgan-gp   Gulrajani et al. 2017: Wasserstein critic + 10 * gradient penalty, Adam 1e-4 betas
              (0, 0.9), 5 critic steps, layer norm in the critic (no batch norm: the penalty is per
              sample)
    hinge-sn  Miyato et al. 2018 (SNGAN): hinge loss, spectral norm on every conv of D and no other
              normalisation in D, Adam 2e-4 betas (0.5, 0.999), one D step per G step (the paper's
              setting C, the cheapest of its stable ones)
"""

DEFAULTS = {
    "loss": "non-saturating",
    "optimizer": "adam",
    "lr": 2e-4,
    "lr_d": None,  # None: lr
    "lr_g": None,
    "beta1": 0.5,
    "beta2": 0.999,
    "d_steps": 1,
    "clip": 0.01,
    "gp_weight": 10.0,
    "r1": 0.0,
    "d_norm": "batch",
    "spectral_norm": False,
    "label_smooth": 1.0,
    "label_flip": 0.0,
    "instance_noise": 0.0,
}

RECIPES = {
    "dcgan": {},
    "lsgan": {"loss": "lsgan"},
    "wgan": {"loss": "wgan", "optimizer": "rmsprop", "lr": 5e-5, "clip": 0.01, "d_steps": 5},
    "wgan-gp": {"loss": "wgan-gp", "lr": 1e-4, "beta1": 0.0, "beta2": 0.9, "d_steps": 5, "d_norm": "layer",
                "gp_weight": 10.0},
    "hinge-sn": {"loss": "hinge", "spectral_norm": True, "d_norm": "none", "lr": 2e-4, "beta1": 0.5, "beta2": 0.999},
}

LOSSES = ("non-saturating", "minimax", "lsgan", "hinge", "wgan", "wgan-gp")
OPTIMIZERS = ("adam", "rmsprop")
D_NORMS = ("batch", "layer", "instance", "none")


def resolve(recipe, explicit):
    """The effective settings: DEFAULTS, then the recipe, then every explicitly given flag.

    `explicit` maps setting names to values, None meaning "not given". Returns (settings, source)
    where source[name] says where each value came from ("default", "recipe NAME" or "flag").
    """
    if recipe is not None and recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(RECIPES)}; got {recipe!r}")
    unknown = sorted(set(explicit) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown settings {unknown}; known: {', '.join(DEFAULTS)}")
    settings = dict(DEFAULTS)
    source = {name: "default" for name in DEFAULTS}
    for name, value in RECIPES.get(recipe or "dcgan", {}).items():
        settings[name] = value
        source[name] = f"recipe {recipe}"
    for name, value in explicit.items():
        if value is not None:
            settings[name] = value
            source[name] = "flag"
    validate(settings)
    for name, loss in (("clip", "wgan"), ("gp_weight", "wgan-gp")):
        if source[name] == "flag" and settings[name] != DEFAULTS[name] and settings["loss"] != loss:
            raise ValueError(f"--{name.replace('_', '-')} applies to the {loss} loss only; this run's loss is {settings['loss']}")
    return settings, source


def validate(s):
    """Clear errors for values out of range and for combinations that make no sense."""
    if s["loss"] not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {s['loss']!r}")
    if s["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {s['optimizer']!r}")
    if s["d_norm"] not in D_NORMS:
        raise ValueError(f"d_norm must be one of {', '.join(D_NORMS)}; got {s['d_norm']!r}")
    for name in ("lr", "lr_d", "lr_g"):
        if s[name] is not None and not s[name] > 0:
            raise ValueError(f"{name} must be positive, got {s[name]}")
    if not 0 <= s["beta1"] < 1:
        raise ValueError(f"beta1 must be in [0, 1), got {s['beta1']}")
    if not 0 <= s["beta2"] < 1:
        raise ValueError(f"beta2 must be in [0, 1), got {s['beta2']}")
    if not isinstance(s["d_steps"], int) or s["d_steps"] < 1:
        raise ValueError(f"d_steps must be a positive integer, got {s['d_steps']!r}")
    if not s["clip"] > 0:
        raise ValueError(f"clip must be positive (the critic's weights are clipped to +-clip), got {s['clip']}")
    if not s["gp_weight"] >= 0:
        raise ValueError(f"gp_weight must be >= 0, got {s['gp_weight']}")
    if not s["r1"] >= 0:
        raise ValueError(f"r1 must be >= 0 (the R1 penalty's gamma), got {s['r1']}")
    if not 0 < s["label_smooth"] <= 1:
        raise ValueError(f"label_smooth must be in (0, 1], got {s['label_smooth']}")
    if not 0 <= s["label_flip"] < 0.5:
        raise ValueError(f"label_flip must be in [0, 0.5) (a probability; 0.5 would erase the labels), got {s['label_flip']}")
    if not s["instance_noise"] >= 0:
        raise ValueError(f"instance_noise must be >= 0 (a standard deviation), got {s['instance_noise']}")
    # combinations
    penalised = s["loss"] == "wgan-gp" or s["r1"] > 0
    if penalised and s["d_norm"] == "batch":
        why = "wgan-gp's gradient penalty" if s["loss"] == "wgan-gp" else "the R1 penalty"
        raise ValueError(f"{why} is per sample, and batch norm mixes the samples of a batch: use --d-norm layer, "
                         "instance or none (Gulrajani et al. use layer norm)")
    label_loss = s["loss"] in ("non-saturating", "minimax", "lsgan")
    if not label_loss and (s["label_smooth"] != 1.0 or s["label_flip"] > 0):
        raise ValueError(f"--label-smooth and --label-flip change D's target labels; the {s['loss']} loss has none "
                         "(use them with non-saturating, minimax or lsgan)")
    if s["loss"] == "wgan" and s["spectral_norm"]:
        raise ValueError("wgan clips the critic's weights; spectral norm would fight the clipping: use one of them")
    return s
