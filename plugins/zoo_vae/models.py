"""A convolutional VAE for 32x32 RGB images with a discretised logistic likelihood (zoo_vae.likelihood).

The encoder maps an image in [-1, 1] to the mean and log-variance of a diagonal Gaussian over a spatial latent
(``latent_channels`` x 8 x 8); the decoder maps a latent to, per sub-pixel, the location and log-scale of a
logistic, plus (``coupling=True``, PixelCNN++'s trick) three coefficients per pixel that let green depend linearly
on red and blue on red and green. Residual blocks without normalisation (nothing differs between training and
evaluation, and nothing for BatchNorm folding to change); the two heads run in float32 under bf16 autocast,
because a bf16 location is off by up to a quarter of a grey level, which the likelihood of a sharp logistic
notices.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .likelihood import bits_per_dim, channel_means, discretized_logistic_nll, gaussian_kl

__all__ = ["ConvVAE", "LogisticParams", "VaeOutput", "build_vae_cifar", "mean_image", "negative_elbo"]

MIN_LOG_SCALE = -7.0  # PixelCNN++'s floor: a scale of 0.0009, an eighth of a bin
EVAL_NOISE_SEED = 0
# The log-scale head's output is offset so that a fresh decoder predicts logistics of scale e^-2.5 = 0.08 (ten grey
# levels) instead of e^0 (127 levels, nearly flat over [-1, 1], where the locations get almost no gradient). Measured
# on CIFAR-10 (batch 128, AdamW 1e-3, bf16, 120 steps): from a zero-initialised head at scale 1 the loss spiked to
# 16 bits/dim, and with that head's steps scaled down tenfold to calm it the decoder settled on the pixels' marginals
# and ignored z (7.05 bits/dim, flat, KL under 0.02); with the offset and a random head it fell smoothly to 6.18
# bits/dim, the KL rising as z got used.
LOG_SCALE_OFFSET = -2.5


class LogisticParams(NamedTuple):
    """The decoder's output: a discretised logistic per sub-pixel (N x 3 x H x W each; `coeffs` None without
    channel coupling)."""

    mean: torch.Tensor
    log_scale: torch.Tensor
    coeffs: torch.Tensor | None


class VaeOutput(NamedTuple):
    """What ``ConvVAE.forward`` returns: the likelihood's parameters, the posterior and the latent drawn from it."""

    mean: torch.Tensor
    log_scale: torch.Tensor
    coeffs: torch.Tensor | None
    mu: torch.Tensor
    logvar: torch.Tensor
    z: torch.Tensor

    @property
    def params(self) -> LogisticParams:
        return LogisticParams(self.mean, self.log_scale, self.coeffs)


class _ResBlock(nn.Module):
    """x + conv(silu(conv(silu(x)))); the second conv starts at zero, so every block starts as the identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        assert self.conv2.bias is not None  # built with bias=True
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class _Float32Conv(nn.Conv2d):
    """A convolution that runs in float32 whatever autocast says (the likelihood's and the posterior's heads)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


class ConvVAE(nn.Module):
    """Encoder 32 -> 16 -> 8 and decoder 8 -> 16 -> 32, `width` channels at 32x32 and twice that below.

    Args:
        latent_channels: channels of the 8x8 latent (its size: latent_channels x 8 x 8).
        width: channels at full resolution.
        coupling: PixelCNN++'s linear dependence of green on red and blue on both (three more outputs per pixel).
        image_size: side of the square input (a multiple of 4).
    """

    def __init__(self, latent_channels: int = 32, width: int = 64, coupling: bool = True, image_size: int = 32) -> None:
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4, got {image_size}")
        wide = 2 * width
        self.latent_channels, self.image_size, self.coupling = latent_channels, image_size, coupling
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            _ResBlock(width),
            nn.Conv2d(width, wide, 4, stride=2, padding=1),
            _ResBlock(wide),
            nn.Conv2d(wide, wide, 4, stride=2, padding=1),
            _ResBlock(wide),
            nn.SiLU(),
        )
        self.posterior = _Float32Conv(wide, 2 * latent_channels, 3, padding=1)
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, wide, 3, padding=1),
            _ResBlock(wide),
            nn.ConvTranspose2d(wide, wide, 4, stride=2, padding=1),
            _ResBlock(wide),
            nn.ConvTranspose2d(wide, width, 4, stride=2, padding=1),
            _ResBlock(width),
            nn.SiLU(),
        )
        self.likelihood = _Float32Conv(width, 9 if coupling else 6, 3, padding=1)
        # both heads keep PyTorch's random start, so gradients reach z and the encoder from the first step
        # (LOG_SCALE_OFFSET: what a zero start did)
        self._eval_noise: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """The shape of one image's latent z (C x H x W)."""
        side = self.image_size // 4
        return (self.latent_channels, side, side)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """An image batch in [-1, 1] -> (mu, logvar) of q(z | x), float32, N x latent_shape each."""
        mu, logvar = self.posterior(self.encoder(x)).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> LogisticParams:
        """Latents -> the discretised logistic of every sub-pixel (float32)."""
        out = self.likelihood(self.decoder(z))
        mean, log_scale = out[:, 0:3], (out[:, 3:6] + LOG_SCALE_OFFSET).clamp(min=MIN_LOG_SCALE)
        coeffs = torch.tanh(out[:, 6:9]) if self.coupling else None
        return LogisticParams(mean, log_scale, coeffs)

    def eval_noise(self, like: torch.Tensor) -> torch.Tensor:
        """The one standard-normal draw (seed 0) every image's latent uses in evaluation mode: the bits/dim of an
        image is then a single-sample ELBO estimate that is the same in every run and at every batch size."""
        key = (str(like.device), like.dtype)
        if key not in self._eval_noise:
            generator = torch.Generator().manual_seed(EVAL_NOISE_SEED)
            self._eval_noise[key] = torch.randn(self.latent_shape, generator=generator).to(like.device, like.dtype)
        return self._eval_noise[key]

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> VaeOutput:
        """Encode, draw z = mu + exp(logvar / 2) * eps, decode.

        Args:
            x: N x 3 x H x W in [-1, 1].
            eps: the standard-normal draw (N x latent_shape); default: fresh noise in training mode, the fixed
                :meth:`eval_noise` in evaluation mode.
        """
        mu, logvar = self.encode(x)
        if eps is None:
            eps = torch.randn_like(mu) if self.training else self.eval_noise(mu).expand_as(mu)
        z = mu + torch.exp(0.5 * logvar) * eps.to(mu.dtype)
        params = self.decode(z)
        return VaeOutput(params.mean, params.log_scale, params.coeffs, mu, logvar, z)

    def nelbo(self, x: torch.Tensor, out: VaeOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """(NLL, KL) in nats per image (:func:`negative_elbo`)."""
        return negative_elbo(x, out)

    def bits_per_dim(self, x: torch.Tensor, out: VaeOutput) -> torch.Tensor:
        """The negative ELBO of each image in bits per sub-pixel."""
        nll, kl = self.nelbo(x, out)
        return bits_per_dim(nll + kl, x[0].numel())

    def sample_images(self, params: LogisticParams) -> torch.Tensor:
        """The decoder's mean image in [0, 1] (:func:`mean_image`): what a sample or a reconstruction shows."""
        return mean_image(params)


def negative_elbo(
    x: torch.Tensor, out: VaeOutput | LogisticParams, mu: torch.Tensor | None = None, logvar: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(NLL, KL) in nats per image: -log p(x | z) under the discretised logistic (channel coupling included), and
    KL(q(z | x) || N(0, I)); their sum is the negative ELBO. `x` is the image as uint8 or on the bin centres of
    [-1, 1]; `out` a forward pass's output (or the likelihood's parameters with `mu` and `logvar`)."""
    if isinstance(out, VaeOutput):
        mu, logvar = out.mu, out.logvar
    if mu is None or logvar is None:
        raise ValueError("negative_elbo needs the posterior: a VaeOutput, or mu and logvar")
    mean = channel_means(out.mean, out.coeffs, x)
    return discretized_logistic_nll(x, mean, out.log_scale), gaussian_kl(mu, logvar)


def mean_image(params: LogisticParams | VaeOutput) -> torch.Tensor:
    """The decoder's mean image in [0, 1] (N x 3 x H x W float32): the logistics' locations, green and blue shifted
    by the coupling evaluated at the red and green locations (the mean of the joint, a logistic being symmetric),
    clamped to [-1, 1] and mapped to [0, 1]. Not a draw of per-pixel noise: what a VAE's sample shows."""
    mean, coeffs = params.mean.float(), params.coeffs
    if coeffs is not None:
        r = mean[:, 0:1]
        g = mean[:, 1:2] + coeffs[:, 0:1] * r
        b = mean[:, 2:3] + coeffs[:, 1:2] * r + coeffs[:, 2:3] * g
        mean = torch.cat([r, g, b], dim=1)
    return (mean.clamp(-1.0, 1.0) + 1.0) / 2.0


def build_vae_cifar(*, latent_channels: int = 32, width: int = 64, coupling: bool = True) -> ConvVAE:
    """The CIFAR-10 VAE: 32x32 RGB, an 8x8 latent of `latent_channels`, `width` channels at full resolution."""
    return ConvVAE(latent_channels=latent_channels, width=width, coupling=coupling, image_size=32)
