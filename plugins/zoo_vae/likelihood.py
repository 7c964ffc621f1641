"""The discretised logistic likelihood of 8-bit images (Salimans et al. 2017, PixelCNN++; Kingma et al. 2016).

A sub-pixel value k in 0..255 is the point x = 2k/255 - 1 of [-1, 1]; its probability under a logistic of location
`mean` and scale s = exp(`log_scale`) is the logistic's mass on the bin [x - 1/255, x + 1/255], with the outer bins
reaching to -inf (k = 0) and +inf (k = 255), so the 256 probabilities sum to exactly 1. Everything here is computed
in log space without subtracting two CDFs (no cut-off, no midpoint-density fallback), so the sum stays 1 to float
precision even where the bins are far in a tail.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "BIN",
    "bits_per_dim",
    "channel_means",
    "discretized_logistic_log_prob",
    "discretized_logistic_nll",
    "gaussian_kl",
    "to_unit_range",
]

#: Half the width of one of the 256 bins on [-1, 1].
BIN = 1.0 / 255.0


def to_unit_range(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 sub-pixels -> the bin centres 2k/255 - 1 in [-1, 1], as `dtype`; floats are only cast."""
    if x.dtype == torch.uint8:
        return x.to(dtype) / 127.5 - 1.0
    return x.to(dtype)


def discretized_logistic_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) per sub-pixel (same shape as `x`), in nats, in float32 at least (float64 stays float64).

    Args:
        x: sub-pixels as uint8 (0..255) or on the bin centres of [-1, 1] (rounded to the nearest one).
        mean: the logistic's location, broadcastable to `x`.
        log_scale: the logistic's log scale, broadcastable to `x`.
    """
    dtype = torch.promote_types(torch.promote_types(mean.dtype, log_scale.dtype), torch.float32)
    if x.is_floating_point():
        dtype = torch.promote_types(dtype, x.dtype)
    # the bin edges from the integer level k, (2k +- 1)/255 - 1: the upper edge of bin k and the lower edge of bin
    # k + 1 are then the same number, bit for bit, and the 256 masses add up to 1 in float32 too
    k = x.to(dtype) if x.dtype == torch.uint8 else torch.round((x.to(dtype) + 1.0) * 127.5).clamp(0, 255)
    mean, log_scale = mean.to(dtype), log_scale.to(dtype)
    inv_s = torch.exp(-log_scale)
    upper = inv_s * ((2.0 * k + 1.0) / 255.0 - 1.0 - mean)  # the bin's edges in the standard logistic's units
    lower = inv_s * ((2.0 * k - 1.0) / 255.0 - 1.0 - mean)
    # sigmoid(a) - sigmoid(b) = (e^a - e^b) / ((1 + e^a)(1 + e^b)): no difference of two numbers close to 1 or 0
    log_mid = upper + torch.log(-torch.expm1(-2.0 * BIN * inv_s)) - F.softplus(upper) - F.softplus(lower)
    log_first = -F.softplus(-upper)  # log sigmoid(upper): k = 0 takes everything below its upper edge
    log_last = -F.softplus(lower)  # log (1 - sigmoid(lower)): k = 255 everything above its lower edge
    return torch.where(k < 0.5, log_first, torch.where(k > 254.5, log_last, log_mid))


def discretized_logistic_nll(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """-log P(x) in nats, summed over every sub-pixel of each image: one number per image (N x C x H x W -> N)."""
    return -discretized_logistic_log_prob(x, mean, log_scale).flatten(1).sum(1)


def channel_means(mean: torch.Tensor, coeffs: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """PixelCNN++'s linear dependence between colours: the locations of G and B move with the image's own R (and G),
    mean_g + a·r, mean_b + b·r + c·g, so the likelihood is p(r) p(g | r) p(b | r, g) and still normalised. `coeffs`
    is N x 3 x H x W (a, b, c), or None for independent channels; `x` is the image in [-1, 1] (or uint8)."""
    if coeffs is None:
        return mean
    x = to_unit_range(x, mean.dtype)
    r, g = x[:, 0:1], x[:, 1:2]
    a, b, c = coeffs[:, 0:1], coeffs[:, 1:2], coeffs[:, 2:3]
    return torch.cat([mean[:, 0:1], mean[:, 1:2] + a * r, mean[:, 2:3] + b * r + c * g], dim=1)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) in nats, summed over each image's latent: N x ... -> N."""
    mu, logvar = mu.float(), logvar.float()
    return (0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)).flatten(1).sum(1)


def bits_per_dim(nats: torch.Tensor, dims: int) -> torch.Tensor:
    """Nats per image -> bits per sub-pixel (3 x 32 x 32 = 3072 of them for CIFAR)."""
    return nats / (dims * math.log(2.0))
