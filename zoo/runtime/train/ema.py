"""An exponential moving average of the weights (``--ema``), BatchNorm statistics included."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import ZooError

if TYPE_CHECKING:
    import torch

__all__ = ["averaged"]


def averaged(model: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of `model`'s weights, updated after every optimizer step, or None.

    torch.optim.swa_utils does the averaging (foreach lerp). use_buffers=True averages BatchNorm's
    running statistics along with the weights, so the average is usable as it stands, with no extra pass
    over the data to recompute them. The average starts at the weights after the first step; there is no
    decay warm-up, so pick a decay whose horizon (about 1 / (1 - decay) steps) fits well inside the run.
    """
    if not decay:
        return None
    if not 0.0 < decay < 1.0:
        raise ZooError(f"--ema {decay}: the decay must lie between 0 and 1 (e.g. 0.999), or be 0 for none.")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
