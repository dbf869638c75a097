"""Neural-network modules and functional ops with PyTorch's names."""

from . import functional, init
from .modules import (
    BatchNorm2d,
    Conv2d,
    ConvTranspose2d,
    Flatten,
    LeakyReLU,
    Module,
    Parameter,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
)

__all__ = [
    "BatchNorm2d", "Conv2d", "ConvTranspose2d", "Flatten", "LeakyReLU", "Module", "Parameter", "ReLU",
    "Sequential", "Sigmoid", "Tanh", "functional", "init",
]
