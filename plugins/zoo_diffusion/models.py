"""Denoisers for pixel-space diffusion: diffusers' ``UNet2DModel`` (timestep and class embeddings) together with
the noise schedule it was trained under.

Why diffusers' UNet rather than our own: it is the UNet people already have checkpoints for (google/ddpm-cifar10-32
loads into it unchanged), its blocks are maintained and tested upstream, and its schedulers (used by
:mod:`zoo_diffusion.samplers`) are the reference implementations of DDPM, DDIM and DPM-Solver++. The price is
importing diffusers (about 3 s on this project's CPU: it imports ``torch._dynamo``), paid only when a diffusion
model is built, never by ``zoo list``.

Class conditioning for classifier-free guidance: a conditional model has ``num_classes + 1`` class embeddings,
the last one meaning "no class" (:attr:`Denoiser.null_class`); training replaces a batch's labels by it at
random (``task_config.class_dropout``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["SCHEDULES", "Denoiser", "build_ddpm", "build_diffusers_unet", "build_unet"]

#: The card's ``schedule`` names -> diffusers' ``beta_schedule`` names.
SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
PREDICTIONS = {"epsilon": "epsilon", "v": "v_prediction"}
#: DDPM ancestral sampling's per-step variance: beta~_t (the posterior's, "fixed_small") or beta_t ("fixed_large").
VARIANCES = ("fixed_small", "fixed_large")


class Denoiser(nn.Module):
    """A UNet that predicts the noise (or v) in ``x_t``, and the schedule that defines ``x_t``: the weights hold
    only the UNet (keys ``unet.*``); the schedule comes from the card's kwargs."""

    def __init__(
        self,
        unet: nn.Module,
        num_classes: int,
        schedule: str,
        prediction: str,
        timesteps: int,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        variance: str = "fixed_small",
    ) -> None:
        super().__init__()
        if variance not in VARIANCES:
            raise ValueError(f"variance must be one of {', '.join(VARIANCES)}, not {variance!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, not {schedule!r}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}, not {prediction!r}")
        self.unet = unet
        self.num_classes = num_classes
        self.schedule, self.prediction, self.timesteps = schedule, prediction, timesteps
        self.beta_start, self.beta_end = beta_start, beta_end
        self.variance = variance  # what the DDPM sampler uses; the published DDPM CIFAR-10 model used fixed_large
        from diffusers.schedulers.scheduling_ddpm import DDPMScheduler

        alphas_cumprod = DDPMScheduler(**self.scheduler_config()).alphas_cumprod
        # q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I): derived from the kwargs, so not saved with the weights
        self.register_buffer("alphas_cumprod", alphas_cumprod.float().clone(), persistent=False)

    @property
    def null_class(self) -> int | None:
        """The class index that means "no class" (classifier-free guidance), or None for an unconditional model."""
        return self.num_classes if self.num_classes else None

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        config: Any = self.unet.config  # a diffusers UNet's config (mypy sees Module.__getattr__)
        size = config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        return (config.in_channels, *size)

    def scheduler_config(self) -> dict[str, Any]:
        """The diffusers scheduler arguments every sampler of this model shares."""
        return {
            "num_train_timesteps": self.timesteps,
            "beta_schedule": SCHEDULES[self.schedule],
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "prediction_type": PREDICTIONS[self.prediction],
        }

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The model's prediction for ``x_t`` at timesteps `t` (one per row, or one for all) given `labels`."""
        return self.unet(x, t, class_labels=labels if self.num_classes else None).sample


def build_unet(
    sample_size: int = 32,
    channels: tuple[int, ...] = (48, 96, 96),
    layers_per_block: int = 1,
    attention: tuple[bool, ...] = (False, False, True),
    num_class_embeds: int | None = None,
    norm_groups: int = 16,
    head_dim: int = 32,
    dropout: float = 0.0,
) -> nn.Module:
    """diffusers' UNet2DModel: one down block per entry of `channels` (each halves the resolution but the
    last), self-attention in the blocks `attention` marks."""
    from diffusers.models.unets.unet_2d import UNet2DModel

    if len(attention) != len(channels):
        raise ValueError(f"attention needs one flag per level ({len(channels)}), got {len(attention)}")
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention))
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=3,
        out_channels=3,
        block_out_channels=tuple(channels),
        layers_per_block=layers_per_block,
        down_block_types=down,
        up_block_types=up,
        num_class_embeds=num_class_embeds,
        norm_num_groups=norm_groups,
        attention_head_dim=head_dim,
        dropout=dropout,
    )


def build_ddpm(
    num_classes: int = 10,
    channels: tuple[int, ...] | list[int] = (48, 96, 96),
    layers_per_block: int = 1,
    attention: tuple[bool, ...] | list[bool] = (False, False, True),
    schedule: str = "linear",
    prediction: str = "epsilon",
    timesteps: int = 1000,
    norm_groups: int = 16,
    head_dim: int = 32,
    dropout: float = 0.0,
    sample_size: int = 32,
) -> Denoiser:
    """A (class-conditional when `num_classes` > 0) DDPM denoiser for `sample_size` square RGB images."""
    unet = build_unet(
        sample_size,
        tuple(channels),
        layers_per_block,
        tuple(attention),
        num_classes + 1 if num_classes else None,
        norm_groups,
        head_dim,
        dropout,
    )
    return Denoiser(unet, num_classes, schedule, prediction, timesteps)


def build_diffusers_unet(
    unet: dict[str, Any],
    schedule: str = "linear",
    prediction: str = "epsilon",
    timesteps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    variance: str = "fixed_small",
) -> Denoiser:
    """An unconditional denoiser from a diffusers ``UNet2DModel`` config (the ``config.json`` of a published
    checkpoint, copied onto the card's kwargs) and its scheduler's settings: how a card names a model it did not
    train, such as google/ddpm-cifar10-32, without code of its own."""
    from diffusers.models.unets.unet_2d import UNet2DModel

    config = {k: v for k, v in unet.items() if not k.startswith("_")}  # "_class_name", "_diffusers_version"
    if config.get("num_class_embeds"):
        raise ValueError(
            "build_diffusers_unet builds unconditional UNets; a class-conditional one needs zoo's null-class "
            "convention (build_ddpm)"
        )
    for key in ("block_out_channels", "down_block_types", "up_block_types"):
        if key in config:
            config[key] = tuple(config[key])
    return Denoiser(UNet2DModel(**config), 0, schedule, prediction, timesteps, beta_start, beta_end, variance)
