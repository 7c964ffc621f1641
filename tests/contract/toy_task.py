"""A toy task, shaped like a third-party plugin: "brightness", a regression of each image's mean brightness.

Every image is labelled by itself (its target is its own mean brightness, 0-100), so any folder of images is a
dataset: the task's one data format is a folder of image files. A tiny conv net regresses the figure; the
headline is ``("mae", False)``, lower is better, which exercises the runtime's best-epoch direction.

A real plugin splits this file in two: the entry-point module (``ToyPlugin``'s hooks, importing the standard
library and zoo only, since it runs on every ``zoo list``) and a module with the task and the model, imported
only when a model runs. Here both live in one test module, and the plugin is an object registered inline
(:func:`installed`) instead of through an installed distribution's entry point.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import torch
from torch import nn

import zoo
from zoo._card import ModelCard
from zoo.errors import ZooError
from zoo.runtime.images import IMAGE_SUFFIXES, ImageError, read_image
from zoo.runtime.splits import random_split
from zoo.runtime.tasks import Batch

__all__ = [
    "BrightnessNet",
    "BrightnessTask",
    "EvalOnlyBrightnessTask",
    "FractionBrightnessTask",
    "ToyGenerator",
    "ToyGeneratorTask",
    "ToyPlugin",
    "UnconditionalToyGeneratorTask",
    "generator_cards",
    "installed",
    "toy_cards",
]

TASK = "brightness"
MODEL = "brightness-tiny"
SIZE = 16  # the model's input: 3 x 16 x 16
AUGMENT_PRESETS = ("none", "flip")  # a mirror image has the same brightness


class BrightnessNet(nn.Module):
    """Conv-BN-ReLU, a strided conv, global average pooling and a linear head: brightness as a fraction (0..1)."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)


def build_brightness_net(width: int = 8) -> BrightnessNet:
    return BrightnessNet(width)


# -- data ---------------------------------------------------------------------------------------------------


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as F

    if tuple(image.shape[-2:]) == size:
        return image
    return F.resize(image, list(size), antialias=True)


def brightness(image: torch.Tensor) -> float:
    """The target: the mean of every channel of every pixel of the original image, 0 (black) to 100 (white)."""
    return float(image.double().mean() / 255.0 * 100.0)


def read_folder(source: str | Path, size: tuple[int, int], skip_bad: bool = False) -> BrightnessData:
    """Every image file of a folder (sorted by name, not recursive), resized to the model's input."""
    root = Path(source)
    if not root.is_dir():
        raise ZooError(f"{source}: brightness data is a folder of images; this is not a folder.")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ZooError(f"{source}: no images in this folder.")
    images, targets, names, skipped = [], [], [], []
    for path in files:
        try:
            image = read_image(path)
        except ImageError:
            if not skip_bad:
                raise
            skipped.append(path.name)
            continue
        images.append(_resize(image, size))
        targets.append(brightness(image))
        names.append(path.name)
    return BrightnessData(str(source), torch.stack(images), torch.tensor(targets), names, skipped)


class BrightnessData:
    """The task's EvalData: decoded images, their targets, batches in a fixed order."""

    def __init__(
        self, source: str, images: torch.Tensor, targets: torch.Tensor, names: list[str], skipped: list[str]
    ) -> None:
        self.source, self.images, self.targets, self.names = source, images, targets, names
        self.skipped, self.from_cache = skipped, False

    def subset(self, keep: torch.Tensor) -> BrightnessData:
        return BrightnessData(
            self.source, self.images[keep], self.targets[keep], [self.names[i] for i in keep.tolist()], self.skipped
        )

    def __len__(self) -> int:
        return len(self.targets)

    def batches(self, batch_size: int) -> Iterator[Batch]:
        for begin in range(0, len(self), batch_size):
            end = begin + batch_size
            yield Batch(
                self.images[begin:end], self.targets[begin:end], [{"image": name} for name in self.names[begin:end]]
            )


class BrightnessTrainData:
    """The task's TrainData: the training images (flipped at random, from the loop's generator) and the
    validation images, a seeded random ``--val-split`` that ``zoo eval --val-split F --seed S`` re-creates."""

    def __init__(self, data: BrightnessData, config: Any) -> None:
        if config.augment not in AUGMENT_PRESETS:
            raise ZooError(
                f"Unknown augmentation preset {config.augment!r} for {TASK} models; use one of: "
                f"{', '.join(AUGMENT_PRESETS)}."
            )
        if config.balance != "none":
            raise ZooError(f"--balance {config.balance} is for classifiers; {TASK} models have no classes.")
        train, val = random_split(len(data), config.val_split, config.seed)
        if len(train) == 0:
            raise ZooError(f"{data.source}: no training images left after --val-split {config.val_split}.")
        self.train, self.val = data.subset(train), data.subset(val)
        self.classes: tuple[str, ...] = ()  # a regression: no labels on the card
        self.validation = f"{len(val)} images held out at random by --val-split {config.val_split} (seed {config.seed})"
        self.eval_args = f"--val-split {config.val_split} --seed {config.seed}"

    def __len__(self) -> int:
        return len(self.train)

    def sample_weights(self, config: Any) -> None:
        return None

    def train_batch(self, indices: torch.Tensor, generator: torch.Generator, config: Any) -> Batch:
        images = self.train.images[indices]
        if config.augment == "flip":
            flip = torch.rand(len(indices), generator=generator) < 0.5
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)
        return Batch(images, self.train.targets[indices])

    def val_data(self) -> BrightnessData | None:
        return self.val if len(self.val) else None


class BrightnessEvaluator:
    """Mean absolute and root-mean-square error, in the task's brightness units (torchmetrics: DDP-aware)."""

    def __init__(self, scale: float) -> None:
        from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

        self.metrics = MetricCollection({"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False)})
        self.scale, self.images = scale, 0

    def update(self, outputs: torch.Tensor, batch: Batch) -> None:
        self.metrics.update(outputs.float().cpu(), batch.targets.float() * (self.scale / 100.0))
        self.images += len(batch)

    def compute(self) -> dict[str, Any]:
        values = {k: round(float(v), 4) for k, v in self.metrics.compute().items()}
        return {"mae": values["mae"], "rmse": values["rmse"], "images": self.images}


# -- the task -----------------------------------------------------------------------------------------------


class BrightnessTask:
    """The contract (zoo.runtime.tasks.Task) for brightness regressors."""

    verbs = frozenset({"predict", "eval", "finetune"})
    headline = ("mae", False)  # lower is better
    tolerance = 0.1  # brightness points: bf16 vs fp32 moved the MAE by 0.024 on the tests' data; cards keep 0.01
    scale = 100.0  # brightness as reported: 0 (black) to 100 (white)

    recipe_defaults = {"batch_size": 8, "augment": "flip"}
    base_lr = {"sgd": 0.4, "adamw": 0.02}  # per 128 images (scaled linearly with the batch)

    def __init__(self, card: ModelCard) -> None:
        self.card = card
        shape = card.input_shape or (3, SIZE, SIZE)
        self.size = (int(shape[1]), int(shape[2]))

    @classmethod
    def options(cls, verb: str) -> list[click.Option]:
        return []

    # data
    def eval_data(
        self,
        source: str | Path,
        *,
        split: str | None = None,
        val_split: float | None = None,
        seed: int = 0,
        cache: bool = True,
        skip_bad: bool = False,
    ) -> BrightnessData:
        if split is not None:
            raise ZooError(f"--split {split!r}: a folder of images has no named splits; use --val-split.")
        data = read_folder(source, self.size, skip_bad)
        return data if val_split is None else data.subset(random_split(len(data), val_split, seed)[1])

    def predict_batch(self, images: list[torch.Tensor], names: list[str]) -> Batch:
        return Batch(torch.stack([_resize(image, self.size) for image in images]), meta=[{"image": n} for n in names])

    # around the forward pass
    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() / 255.0

    def postprocess(self, raw: torch.Tensor, batch: Batch, **options: Any) -> torch.Tensor:
        return raw.float() * self.scale

    # results
    def evaluator(self, **options: Any) -> BrightnessEvaluator:
        return BrightnessEvaluator(self.scale)

    def records(self, outputs: torch.Tensor, batch: Batch, **options: Any) -> list[dict[str, Any]]:
        return [{"brightness": round(float(v), 2)} for v in outputs]

    def render_prediction(self, record: dict[str, Any]) -> str:
        return f"brightness {record['brightness']:.1f}"

    def save_prediction(self, record: dict[str, Any], image: torch.Tensor, directory: Path) -> list[Path]:
        return []

    def render_eval(self, summary: dict[str, Any]) -> list[str]:
        return [f"MAE {summary['mae']:.2f}  RMSE {summary['rmse']:.2f} (brightness points, 0-100)"]

    def write_report(self, record: dict[str, Any], directory: Path) -> list[Path]:
        return []  # the runtime's metrics.json says it all

    # training
    def train_data(self, source: str | Path, *, config: Any) -> BrightnessTrainData:
        return BrightnessTrainData(read_folder(source, self.size), config)

    def model_overrides(self, classes: tuple[str, ...]) -> dict[str, Any]:
        return {}  # one output whatever the data: the head is never re-made

    def training_step(self, model: nn.Module, x: torch.Tensor, batch: Batch, config: Any) -> dict[str, Any]:
        predicted = model(x).float()
        targets = batch.targets.to(x.device).float() / 100.0
        loss = nn.functional.mse_loss(predicted, targets)
        return {"loss": loss, "abs_error": (predicted.detach() - targets).abs().sum() * 100.0}

    def train_metrics(self, sums: dict[str, float], seen: int) -> dict[str, float]:
        return {"train_mae": round(sums.get("abs_error", 0.0) / max(seen, 1), 4)}


class TwoOptimizerBrightnessTask(BrightnessTask):
    """The same task trained like a GAN is: two named parameter groups, each with its own optimizer and schedule,
    stepped one after the other by the task (the body on one loss, then the head on a fresh forward)."""

    def optimizer_groups(self, model: nn.Module) -> dict[str, list[nn.Parameter]]:
        head = list(model.head.parameters())
        return {"body": [p for p in model.parameters() if all(p is not h for h in head)], "head": head}

    def training_step(
        self, model: nn.Module, x: torch.Tensor, batch: Batch, config: Any, *, step: Any
    ) -> dict[str, Any]:
        targets = batch.targets.to(x.device).float() / 100.0
        body_loss = nn.functional.mse_loss(model(x).float(), targets)
        step.backward(body_loss)
        step.step("body")
        head_loss = nn.functional.mse_loss(model(x).float(), targets)
        step.backward(head_loss)
        step.step("head")
        return {"loss": head_loss.detach()}


class EvalOnlyBrightnessTask(BrightnessTask):
    """The same task, supporting ``zoo eval`` only: every other verb must be refused in one line."""

    verbs = frozenset({"eval"})


class FractionBrightnessTask(BrightnessTask):
    """The same task reporting brightness as a fraction (0..1), with a tolerance of a 20th of a point (fp32 measures
    the same figure again exactly; bf16 moved it by a 40th)."""

    tolerance = 0.0005
    scale = 1.0


# -- a generative task: "toy-gan", noise (and a class) to images -------------------------------------------

GENERATOR_TASK = "toy-gan"
GENERATOR = "toy-gan-tiny"
COLOURS = ("red", "green", "blue")  # the conditional toy's classes
GENERATED = 16  # its images: 3 x 16 x 16


class ToyGenerator(nn.Module):
    """A DCGAN in miniature: a linear layer from noise (times a class embedding) to 4 x 4 maps, then two
    upsampling stages to 3 x 16 x 16, tanh. Its linear and conv layers give slightly different floats for a row
    in batches of other sizes (the reason the runtime samples in fixed micro-batches), so the determinism checks
    in cycle.py can fail."""

    def __init__(self, z_dim: int = 16, num_classes: int = 3, width: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_classes, z_dim) if num_classes else None
        self.width = width
        self.fc = nn.Linear(z_dim, width * 4 * 4)
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(width, 3, 3, padding=1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if labels is None:
                raise ValueError("a class-conditional generator needs labels")
            z = z * self.embed(labels)
        return self.up(torch.relu(self.fc(z)).view(-1, self.width, 4, 4))


def build_toy_generator(z_dim: int = 16, num_classes: int = 3, width: int = 16) -> ToyGenerator:
    return ToyGenerator(z_dim, num_classes, width)


class ToyGeneratorTask:
    """The contract for a sampling-only task: ``verbs = {"sample"}``, class-conditional over the card's labels,
    with one option of its own (``--truncation``, the usual GAN trick: scale the noise down)."""

    verbs = frozenset({"sample"})
    headline = ("fid", False)  # what a generative task would report; this one measures nothing
    tolerance = 1.0
    conditional = True

    def __init__(self, card: ModelCard) -> None:
        self.card = card
        self.z_dim = int(card.kwargs.get("z_dim", 16))

    @classmethod
    def options(cls, verb: str) -> list[click.Option]:
        if verb != "sample":
            return []
        return [
            click.Option(
                ["--truncation"],
                type=click.FloatRange(0, 1, min_open=True),
                default=1.0,
                show_default=True,
                help="Scale the noise by this (lower: less varied samples).",
            )
        ]

    def sample(
        self, model: nn.Module, noise: Any, labels: torch.Tensor | None, truncation: float = 1.0
    ) -> torch.Tensor:
        z = noise.randn(self.z_dim) * truncation
        return (model(z, labels) + 1) / 2


class UnconditionalToyGeneratorTask(ToyGeneratorTask):
    """The same task without classes: ``--class`` is refused."""

    conditional = False


def generator_cards(
    directory: Path, name: str = GENERATOR, task: str = GENERATOR_TASK, *, conditional: bool = True, seed: int = 0
) -> dict[str, Any]:
    """A registry mapping with one generator card (seeded random weights saved in `directory`, pinned by
    sha256); a conditional one lists :data:`COLOURS` as its labels."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    kwargs = {"z_dim": 16, "num_classes": len(COLOURS) if conditional else 0, "width": 16}
    weights = directory / f"{name}.safetensors"
    save_file(build_toy_generator(**kwargs).state_dict(), str(weights))
    card: dict[str, Any] = {
        "task": task,
        "builder": f"{__name__}:build_toy_generator",
        "kwargs": kwargs,
        "input": {"shape": [3, GENERATED, GENERATED]},
        "description": "A toy image generator (random init) for the task-contract tests.",
        "weights": {
            "random-init": {
                "uri": str(weights.resolve()),
                "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
                "size": weights.stat().st_size,
                "format": "safetensors",
            }
        },
    }
    if conditional:
        card["labels"] = list(COLOURS)
    return {"schema": 1, "models": {name: card}}


# -- the plugin ---------------------------------------------------------------------------------------------


def toy_cards(directory: Path, name: str = MODEL, task: str = TASK, seed: int = 0) -> dict[str, Any]:
    """A registry mapping with one card whose weights are a seeded random init saved as safetensors in
    `directory` (test-only data), pinned by size and full sha256 like any shipped weights."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    weights = directory / f"{name}.safetensors"
    save_file(build_brightness_net().state_dict(), str(weights))
    return {
        "schema": 1,
        "models": {
            name: {
                "task": task,
                "builder": f"{__name__}:build_brightness_net",
                "kwargs": {"width": 8},
                "input": {"shape": [3, SIZE, SIZE]},
                "head": "head",
                "description": "A toy brightness regressor (random init) for the task-contract tests.",
                "weights": {
                    "random-init": {
                        "uri": str(weights.resolve()),
                        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
                        "size": weights.stat().st_size,
                        "format": "safetensors",
                    }
                },
            }
        },
    }


class ToyPlugin:
    """What a third party's entry-point module holds: a task and its cards, by import string and data."""

    def __init__(self, cards: dict[str, Any], task: str = TASK, target: str = f"{__name__}:BrightnessTask") -> None:
        self.cards, self.task, self.target = cards, task, target

    @zoo.hookimpl
    def register_tasks(self, register):  # noqa: ANN001, ANN201 - see zoo.hookspecs
        register(self.task, self.target)

    @zoo.hookimpl
    def register_models(self, register):  # noqa: ANN001, ANN201 - see zoo.hookspecs
        register(self.cards)


@contextlib.contextmanager
def installed(*plugins: tuple[str, object]) -> Iterator[None]:
    """Install (name, plugin) pairs as if they came through entry points, for the duration of the block.

    zoo forgets its plugin set whenever the registry is reset, and ``zoo finetune`` resets it after writing the
    new card, so registering an object into one ``Plugins`` set (``reset_plugins(plugins)``) would not outlive
    the first fine-tuning run: every set zoo loads registers these plugins after its entry points instead.
    """
    import pytest

    from zoo._plugins import Plugins
    from zoo._registry import reset_registry
    from zoo.runtime.tasks import reset_tasks

    real = Plugins.load_entry_points

    def load_entry_points(self: Plugins) -> None:
        real(self)
        for name, plugin in plugins:
            if name not in self.infos:
                self.register(plugin, name)

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Plugins, "load_entry_points", load_entry_points)
            reset_registry()
            reset_tasks()
            yield
    finally:
        reset_registry()
        reset_tasks()
