"""Checkpoints: zoo's own files, written atomically and read back with ``weights_only=True`` all the same (a
checkpoint copied from elsewhere cannot run code); the position inside an epoch, so a run resumes at any batch."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import ZooError

__all__ = ["Position", "load_checkpoint", "save_checkpoint", "save_weights"]


@dataclass
class Position:
    """Where a run stands, precisely enough to resume in the middle of an epoch (checkpoint.pt keeps it)."""

    epoch: int = 0  # the epoch in progress, from 0
    step: int = 0  # batches of that epoch already trained (by this rank)
    seen: int = 0  # that epoch's running totals, for its metrics row
    loss_sum: float = 0.0
    sums: dict[str, float] = field(default_factory=dict)  # the task's other per-step statistics (e.g. correct)
    seconds: float = 0.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Position:
        data = dict(data)
        if "correct" in data:  # checkpoints written before the task contract kept a classifier's count here
            data.setdefault("sums", {})["correct"] = float(data.pop("correct"))
        return cls(**data)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch

    tmp = path.with_name(path.name + ".partial")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ZooError(f"Cannot resume from {path}: {type(exc).__name__}: {exc}. Delete it to start over.") from None


def save_weights(model: Any, path: Path) -> None:
    """The model's state dict as safetensors, by an atomic rename."""
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".partial")
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp))
    from ..files import default_mode

    default_mode(tmp)  # safetensors writes 0600
    os.replace(tmp, path)
