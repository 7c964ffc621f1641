"""Eval preprocessing built from a card's declarative `preprocess` block (torchvision.transforms.v2)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._card import ModelCard
from .errors import ZooError

if TYPE_CHECKING:
    from torchvision.transforms import v2

__all__ = ["eval_transforms"]


def eval_transforms(card: ModelCard) -> v2.Compose:
    """PIL image / uint8 tensor -> normalised float tensor, exactly as the card's weights expect.

    Order: RGB (a PIL image of any mode, as the CLI reads files: :func:`zoo.runtime.images.to_rgb`), to tensor
    image, RGB (a 1- or 3-channel tensor), resize (shorter side), center crop, scale to [0, 1], normalize.
    """
    import torch
    from PIL import Image
    from torchvision.transforms import v2

    from .runtime.images import to_rgb

    pre = card.preprocess
    if pre is None:
        raise ZooError(f"Model {card.name!r} declares no preprocessing; its plugin handles input itself.")
    interpolation = getattr(v2.InterpolationMode, pre.interpolation.upper())
    steps: list[v2.Transform] = [v2.Lambda(to_rgb, Image.Image), v2.ToImage(), v2.RGB()]
    if pre.resize is not None:
        steps.append(v2.Resize(pre.resize, interpolation=interpolation, antialias=True))
    if pre.crop is not None:
        steps.append(v2.CenterCrop(pre.crop))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(pre.mean), std=list(pre.std))]
    return v2.Compose(steps)
