"""Model zoo: DCGAN first."""

from .dcgan import Discriminator, Generator, weights_init

__all__ = ["Generator", "Discriminator", "weights_init"]
