"""The training loop, the same for every task: order, shards, augmentation via the task's data, autocast,
gradient accumulation, optimizer and schedule steps, the moving average, progress, stop requests and
mid-epoch checkpoints. What one step computes is the task's ``training_step``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from .. import distributed
from ..device import autocast
from ..evaluate import model_input
from ..progress import progress
from ..stopping import StopRequest
from .checkpoint import Position
from .recipe import FinetuneConfig

if TYPE_CHECKING:
    import torch

__all__ = ["Loop", "Steps", "epoch_order"]


def epoch_order(n: int, weights: torch.Tensor | None, seed: int, epoch: int) -> torch.Tensor:
    """The epoch's sample order: a function of (seed, epoch) only, so every DDP rank draws the same
    permutation and takes disjoint shards of it (DistributedSampler's rule), and a resumed run can
    recompute it to skip the batches it already trained. With `weights`, a weighted draw with replacement
    (class-balanced sampling)."""
    import torch

    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    if weights is None:
        return torch.randperm(n, generator=generator)
    return torch.multinomial(weights, n, replacement=True, generator=generator)


def _batches(indices: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    return [indices[begin : begin + batch_size] for begin in range(0, len(indices), batch_size)]


def _total_steps(scheduler: Any) -> int:
    return getattr(scheduler, "total_steps", 1 << 62)


class Steps:
    """Named optimizers and their schedules, stepped together (``{"loss": ...}`` from the task) or one by one by
    a task that trains several modules in turn (a GAN's discriminator, then its generator): it is handed this
    object as ``step`` and calls ``step.backward(loss)`` and ``step.step("D")`` itself.

    Gradient accumulation: ``backward`` divides by ``accumulate``; ``step`` steps only on the batch that closes an
    accumulation (``stepping``), so a task writes the same code with or without ``--accumulate``.
    """

    def __init__(
        self,
        optimizers: dict[str, Any],
        schedulers: dict[str, Any],
        accumulate: int,
        env: distributed.Env | None = None,
        clip_grad: float | None = None,
    ) -> None:
        self.optimizers, self.schedulers, self.accumulate = optimizers, schedulers, accumulate
        self.clip_grad = clip_grad  # max total gradient norm per optimizer (after DDP's averaging), or None
        self.env = env  # set when the task steps its groups itself under torchrun: gradients are averaged here
        self.stepping = True
        self.batch_index = 0  # the batch's number in the whole run (epochs included): a task's own schedule
        # (a GAN's generator step every n-th discriminator step) follows it and so resumes exactly

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.accumulate).backward()

    def step(self, name: str) -> None:
        if name not in self.optimizers:
            from ...errors import ZooError

            raise ZooError(f"No optimizer named {name!r}; the task's groups are {', '.join(self.optimizers)}.")
        if not self.stepping:
            return
        optimizer, scheduler = self.optimizers[name], self.schedulers[name]
        params = [p for g in optimizer.param_groups for p in g["params"]]
        if self.env is not None:
            distributed.average_gradients(params, self.env)
        if self.clip_grad:
            import torch

            torch.nn.utils.clip_grad_norm_(params, self.clip_grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if scheduler.last_epoch + 1 < _total_steps(scheduler):
            scheduler.step()

    def step_all(self) -> None:
        for name in self.optimizers:
            self.step(name)

    def zero_grad(self) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)

    def lr(self) -> float:
        return next(iter(self.optimizers.values())).param_groups[0]["lr"]


@dataclass
class Loop:
    """One training epoch at a time, resumable from any batch boundary (what the checkpoint records)."""

    model: Any
    task: Any
    data: Any  # the task's TrainData
    steps: Steps
    config: FinetuneConfig
    generator: torch.Generator
    env: distributed.Env
    device: torch.device
    show_progress: bool
    save: Callable[[], None]
    checkpoint_every: float
    after_step: Callable[[], None] | None = None  # e.g. update the weights' moving average (--ema)

    def train_epoch(self, position: Position, stop: StopRequest) -> dict[str, Any] | None:
        """Train the rest of `position`'s epoch, updating `position` as it goes. None: a stop was requested,
        and a checkpoint at the last completed batch is written."""
        config, env = self.config, self.env
        self.model.train()
        order = epoch_order(len(self.data), self.data.sample_weights(config), config.seed, position.epoch)
        # each rank its shard; resolve() filled the batch size
        batches = _batches(order[env.rank :: env.world_size], cast(int, config.batch_size))
        bar = progress(
            sum(len(b) for b in batches),
            f"epoch {position.epoch + 1}/{config.epochs}",
            self.show_progress and env.rank == 0,
            initial=position.seen,
        )
        start, last_save = time.perf_counter() - position.seconds, time.monotonic()
        self.steps.zero_grad()
        stepping_task = hasattr(self.task, "optimizer_groups")  # it steps its named optimizers itself
        for step in range(position.step, len(batches)):
            batch = self.data.train_batch(batches[step], self.generator, config)
            x = model_input(self.task, batch, self.device, bool(config.channels_last))  # resolve() filled it
            stepped = (step + 1) % config.accumulate == 0 or step == len(batches) - 1
            self.steps.stepping = stepped
            self.steps.batch_index = position.epoch * len(batches) + step
            with autocast(self.device, config.bf16):
                if stepping_task:
                    out = self.task.training_step(self.model, x, batch, config, step=self.steps)
                else:
                    out = self.task.training_step(self.model, x, batch, config)
            loss = out.pop("loss")
            if not stepping_task:
                self.steps.backward(loss)
                self.steps.step_all()
            if stepped:
                # a loss's gradients that reached another group's parameters (the generator's loss in the
                # discriminator) are dropped here, not carried into the next batch: a resumed run, which starts
                # with no gradients, then trains exactly like a straight one
                self.steps.zero_grad()
                if self.after_step is not None:
                    self.after_step()
            position.step = step + 1
            position.seen += len(batch)
            position.loss_sum += float(loss.detach()) * len(batch)
            for key, value in out.items():
                position.sums[key] = position.sums.get(key, 0.0) + float(value)
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
        keys = sorted(position.sums)
        totals = distributed.all_sum([position.seen, position.loss_sum, *(position.sums[k] for k in keys)], env)
        seen = max(totals[0], 1)
        seconds = position.seconds
        return {
            "train_loss": round(totals[1] / seen, 4),
            **self.task.train_metrics(dict(zip(keys, totals[2:], strict=True)), seen),
            "lr": self.steps.lr(),
            "seconds": round(seconds, 1),
            "images_per_second": round(totals[0] / seconds, 1) if seconds else 0.0,
        }
