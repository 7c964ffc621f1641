"""The fine-tuning recipe: one dataclass whose fields are the CLI options, the card's record and the defaults.

Every field carries its help text (and its choices) in ``metadata``, so ``zoo finetune``'s options are generated
from this class instead of repeating its defaults by hand. Fields that only some tasks use (``label_smoothing``,
``balance``) are checked by the task: a detector refuses ``--balance sampler`` rather than ignoring it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, cast

from ...errors import ZooError

if TYPE_CHECKING:
    import torch

__all__ = [
    "MIN_STEPS",
    "FinetuneConfig",
    "base_lr",
    "fit_batch_size",
    "make_optimizer",
    "make_scheduler",
    "recipe_fields",
    "resolve",
    "too_short",
]


def _opt(help: str, choices: tuple[str, ...] | None = None, flag: str | None = None) -> dict[str, Any]:
    return {"help": help, "choices": choices, "flag": flag}


@dataclass
class FinetuneConfig:
    """The recipe; every field is recorded on the resulting card."""

    epochs: int = field(default=5, metadata=_opt("Passes over the training images."))
    batch_size: int | None = field(
        default=None,
        metadata=_opt(
            "Images per optimizer step, per process under torchrun (default: the task's, classifiers 128, "
            "detectors 16; smaller for small datasets, about 10 steps per epoch and never below 16)."
        ),
    )
    lr: float | None = field(
        default=None,
        metadata=_opt(
            "Peak learning rate (default: the task's per 128 images, e.g. classifiers 0.05 SGD / 1e-3 AdamW)."
        ),
    )
    optimizer: str | None = field(
        default=None,
        metadata=_opt(
            "sgd: Nesterov momentum 0.9 (onecycle cycles it 0.95-0.85-0.95); adamw; adam: betas (0.5, 0.999), the GAN "
            "setting (default: the task's; classifiers and detectors sgd, GANs adam).",
            ("sgd", "adamw", "adam"),
        ),
    )
    weight_decay: float | None = field(
        default=None, metadata=_opt("L2 weight decay (default: the task's, 5e-4 for classifiers).")
    )
    schedule: str | None = field(
        default=None,
        metadata=_opt(
            "onecycle, cosine (linear warm-up, then cosine) or constant (linear warm-up, then constant; default: the "
            "task's, onecycle for classifiers).",
            ("onecycle", "cosine", "constant"),
        ),
    )
    warmup: float | None = field(
        default=None, metadata=_opt("Fraction of steps spent warming up (default: the task's, 0.15 for classifiers).")
    )
    label_smoothing: float = field(default=0.1, metadata=_opt("Classifiers: label smoothing of the loss."))
    augment: str | None = field(
        default=None, metadata=_opt("Training augmentation preset; each task has its own (default: the task's).")
    )
    freeze: str = field(default="none", metadata=_opt("backbone: train only the card's head.", ("none", "backbone")))
    balance: str = field(
        default="none",
        metadata=_opt(
            "Classifiers, for imbalanced data: class-balanced sampling or inverse-frequency loss weights.",
            ("none", "sampler", "loss"),
        ),
    )
    accumulate: int = field(default=1, metadata=_opt("Gradient accumulation steps."))
    clip_grad: float | None = field(
        default=None,
        metadata=_opt(
            "Clip each optimizer's gradients to this total norm before it steps (default: the task's; none for "
            "classifiers and detectors)."
        ),
    )
    val_split: float = field(
        default=0.1,
        metadata=_opt(
            "Fraction held out for validation (per class for classifiers, by image for detectors; a dataset with its "
            "own 'val' split uses that)."
        ),
    )
    test_split: float | None = field(
        default=None,
        metadata=_opt(
            "Also hold out this fraction as a test split (per class for classifiers, by image for detectors), drawn "
            "after the validation split from what it left: never trained, stopped or selected on; the chosen weights "
            "are measured on it once at the end and the card carries both figures (docs/evaluation-protocol.md)."
        ),
    )
    bf16: bool = field(default=False, metadata=_opt("bf16 autocast (fast on GPUs and CPUs with native bf16)."))
    channels_last: bool | None = field(
        default=None,
        metadata=_opt(
            "Train in the channels_last memory format, or not (default: the task's: on, except for diffusion models, "
            "whose GroupNorm backward is ~3x slower in channels_last on a CPU).",
            flag="--channels-last/--no-channels-last",
        ),
    )
    compile: bool = field(
        default=False,
        metadata=_opt(
            "torch.compile the training step: faster steps after a one-off compile (needs a C++ compiler on CPU)."
        ),
    )
    ema: float | None = field(
        default=None,
        metadata=_opt(
            "Keep a moving average of the weights with this decay per step (e.g. 0.999) and validate and save it "
            "instead (0: off; default: the task's, on at 0.999 for diffusion models, off for the others)."
        ),
    )
    seed: int = field(default=0, metadata=_opt("Seed of the split, the sample order and the augmentation."))
    skip_bad: bool = field(
        default=False,
        metadata=_opt(
            "Skip unreadable images (counted and named) instead of stopping; 'zoo eval --skip-bad' then re-creates "
            "the same splits."
        ),
    )
    pretrained: bool = field(
        default=True, metadata=_opt("Start from random initialisation instead of the card's weights.", flag="--scratch")
    )


#: What a field left unset becomes when the task has no default of its own either.
FALLBACKS = {
    "batch_size": 128,
    "optimizer": "sgd",
    "weight_decay": 5e-4,
    "schedule": "onecycle",
    "warmup": 0.15,
    "ema": 0.0,
    "channels_last": True,
}


def resolve(config: FinetuneConfig, task: Any) -> FinetuneConfig:
    """Fill the fields left to the task (None) from its ``recipe_defaults``: what a good default is differs by task
    (a detector fine-tunes with far smaller batches than a CIFAR classifier). The card records the result."""
    from dataclasses import replace

    defaults = {**FALLBACKS, **getattr(task, "recipe_defaults", {})}
    filled = {
        k: v for k, v in defaults.items() if k in FinetuneConfig.__dataclass_fields__ and getattr(config, k) is None
    }
    return replace(config, **filled)


def fit_batch_size(batch_size: int, images: int) -> int:
    """The task's default batch size, made smaller for a small dataset so that an epoch has about ten optimizer
    steps: 108 images at the classifiers' 128 were one step per epoch, and five epochs of that left a new head
    where it started (#19). Powers of two, never below 16 (BatchNorm's batch statistics get noisy under that)
    and never above the task's default. Only a batch size the user left unset is sized; the learning rate
    follows it (``base_lr`` scales it with the images per step)."""
    target = max(16, 1 << max(0, (images // 10).bit_length() - 1))
    return min(batch_size, target)


#: Fewest optimizer steps a fine-tuning run should make; fewer gets a warning. Measured on the docs' two-class
#: example (resnet20-cifar, a new head, 36 training images in batches of 16, 3 steps per epoch): after 6 steps
#: train top-1 was 19%, after 15 steps 89%, and from 18 steps on 94-100%. 30 leaves room for data harder than
#: that toy: below it a run has most likely not learned, and its card would only say so in a low figure.
MIN_STEPS = 30


def too_short(steps_per_epoch: int, epochs: int, images: int, batch_size: int) -> str | None:
    """A one-line warning when the run makes fewer than MIN_STEPS optimizer steps, saying how many epochs would
    make enough; None when it makes enough."""
    steps = steps_per_epoch * epochs
    if steps >= MIN_STEPS:
        return None
    needed = math.ceil(MIN_STEPS / max(steps_per_epoch, 1))
    return (
        f"warning: this run makes only {steps} optimizer steps ({images} training images in batches of "
        f"{batch_size}, {epochs} epochs): likely too few to learn; pass --epochs {needed} (or more)."
    )


def base_lr(config: FinetuneConfig, task: Any) -> float:
    """The peak learning rate: the recipe's, or the task's per-128-images rate for the optimizer, scaled linearly
    with the images per step."""
    if config.lr:
        return config.lr
    rates = {"sgd": 0.05, "adamw": 1e-3, "adam": 4e-4, **getattr(task, "base_lr", {})}
    return rates[config.optimizer] * config.batch_size * config.accumulate / 128


def recipe_fields() -> list[Any]:
    """The recipe's fields, in order, for generating CLI options."""
    return list(fields(FinetuneConfig))


def make_optimizer(params: list, config: FinetuneConfig, lr: float) -> torch.optim.Optimizer:
    import torch

    weight_decay = cast(float, config.weight_decay)  # resolve() filled it
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999), weight_decay=weight_decay)
    raise ZooError(f"Unknown optimizer {config.optimizer!r}; use sgd, adamw or adam.")


def make_scheduler(optimizer: torch.optim.Optimizer, config: FinetuneConfig, total_steps: int):  # noqa: ANN201
    import torch

    warmup = cast(float, config.warmup)  # resolve() filled it
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[g["lr"] for g in optimizer.param_groups],
            total_steps=max(total_steps, 1),
            pct_start=min(max(warmup, 0.01), 0.9),
            anneal_strategy="cos",
            div_factor=10.0,
            final_div_factor=100.0,
        )
    if config.schedule == "cosine":
        warm = max(1, int(warmup * total_steps))

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total_steps - warm))))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if config.schedule == "constant":
        warm = max(1, int(warmup * total_steps))
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warm))
    raise ZooError(f"Unknown schedule {config.schedule!r}; use onecycle, cosine or constant.")
