"""GAN architectures for 32x32 images: the seed document's DCGAN made correct, and a class-conditional GAN with
conditional BatchNorm in the generator and a spectrally normalised projection discriminator (Miyato & Koyama,
2018), sized to train on a 2-core CPU.

Both build one ``GAN`` module holding ``generator`` and ``discriminator``: the card's weights carry both, so
``zoo finetune`` can continue adversarial training; sampling uses only the generator. The generator's output is
in [-1, 1] (tanh); the card's ``preprocess`` (mean 0.5, std 0.5) maps data pixels to the same range.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = ["GAN", "build_cgan", "build_dcgan"]


class ConditionalBatchNorm(nn.Module):
    """BatchNorm whose scale and shift come from the class (an embedding per class), or a plain affine BatchNorm
    when there are no classes."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.norm = nn.BatchNorm2d(channels, affine=num_classes == 0)
        if num_classes:
            self.scale = nn.Embedding(num_classes, channels)
            self.shift = nn.Embedding(num_classes, channels)
            nn.init.ones_(self.scale.weight)
            nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        x = self.norm(x)
        if not self.num_classes:
            return x
        return x * self.scale(labels)[:, :, None, None] + self.shift(labels)[:, :, None, None]


class Generator(nn.Module):
    """z (N x z_dim) [+ class] -> images N x 3 x 32 x 32 in [-1, 1]: a 4x4 map from a linear layer, three
    transposed-convolution doublings (DCGAN), a 3x3 convolution to RGB."""

    def __init__(self, z_dim: int = 128, width: int = 256, num_classes: int = 0) -> None:
        super().__init__()
        self.z_dim, self.num_classes = z_dim, num_classes
        chans = [width, width // 2, width // 4, width // 8]
        self.project = nn.Linear(z_dim, 4 * 4 * chans[0])
        self.norms = nn.ModuleList(ConditionalBatchNorm(c, num_classes) for c in chans)
        self.ups = nn.ModuleList(nn.ConvTranspose2d(chans[i], chans[i + 1], 4, 2, 1) for i in range(3))
        self.to_rgb = nn.Conv2d(chans[-1], 3, 3, padding=1)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self.project(z).view(z.shape[0], -1, 4, 4)
        for norm, up in zip(self.norms[:-1], self.ups, strict=True):
            x = up(torch.relu(norm(x, labels)))
        return torch.tanh(self.to_rgb(torch.relu(self.norms[-1](x, labels))))


class Discriminator(nn.Module):
    """images -> one score each. Strided 4x4 and plain 3x3 convolutions with leaky ReLU (SNGAN's "standard CNN",
    narrower), spectral norm on every layer when asked; with classes, a projection term <embed(y), features>."""

    def __init__(self, width: int = 64, num_classes: int = 0, spectral: bool = True) -> None:
        super().__init__()
        sn = spectral_norm if spectral else (lambda m: m)
        chans = [width, width * 2, width * 4]
        layers: list[nn.Module] = []
        previous = 3
        for c in chans:  # 32 -> 16 -> 8 -> 4
            layers += [
                sn(nn.Conv2d(previous, c, 4, 2, 1)),
                nn.LeakyReLU(0.1),
                sn(nn.Conv2d(c, c, 3, 1, 1)),
                nn.LeakyReLU(0.1),
            ]
            previous = c
        self.features = nn.Sequential(*layers)
        self.score = sn(nn.Linear(previous, 1))
        self.embed = sn(nn.Embedding(num_classes, previous)) if num_classes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x).sum(dim=(2, 3))  # sum pooling, as in SNGAN's projection discriminator
        out = self.score(h).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(labels) * h).sum(1)
        return out


class GAN(nn.Module):
    """A generator and its discriminator; calling it generates (the discriminator is for training)."""

    def __init__(self, generator: Generator, discriminator: Discriminator) -> None:
        super().__init__()
        self.generator, self.discriminator = generator, discriminator

    @property
    def z_dim(self) -> int:
        return self.generator.z_dim

    @property
    def num_classes(self) -> int:
        return self.generator.num_classes

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(z, labels)


def build_dcgan(z_dim: int = 100, g_width: int = 256, d_width: int = 64, spectral: bool = False) -> GAN:
    """The seed document's DCGAN, corrected: shapes that reach 32x32, BatchNorm, a logit discriminator
    (trained with the non-saturating loss, fake batches labelled fake)."""
    return GAN(Generator(z_dim, g_width), Discriminator(d_width, spectral=spectral))


def build_cgan(num_classes: int = 10, z_dim: int = 128, g_width: int = 256, d_width: int = 64) -> GAN:
    """Class-conditional: conditional BatchNorm in G, spectral norm and projection in D (hinge loss)."""
    return GAN(Generator(z_dim, g_width, num_classes), Discriminator(d_width, num_classes, spectral=True))
