"""Fine-tune any card on a labelled dataset; the result is a safetensors file plus a card in the user registry.

The runtime owns the loop (devices, precision, batching, schedule, checkpoints, distribution, reports);
the task plugin owns what is task-specific (augmentation, loss, metrics). Data is decoded once into a uint8
tensor (the decode cache) and augmented a whole batch at a time, which is what makes this loop several
times faster than a per-image DataLoader on a small CPU (bench/bench_finetune.py).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _config
from .._api import card as get_card
from .._api import load
from .._card import ModelCard
from ..errors import ZooError
from . import distributed
from .datasets import load_dataset
from .device import autocast, tune_malloc
from .progress import progress
from .splits import stratified_split
from .stopping import StopRequest
from .tasks import get_task

if TYPE_CHECKING:
    import torch

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune"]


@dataclass
class FinetuneConfig:
    """The recipe; every field is recorded on the resulting card."""

    epochs: int = 5
    batch_size: int = 128
    lr: float | None = None  # default: 0.05 for SGD, 1e-3 for AdamW (x batch_size / 128)
    optimizer: str = "sgd"  # sgd (Nesterov momentum 0.9; onecycle moves it 0.95-0.85-0.95) or adamw
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # onecycle or cosine (linear warm-up, then cosine)
    warmup: float = 0.15  # fraction of all steps spent warming up
    label_smoothing: float = 0.1
    augment: str = "crop-flip"
    freeze: str = "none"  # none or backbone (train the head only)
    balance: str = "none"  # none, sampler (class-balanced sampling) or loss (inverse-frequency weights)
    accumulate: int = 1
    val_split: float = 0.1
    bf16: bool = False
    channels_last: bool = True
    compile: bool = False  # torch.compile the training forward and backward (bench/README.md: when it pays)
    ema: float = 0.0  # > 0: keep an exponential moving average of the weights with this decay per step;
    #                   validation, best-epoch selection and the saved weights then use the average
    seed: int = 0
    pretrained: bool = True


@dataclass
class FinetuneResult:
    name: str
    out: Path
    weights: Path
    best_epoch: int
    best_val_top1: float
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False


@dataclass
class _Position:
    """Where a run stands, precisely enough to resume in the middle of an epoch (checkpoint.pt keeps it)."""

    epoch: int = 0  # the epoch in progress, from 0
    step: int = 0  # batches of that epoch already trained (by this rank)
    seen: int = 0  # that epoch's running totals, for its metrics row
    loss_sum: float = 0.0
    correct: int = 0
    seconds: float = 0.0


# -- sample order --------------------------------------------------------------------------------------

def _epoch_order(train_targets: torch.Tensor, balance: str, seed: int, epoch: int) -> torch.Tensor:
    """The epoch's sample order: a function of (seed, epoch) only, so every DDP rank draws the same
    permutation and takes disjoint shards of it (DistributedSampler's rule), and a resumed run can
    recompute it to skip the batches it already trained."""
    import torch

    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    n = len(train_targets)
    if balance != "sampler":
        return torch.randperm(n, generator=generator)
    counts = torch.bincount(train_targets).float()
    weights = (1.0 / counts)[train_targets]
    return torch.multinomial(weights, n, replacement=True, generator=generator)


# -- optimisation --------------------------------------------------------------------------------------

def _optimizer(params: list, config: FinetuneConfig) -> torch.optim.Optimizer:
    import torch

    scale = config.batch_size * config.accumulate / 128
    if config.optimizer == "sgd":
        lr = config.lr or 0.05 * scale
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        lr = config.lr or 1e-3 * scale
        return torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)
    raise ZooError(f"Unknown optimizer {config.optimizer!r}; use sgd or adamw.")


def _scheduler(optimizer: torch.optim.Optimizer, config: FinetuneConfig, total_steps: int):  # noqa: ANN202
    import torch

    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=max(total_steps, 1),
            pct_start=min(max(config.warmup, 0.01), 0.9), anneal_strategy="cos", div_factor=10.0,
            final_div_factor=100.0)
    if config.schedule == "cosine":
        warm = max(1, int(config.warmup * total_steps))

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total_steps - warm))))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    raise ZooError(f"Unknown schedule {config.schedule!r}; use onecycle or cosine.")


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


# -- checkpoints (our own files; read back with weights_only=True all the same) -----------------------

def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch

    tmp = path.with_name(path.name + ".partial")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ZooError(f"Cannot resume from {path}: {type(exc).__name__}: {exc}. Delete it to start over.") from None


# -- the result card ---------------------------------------------------------------------------------

def _write_user_card(name: str, card: ModelCard, weights: Path, classes: tuple[str, ...], kwargs: dict[str, Any],
                     val_top1: float, n_val: int, data: str, config: FinetuneConfig, command: str) -> Path:
    """Add (or replace) the user-registry card `name` for the fine-tuned weights, atomically and under a lock."""
    import hashlib

    import yaml
    from filelock import FileLock

    registry = _config.cache_root() / "registry.yaml"
    registry.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    entry: dict[str, Any] = {
        "task": card.task,
        "builder": card.builder,
        "kwargs": kwargs,
        "description": f"{card.name} fine-tuned on {data} ({len(classes)} classes) with zoo finetune.",
        "input": {"shape": list(card.input_shape)} if card.input_shape else None,
        "preprocess": dataclasses.asdict(card.preprocess) if card.preprocess else None,
        "labels": list(classes),
        "head": card.head,
        "params": None,
        "license": card.license,
        "source": f"zoo finetune of {card.qualified_name}",
        "weights": {"finetuned": {
            "uri": str(weights.resolve()),
            "sha256": digest,
            "size": weights.stat().st_size,
            "format": "safetensors",
            "dtype": "float32",
            "notes": "recipe: " + json.dumps(dataclasses.asdict(config), sort_keys=True),
            "metrics": [{"name": "top1", "value": round(val_top1, 2), "dataset": data, "split": "val",
                         "source": "measured", "command": command,
                         "note": f"{n_val} images held out (stratified by class) by --val-split {config.val_split} "
                                 f"(seed {config.seed}); best of {config.epochs} epochs. Measure again: zoo eval "
                                 f"{name} --data {data} --val-split {config.val_split} --seed {config.seed} "
                                 "--compare"}],
        }},
    }
    if entry["preprocess"]:
        entry["preprocess"] = {k: list(v) if isinstance(v, tuple) else v for k, v in entry["preprocess"].items()}
    entry = {k: v for k, v in entry.items() if v is not None}
    with FileLock(str(registry) + ".lock"):
        data_now = yaml.safe_load(registry.read_text()) if registry.is_file() else None
        document = data_now if isinstance(data_now, dict) else {"schema": 1, "models": {}}
        document.setdefault("models", {})
        document["models"] = document["models"] or {}
        document["models"][name] = entry
        tmp = registry.with_name(registry.name + ".partial")
        tmp.write_text("# zoo user registry: written by 'zoo finetune' (and safe to edit by hand)\n"
                       + yaml.safe_dump(document, sort_keys=False))
        os.replace(tmp, registry)
    return registry


def _check_name(name: str, source: ModelCard) -> None:
    from .._card import NAME_RE
    from .._registry import get_registry

    if not NAME_RE.match(name):
        raise ZooError(f"Bad model name {name!r}: use lower-case letters, digits, '-' and '_'.")
    for card in get_registry().by_short.get(name, []):
        if card.plugin != "user":
            raise ZooError(f"Model name {name!r} is taken by plugin {card.plugin!r}; choose another --out name.")


# -- the loop -----------------------------------------------------------------------------------------

def finetune(name: str, data: str | Path, out: str | Path, *, config: FinetuneConfig | None = None,
             resume: bool = False, device: str | None = None, register: bool = True,
             show_progress: bool = True, command: str | None = None,
             on_epoch: Callable[[dict[str, Any]], None] | None = None,
             checkpoint_every: float = 600.0) -> FinetuneResult:
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
    _check_name(new_name, card)
    task = get_task(card.task)
    env = distributed.setup()
    target = torch.device(device) if device else env.device
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed + env.rank)  # augmentation: differs per rank

    dataset = load_dataset(data, geometry=task.geometry(card))
    classes = dataset.classes
    same_labels = tuple(card.labels) == classes
    overrides = {} if same_labels else {"num_classes": len(classes)}
    if not same_labels and not card.head:
        raise ZooError(f"Model {card.name!r} has other classes than {data} and no 'head' on its card to replace.")
    train_idx, val_idx = stratified_split(dataset.targets, config.val_split, config.seed)
    if len(train_idx) == 0:
        raise ZooError(f"{data}: no training images left after --val-split {config.val_split}.")
    derived = dataclasses.replace(card, labels=classes, kwargs={**card.kwargs, **overrides})

    pretrained = config.pretrained and card.variant() is not None
    model = load(name, pretrained=pretrained, device=target, **overrides)
    model.train()
    params = _freeze(model, card, config.freeze)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_model = distributed.wrap(model, env)
    if config.compile:
        train_model = _compiled(train_model)
    optimizer = _optimizer(params, config)
    averaged = _averaged(model, config.ema)
    per_rank = math.ceil(len(train_idx) / env.world_size)
    steps_per_epoch = math.ceil(per_rank / (config.batch_size * config.accumulate))
    scheduler = _scheduler(optimizer, config, steps_per_epoch * config.epochs)
    class_weights = None
    if config.balance == "loss":
        counts = torch.bincount(dataset.targets[train_idx], minlength=len(classes)).float().clamp(min=1)
        class_weights = (counts.sum() / (len(classes) * counts)).to(target)
    elif config.balance not in ("none", "sampler"):
        raise ZooError(f"Unknown --balance {config.balance!r}; use none, sampler or loss.")

    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "checkpoint.pt"
    position, history, best = _Position(), [], (-1.0, -1)
    if resume:
        if not checkpoint.is_file():
            raise ZooError(f"Nothing to resume: {checkpoint} does not exist.")
        state = _load_checkpoint(checkpoint)
        model.load_state_dict(state["model"])
        if (averaged is not None) != ("ema" in state):
            said = "with" if "ema" in state else "without"
            raise ZooError(f"{checkpoint} was written {said} --ema; resume with the options it was started with.")
        if averaged is not None:
            averaged.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        history, best = json.loads(state["history"]), tuple(state["best"])
        position = _Position(**json.loads(state["position"])) if "position" in state else _Position(state["epoch"])
        if env.rank > 0:  # only rank 0's generator was saved; keep the ranks' augmentations apart
            generator.manual_seed(config.seed + env.rank + 7919 * (position.epoch * 1_000_003 + position.step))

    def save() -> None:
        if env.rank == 0:
            _save_checkpoint(checkpoint, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "generator": generator.get_state(), "epoch": position.epoch,
                "position": json.dumps(dataclasses.asdict(position)), "history": json.dumps(history),
                "best": list(best), **({"ema": averaged.state_dict()} if averaged is not None else {})})

    started = time.perf_counter()
    interrupted = False
    loop = _Loop(train_model, task, derived, dataset, train_idx, optimizer, scheduler, config, generator, env,
                 target, class_weights, show_progress, save, checkpoint_every,
                 (lambda: averaged.update_parameters(model)) if averaged is not None else None)
    result_model = averaged.module if averaged is not None else model  # what is validated and saved
    with StopRequest() as stop:
        try:
            while position.epoch < config.epochs:
                row = loop.train_epoch(position, stop)
                if row is None:  # stopped at a batch boundary; the checkpoint is written
                    interrupted = True
                    break
                row.update(_validate(result_model, task, derived, dataset, val_idx, config, target))
                row["epoch"] = position.epoch + 1
                history.append(row)
                if on_epoch is not None and env.rank == 0:
                    on_epoch(row)
                # ">=": on a tie (small validation sets often tie) the later, longer-trained epoch wins
                if env.rank == 0 and "val_top1" in row and row["val_top1"] >= best[0]:
                    best = (row["val_top1"], position.epoch + 1)
                    _save_weights(result_model, out / "best.safetensors")
                position = _Position(epoch=position.epoch + 1)
                save()
                if position.epoch < config.epochs and distributed.any_true(stop.requested, env):
                    interrupted = True
                    break
        except KeyboardInterrupt:  # a second Ctrl-C: abort now; the last checkpoint on disk stands
            interrupted = True
    seconds = time.perf_counter() - started
    weights = out / f"{new_name}.safetensors"
    result = FinetuneResult(new_name, out, weights, best[1], best[0], history, seconds, interrupted)
    if env.rank == 0 and not interrupted:
        if not (out / "best.safetensors").is_file():  # no validation split: the last epoch is the result
            _save_weights(result_model, out / "best.safetensors")
            result.best_val_top1, result.best_epoch = float("nan"), config.epochs
        shutil.copyfile(out / "best.safetensors", weights)
        _write_history(out, history)
        if register and val_idx.numel():
            kwargs = {**card.kwargs, **overrides}
            _write_user_card(new_name, card, weights, classes, kwargs, best[0], int(val_idx.numel()), str(data),
                             config, command or f"zoo finetune {name} --data {data} --out {out}")
            from .._registry import reset_registry

            reset_registry()
    distributed.cleanup(env)
    return result


def _compiled(module: torch.nn.Module) -> torch.nn.Module:
    """The training model under torch.compile (inductor), for the loop's steps only.

    Validation, checkpoints and the saved weights keep using the plain module (same parameters, clean
    state_dict keys). dynamic=False: an epoch's short last batch costs one more static compile instead of
    turning every step's graph dynamic. The first steps pay the compile (about 20 s for a ResNet-20 on 2 CPU
    cores, about 2 s from inductor's disk cache afterwards; bench/README.md).
    """
    import torch

    return torch.compile(module, dynamic=False)


def _averaged(model: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
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


def _batches(indices: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    return [indices[begin:begin + batch_size] for begin in range(0, len(indices), batch_size)]


@dataclass
class _Loop:
    """One training epoch at a time, resumable from any batch boundary (what the checkpoint records)."""

    model: Any
    task: Any
    card: ModelCard
    dataset: Any
    train_idx: torch.Tensor
    optimizer: Any
    scheduler: Any
    config: FinetuneConfig
    generator: torch.Generator
    env: distributed.Env
    device: torch.device
    class_weights: torch.Tensor | None
    show_progress: bool
    save: Callable[[], None]
    checkpoint_every: float
    after_step: Callable[[], None] | None = None  # e.g. update the weights' moving average (--ema)

    def train_epoch(self, position: _Position, stop: StopRequest) -> dict[str, Any] | None:
        """Train the rest of `position`'s epoch, updating `position` as it goes. None: a stop was requested,
        and a checkpoint at the last completed batch is written."""
        import torch

        config, env = self.config, self.env
        self.model.train()
        order = self.train_idx[_epoch_order(self.dataset.targets[self.train_idx], config.balance, config.seed,
                                            position.epoch)]
        batches = _batches(order[env.rank::env.world_size], config.batch_size)  # each rank its shard
        bar = progress(sum(len(b) for b in batches), f"epoch {position.epoch + 1}/{config.epochs}",
                       self.show_progress and env.rank == 0, initial=position.seen)
        start, last_save = time.perf_counter() - position.seconds, time.monotonic()
        self.optimizer.zero_grad(set_to_none=True)
        for step in range(position.step, len(batches)):
            batch = batches[step]
            images = self.task.augment(self.dataset.images[batch], config.augment, self.generator)
            targets = self.dataset.targets[batch].to(self.device)
            x = self.task.prepare(images.to(self.device, non_blocking=True), self.card)
            if config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(self.device, config.bf16):
                outputs = self.model(x)
            loss = self.task.loss(outputs, targets, label_smoothing=config.label_smoothing,
                                  class_weights=self.class_weights)
            (loss / config.accumulate).backward()
            stepped = (step + 1) % config.accumulate == 0 or step == len(batches) - 1
            if stepped:
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                if self.after_step is not None:
                    self.after_step()
                if self.scheduler.last_epoch + 1 < _total_steps(self.scheduler):
                    self.scheduler.step()
            position.step = step + 1
            position.seen += len(batch)
            position.loss_sum += float(loss.detach()) * len(batch)
            position.correct += int((outputs.argmax(1) == targets).sum())
            position.seconds = time.perf_counter() - start
            if bar is not None:
                bar.update(len(batch))
                bar.set_postfix(loss=f"{position.loss_sum / position.seen:.3f}")
            if not stepped or step == len(batches) - 1:
                continue  # a checkpoint never splits a gradient accumulation; the epoch end saves anyway
            if distributed.any_true(stop.requested, env):
                if bar is not None:
                    bar.close()
                self.save()
                return None
            if self.checkpoint_every > 0 and time.monotonic() - last_save >= self.checkpoint_every:
                self.save()
                last_save = time.monotonic()
        if bar is not None:
            bar.close()
        totals = distributed.all_sum([position.seen, position.loss_sum, position.correct], env)
        seconds = position.seconds
        return {"train_loss": round(totals[1] / max(totals[0], 1), 4),
                "train_top1": round(100.0 * totals[2] / max(totals[0], 1), 2),
                "lr": self.optimizer.param_groups[0]["lr"], "seconds": round(seconds, 1),
                "images_per_second": round(totals[0] / seconds, 1) if seconds else 0.0}


def _total_steps(scheduler) -> int:  # noqa: ANN001
    return getattr(scheduler, "total_steps", 1 << 62)


def _validate(model, task, card, dataset, val_idx, config, device) -> dict[str, Any]:  # noqa: ANN001
    import torch

    if val_idx.numel() == 0:
        return {}
    model.eval()
    metrics = task.metrics(card)
    with torch.inference_mode(), autocast(device, config.bf16):
        for batch in _batches(val_idx, 256):
            x = task.prepare(dataset.images[batch].to(device), card)
            if config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            metrics.update(model(x).float().cpu(), dataset.targets[batch])
    summary = task.summarize({k: v.cpu() for k, v in metrics.compute().items()}, card)
    model.train()
    return {"val_top1": summary["top1"]}


def _save_weights(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".partial")
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp))
    os.replace(tmp, path)


def _write_history(out: Path, history: list[dict[str, Any]]) -> None:
    if not history:
        return
    (out / "metrics.json").write_text(json.dumps(history, indent=2))
    keys = list(history[0])
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    from .report import curves_png

    curves_png(history, out / "curves.png")
