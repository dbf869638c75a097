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
from ..autograd import Concat, Tensor

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
    """G(z) or, with num_classes > 0, the conditional G(z, y) (Mirza & Osindero 2014): a learned
    class embedding of embed_dim values is concatenated to z before the first layer."""

    def __init__(self, nz=100, ngf=64, nc=1, image_size=32, num_classes=0, embed_dim=50):
        super().__init__()
        _check_positive("Generator", nz=nz, ngf=ngf, nc=nc)
        _check_classes("Generator", num_classes, embed_dim)
        self.nz, self.ngf, self.nc, self.image_size = nz, ngf, nc, image_size
        self.num_classes, self.embed_dim = num_classes, embed_dim if num_classes else 0
        n = _stages(image_size)
        mult = 2 ** (n - 1)
        layers = [nn.ConvTranspose2d(nz + self.embed_dim, ngf * mult, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * mult),
                  nn.ReLU()]
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * mult // 2), nn.ReLU()]
            mult //= 2
        layers += [nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        if num_classes:
            self.embed = nn.Embedding(num_classes, self.embed_dim)
        weights_init(self)

    def forward(self, z, y=None):
        if not isinstance(z, Tensor):
            raise TypeError(f"Generator: z must be a pygan Tensor, got {type(z).__name__}")
        if z.ndim == 4 and z.shape[2:] == (1, 1):
            z = z.reshape(z.shape[0], z.shape[1])
        if z.ndim != 2 or z.shape[1] != self.nz:
            raise ValueError(f"Generator: z must have shape (N, {self.nz}) or (N, {self.nz}, 1, 1), got {z.shape}")
        if self.num_classes:
            y = _check_labels("Generator", y, z.shape[0], self.num_classes)
            z = Concat(1)(z, self.embed(y))
        elif y is not None:
            raise ValueError("Generator: this generator is unconditional (num_classes=0); call it without labels")
        return self.main(z.reshape(z.shape[0], z.shape[1], 1, 1))

    def extra_repr(self):
        extra = f", num_classes={self.num_classes}, embed_dim={self.embed_dim}" if self.num_classes else ""
        return f"nz={self.nz}, ngf={self.ngf}, nc={self.nc}, image_size={self.image_size}{extra}"


def _check_classes(cls, num_classes, embed_dim):
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
        raise ValueError(f"{cls}: num_classes must be a non-negative int (0: unconditional), got {num_classes!r}")
    if num_classes:
        _check_positive(cls, embed_dim=embed_dim)


def _check_labels(cls, y, n, num_classes):
    """Class labels as an int64 array of shape (n,), each in [0, num_classes)."""
    if y is None:
        raise ValueError(f"{cls}: this model is conditional ({num_classes} classes); pass class labels y of shape ({n},)")
    data = y.data if isinstance(y, Tensor) else y
    if isinstance(data, (list, tuple)):
        import numpy as np

        data = np.asarray(data)
    if not hasattr(data, "dtype") or data.dtype.kind not in "iu":
        raise TypeError(f"{cls}: labels y must be integers, got {getattr(data, 'dtype', type(data).__name__)}")
    if tuple(data.shape) != (n,):
        raise ValueError(f"{cls}: labels y must have shape ({n},), got {tuple(data.shape)}")
    return Tensor(data.astype("int64", copy=False))


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
    """D(x), or with num_classes > 0 the projection discriminator D(x, y) (Miyato & Koyama 2018):
    the last layer's logit plus <embed(y), sum over positions of the last features>."""

    def __init__(self, ndf=64, nc=1, image_size=32, norm="batch", spectral_norm=False, num_classes=0):
        super().__init__()
        _check_positive("Discriminator", ndf=ndf, nc=nc)
        _check_classes("Discriminator", num_classes, 1)
        if norm not in D_NORMS:
            raise ValueError(f"Discriminator: norm must be one of {', '.join(D_NORMS)}; got {norm!r}")
        self.ndf, self.nc, self.image_size = ndf, nc, image_size
        self.norm, self.spectral_norm, self.num_classes = norm, bool(spectral_norm), num_classes
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
        if num_classes:
            self.embed = nn.Embedding(num_classes, ndf * mult)
            nn.init.normal_(self.embed.weight, 0.0, 0.02)
        if spectral_norm:
            from ..nn.utils import spectral_norm as sn

            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Embedding)):
                    sn(m)

    def forward(self, x, y=None):
        if not isinstance(x, Tensor):
            raise TypeError(f"Discriminator: input must be a pygan Tensor, got {type(x).__name__}")
        expected = (self.nc, self.image_size, self.image_size)
        if x.ndim != 4 or x.shape[1:] != expected:
            raise ValueError(f"Discriminator: input must have shape (N, {', '.join(map(str, expected))}), got {x.shape}")
        if not self.num_classes:
            if y is not None:
                raise ValueError("Discriminator: this discriminator is unconditional (num_classes=0); call it without labels")
            return self.main(x).reshape(x.shape[0])
        y = _check_labels("Discriminator", y, x.shape[0], self.num_classes)
        layers = list(self.main.children())
        h = x
        for layer in layers[:-1]:
            h = layer(h)
        out = layers[-1](h).reshape(x.shape[0])
        return out + (self.embed(y) * h.sum(axis=(2, 3))).sum(axis=1)

    def extra_repr(self):
        extra = "" if self.norm == "batch" else f", norm={self.norm!r}"
        extra += ", spectral_norm=True" if self.spectral_norm else ""
        extra += f", num_classes={self.num_classes}" if self.num_classes else ""
        return f"ndf={self.ndf}, nc={self.nc}, image_size={self.image_size}{extra}"


def weights_init(module):
    """DCGAN's initialisation: conv weights N(0, 0.02); BatchNorm gamma N(1, 0.02), beta 0. (A
    conditional G's class embedding keeps nn.Embedding's N(0, 1), the scale of z; D's projection
    embedding is drawn N(0, 0.02) like D's convs.)"""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:  # other norms keep gamma 1, beta 0
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module
