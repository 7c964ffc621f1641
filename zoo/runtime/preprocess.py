"""A card's preprocessing, applied the same way by every task: its geometry once at decode time, its
normalisation to whole uint8 batches on the device (and back, for models whose outputs are images)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ZooError
from .datasets import Geometry

if TYPE_CHECKING:
    import torch

__all__ = ["card_geometry", "normalize", "to_unit"]


def card_geometry(card: Any) -> Geometry:
    """The resize / center crop of `card`'s preprocessing; a card without one cannot be run on images."""
    pre = card.preprocess
    if pre is None:
        raise ZooError(f"Model {card.name!r} declares no preprocessing; it cannot be run on images.")
    return Geometry(resize=pre.resize, crop=pre.crop, interpolation=pre.interpolation)


def _stats(preprocess: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    mean = torch.tensor(preprocess.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(preprocess.std, device=device).view(1, -1, 1, 1)
    return mean, std


def normalize(images: torch.Tensor, preprocess: Any) -> torch.Tensor:
    """A uint8 batch -> floats normalised by the card's mean/std, in one fused affine step on the whole batch:
    (x / 255 - mean) / std == (x - 255 mean) / (255 std)."""
    mean, std = _stats(preprocess, images.device)
    return (images.float() - mean * 255.0) / (std * 255.0)


def to_unit(x: torch.Tensor, preprocess: Any) -> torch.Tensor:
    """The inverse for a model that outputs images normalised like its inputs (a generator): pixels in [0, 1]."""
    mean, std = _stats(preprocess, x.device)
    return (x.float() * std + mean).clamp(0, 1)
