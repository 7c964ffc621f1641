"""Evaluate any model of any task on a labelled dataset, the same way: the task says what to read and measure.

The runtime's part: the device, bf16 autocast, inference mode, channels_last, BatchNorm folding, in fp32 on a
CPU a fused oneDNN graph (zoo.runtime.graph), batching (on a CPU, one single-threaded stream of batches per core:
zoo.runtime.streams), progress and timing. The task's part (zoo.runtime.tasks.Task): reading its dataset formats,
turning a uint8 batch into the model's input, turning raw outputs into what it scores, and the metrics.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .._api import card as get_card
from .._api import load
from ..errors import ZooError
from . import distributed
from .device import autocast, fuse_for_inference, resolve_precision, tune_malloc
from .graph import graph_for_inference, onednn_fusion
from .graph import wanted as graph_wanted
from .progress import progress
from .streams import caller_modes, cpu_streams, map_in_streams
from .tasks import Batch, task_for

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["EvalResult", "MeasureContext", "evaluate", "forward", "model_input", "to_device"]


@dataclass
class MeasureContext:
    """What the runtime hands a task that runs its own evaluation (``Task.measure``): where and how to compute,
    and which share of the work is this process's under torchrun (every ``world_size``-th batch from ``rank``)."""

    device: torch.device
    bf16: bool
    batch_size: int
    env: distributed.Env
    show_progress: bool = True
    channels_last: bool = True

    def mine(self, index: int) -> bool:
        """Whether batch `index` is this rank's."""
        return index % self.env.world_size == self.env.rank


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
    task: str = ""
    headline: tuple[str, bool] = ("", True)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "task": self.task,
            "data": self.data,
            "images": self.images,
            "headline": {"metric": self.headline[0], "higher_is_better": self.headline[1]},
            "metrics": self.metrics,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 1),
            "decode_cached": self.decode_cached,
            "skipped": self.skipped,
            "settings": self.settings,
        }


def to_device(images: torch.Tensor | list[torch.Tensor], device: torch.device) -> torch.Tensor | list[torch.Tensor]:
    """A batch's images on `device`: one tensor, or a list of differently sized ones."""
    if isinstance(images, list):
        return [image.to(device, non_blocking=True) for image in images]
    return images.to(device, non_blocking=True)


def model_input(task: Any, batch: Batch, device: torch.device, channels_last: bool) -> Any:
    """The model's input for a batch: on the device, through the task's `prepare`, channels_last if asked."""
    import torch

    x = task.prepare(to_device(batch.images, device))
    if channels_last and isinstance(x, torch.Tensor) and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def forward(
    task: Any, model: nn.Module, batch: Batch, device: torch.device, channels_last: bool, **options: Any
) -> Any:
    """The task's input, the model, the task's outputs: one batch, in whatever grad/autocast mode is active."""
    x = model_input(task, batch, device, channels_last)
    raw = task.infer(model, x, **options) if hasattr(task, "infer") else model(x)
    return task.postprocess(raw, batch, **options)


def evaluate(
    name: str,
    data: str | Path,
    *,
    model: nn.Module | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    bf16: bool = False,
    channels_last: bool = True,
    skip_bad: bool = False,
    cache: bool = True,
    show_progress: bool = True,
    fuse: bool = True,
    split: str | None = None,
    val_split: float | None = None,
    seed: int = 0,
    precision: str | None = None,
    test_split: float | None = None,
    **options: Any,
) -> EvalResult:
    """Measure model `name` (or an already-loaded `model` with that card) on a labelled dataset.

    The task reads `data` in its formats (ImageFolder for classifiers; COCO, VOC or YOLO for detectors) and
    scores the model's outputs. Runs under ``inference_mode``, in channels_last memory format, and with bf16
    autocast when ``bf16=True`` or ``precision="bf16"``; ``precision="auto"`` (the CLI's default) picks bf16 where
    the device has native bf16 matrix units (AMX CPUs, CUDA sm80+), else fp32. `split` picks the dataset's own
    split (e.g. "test"); with `val_split`, only the images ``zoo finetune --val-split F --seed S`` held out for
    validation are measured, so a fine-tuned card's figure can be checked on the same images; with `test_split`
    as well, only the test images ``zoo finetune --val-split F --test-split T --seed S`` held out (never selected
    on: docs/evaluation-protocol.md). `options` are the task's own (e.g. ``conf=0.001`` for detectors).
    """
    import torch
    import torch.distributed as dist

    tune_malloc()
    card = get_card(name)
    task = task_for(card, "eval")
    joined = not (dist.is_available() and dist.is_initialized())
    env = distributed.setup()  # under torchrun each rank measures its share; the evaluator gathers the rest
    joined = joined and env.initialized
    if hasattr(task, "check_options"):  # bad options are refused before the dataset is read
        task.check_options(**options)
    held_out = _test_split_argument(task, card, split, val_split, test_split)
    start = time.perf_counter()
    dataset = task.eval_data(
        data, split=split, val_split=val_split, seed=seed, cache=cache, skip_bad=skip_bad, **held_out
    )
    callers = model
    was_training = model.training if model is not None else False
    if model is None:
        model = load(name, device=device or (env.device if env.initialized else None))
    model.eval()  # BatchNorm's running statistics and no dropout, even for a model handed over in train mode
    target_device = next(model.parameters()).device
    if precision is not None:
        bf16 = resolve_precision(precision, target_device) == "bf16"
    if fuse and not hasattr(task, "measure"):
        model = fuse_for_inference(model)  # a traced copy, or the same module where tracing fails
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # in place on a module
    batch_size = batch_size or (128 if bf16 else 64)
    headline = cast("tuple[str, bool]", tuple(task.headline))  # tuple() of a pair loses its item types
    if hasattr(task, "measure"):  # the task runs the whole evaluation (generative models: samples vs the data)
        context = MeasureContext(target_device, bf16, batch_size, env, show_progress, channels_last)
        try:
            with torch.inference_mode(), autocast(target_device, bf16):
                summary = task.measure(model, dataset, context, **options)
        finally:
            if callers is not None:
                if channels_last:
                    callers.to(memory_format=torch.contiguous_format)
                callers.train(was_training)
        headline = (next(iter(summary)), headline[1])  # its key names the feature space: fid[resnet56-cifar]
        return _result(
            card,
            dataset,
            data,
            summary,
            time.perf_counter() - start,
            headline,
            joined,
            env,
            {
                "batch_size": batch_size,
                "precision": "bf16" if bf16 else "fp32",
                "bf16": bf16,
                "device": str(target_device),
                **options,
            },
            split,
            val_split,
            seed,
            test_split,
        )
    evaluator = task.evaluator(**options)
    bar = progress(len(dataset), f"eval {card.name}", show_progress and env.rank == 0)
    streams = cpu_streams(target_device)
    mine: Iterator[Batch] = (
        batch for i, batch in enumerate(dataset.batches(batch_size)) if i % env.world_size == env.rank
    )
    runs = model  # the fused graph where it applies (zoo.runtime.graph), else the model itself
    use_graph = graph_wanted(target_device, bf16, len(dataset) // (batch_size * env.world_size))
    fusion = onednn_fusion() if use_graph else contextlib.nullcontext()

    def run(batch: Batch) -> tuple[Batch, Any]:
        return batch, forward(task, runs, batch, target_device, channels_last, **options)

    try:
        with fusion, torch.inference_mode(), autocast(target_device, bf16):
            if use_graph:
                first = next(mine, None)  # traced and checked on the first real batch, which then runs as usual
                if first is not None:
                    example = model_input(task, first, target_device, channels_last)
                    runs = graph_for_inference(model, example, channels_last) or model
                    mine = itertools.chain([first], mine)
            for batch, outputs in map_in_streams(run, mine, streams, caller_modes(target_device)):
                evaluator.update(outputs, batch)  # in order, on this thread
                if bar is not None:
                    bar.update(len(batch) * env.world_size)
    finally:
        if bar is not None:
            bar.close()
        if callers is not None:  # hand the caller's model back as it came
            if model is callers and channels_last:
                callers.to(memory_format=torch.contiguous_format)
            callers.train(was_training)
    seconds = time.perf_counter() - start
    summary = evaluator.compute()  # over every rank's batches
    settings = {
        "batch_size": batch_size,
        "precision": "bf16" if bf16 else "fp32",
        "bf16": bf16,
        "fuse": fuse,
        "channels_last": channels_last,
        "device": str(target_device),
        "streams": streams,
        "graph": runs is not model,
        **options,
    }
    return _result(
        card, dataset, data, summary, seconds, headline, joined, env, settings, split, val_split, seed, test_split
    )


def _test_split_argument(
    task: Any, card: Any, split: str | None, val_split: float | None, test_split: float | None
) -> dict[str, float]:
    """``{"test_split": F}`` for the task's ``eval_data`` when one is asked for, else nothing (tasks written before
    test splits take no such keyword); bad fractions and a task that cannot hold one out are refused first."""
    if test_split is None:
        return {}
    from .splits import check_fractions
    from .tasks import check_test_split

    if split is not None:
        raise ZooError(
            f"--split {split} and --test-split pick different images (the dataset's own split, or a test part held "
            "out of it by zoo finetune); give one of them."
        )
    check_fractions(val_split, test_split)
    check_test_split(task, card)
    return {"test_split": test_split}


def _result(
    card: Any,
    dataset: Any,
    data: str | Path,
    summary: dict[str, Any],
    seconds: float,
    headline: tuple[str, bool],
    joined: bool,
    env: distributed.Env,
    settings: dict[str, Any],
    split: str | None,
    val_split: float | None,
    seed: int,
    test_split: float | None = None,
) -> EvalResult:
    if joined:
        distributed.cleanup(env)
    if split is not None:
        settings["split"] = split
    if val_split is not None:
        settings.update(val_split=val_split, seed=seed)
    if test_split is not None:
        settings["test_split"] = test_split
    return EvalResult(
        card.name,
        str(data),
        len(dataset),
        summary,
        seconds,
        dataset.skipped,
        dataset.from_cache,
        settings,
        card.task,
        headline,
    )
