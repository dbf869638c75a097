"""Neural-network modules and functional ops with PyTorch's names."""

from . import functional, init, utils
from .modules import (
    AvgPool2d,
    GlobalAvgPool2d,
    Linear,
    BatchNorm2d,
    Conv2d,
    ConvTranspose2d,
    Embedding,
    Flatten,
    GroupNorm,
    InstanceNorm2d,
    LayerNorm2d,
    LeakyReLU,
    Module,
    Parameter,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
)

__all__ = [
    "AvgPool2d", "GlobalAvgPool2d", "Linear", "BatchNorm2d", "Conv2d", "ConvTranspose2d", "Embedding", "Flatten",
    "GroupNorm", "InstanceNorm2d", "LayerNorm2d", "LeakyReLU", "Module", "Parameter", "ReLU",
    "Sequential", "Sigmoid", "Tanh", "functional", "init", "utils",
]
