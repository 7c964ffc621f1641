"""Evaluate any model of any task on a labelled dataset, the same way: the task says what to measure."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._api import card as get_card
from .._api import load
from .datasets import load_dataset
from .device import autocast, fuse_for_inference, tune_malloc
from .progress import progress
from .splits import stratified_split
from .tasks import get_task

if TYPE_CHECKING:
    from torch import nn

__all__ = ["EvalResult", "evaluate"]


@dataclass
class EvalResult:
    model: str
    data: str
    images: int
    metrics: dict[str, Any]
    seconds: float
    skipped: list[str] = field(default_factory=list)
    decode_cached: bool = False
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "data": self.data, "images": self.images, "metrics": self.metrics,
                "seconds": round(self.seconds, 3), "images_per_second": round(self.images_per_second, 1),
                "decode_cached": self.decode_cached, "skipped": self.skipped, "settings": self.settings}


def evaluate(name: str, data: str | Path, *, model: nn.Module | None = None, batch_size: int | None = None,
             device: str | None = None, bf16: bool = False, channels_last: bool = True, skip_bad: bool = False,
             cache: bool = True, show_progress: bool = True, fuse: bool = True, val_split: float | None = None,
             seed: int = 0) -> EvalResult:
    """Measure model `name` (or an already-loaded `model` with that card) on a labelled dataset.

    The card's preprocessing is applied: geometry once at decode time (cached), normalisation on whole
    batches on the device. Runs under ``inference_mode``, in channels_last memory format, and with bf16
    autocast when ``bf16=True``. With `val_split`, only the images ``zoo finetune --val-split F --seed S``
    held out for validation are measured: a fine-tuned card's figure can be checked on the same images.
    """
    import torch

    tune_malloc()
    card = get_card(name)
    task = get_task(card.task)
    start = time.perf_counter()
    dataset = load_dataset(data, geometry=task.geometry(card), skip_bad=skip_bad, cache=cache)
    targets = task.align_targets(dataset.classes, card)[dataset.targets]
    images = dataset.images
    if val_split is not None:
        _, keep = stratified_split(dataset.targets, val_split, seed)
        images, targets = images[keep], targets[keep]
    callers = model
    was_training = model.training if model is not None else False
    if model is None:
        model = load(name, device=device)
    model.eval()  # BatchNorm's running statistics and no dropout, even for a model handed over in train mode
    target_device = next(model.parameters()).device
    if fuse:
        model = fuse_for_inference(model)  # a traced copy, or the same module where tracing fails
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # in place on a module
    batch_size = batch_size or (128 if bf16 else 64)
    metrics = task.metrics(card)
    bar = progress(len(targets), f"eval {card.name}", show_progress)
    try:
        with torch.inference_mode(), autocast(target_device, bf16):
            for begin in range(0, len(targets), batch_size):
                batch = images[begin:begin + batch_size].to(target_device, non_blocking=True)
                x = task.prepare(batch, card)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                outputs = model(x)
                metrics.update(outputs.float().cpu(), targets[begin:begin + batch_size])
                if bar is not None:
                    bar.update(batch.shape[0])
    finally:
        if bar is not None:
            bar.close()
        if callers is not None:  # hand the caller's model back as it came
            if model is callers and channels_last:
                callers.to(memory_format=torch.contiguous_format)
            callers.train(was_training)
    seconds = time.perf_counter() - start
    summary = task.summarize({k: v.cpu() for k, v in metrics.compute().items()}, card)
    settings = {"batch_size": batch_size, "bf16": bf16, "fuse": fuse, "channels_last": channels_last,
                "device": str(target_device)}
    if val_split is not None:
        settings.update(val_split=val_split, seed=seed)
    return EvalResult(card.name, str(data), len(targets), summary, seconds, dataset.skipped,
                      dataset.from_cache, settings)
