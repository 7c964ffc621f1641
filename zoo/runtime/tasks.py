"""The task contract: what a plugin tells the task-agnostic runtime about its kind of model.

A task plugin registers a class per task name (``register("detector", "zoo_detector.task:DetectorTask")``);
the runtime constructs it per card, ``TaskClass(card)``, and drives it through the same loops for every task.
The task owns everything task-shaped: how its data is read and batched, how a uint8 batch becomes the model's
input, what the raw output means, what is measured, how results are written and shown, which CLI verbs it
supports and its own CLI options. The runtime owns devices, precision, batching loops, inference mode, memory
format, progress, comparisons with the card, and reports on disk (docs/architecture.md, "The task contract").
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

from ..errors import ZooError

if TYPE_CHECKING:
    import click
    import torch

    from .._card import ModelCard

__all__ = [
    "VERBS",
    "Batch",
    "EvalData",
    "Evaluator",
    "Exportable",
    "Task",
    "TrainData",
    "check_test_split",
    "get_task",
    "supports_test_split",
    "task_config",
    "task_for",
    "unwrap",
]

#: The runtime's verbs, as the CLI names them (``zoo predict``, ``zoo eval``, ``zoo finetune``, ``zoo sample``).
VERBS = ("predict", "eval", "finetune", "sample")


@dataclass
class Batch:
    """A batch as the runtime moves it: images in, whatever the task needs to score or label them beside.

    ``images`` is a uint8 N x C x H x W tensor when the task's geometry makes every image the same size, or a
    list of C x H x W tensors when the model takes variable sizes. ``targets`` is the task's business (class
    indices, lists of box dicts, nothing). ``meta`` holds per-image facts the task needs afterwards (original
    sizes, file names, image ids), ``extras`` batch-wide ones.
    """

    images: torch.Tensor | list[torch.Tensor]
    targets: Any = None
    meta: list[dict[str, Any]] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)  # batch-wide facts for the task (e.g. class weights)

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class Exportable:
    """What ``zoo export`` writes for one model: the task's answer to ``export_module(model)``.

    ``module`` maps the task's prepared input (``prepare``'s output: a float N x C x H x W batch) to raw outputs,
    one tensor or a tuple of them, with no Python control flow that depends on the data, so ``torch.export`` can
    capture it (often the model itself). ``outputs`` names those tensors in the exported graph; ``input`` says in
    one line what the graph expects (channel order, resizing, scaling, normalisation), since the preprocessing
    stays outside it; ``leaves_out`` says in one line what the task does after the network that the graph does
    not do (a detector's decoding and NMS), or None when the outputs are the task's whole answer.
    """

    module: torch.nn.Module
    outputs: tuple[str, ...] = ("output",)
    input: str = ""
    leaves_out: str | None = None


class EvalData(Protocol):
    """A dataset ready for evaluation: batches in a fixed order (the same figure on every run)."""

    source: str
    skipped: list[str]  # files that could not be decoded (with --skip-bad)
    from_cache: bool  # decoded images came from the decode cache

    def __len__(self) -> int: ...

    def batches(self, batch_size: int) -> Iterator[Batch]: ...


class Evaluator(Protocol):
    """Accumulates a task's metrics over batches; torchmetrics-backed ones are DDP-aware."""

    def update(self, outputs: Any, batch: Batch) -> None: ...

    def compute(self) -> dict[str, Any]:
        """A JSON-able summary, headline metric first (the key named by the task's ``headline``)."""


class Task(Protocol):
    """What a task plugin's class provides; constructed per card: ``TaskClass(card)``.

    Class attributes (read without building a model):
      verbs: the CLI verbs the task supports, a subset of :data:`VERBS`.
      headline: (summary key, higher is better) — what ``--compare``, best-epoch choice and ``zoo list`` use.
      tolerance: how far a re-measured headline may lie from the card's figure and still reproduce it.
    """

    verbs: ClassVar[frozenset[str]]
    headline: ClassVar[tuple[str, bool]]
    tolerance: ClassVar[float]

    def __init__(self, card: ModelCard) -> None: ...

    @classmethod
    def options(cls, verb: str) -> list[click.Option]:
        """The task's own CLI options for `verb` (e.g. ``--topk`` or ``--conf``); parsed by the runtime's CLI and
        passed to the task as keyword arguments."""

    # -- data ---------------------------------------------------------------------------------------
    def eval_data(
        self, source: str | Path, *, split: str | None, val_split: float | None, seed: int, cache: bool, skip_bad: bool
    ) -> EvalData:
        """Read a labelled dataset in the task's formats; `split` names the dataset's own split (e.g. "test"),
        `val_split`/`seed` re-create the validation part ``zoo finetune`` held out.

        Optional: a task that also takes a ``test_split: float | None`` keyword supports ``--test-split`` (with it,
        only the test part ``zoo finetune --val-split V --test-split F --seed S`` held out is read; see
        zoo.runtime.splits and :func:`supports_test_split`). The runtime passes it only when one is asked for, so
        tasks written before it keep working and refuse it in one line."""

    def predict_batch(self, images: list[torch.Tensor], names: list[str]) -> Batch:
        """Decoded RGB uint8 images (any size) -> a batch in the model's geometry, with what is needed to map
        outputs back onto the original images."""

    # -- the forward pass around the model (the runtime calls the model in between) ---------------------
    def prepare(self, images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        """A uint8 batch already on the device -> the model's input (normalisation)."""

    def postprocess(self, raw: Any, batch: Batch, **options: Any) -> Any:
        """The model's raw output -> the task's outputs for this batch (logits, boxes in original pixels...)."""

    # Optional: infer(model, x, **options) -> raw — how the task calls its network on a prepared batch, for a task
    #     whose options change that (test-time augmentation: the classifier's --tta flip averages the logits of the
    #     image and its mirror); without it the runtime calls model(x). eval and predict go through it.

    # -- results ----------------------------------------------------------------------------------------
    def evaluator(self, **options: Any) -> Evaluator: ...

    def records(self, outputs: Any, batch: Batch, **options: Any) -> list[dict[str, Any]]:
        """Per-image prediction records (JSON-able)."""

    def render_prediction(self, record: dict[str, Any]) -> str:
        """One line of CLI text for one prediction record."""

    def save_prediction(self, record: dict[str, Any], image: torch.Tensor, directory: Path) -> list[Path]:
        """Files showing one prediction (e.g. a PNG with boxes drawn); may write nothing."""

    def render_eval(self, summary: dict[str, Any]) -> list[str]:
        """CLI lines for an evaluation summary, after the runtime's own headline line."""

    def write_report(self, record: dict[str, Any], directory: Path) -> list[Path]:
        """Task-specific report files (a confusion matrix, PR curves) beside the runtime's metrics.json."""

    # -- sampling (tasks with "sample" in verbs; the loop is zoo.runtime.sample) --------------------------
    # conditional: bool (class attribute or property) — whether `sample` takes class labels (the card's labels)

    def sample(self, model: Any, noise: Any, labels: torch.Tensor | None, **options: Any) -> torch.Tensor:
        """N new images, floats in [0, 1], N x C x H x W, on the model's device. Every random draw goes through
        `noise` (zoo.runtime.sample.Noise: one generator per sample), so sample i depends on its seed alone, not
        on the batch it was drawn in. `labels`: N class indices for a conditional task, else None."""

    # Optional, for tasks that sample:
    # sample_batch: int — rows per call of `sample` (default zoo.runtime.sample.MICRO_BATCH, 256 on the CPU); a
    #     task whose sample costs many network calls (diffusion) sets a smaller fixed size
    # sample_steps(**options) -> int — network calls per `sample` call; when present, `sample` also receives
    #     ``on_step`` (call it with 1 after each step) and the progress bar counts steps
    # check_options(**options) -> dict | None — raise ZooError for bad task options before the runtime builds the
    #     model or reads a dataset (``zoo sample`` and ``zoo eval``); may return the options with the card's
    #     defaults filled in, which ``zoo sample``'s manifest then records
    # validate_every: int — validate during training every N epochs (and after the last), when it is costly

    # -- measuring what is not scored batch by batch (optional; generative tasks) -------------------------
    def measure(self, model: Any, data: EvalData, context: Any, **options: Any) -> dict[str, Any]:
        """The whole evaluation for a task whose figure is not a sum over data batches (FID compares N samples
        with the data set): the runtime reads the data (``eval_data``), loads and places the model and hands
        over `context` (zoo.runtime.evaluate.MeasureContext: device, precision, batch size, DDP rank and world,
        progress); the task returns the summary ``compute()`` would. Tasks without it use ``evaluator``."""

    # -- export (optional; `zoo export`, zoo.runtime.export) ---------------------------------------------------
    def export_module(self, model: torch.nn.Module) -> Exportable:
        """What of `model` (loaded on the CPU, fp32, eval mode) ``zoo export`` writes, as ONNX or a torch.export
        ExportedProgram: the network from prepared input to raw outputs (a classifier's logits; a detector's
        head output, its post-processing named in ``leaves_out``). A model the task cannot export (one whose
        post-processing is data-dependent code inside the network) is refused with a ZooError, one line. Tasks
        without this method are not exportable: ``zoo export`` answers in one line naming the verbs they have.
        The runtime checks every export against this module's eager outputs on real images."""

    # -- explain (optional; `zoo explain`, zoo.runtime.explain) -------------------------------------------------
    def explain_layer(self, model: torch.nn.Module) -> str | None:
        """The module of `model` (a dotted path, e.g. ``"layer3"``) that Grad-CAM attributes the class score to,
        as the card declares it (the classifier reads ``task_config.explain_layer``), or None to let the runtime
        choose (``zoo.runtime.explain.find_layer``: the last block that contains a Conv2d and returns a feature
        map, preferring maps of at least 7 x 7). The runtime checks that the path is a module returning an
        N x C x H x W map; the scores explained are ``postprocess``'s output, which must be N x classes (softmax
        gives the probabilities printed). Tasks without this method are not explainable: ``zoo explain`` answers in
        one line naming the verbs they have."""

    # -- training (tasks with "finetune" in verbs; the loop is zoo.runtime.train.loop) -------------------
    # recipe_defaults: ClassVar[dict[str, Any]]  recipe fields the task fills when the user left them unset
    # base_lr: ClassVar[dict[str, float]]       peak learning rate per 128 images, per optimizer name

    def train_data(self, source: str | Path, *, config: Any) -> TrainData: ...

    def model_overrides(self, classes: tuple[str, ...]) -> dict[str, Any]:
        """Builder arguments for a model over the data's `classes` (e.g. ``{"num_classes": 5}``: a new head)."""

    def training_step(self, model: Any, x: Any, batch: Batch, config: Any) -> dict[str, Any]:
        """Forward and loss for one batch (the runtime has applied `prepare` and autocast): ``{"loss": tensor}``
        plus any per-batch sums the epoch row wants (e.g. ``"correct"``); the runtime backpropagates and steps."""

    def train_metrics(self, sums: dict[str, float], seen: int) -> dict[str, float]:
        """The epoch's sums (summed over DDP ranks) -> its row's figures (e.g. ``train_top1``)."""


class TrainData(Protocol):
    """What a task's ``train_data`` returns: the training part (indexed 0..len-1) and the validation part."""

    classes: tuple[str, ...]  # the data's class names: the new card's labels
    validation: str  # which images the validation figure comes from (written on the card)
    eval_args: str  # the ``zoo eval`` options that select them again (``--val-split 0.1 --seed 0``)

    def __len__(self) -> int: ...

    def sample_weights(self, config: Any) -> torch.Tensor | None:
        """Weights for a draw with replacement (class-balanced sampling), or None for a permutation."""

    def train_batch(self, indices: torch.Tensor, generator: torch.Generator, config: Any) -> Batch:
        """An augmented batch; every random draw comes from `generator` (runs resume to the same weights)."""

    def val_data(self) -> EvalData | None: ...

    # Optional, for tasks that support --test-split (:func:`supports_test_split`):
    # test_data() -> EvalData | None — the test part: never trained on, never used to choose an epoch; the
    #     runtime measures the chosen weights on it once, after training
    # testing: str — which images that is (written on the card); test_eval_args: str — the ``zoo eval`` options
    #     that select them again (``--val-split 0.1 --test-split 0.1 --seed 0``)


def supports_test_split(task: Any) -> bool:
    """Whether `task` can hold out a test split: its ``eval_data`` takes ``test_split``. Checked before any data
    is read, so a task that cannot keep test images out of training refuses ``--test-split`` instead of
    silently training on them."""
    import inspect

    return "test_split" in inspect.signature(task.eval_data).parameters


def check_test_split(task: Any, card: ModelCard) -> None:
    """One line when `card`'s task cannot hold out a test split (see :func:`supports_test_split`)."""
    if not supports_test_split(task):
        raise ZooError(
            f"Model {card.name!r} is a {card.task}: its task does not support --test-split yet; leave it out (the "
            "card's figure is then the validation one, selected on: docs/evaluation-protocol.md)."
        )


def task_config(card: ModelCard, fields: Mapping[str, tuple[type, float | None, float | None]]) -> dict[str, Any]:
    """A card's ``task_config`` checked against the task's fields: name -> (type, min, max). The core card parser
    knows no task's fields; each task calls this from its constructor, so a typo or a bad value is one line naming
    the card's file, the card and the field, like every other card error."""
    from ..errors import RegistryError

    found = {}
    for key, value in card.task_config.items():
        where = f"task_config.{key}"
        if key not in fields:
            import difflib

            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RegistryError(
                f"unknown field for a {card.task}{hint}; known: {', '.join(sorted(fields)) or 'none'}",
                file=card.origin,
                entry=card.name,
                field=where,
            )
        kind, low, high = fields[key]
        if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else kind):
            raise RegistryError(
                f"expected {kind.__name__}, got {type(value).__name__}", file=card.origin, entry=card.name, field=where
            )
        # value passed the isinstance check against kind (a number when bounded); mypy widens it to object
        if (low is not None and value < low) or (high is not None and value > high):  # type: ignore[operator]
            raise RegistryError(
                f"must lie in [{low}, {high}], got {value}", file=card.origin, entry=card.name, field=where
            )
        found[key] = value
    return found


_TASKS: dict[str, str] | None = None


def _registered() -> dict[str, str]:
    """Task name -> import string, from every plugin's ``register_tasks`` hook. A task name that two plugins
    register is an error naming both (never "last installed wins", the rule model names follow too)."""
    global _TASKS
    from .._plugins import get_plugins

    if _TASKS is None:
        found: dict[str, tuple[str, str]] = {}
        clashes: list[str] = []

        def hook_args(plugin: str) -> dict[str, Any]:
            def register(task: str, target: str) -> None:
                if task in found and found[task][0] != plugin:
                    clashes.append(
                        f"task {task!r} is registered by plugins {found[task][0]!r} ({found[task][1]}) "
                        f"and {plugin!r} ({target})"
                    )
                    return
                found[task] = (plugin, target)

            return {"register": register}

        get_plugins().call_isolated("register_tasks", hook_args)
        if clashes:
            raise ZooError(clashes[0] + "; uninstall or disable one (ZOO_DISABLE_PLUGINS).")
        _TASKS = {task: target for task, (_plugin, target) in found.items()}
    return _TASKS


def task_class(name: str) -> type:
    """The class a plugin registered for task `name`."""
    from .._builder import import_builder

    tasks = _registered()
    if name not in tasks:
        known = ", ".join(sorted(tasks)) or "none"
        raise ZooError(f"No installed plugin runs task {name!r} (tasks: {known}). Run 'zoo plugins'.")
    return cast(type, import_builder(tasks[name], model=name))  # a task's spec names its class


def get_task(card: ModelCard) -> Task:
    """The task object for `card`."""
    return task_class(card.task)(card)


def task_for(card: ModelCard, verb: str, method: str | None = None) -> Task:
    """The task object for `card`, after checking that its task supports `verb` (a runtime verb, or a command
    whose optional contract `method` the task must define, e.g. ``export`` and ``export_module``): asking a GAN
    to predict or to export is one clear line naming what it does support."""
    cls = task_class(card.task)
    verbs: frozenset[str] = getattr(cls, "verbs", frozenset())
    if (verb not in verbs) if method is None else not callable(getattr(cls, method, None)):
        supported = ", ".join(f"'zoo {v}'" for v in VERBS if v in verbs) or "nothing"
        raise ZooError(
            f"Model {card.name!r} is a {card.task}: 'zoo {verb}' does not apply to it (it supports {supported})."
        )
    return cls(card)


def reset_tasks() -> None:
    global _TASKS
    _TASKS = None


def unwrap(model: Any, marker: str, what: str) -> Any:
    """The task's own module inside the wrappers training puts around it (DDP's ``module``, torch.compile's
    ``_orig_mod``, the EMA's ``module``): the first one that has attribute `marker`; one line naming `what` was
    expected when none has it."""
    while not hasattr(model, marker):
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            raise ZooError(f"{type(model).__name__} is not {what} (it has no {marker}).")
        model = inner
    return model
