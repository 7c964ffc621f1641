"""The task contract: what a plugin tells the task-agnostic runtime about its kind of model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ZooError

if TYPE_CHECKING:
    import torch
    from torchmetrics import MetricCollection

    from .._card import ModelCard
    from .datasets import Geometry

__all__ = ["Task", "get_task"]


class Task(Protocol):
    """How a batch becomes an input, a prediction, a loss and a metric, for one task.

    The runtime owns everything else: devices, precision, batching, loops, progress, reports.
    """

    def geometry(self, card: ModelCard) -> Geometry:
        """The resize/crop applied once to every decoded uint8 image."""

    def prepare(self, images: torch.Tensor, card: ModelCard) -> torch.Tensor:
        """A uint8 N x C x H x W batch (already on the device) -> the model's input."""

    def align_targets(self, classes: tuple[str, ...], card: ModelCard) -> torch.Tensor:
        """Index map from the dataset's class order to the model's label order."""

    def metrics(self, card: ModelCard) -> MetricCollection:
        """Fresh torchmetrics accumulators for one evaluation."""

    def summarize(self, computed: dict[str, torch.Tensor], card: ModelCard) -> dict[str, Any]:
        """Computed metrics -> a JSON-able summary (headline numbers first)."""

    def predict(self, outputs: torch.Tensor, card: ModelCard, topk: int) -> list[list[dict[str, Any]]]:
        """Model outputs for a batch -> per-item predictions."""


_TASKS: dict[str, str] | None = None


def get_task(name: str) -> Task:
    """Instantiate the task class a plugin registered for `name`."""
    global _TASKS
    from .._builder import import_builder
    from .._plugins import get_plugins

    if _TASKS is None:
        found: dict[str, str] = {}
        get_plugins().call_isolated("register_tasks", lambda _plugin: {"register": found.__setitem__})
        _TASKS = found
    if name not in _TASKS:
        known = ", ".join(sorted(_TASKS)) or "none"
        raise ZooError(f"No installed plugin runs task {name!r} (tasks: {known}). Run 'zoo plugins'.")
    return import_builder(_TASKS[name], model=name)()


def reset_tasks() -> None:
    global _TASKS
    _TASKS = None
