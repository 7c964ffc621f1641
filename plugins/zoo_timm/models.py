"""The builder of every ``timm/...`` card: timm's own constructor, so a zoo model is exactly timm's model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["create_model"]


def create_model(model_name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model(model_name, pretrained=False, **kwargs)``: zoo loads the verified weights itself.

    Given the full ``arch.tag`` name, timm builds the architecture with that tag's defaults (image size...) and
    sets ``model.pretrained_cfg``, so ``timm.data.resolve_data_config(model=model)`` works on zoo's model as on
    timm's. Built with the card's arguments, the model's parameter count is recorded for ``zoo list`` (counting
    all of timm up front would mean building every architecture: docs/architecture.md §17).
    """
    import timm

    model = timm.create_model(model_name, pretrained=False, **kwargs)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if set(kwargs) <= {"num_classes"} and kwargs.get("num_classes", cfg.get("num_classes")) == cfg.get("num_classes"):
        from .index import record_params

        try:
            record_params({model_name: sum(p.numel() for p in model.parameters())})
        except OSError:
            pass  # a read-only ZOO_HOME: the count is only a convenience for listings
    return model
