"""DCGAN's generator and discriminator (Radford et al., 2015), for 32, 64 and 128 pixel images.

G maps z (N, nz) or (N, nz, 1, 1) to images in [-1, 1]: a 4x4 stride-1 transposed conv to 4x4,
then 4x4 stride-2 transposed convs doubling the size, BatchNorm + ReLU between, tanh at the end.
D mirrors it: 4x4 stride-2 convs with LeakyReLU(0.2) (no BatchNorm on the first), and a final
4x4 conv to one logit per image. No biases; weights N(0, 0.02), BatchNorm gamma N(1, 0.02), beta 0.

D's variants (the GAN-variants issue): `norm` replaces its BatchNorm layers ("batch", the default;
"layer" and "instance", which a WGAN-GP critic needs because its penalty is per sample and batch
norm mixes the samples; "none"), and `spectral_norm=True` wraps every conv in
nn.utils.spectral_norm (Miyato et al. 2018). A normalised layer without BatchNorm gets a bias.
"""

import math

from .. import nn
from ..autograd import Tensor

SUPPORTED_SIZES = (32, 64, 128)


def _stages(image_size):
    """Number of stride-2 layers between 4x4 and image_size."""
    if image_size not in SUPPORTED_SIZES:
        raise ValueError(f"image_size must be one of {SUPPORTED_SIZES}, got {image_size!r}")
    return int(math.log2(image_size)) - 2


def _check_positive(cls, **values):
    for name, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{cls}: {name} must be a positive int, got {v!r}")


class Generator(nn.Module):
    def __init__(self, nz=100, ngf=64, nc=1, image_size=32):
        super().__init__()
        _check_positive("Generator", nz=nz, ngf=ngf, nc=nc)
        self.nz, self.ngf, self.nc, self.image_size = nz, ngf, nc, image_size
        n = _stages(image_size)
        mult = 2 ** (n - 1)
        layers = [nn.ConvTranspose2d(nz, ngf * mult, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * mult), nn.ReLU()]
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * mult // 2), nn.ReLU()]
            mult //= 2
        layers += [nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        weights_init(self)

    def forward(self, z):
        if not isinstance(z, Tensor):
            raise TypeError(f"Generator: z must be a pygan Tensor, got {type(z).__name__}")
        if z.ndim == 2:
            z = z.reshape(z.shape[0], z.shape[1], 1, 1)
        if z.ndim != 4 or z.shape[1:] != (self.nz, 1, 1):
            raise ValueError(f"Generator: z must have shape (N, {self.nz}) or (N, {self.nz}, 1, 1), got {z.shape}")
        return self.main(z)

    def extra_repr(self):
        return f"nz={self.nz}, ngf={self.ngf}, nc={self.nc}, image_size={self.image_size}"


D_NORMS = ("batch", "layer", "instance", "none")


def _d_norm_layer(norm, channels):
    """D's normalisation after a strided conv, or None for "none"."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "layer":
        return nn.LayerNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return None


class Discriminator(nn.Module):
    def __init__(self, ndf=64, nc=1, image_size=32, norm="batch", spectral_norm=False):
        super().__init__()
        _check_positive("Discriminator", ndf=ndf, nc=nc)
        if norm not in D_NORMS:
            raise ValueError(f"Discriminator: norm must be one of {', '.join(D_NORMS)}; got {norm!r}")
        self.ndf, self.nc, self.image_size = ndf, nc, image_size
        self.norm, self.spectral_norm = norm, bool(spectral_norm)
        n = _stages(image_size)
        layers = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2)]
        mult = 1
        for _ in range(n - 1):
            norm_layer = _d_norm_layer(norm, ndf * mult * 2)
            layers.append(nn.Conv2d(ndf * mult, ndf * mult * 2, 4, 2, 1, bias=norm_layer is None))
            layers += ([norm_layer] if norm_layer is not None else []) + [nn.LeakyReLU(0.2)]
            mult *= 2
        layers += [nn.Conv2d(ndf * mult, 1, 4, 1, 0, bias=False)]
        self.main = nn.Sequential(*layers)
        weights_init(self)
        if spectral_norm:
            from ..nn.utils import spectral_norm as sn

            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    sn(m)

    def forward(self, x):
        if not isinstance(x, Tensor):
            raise TypeError(f"Discriminator: input must be a pygan Tensor, got {type(x).__name__}")
        expected = (self.nc, self.image_size, self.image_size)
        if x.ndim != 4 or x.shape[1:] != expected:
            raise ValueError(f"Discriminator: input must have shape (N, {', '.join(map(str, expected))}), got {x.shape}")
        return self.main(x).reshape(x.shape[0])

    def extra_repr(self):
        extra = "" if self.norm == "batch" else f", norm={self.norm!r}"
        extra += ", spectral_norm=True" if self.spectral_norm else ""
        return f"ndf={self.ndf}, nc={self.nc}, image_size={self.image_size}{extra}"


def weights_init(module):
    """DCGAN's initialisation: conv weights N(0, 0.02); BatchNorm gamma N(1, 0.02), beta 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:  # other norms keep gamma 1, beta 0
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module
