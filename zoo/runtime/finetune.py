"""Fine-tune any card on a dataset of its task; the result is a safetensors file plus a card in the user registry.

This module wires the pieces together: the task reads the data and says what one training step is; the
runtime's ``train`` package holds the recipe (optimizer, schedule), the loop, checkpoints, the moving average
and the user card. Best epoch: the task's headline metric on the validation images, in its direction.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .._api import card as get_card
from .._api import fetch, load
from .._card import ModelCard
from ..errors import ZooError
from . import distributed
from .device import autocast, tune_malloc
from .evaluate import forward
from .splits import check_fractions
from .stopping import StopRequest
from .tasks import check_test_split, task_for
from .train.checkpoint import Position, load_checkpoint, save_checkpoint, save_weights
from .train.ema import averaged as make_averaged
from .train.loop import Loop, Steps
from .train.recipe import FinetuneConfig, base_lr, fit_batch_size, make_optimizer, make_scheduler, resolve, too_short
from .train.usercard import CardFigure, check_name, write_user_card

if TYPE_CHECKING:
    import torch

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune"]


@dataclass
class FinetuneResult:
    name: str
    out: Path
    weights: Path
    best_epoch: int
    best_value: float  # the task's headline metric on the validation images at the best epoch
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    metric: str = ""  # that metric's name (top1, map...)
    test_value: float = float("nan")  # that metric of the chosen weights on the --test-split images, measured once
    skipped: list[str] = field(default_factory=list)  # unreadable images left out (--skip-bad)

    @property
    def best_val_top1(self) -> float:  # the classifier-era name, kept for callers of the API
        return self.best_value


def _freeze(model: torch.nn.Module, card: ModelCard, how: str) -> list:
    if how == "none":
        return [p for p in model.parameters() if p.requires_grad]
    if how != "backbone":
        raise ZooError(f"Unknown --freeze {how!r}; use none or backbone.")
    if not card.head:
        raise ZooError(f"Model {card.name!r} does not say which module is its head; cannot freeze the backbone.")
    head = set(map(id, model.get_submodule(card.head).parameters()))
    for p in model.parameters():
        p.requires_grad_(id(p) in head)
    return [p for p in model.parameters() if p.requires_grad]


def _better(value: float, best: float, higher: bool) -> bool:
    # ">=": on a tie (small validation sets often tie) the later, longer-trained epoch wins
    if math.isnan(best):
        return True
    return value >= best if higher else value <= best


def finetune(
    name: str,
    data: str | Path,
    out: str | Path,
    *,
    config: FinetuneConfig | None = None,
    resume: bool = False,
    device: str | None = None,
    register: bool = True,
    show_progress: bool = True,
    command: str | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_every: float = 600.0,
) -> FinetuneResult:
    """Fine-tune model `name` on `data`; write weights, metrics, curves and a card named after `out`.

    Args:
        out: output directory; its last component is the new model's name (``zoo.load(name)`` afterwards).
        resume: continue from ``out/checkpoint.pt``, exactly where it stopped (even mid-epoch).
        on_epoch: called (on rank 0) with each epoch's metrics row as soon as the epoch ends.
        checkpoint_every: seconds between mid-epoch checkpoints (0: only at epoch ends). A long CPU epoch
            then loses at most this much work to a crash or a machine that goes away without a signal.
    """
    import torch

    config = config or FinetuneConfig()
    tune_malloc()
    out = Path(out)
    new_name = out.name
    card = get_card(name)
    check_name(new_name)
    task = task_for(card, "finetune")
    if config.test_split is not None:  # before any data is read: a task that cannot keep test images out refuses
        check_fractions(config.val_split, config.test_split)
        check_test_split(task, card)
    if config.skip_bad and not getattr(task, "training_skips_bad", False):
        raise ZooError(f"--skip-bad: the {card.task} task reads every training image; remove the unreadable ones.")
    batch_given = config.batch_size is not None
    config = resolve(config, task)
    env = distributed.setup()
    target = torch.device(device) if device else env.device
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed + env.rank)  # augmentation: differs per rank

    train_data = _train_data(task, data, config)
    test_data = _test_data(train_data, config)
    per_rank = math.ceil(len(train_data) / env.world_size)
    if not batch_given:  # a default made for 50,000 images is one step per epoch on 100 (#19)
        config = dataclasses.replace(config, batch_size=fit_batch_size(cast(int, config.batch_size), per_rank))
    config = dataclasses.replace(config, lr=base_lr(config, task))  # the card records the rate actually used
    classes = train_data.classes
    overrides = task.model_overrides(classes)
    # the card's head rows for the data's classes, when each of them is one of its labels (a subset, another order)
    rows = task.head_rows(classes) if overrides and hasattr(task, "head_rows") else None
    if overrides and not card.head:
        raise ZooError(f"Model {card.name!r} has other classes than {data} and no 'head' on its card to replace.")
    derived = dataclasses.replace(card, labels=classes, kwargs={**card.kwargs, **overrides})
    task = type(task)(derived)  # the task as the new model sees its labels
    metric, higher = task.headline

    pretrained = config.pretrained and card.variant() is not None
    model = load(name, pretrained=pretrained, device=target, **overrides)
    if pretrained and rows is not None:
        _carry_head_rows(model, card, fetch(name), rows)
    model.train()
    params = _freeze(model, card, config.freeze)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    stepping_task = hasattr(task, "optimizer_groups")  # it calls its modules and steps its optimizers itself
    # DDP's hooks only fire through its own forward: a task that calls submodules (a GAN's G and D) gets its
    # gradients averaged by Steps.step instead
    train_model = model if stepping_task else distributed.wrap(model, env)
    if config.compile:
        train_model = _compiled(train_model)
    # one optimizer and schedule per named group: {"model": ...} unless the task trains modules in turn (a GAN)
    trainable = {id(p) for p in params}
    groups = task.optimizer_groups(model) if hasattr(task, "optimizer_groups") else {"model": params}
    groups = {name: [p for p in group if id(p) in trainable] for name, group in groups.items()}
    # resolve() and base_lr() above filled these from the fallbacks
    assert config.lr is not None and config.ema is not None and config.batch_size is not None
    optimizers = {name: make_optimizer(group, config, config.lr) for name, group in groups.items()}
    averaged = make_averaged(model, config.ema)
    steps_per_epoch = math.ceil(per_rank / (config.batch_size * config.accumulate))
    short = too_short(steps_per_epoch, config.epochs, per_rank, config.batch_size * config.accumulate)
    if short and env.rank == 0 and not resume:
        import logging

        logging.getLogger("zoo").warning("%s", short)
    schedulers = {
        name: make_scheduler(optimizer, config, steps_per_epoch * config.epochs)
        for name, optimizer in optimizers.items()
    }

    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "checkpoint.pt"
    position, history, best = Position(), [], (float("nan"), -1)
    if resume:
        if not checkpoint.is_file():
            raise ZooError(f"Nothing to resume: {checkpoint} does not exist.")
        state = load_checkpoint(checkpoint)
        model.load_state_dict(state["model"])
        if (averaged is not None) != ("ema" in state):
            said = "with" if "ema" in state else "without"
            raise ZooError(f"{checkpoint} was written {said} --ema; resume with the options it was started with.")
        if averaged is not None:
            averaged.load_state_dict(state["ema"])
        saved_optimizers = state.get("optimizers") or {"model": state["optimizer"]}
        saved_schedulers = state.get("schedulers") or {"model": state["scheduler"]}
        if set(saved_optimizers) != set(optimizers):
            raise ZooError(
                f"{checkpoint} holds optimizers {sorted(saved_optimizers)}, this run has "
                f"{sorted(optimizers)}; resume with the model and options it was started with."
            )
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(saved_optimizers[name])
            schedulers[name].load_state_dict(saved_schedulers[name])
        generator.set_state(state["generator"])
        history, best = json.loads(state["history"]), tuple(state["best"])
        best = (float("nan") if best[1] < 0 else best[0], best[1])
        position = (
            Position.from_json(json.loads(state["position"])) if "position" in state else Position(state["epoch"])
        )
        if env.rank > 0:  # only rank 0's generator was saved; keep the ranks' augmentations apart
            generator.manual_seed(config.seed + env.rank + 7919 * (position.epoch * 1_000_003 + position.step))

    def save() -> None:
        if env.rank == 0:
            save_checkpoint(
                checkpoint,
                {
                    "model": model.state_dict(),
                    "optimizers": {name: o.state_dict() for name, o in optimizers.items()},
                    "schedulers": {name: s.state_dict() for name, s in schedulers.items()},
                    "generator": generator.get_state(),
                    "epoch": position.epoch,
                    "position": json.dumps(dataclasses.asdict(position)),
                    "history": json.dumps(history),
                    "best": [0.0 if math.isnan(best[0]) else best[0], best[1]],
                    **({"ema": averaged.state_dict()} if averaged is not None else {}),
                },
            )

    started = time.perf_counter()
    interrupted = False
    steps = Steps(
        optimizers, schedulers, config.accumulate, env if stepping_task and env.initialized else None, config.clip_grad
    )
    loop = Loop(
        train_model,
        task,
        train_data,
        steps,
        config,
        generator,
        env,
        target,
        show_progress,
        save,
        checkpoint_every,
        (lambda: averaged.update_parameters(model)) if averaged is not None else None,
    )
    result_model = averaged.module if averaged is not None else model  # what is validated and saved
    val_data = train_data.val_data()
    with StopRequest() as stop:
        try:
            while position.epoch < config.epochs:
                row = loop.train_epoch(position, stop)
                if row is None:  # stopped at a batch boundary; the checkpoint is written
                    interrupted = True
                    break
                every = int(getattr(task, "validate_every", 1))  # validation that samples can cost minutes
                if (position.epoch + 1) % every == 0 or position.epoch + 1 == config.epochs:
                    row.update(_validate(result_model, task, val_data, config, target, env))
                row["epoch"] = position.epoch + 1
                history.append(row)
                if on_epoch is not None and env.rank == 0:
                    on_epoch(row)
                key = f"val_{metric}"
                if env.rank == 0 and key in row and _better(row[key], best[0], higher):
                    best = (row[key], position.epoch + 1)
                    save_weights(result_model, out / "best.safetensors")
                position = Position(epoch=position.epoch + 1)
                save()
                if position.epoch < config.epochs and distributed.any_true(stop.requested, env):
                    interrupted = True
                    break
        except KeyboardInterrupt:  # a second Ctrl-C: abort now; the last checkpoint on disk stands
            interrupted = True
    seconds = time.perf_counter() - started
    weights = out / f"{new_name}.safetensors"
    result = FinetuneResult(new_name, out, weights, best[1], best[0], history, seconds, interrupted, metric)
    result.skipped = list(getattr(getattr(train_data, "dataset", None), "skipped", []))
    if env.rank == 0 and not interrupted:
        # no validation split: the last epoch is the result, not a best.safetensors an earlier run left in OUT
        if best[1] < 0:
            save_weights(result_model, out / "best.safetensors")
            result.best_value, result.best_epoch = float("nan"), config.epochs
        shutil.copyfile(out / "best.safetensors", weights)
    if test_data is not None and not interrupted:  # every rank: under DDP the evaluator combines their shares
        result.test_value = _measure_test(result_model, task, test_data, out / "best.safetensors", config, target, env)
    if env.rank == 0 and not interrupted:
        _write_history(out, history, metric)
        figures = []  # the test figure first: the one to compare models by, and what zoo list shows
        validated = val_data is not None and not math.isnan(result.best_value)
        if test_data is not None:
            testing, args = train_data.testing, train_data.test_eval_args  # type: ignore[attr-defined]
            figures.append(CardFigure(metric, result.test_value, "test", False, testing, _test_how(result), args))
        if validated:
            how = f"best of {config.epochs} epochs, chosen on these images"
            figures.append(CardFigure(metric, best[0], "val", True, train_data.validation, how, train_data.eval_args))
        if register:  # with no held-out figure too (--val-split 0): the card says what it has, and loads
            write_user_card(
                new_name,
                card,
                weights,
                classes,
                {**card.kwargs, **overrides},
                figures,
                str(data),
                config,
                command or f"zoo finetune {name} --data {data} --out {out}",
                params=sum(p.numel() for p in result_model.parameters()),
            )
            from .._registry import reset_registry

            reset_registry()
    distributed.cleanup(env)
    return result


def _train_data(task: Any, data: str | Path, config: FinetuneConfig) -> Any:
    """The task's training data. An unreadable image stops the run with the decoder's message, whose hint
    (pass --skip-bad) holds only where the task can skip."""
    from .images import ImageError

    try:
        return task.train_data(data, config=config)
    except ImageError as exc:
        if getattr(task, "training_skips_bad", False):
            raise
        raise ImageError(exc.reason, hint="Remove it and run again.") from None


def _carry_head_rows(model: torch.nn.Module, card: ModelCard, weights: Path, rows: list[int]) -> None:
    """Start the new head from the rows of the card's head that belong to the data's classes: fine-tuning a good
    model on a few of its own classes (or all of them in another order) then starts where it is good, instead of
    from a fresh head, whose large first gradients also move the backbone (#19). Every head
    tensor whose first dimension is one per label (a Linear's weight and bias, a 1x1 conv's) is indexed by
    `rows`; the others keep the card's values, which load() gave them already."""
    import torch
    from safetensors import safe_open

    prefix = f"{card.head}."  # finetune() refused a card without a head before
    with safe_open(str(weights), framework="pt") as f, torch.no_grad():
        state = model.state_dict()
        for key in f.keys():
            if key.startswith(prefix) and key in state:
                source = f.get_tensor(key)
                if source.ndim and source.shape[0] == len(card.labels) and state[key].shape[0] == len(rows):
                    state[key].copy_(source[rows])


def _test_how(result: FinetuneResult) -> str:
    """How the weights a test figure measures were chosen, for the card's note: never on the test images."""
    chosen = (
        f"the weights of epoch {result.best_epoch}, chosen on the validation images"
        if not math.isnan(result.best_value)
        else f"the last epoch's weights (epoch {result.best_epoch}; no validation split)"
    )
    return f"{chosen}, measured once after training; nothing was trained, stopped or selected on these images"


def _test_data(train_data: Any, config: FinetuneConfig) -> Any:
    """The test part the task held out for ``--test-split``, or None without one. A task whose training data
    cannot say which images it held out for testing is refused: its training may have seen them."""
    if config.test_split is None:
        return None
    if not callable(getattr(train_data, "test_data", None)):
        raise ZooError(f"{type(train_data).__name__} holds out no test images; leave out --test-split for this task.")
    test_data = train_data.test_data()
    if test_data is None or len(test_data) == 0:
        raise ZooError(f"--test-split {config.test_split} held out no images; raise it or add images.")
    return test_data


def _measure_test(
    model: Any,
    task: Any,
    test_data: Any,
    best: Path,
    config: FinetuneConfig,
    device: torch.device,
    env: distributed.Env,
) -> float:
    """The headline metric of the chosen weights (`best`, the epoch validation picked) on the test images:
    measured once, after training, and never compared with anything to choose (docs/evaluation-protocol.md)."""
    from safetensors.torch import load_file

    if env.initialized:  # rank 0 wrote `best`; every rank reads it
        import torch.distributed as dist

        dist.barrier()
    model.load_state_dict(load_file(str(best), device=str(device)))
    return float(_validate(model, task, test_data, config, device, env)[f"val_{task.headline[0]}"])


def _compiled(module: torch.nn.Module) -> torch.nn.Module:
    """The training model under torch.compile (inductor), for the loop's steps only.

    Validation, checkpoints and the saved weights keep using the plain module (same parameters, clean
    state_dict keys). dynamic=False: an epoch's short last batch costs one more static compile instead of
    turning every step's graph dynamic. The first steps pay the compile (about 20 s for a ResNet-20 on 2 CPU
    cores, about 2 s from inductor's disk cache afterwards; bench/README.md).
    """
    import torch

    return cast("torch.nn.Module", torch.compile(module, dynamic=False))  # stubs: Callable; really a Module


def _validate(
    model: Any, task: Any, val_data: Any, config: FinetuneConfig, device: torch.device, env: distributed.Env
) -> dict[str, Any]:
    """The task's headline metric on the validation images, as ``val_<metric>``, with the same forward pass
    ``zoo eval`` uses (so ``zoo eval --val-split --compare`` re-measures the card's figure). Under DDP each rank
    measures every world_size-th batch and the evaluator combines them (torchmetrics' sync, the detector's
    gather)."""
    import torch

    if val_data is None or len(val_data) == 0:
        return {}
    metric = task.headline[0]
    model.eval()
    if hasattr(task, "measure"):  # a generative task samples and compares with the validation images
        from .evaluate import MeasureContext

        context = MeasureContext(
            device, config.bf16, 256, env, show_progress=False, channels_last=bool(config.channels_last)
        )
        try:
            with torch.inference_mode(), autocast(device, config.bf16):
                summary = task.measure(model, val_data, context, validation=True)
            return {
                f"val_{key}": value
                for key, value in summary.items()  # the headline and any other figure
                if isinstance(value, (int, float)) and not isinstance(value, bool)
            }
        finally:
            model.train()
    evaluator = task.evaluator()
    try:
        with torch.inference_mode(), autocast(device, config.bf16):
            for i, batch in enumerate(val_data.batches(256)):
                if i % env.world_size == env.rank:
                    evaluator.update(forward(task, model, batch, device, bool(config.channels_last)), batch)
    finally:
        model.train()
    return {f"val_{metric}": evaluator.compute()[metric]}


def _write_history(out: Path, history: list[dict[str, Any]], metric: str) -> None:
    if not history:
        return
    (out / "metrics.json").write_text(json.dumps(history, indent=2))
    keys = list(dict.fromkeys(k for row in history for k in row))
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    from .report import curves_png

    curves_png(history, out / "curves.png")
