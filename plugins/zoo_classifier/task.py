"""The classifier task: uint8 batches in, logits out, top-k accuracy, per-class accuracy, confusion matrix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from zoo._card import ModelCard
from zoo.errors import ZooError
from zoo.runtime.datasets import Geometry, ImageDataset, load_dataset
from zoo.runtime.preprocess import card_geometry, normalize
from zoo.runtime.splits import stratified_split, stratified_test_split
from zoo.runtime.tasks import Batch, Exportable, task_config

__all__ = ["AUGMENT_PRESETS", "ClassificationData", "ClassifierEvaluator", "ClassifierTask"]

# The card's own fields (task_config), checked when the task is made for it: name -> (type, min, max).
#   explain_layer: the module `zoo explain` attributes to, as a dotted path of the model (e.g. "layer3"); without
#   it zoo.runtime.explain.find_layer chooses.
CARD_FIELDS: dict[str, tuple[type, float | None, float | None]] = {"explain_layer": (str, None, None)}

# In the order of their strength; each one's operations are in its name (docs/usage.md, zoo finetune --augment).
AUGMENT_PRESETS = ("none", "crop-flip", "crop-flip-erase", "crop-flip-trivial-erase")
TTA_MODES = ("none", "flip")


class ClassificationData:
    """A decoded labelled dataset (zoo.runtime.datasets), its labels mapped onto the model's, optionally cut
    down to the validation part that ``zoo finetune --val-split F --seed S`` held out."""

    def __init__(self, dataset: ImageDataset, targets: torch.Tensor, keep: torch.Tensor | None) -> None:
        self.source, self.skipped, self.from_cache = dataset.source, dataset.skipped, dataset.from_cache
        self.images = dataset.images if keep is None else dataset.images[keep]
        self.targets = targets if keep is None else targets[keep]

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def batches(self, batch_size: int) -> Iterator[Batch]:
        for begin in range(0, len(self), batch_size):
            yield Batch(self.images[begin : begin + batch_size], self.targets[begin : begin + batch_size])


class ClassifierEvaluator:
    """Top-1/top-5, per-class accuracy and the confusion matrix (torchmetrics: DDP-aware)."""

    def __init__(self, card: ModelCard) -> None:
        self.card = card
        n = len(card.labels) or int(card.kwargs.get("num_classes", 0))
        collection: dict[str, Metric | MetricCollection] = {
            "top1": MulticlassAccuracy(num_classes=n, top_k=1, average="micro"),
            "per_class": MulticlassAccuracy(num_classes=n, top_k=1, average="none"),
            "confusion": MulticlassConfusionMatrix(num_classes=n),
        }
        if n > 5:
            collection["top5"] = MulticlassAccuracy(num_classes=n, top_k=5, average="micro")
        self.metrics = MetricCollection(collection)

    def update(self, outputs: torch.Tensor, batch: Batch) -> None:
        self.metrics.update(outputs.cpu(), batch.targets)

    def compute(self) -> dict[str, Any]:
        computed = {k: v.cpu() for k, v in self.metrics.compute().items()}
        labels = self.card.labels or tuple(str(i) for i in range(computed["confusion"].shape[0]))
        summary: dict[str, Any] = {"top1": round(100.0 * float(computed["top1"]), 2)}
        if "top5" in computed:
            summary["top5"] = round(100.0 * float(computed["top5"]), 2)
        support = computed["confusion"].sum(1)
        summary["per_class"] = {
            label: round(100.0 * float(v), 2)
            for label, v, n in zip(labels, computed["per_class"], support, strict=True)
            if n > 0
        }
        summary["confusion"] = computed["confusion"].tolist()
        summary["labels"] = list(labels)
        return summary


def _memory_budget() -> int:
    """A quarter of the machine's RAM, in bytes (a conservative 1 GiB where the OS does not say)."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 1 << 30


class ClassificationTrainData:
    """The training part of a labelled dataset, its stratified validation part and, with ``--test-split``, its
    stratified test part (the task's TrainData)."""

    def __init__(self, task: ClassifierTask, dataset: ImageDataset, config: Any) -> None:
        if config.augment not in AUGMENT_PRESETS:
            raise ZooError(
                f"Unknown augmentation preset {config.augment!r} for classifiers; use one of: "
                f"{', '.join(AUGMENT_PRESETS)}."
            )
        if config.balance not in ("none", "sampler", "loss"):
            raise ZooError(f"Unknown --balance {config.balance!r}; use none, sampler or loss.")
        self.task, self.dataset, self.classes = task, dataset, dataset.classes
        if dataset.images.numel() < _memory_budget():
            # training gathers random images every step: from anonymous memory that ran ~7% faster than from the
            # memory-mapped cache (4 of 5 interleaved runs, resnet20-cifar, bf16); datasets larger than a quarter
            # of RAM stay mapped
            dataset = ImageDataset(
                dataset.images.clone(),
                dataset.targets,
                dataset.classes,
                dataset.source,
                dataset.skipped,
                dataset.from_cache,
            )
            self.dataset = dataset
        self.train_idx, self.val_idx, self.test_idx = _three_parts(dataset, config)
        if len(self.train_idx) == 0:
            raise ZooError(f"{dataset.source}: no training images left after --val-split {config.val_split}.")
        self.validation = (
            f"{len(self.val_idx)} images held out (stratified by class) by --val-split "
            f"{config.val_split} (seed {config.seed})"
        )
        # what selects them again: the same images skipped, or the split (drawn over the labels) differs
        skip = " --skip-bad" if config.skip_bad else ""
        self.eval_args = f"--val-split {config.val_split} --seed {config.seed}{skip}"
        self.testing = (
            f"{len(self.test_idx)} images held out (stratified by class) by --test-split {config.test_split} "
            f"(seed {config.seed}), after the validation split"
        )
        self.test_eval_args = (
            f"--val-split {config.val_split} --test-split {config.test_split} --seed {config.seed}{skip}"
        )
        self.class_weights = None
        if config.balance == "loss":
            counts = torch.bincount(dataset.targets[self.train_idx], minlength=len(self.classes)).float().clamp(min=1)
            self.class_weights = counts.sum() / (len(self.classes) * counts)

    def __len__(self) -> int:
        return len(self.train_idx)

    def sample_weights(self, config: Any) -> torch.Tensor | None:
        if config.balance != "sampler":
            return None
        targets = self.dataset.targets[self.train_idx]
        return (1.0 / torch.bincount(targets).float())[targets]

    def train_batch(self, indices: torch.Tensor, generator: torch.Generator, config: Any) -> Batch:
        idx = self.train_idx[indices]
        images = self.task.augment(self.dataset.images[idx], config.augment, generator)
        return Batch(images, self.dataset.targets[idx], extras={"class_weights": self.class_weights})

    def val_data(self) -> ClassificationData | None:
        if len(self.val_idx) == 0:
            return None
        return ClassificationData(self.dataset, self.dataset.targets, self.val_idx)

    def test_data(self) -> ClassificationData | None:
        if len(self.test_idx) == 0:
            return None
        return ClassificationData(self.dataset, self.dataset.targets, self.test_idx)


def _three_parts(dataset: ImageDataset, config: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train, validation, test) indices; the test part is empty without ``--test-split``, and the validation part
    is the same either way (zoo.runtime.splits)."""
    if config.test_split is None:
        train, val = stratified_split(dataset.targets, config.val_split, config.seed)
        return train, val, train[:0]
    return stratified_test_split(dataset.targets, config.val_split, config.test_split, config.seed, dataset.classes)


class ClassifierTask:
    """Task behaviour for image classifiers (the contract: zoo.runtime.tasks.Task)."""

    verbs = frozenset({"predict", "eval", "finetune"})
    headline = ("top1", True)
    tolerance = 0.3  # points of top-1: bf16 vs fp32 and BatchNorm folding move it by about 0.05

    def __init__(self, card: ModelCard) -> None:
        self.card = card
        self.config = task_config(card, CARD_FIELDS)

    @classmethod
    def options(cls, verb: str) -> list[click.Option]:
        tta = click.Option(
            ["--tta"],
            type=click.Choice(TTA_MODES),
            default="none",
            show_default=True,
            help="Test-time augmentation: flip averages the logits of each image and its mirror image (two "
            "forward passes).",
        )
        if verb == "predict":
            return [
                click.Option(
                    ["--topk"],
                    type=click.IntRange(min=1),
                    default=5,
                    show_default=True,
                    help="How many classes to show per image.",
                ),
                tta,
            ]
        if verb == "eval":
            return [tta]
        return []

    def check_options(self, tta: str = "none", **options: Any) -> None:
        """API callers get the CLI's refusal: one line naming the modes."""
        if tta not in TTA_MODES:
            raise ZooError(f"Unknown test-time augmentation tta={tta!r}; use one of: {', '.join(TTA_MODES)}.")

    # -- data ---------------------------------------------------------------------------------------
    def geometry(self) -> Geometry:
        return card_geometry(self.card)

    def eval_data(
        self,
        source: str | Path,
        *,
        split: str | None = None,
        val_split: float | None = None,
        seed: int = 0,
        cache: bool = True,
        skip_bad: bool = False,
        test_split: float | None = None,
    ) -> ClassificationData:
        """The dataset, or only the part ``zoo finetune`` held out with the same fractions and seed: the validation
        part with `val_split`, the test part with `test_split` too."""
        if split is not None:
            raise ZooError(
                f"--split {split!r}: classification datasets (ImageFolder, CIFAR batches) carry no named "
                "splits; point --data at the split's folder, or use --val-split."
            )
        dataset = load_dataset(source, geometry=self.geometry(), skip_bad=skip_bad, cache=cache)
        targets = self.align_targets(dataset.classes)[dataset.targets]
        keep = None
        if test_split is not None:
            if val_split is None:  # the runtime checks this first; an API caller may not go through it
                raise ZooError("--test-split needs the run's --val-split too (0 for a run that held none out).")
            keep = stratified_test_split(dataset.targets, val_split, test_split, seed, dataset.classes)[2]
        elif val_split is not None:
            keep = stratified_split(dataset.targets, val_split, seed)[1]
        return ClassificationData(dataset, targets, keep)

    def predict_batch(self, images: list[torch.Tensor], names: list[str]) -> Batch:
        geometry = self.geometry()
        return Batch(torch.stack([geometry.apply(image) for image in images]), meta=[{"image": n} for n in names])

    def align_targets(self, classes: tuple[str, ...]) -> torch.Tensor:
        """Index map from the dataset's class order to the model's label order."""
        card = self.card
        if not card.labels:
            return torch.arange(len(classes))
        index = {label: i for i, label in enumerate(card.labels)}
        missing = [c for c in classes if c not in index]
        if missing:
            raise ZooError(
                f"Dataset classes {missing[:5]} are not labels of model {card.name!r} "
                f"({', '.join(card.labels[:10])}). Fine-tune it on this data with 'zoo finetune' instead."
            )
        return torch.tensor([index[c] for c in classes])

    # -- around the forward pass ----------------------------------------------------------------------
    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return normalize(images, self.card.preprocess)

    def infer(self, model: torch.nn.Module, x: torch.Tensor, tta: str = "none", **options: Any) -> torch.Tensor:
        """The logits; with ``tta="flip"`` the mean of the image's and its mirror image's (horizontal flips are in
        every CIFAR/ImageNet training recipe, so the mirror is an image the model knows)."""
        if tta == "flip":
            return (model(x).float() + model(x.flip(3)).float()) / 2
        return model(x)

    def postprocess(self, raw: torch.Tensor, batch: Batch, **options: Any) -> torch.Tensor:
        return raw.float()

    def export_module(self, model: torch.nn.Module) -> Exportable:
        """The whole network: prepared images in, logits out (softmax and top-k are left to the reader)."""
        pre = self.card.preprocess
        if pre is None:
            raise ZooError(f"Model {self.card.name!r} declares no preprocessing; it cannot be exported for images.")
        steps = [
            f"shorter side resized to {pre.resize} ({pre.interpolation}, antialiased)" if pre.resize else "",
            f"center-cropped to {pre.crop}x{pre.crop}" if pre.crop else "",
        ]
        geometry = ", ".join(s for s in steps if s) or "at the card's input size"
        return Exportable(
            model,
            outputs=("logits",),
            input=f"RGB, {geometry}, x / 255 then (x - mean) / std with mean {list(pre.mean)}, std {list(pre.std)}",
        )

    def explain_layer(self, model: torch.nn.Module) -> str | None:
        """The layer ``zoo explain`` attributes to: the card's ``task_config.explain_layer``, or None to let the
        runtime find the last convolutional block (zoo.runtime.explain.find_layer). The logits are the scores."""
        return self.config.get("explain_layer")

    # -- results --------------------------------------------------------------------------------------
    def evaluator(self, **options: Any) -> ClassifierEvaluator:
        return ClassifierEvaluator(self.card)

    def records(self, outputs: torch.Tensor, batch: Batch, topk: int = 5, **options: Any) -> list[dict[str, Any]]:
        probs = outputs.float().softmax(dim=1)
        values, indices = probs.topk(min(topk, probs.shape[1]), dim=1)
        labels = self.card.labels or tuple(str(i) for i in range(probs.shape[1]))
        return [
            {
                "predictions": [
                    {"label": labels[i], "index": int(i), "probability": round(float(p), 4)}
                    for p, i in zip(row_p, row_i, strict=True)
                ]
            }
            for row_p, row_i in zip(values, indices, strict=True)
        ]

    def render_prediction(self, record: dict[str, Any]) -> str:
        return ", ".join(f"{p['label']} {100 * p['probability']:.1f}%" for p in record["predictions"])

    def save_prediction(self, record: dict[str, Any], image: torch.Tensor, directory: Path) -> list[Path]:
        return []  # the record (--json, predictions.json) is the whole result

    def render_eval(self, summary: dict[str, Any]) -> list[str]:
        head = f"top-1 {summary['top1']:.2f}%" + (f"  top-5 {summary['top5']:.2f}%" if "top5" in summary else "")
        worst = sorted(summary["per_class"].items(), key=lambda kv: kv[1])[:3]
        return [head, "lowest per-class top-1: " + ", ".join(f"{k} {v:.1f}%" for k, v in worst)]

    def write_report(self, record: dict[str, Any], directory: Path) -> list[Path]:
        from zoo.runtime.report import confusion_png

        metrics = record["metrics"]
        png = directory / "confusion.png"
        confusion_png(
            metrics["confusion"],
            metrics["labels"],
            png,
            title=f"{record['model']} on {Path(record['data']).name}: top-1 {metrics.get('top1')}%",
        )
        return [png]

    # -- training -----------------------------------------------------------------------------------
    augment_presets = AUGMENT_PRESETS
    recipe_defaults = {"batch_size": 128, "augment": "crop-flip"}  # the CIFAR recipe (bench/README.md)
    base_lr = {"sgd": 0.05, "adamw": 1e-3}  # per 128 images
    training_skips_bad = True  # train_data honours --skip-bad

    def train_data(self, source: str | Path, *, config: Any) -> ClassificationTrainData:
        """The dataset to fine-tune on; one with fewer than two classes is refused here, in one line (it failed
        after the first epoch, deep inside torchmetrics, #19)."""
        dataset = load_dataset(source, geometry=self.geometry(), skip_bad=config.skip_bad)
        present = [dataset.classes[i] for i in sorted({int(t) for t in dataset.targets})]
        if len(present) < 2:
            found = f"only class {present[0]!r}" if present else "no labelled images"
            raise ZooError(
                f"{dataset.source}: {found}; a classifier needs at least two classes to learn (an "
                "ImageFolder has one subfolder of images per class)."
            )
        return ClassificationTrainData(self, dataset, config)

    def model_overrides(self, classes: tuple[str, ...]) -> dict[str, Any]:
        """Builder arguments for a model over `classes`: a new head when they are not the card's labels."""
        return {} if tuple(self.card.labels) == tuple(classes) else {"num_classes": len(classes)}

    def head_rows(self, classes: tuple[str, ...]) -> list[int] | None:
        """For each of the data's classes, its row in the card's head, when every one is a label of the card
        (some of them, or all in another order): the new head starts from those rows (zoo finetune). None when
        a class is new to the model: its head then starts afresh."""
        index = {label: i for i, label in enumerate(self.card.labels)}
        return [index[c] for c in classes] if classes and all(c in index for c in classes) else None

    def training_step(self, model: torch.nn.Module, x: torch.Tensor, batch: Batch, config: Any) -> dict[str, Any]:
        """Cross-entropy (label smoothing, optional class weights); counts the correct top-1 for the epoch row."""
        targets = batch.targets.to(x.device)
        outputs = model(x)
        weights = batch.extras.get("class_weights")
        loss = self.loss(
            outputs,
            targets,
            label_smoothing=config.label_smoothing,
            class_weights=weights.to(x.device) if weights is not None else None,
        )
        return {"loss": loss, "correct": (outputs.detach().argmax(1) == targets).sum()}

    def train_metrics(self, sums: dict[str, float], seen: int) -> dict[str, float]:
        return {"train_top1": round(100.0 * sums.get("correct", 0.0) / max(seen, 1), 2)}

    def loss(
        self,
        outputs: torch.Tensor,
        targets: torch.Tensor,
        *,
        label_smoothing: float = 0.0,
        class_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(
            outputs.float(), targets, weight=class_weights, label_smoothing=label_smoothing
        )

    def augment(self, images: torch.Tensor, preset: str, generator: torch.Generator) -> torch.Tensor:
        """Augment a whole uint8 batch at once (no per-image Python, except TrivialAugment's one op per image):
        the fine-tuning hot loop."""
        if preset == "none":
            return images
        if preset not in AUGMENT_PRESETS:
            raise ZooError(f"Unknown augmentation preset {preset!r}; use one of: {', '.join(AUGMENT_PRESETS)}.")
        n, _, h, w = images.shape
        pad = max(1, h // 8)  # 4 pixels at 32x32, the CIFAR recipe
        padded = torch.nn.functional.pad(
            images, (pad, pad, pad, pad), mode="reflect" if images.is_floating_point() else "constant"
        )
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).to(images.device)
        cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).to(images.device)
        batch_index = torch.arange(n, device=images.device).view(n, 1, 1)
        cropped = padded.permute(0, 2, 3, 1)[batch_index, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)
        flip = (torch.rand(n, generator=generator) < 0.5).to(images.device)
        out = torch.where(flip.view(n, 1, 1, 1), cropped.flip(3), cropped)
        if preset == "crop-flip-trivial-erase":
            out = _trivial_augment(out, generator)
        if preset.endswith("-erase"):  # Cutout: one h/2 square of zeros per image, half of the time
            size = h // 2
            cy = torch.randint(0, h, (n,), generator=generator).to(images.device)
            cx = torch.randint(0, w, (n,), generator=generator).to(images.device)
            ys = torch.arange(h, device=images.device).view(1, h, 1)
            xs = torch.arange(w, device=images.device).view(1, 1, w)
            mask = ((ys - cy.view(n, 1, 1)).abs() <= size // 2) & ((xs - cx.view(n, 1, 1)).abs() <= size // 2)
            mask &= (torch.rand(n, generator=generator) < 0.5).to(images.device).view(n, 1, 1)
            out = out.masked_fill(mask.unsqueeze(1), 0)
        return out.contiguous()


def _trivial_augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """TrivialAugmentWide (Müller & Hutter, 2021): one random op at a random strength per image, torchvision's
    implementation. Its draws come from torch's global generator, so they are seeded from the loop's own
    generator inside fork_rng: a run stays reproducible and resumable, and the caller's global state is untouched.
    About 0.1 ms per 32x32 image in Python: small beside a training step on a CPU, and the one per-image cost."""
    from torchvision.transforms import v2

    augment = v2.TrivialAugmentWide()
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([augment(image) for image in images])
