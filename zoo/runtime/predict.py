"""Predict with any model on image files: decode, the card's preprocessing, the task's outputs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._api import card as get_card
from .._api import load
from .images import ImageError, read_image
from .tasks import get_task

if TYPE_CHECKING:
    from torch import nn

__all__ = ["predict"]


def predict(name: str, images: list[str | Path], *, topk: int = 5, model: nn.Module | None = None,
            device: str | None = None, skip_bad: bool = False, batch_size: int = 64) -> list[dict[str, Any]]:
    """One record per readable image: ``{"image": path, "predictions": [...]}`` (task-specific).

    Unreadable images raise :class:`ImageError` naming the file, or with ``skip_bad`` yield a record with
    ``"error"`` instead of predictions.
    """
    import torch

    card = get_card(name)
    task = get_task(card.task)
    geometry = task.geometry(card)
    records: list[dict[str, Any]] = []
    decoded: list[tuple[int, torch.Tensor]] = []
    for path in images:
        try:
            decoded.append((len(records), geometry.apply(read_image(path))))
            records.append({"image": str(path)})
        except ImageError as exc:
            if not skip_bad:
                raise
            records.append({"image": str(path), "error": str(exc)})
    if not decoded:
        return records
    if model is None:
        model = load(name, device=device)
    target = next(model.parameters()).device
    with torch.inference_mode():
        for begin in range(0, len(decoded), batch_size):
            chunk = decoded[begin:begin + batch_size]
            batch = torch.stack([image for _, image in chunk]).to(target)
            outputs = model(task.prepare(batch, card))
            for (index, _), prediction in zip(chunk, task.predict(outputs, card, topk), strict=True):
                records[index]["predictions"] = prediction
    return records
