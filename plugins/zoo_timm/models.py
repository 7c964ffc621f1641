"""The builder of every ``timm/...`` card: timm's own constructor, so a zoo model is exactly timm's model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["create_model", "features_only"]


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


def features_only(model: nn.Module, model_name: str, **kwargs: Any) -> nn.Module:
    """timm's ``features_only=True`` for a model zoo has already loaded and verified: the feature network timm
    builds for this architecture (``FeatureListNet``; ``FeatureGetterNet`` for ViTs...), holding the loaded model's
    own tensors, so no weights are read or initialised twice.

    timm makes that network by wrapping a model whose weights are already in place, so its names are the model's
    with the first ``Sequential`` level flattened (``stages.0`` -> ``stages_0``) or under ``model.`` (the getter):
    each of its tensors is the model's one with the same name once dots are read as underscores. A name that
    matches no tensor, or two, is an error rather than a guess.
    """
    import timm
    import torch

    from zoo.errors import ZooError

    try:
        with torch.device("meta"):  # shapes only; every tensor is then taken from `model`
            features = timm.create_model(model_name, pretrained=False, features_only=True)
    except Exception as error:  # noqa: BLE001 - timm refuses architectures it has no feature network for
        raise ZooError(
            f"timm has no feature network for {model_name} ({type(error).__name__}: {error}); "
            "num_classes=0 gives its pooled features."
        ) from None
    source: dict[str, list[torch.Tensor]] = {}
    own: dict[str, torch.Tensor] = dict(model.named_parameters())
    own.update(model.named_buffers())  # non-persistent buffers too (e.g. relative position indices)
    for name, tensor in own.items():
        source.setdefault(name.replace(".", "_"), []).append(tensor)
    for name, slot in [*features.named_parameters(), *features.named_buffers()]:
        key = name.replace(".", "_")
        found = source.get(key) or source.get(key.removeprefix("model_"), [])
        if len(found) != 1 or found[0].shape != slot.shape:
            raise ZooError(
                f"timm's feature network for {model_name} has {name}, which matches no tensor of the loaded model "
                "(a timm version zoo does not know?); use num_classes=0 for pooled features."
            )
        module_name, _, attr = name.rpartition(".")
        module = features.get_submodule(module_name)
        if isinstance(slot, torch.nn.Parameter):
            setattr(module, attr, found[0])  # the model's Parameter itself
        else:
            module._buffers[attr] = found[0]  # keeps the buffer's persistence
    return features.train(model.training)  # timm set its pretrained_cfg (for features) when it built it


create_model.features_only = features_only  # type: ignore[attr-defined]  # zoo.load(..., features_only=True)
