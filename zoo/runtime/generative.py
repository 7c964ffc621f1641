"""What every task that draws images shares (#17, #18): the real images an evaluation compares samples with, the
training data with its per-batch random draws, and the measurement of samples against real images.

A GAN and a diffusion model differ in how noise becomes an image and in how they train; they do not differ in
what "good samples" means. :class:`SamplingTask` holds that part once: FID and KID in the feature space of a
classifier card, improved precision/recall, a judge classifier's accuracy on conditional samples, and the
real-vs-real floor, all over the images ``zoo sample`` would write for the same seed (the samples are drawn
through :func:`zoo.runtime.sample.sample_calls`). A task subclasses it and adds ``sample``, its options and its
training step.

Data: an ImageFolder directory or a .zip of one (class folders name the classes of a conditional model), read
through zoo's decode cache. ``--val-split F --seed S`` holds out the same images the CIFAR classifier cards hold
out (a stratified split), so one split serves every card: the held-out images are the reference set, training
never sees them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import torch

from .._card import ModelCard
from ..errors import ZooError
from .datasets import Geometry, ImageDataset, content_key, load_dataset
from .preprocess import card_geometry, normalize, to_unit
from .splits import stratified_split
from .tasks import Batch

__all__ = ["STANDARD_FEATURES", "GenerativeTrainData", "ReferenceImages", "SamplingTask"]

STANDARD_FEATURES = "inception-v3-fid"


class ReferenceImages:
    """Real images as the reference set of an evaluation: the held-out part (``--val-split``) or all of the data,
    and the rest of the data, from which the real-vs-real floor is drawn."""

    def __init__(
        self, dataset: ImageDataset, reference: torch.Tensor, others: torch.Tensor | None, description: str, key: str
    ) -> None:
        self.source, self.skipped, self.from_cache = dataset.source, dataset.skipped, dataset.from_cache
        self.dataset, self.reference, self.others = dataset, reference, others
        self.description, self.key = description, key

    def __len__(self) -> int:
        return len(self.reference)

    def batches(self, batch_size: int) -> Iterator[Batch]:
        for begin in range(0, len(self.reference), batch_size):
            idx = self.reference[begin : begin + batch_size]
            yield Batch(self.dataset.images[idx], self.dataset.targets[idx])

    def image_batches(self, indices: torch.Tensor, batch_size: int) -> Callable[[], Iterator[torch.Tensor]]:
        def batches() -> Iterator[torch.Tensor]:
            for begin in range(0, len(indices), batch_size):
                yield self.dataset.images[indices[begin : begin + batch_size]]

        return batches


class GenerativeTrainData:
    """The training part (everything but the held-out images), horizontally flipped at random, with the task's
    random draws for the batch (``task.train_extras``: a GAN's latents, a diffusion model's timesteps and noise),
    all from the loop's generator, so a resumed run trains identically."""

    def __init__(self, task: SamplingTask, dataset: ImageDataset, config: Any) -> None:
        if config.augment not in ("flip", "none"):
            raise ZooError(
                f"Unknown augmentation preset {config.augment!r} for {task.card.task} models; use flip or none."
            )
        if config.balance != "none":
            raise ZooError(
                f"--balance applies to classifiers; a conditional {task.card.task} model already trains on every class."
            )
        if config.freeze != "none":
            raise ZooError(
                f"--freeze {config.freeze}: a {task.card.task} model has no head to train alone; use --freeze none."
            )
        self.task, self.dataset = task, dataset
        self.classes, self.targets = task.align(dataset.classes, dataset.targets)
        self.train_idx, self.val_idx = stratified_split(dataset.targets, config.val_split, config.seed)
        if len(self.train_idx) == 0:
            raise ZooError(f"{dataset.source}: no training images left after --val-split {config.val_split}.")
        self.validation = (
            f"{len(self.val_idx)} real images held out (stratified by class) by --val-split "
            f"{config.val_split} (seed {config.seed}) as the reference set"
        )
        # what measures the validation figure again: the same held-out images, as many samples, same precision
        self.eval_args = (
            f"--val-split {config.val_split} --seed {config.seed} --samples "
            f"{task.config.get('val_samples', 5000)} --precision {'bf16' if config.bf16 else 'fp32'}"
            + task.validation_eval_args()
            + (" --skip-bad" if config.skip_bad else "")
        )
        # the reference features' cache key: skipping images changes the reference set (without it, the old key)
        skip = "|skip" if config.skip_bad else ""
        self.key = content_key(Path(dataset.source), f"gan|{task.geometry()}|{config.val_split}|{config.seed}{skip}")

    def __len__(self) -> int:
        return len(self.train_idx)

    def sample_weights(self, config: Any) -> torch.Tensor | None:
        return None

    def train_batch(self, indices: torch.Tensor, generator: torch.Generator, config: Any) -> Batch:
        idx = self.train_idx[indices]
        images = self.dataset.images[idx]
        if config.augment == "flip":
            flip = torch.rand(len(idx), generator=generator) < 0.5
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)
        return Batch(images.contiguous(), self.targets[idx], extras=self.task.train_extras(len(idx), generator))

    def val_data(self) -> ReferenceImages | None:
        if len(self.val_idx) == 0:
            return None
        return ReferenceImages(self.dataset, self.val_idx, None, self.validation, self.key)


class SamplingTask:
    """The evaluation and data half of a generative task (the contract: zoo.runtime.tasks.Task). Subclasses add
    ``sample``, ``verbs``, their card fields (``config_fields``) and training."""

    verbs = frozenset({"sample", "eval", "finetune"})
    headline = ("fid", False)  # the summary's key names the feature space: fid[resnet56-cifar]
    tolerance = 0.5  # FID points: the same seeds give the same samples; bf16 vs fp32 moves it by about 0.1
    #: the card's task_config fields every sampling task reads: name -> (type, min, max)
    config_fields: dict[str, tuple[type, float | None, float | None]] = {
        "features": (str, None, None),  # the feature card for FID/KID when the Inception one is not available
        "judge": (str, None, None),  # the classifier that labels conditional samples
        "samples": (int, 2, None),  # how many samples `zoo eval` draws by default
        "val_samples": (int, 2, None),  # how many each validation during training draws
    }

    def __init__(self, card: ModelCard) -> None:
        from .tasks import task_config

        self.card = card
        self.config = task_config(card, self.config_fields)
        self.features = self.config.get("features", "resnet56-cifar")
        self.headline = (f"fid[{self.features}]", False)

    @property
    def conditional(self) -> bool:
        return int(self.card.kwargs.get("num_classes", 0)) > 0

    @classmethod
    def eval_options(cls) -> list[click.Option]:
        """``zoo eval``'s options for every sampling task."""
        return [
            click.Option(
                ["--samples"],
                type=click.IntRange(min=1),
                default=None,
                help="How many samples to draw (default: the card's, 10,000).",
            ),
            click.Option(
                ["--features"],
                default=None,
                help=f"The classifier card whose penultimate features FID/KID use (default: "
                f"{STANDARD_FEATURES} when its weights are cached, else the card's, e.g. "
                "resnet56-cifar).",
            ),
            click.Option(
                ["--judge"],
                default=None,
                help="Conditional models: the classifier that labels the samples (default: the card's, "
                "resnet56-cifar).",
            ),
            click.Option(["--sample-seed"], type=int, default=0, show_default=True, help="The seed of the samples."),
        ]

    @classmethod
    def options(cls, verb: str) -> list[click.Option]:
        return cls.eval_options() if verb == "eval" else []

    def validation_eval_args(self) -> str:
        """What ``zoo eval`` needs besides the split and sample count to draw the validation samples again."""
        return ""

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
    ) -> ReferenceImages:
        if split is not None:
            raise ZooError(
                f"--split {split!r}: image folders carry no named splits; use --val-split, or point "
                "--data at the split's folder."
            )
        dataset = load_dataset(source, geometry=self.geometry(), skip_bad=skip_bad, cache=cache)
        if val_split is None:
            everything = torch.arange(len(dataset))
            return ReferenceImages(
                dataset,
                everything,
                None,
                f"all {len(dataset)} images of {source}",
                content_key(Path(source), f"gan|{self.geometry()}|all" + ("|skip" if skip_bad else "")),
            )
        others, held_out = stratified_split(dataset.targets, val_split, seed)
        return ReferenceImages(
            dataset,
            held_out,
            others,
            f"the {len(held_out)} images held out by --val-split {val_split} --seed {seed}",
            content_key(Path(source), f"gan|{self.geometry()}|{val_split}|{seed}" + ("|skip" if skip_bad else "")),
        )

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return normalize(images, self.card.preprocess)

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output (normalised like the card's inputs) -> pixels in [0, 1]."""
        return to_unit(x, self.card.preprocess)

    training_skips_bad = True  # train_data honours --skip-bad

    def train_data(self, source: str | Path, *, config: Any) -> GenerativeTrainData:
        dataset = load_dataset(source, geometry=self.geometry(), skip_bad=config.skip_bad)
        return GenerativeTrainData(self, dataset, config)

    def train_extras(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The task's random draws for a training batch of `n` images, from the loop's generator."""
        return {}

    def align(self, classes: tuple[str, ...], targets: torch.Tensor) -> tuple[tuple[str, ...], torch.Tensor]:
        """The data's class indices as the model's (matched by name). An unconditional model takes any folders;
        a conditional one needs exactly its own classes: its class embeddings sit throughout the network, so
        there is no single head to re-make."""
        if not self.conditional:
            return tuple(self.card.labels), targets
        labels = tuple(self.card.labels)
        if set(classes) != set(labels):
            raise ZooError(
                f"{self.card.name!r} generates the classes {', '.join(labels)}; the data's class folders "
                f"are {', '.join(classes[:10])}. Continue training on data with the same class folders."
            )
        index = torch.tensor([labels.index(c) for c in classes])
        return labels, index[targets]

    def model_overrides(self, classes: tuple[str, ...]) -> dict[str, Any]:
        return {}  # `align` has checked the classes

    # -- evaluation -----------------------------------------------------------------------------------
    def label_index(self, judge_labels: tuple[str, ...]) -> torch.Tensor | None:
        """The judge's index for each of the model's classes, or None when the judge does not know them all."""
        index = {label: i for i, label in enumerate(judge_labels)}
        if not self.card.labels or any(label not in index for label in self.card.labels):
            return None
        return torch.tensor([index[label] for label in self.card.labels])

    def default_features(self) -> str:
        """The standard Inception features when their weights are in the local store, else the card's own."""
        try:
            from .._registry import get_registry
            from .._store import Store

            variant = get_registry().resolve(STANDARD_FEATURES).variant
            if variant is not None and Store().is_available(variant):
                return STANDARD_FEATURES
        except Exception:  # noqa: BLE001 - a missing card or store problem just means: not available offline
            pass
        return self.features

    def _judge(self, judge: str | None, device: torch.device) -> tuple[str, Any, torch.Tensor, Any] | None:
        """(name, model, index of the model's classes in the judge's, the judge's task), or None when the model
        is unconditional."""
        if not self.conditional:
            return None
        from .._api import card as get_card
        from .._api import load
        from .tasks import get_task

        name = judge or self.config.get("judge", "resnet56-cifar")
        judge_card = get_card(name)
        if judge_card.task != "classifier":
            raise ZooError(f"--judge {name!r} is a {judge_card.task}, not a classifier.")
        index = self.label_index(tuple(judge_card.labels))
        if index is None:
            raise ZooError(
                f"The judge {name!r} does not know all of {self.card.name!r}'s classes; pick a "
                "classifier over the same labels with --judge."
            )
        return name, load(name, device=device).eval(), index, get_task(judge_card)

    def measure(
        self,
        model: Any,
        data: ReferenceImages,
        context: Any,
        samples: int | None = None,
        features: str | None = None,
        judge: str | None = None,
        sample_seed: int = 0,
        validation: bool = False,
        **sample_options: Any,
    ) -> dict[str, Any]:
        """FID and KID (in the feature space of a classifier card) of `samples` generated images against the
        reference images, improved precision/recall, the judge's accuracy on conditional samples, and the
        real-vs-real floor: the same statistics for real images that are not in the reference set.
        `sample_options` go to ``sample`` (a diffusion model's sampler and steps)."""
        from . import generative_metrics as gm

        features = features or (self.features if validation else self.default_features())
        n = samples or self.config.get("val_samples" if validation else "samples", 10_000)
        net = gm.feature_extractor(features, context.device)
        gm.check_sample_size(n, net.dim, "FID")
        if len(data.reference) < 2 * net.dim:
            raise ZooError(
                f"The reference set has {len(data.reference)} images ({data.description}); FID in "
                f"{net.name}'s {net.dim}-dimensional features needs at least {2 * net.dim}: give more "
                "data or hold out a larger --val-split."
            )
        reference = gm.reference_features(data.key, net, data.image_batches(data.reference, context.batch_size))
        judged = None if validation and not self.validate_judge else self._judge(judge, context.device)
        sample_options = self.resolve_sampling(validation, **sample_options)
        fake, correct = self._generate(model, net, n, sample_seed, context, judged, sample_options)
        space = net.name
        summary: dict[str, Any] = {f"fid[{space}]": round(gm.frechet_distance(reference, fake), 3)}
        if correct is not None and judged is not None:
            summary["judge_accuracy"] = round(100.0 * correct / n, 2)
            summary["judge"] = judged[0]
        if validation:
            return summary
        kid, kid_std = gm.kernel_inception_distance(reference, fake)
        precision, recall = gm.precision_recall(reference, fake)
        summary.update(
            {
                f"kid[{space}]": round(kid, 5),
                f"kid_std[{space}]": round(kid_std, 5),
                "precision": round(precision, 4),
                "recall": round(recall, 4),
            }
        )
        summary["floor"] = self._floor(data, net, reference, n, context.batch_size)
        summary.update(
            {
                "samples": n,
                "sample_seed": sample_seed,
                "features": space,
                "feature_dim": net.dim,
                "reference": {"images": len(data.reference), "set": data.description, "source": data.source},
            }
        )
        if any(value is not None for value in sample_options.values()):
            summary["sampling"] = sample_options
        return summary

    def resolve_sampling(self, validation: bool, **options: Any) -> dict[str, Any]:
        """The sampling options as ``sample`` will use them, the card's defaults filled in; the summary records
        them as ``sampling`` where one is set. `validation`: drawn during training. Default: as given."""
        return options

    #: whether validation during training also reports the judge's accuracy (costs a judge forward per sample)
    validate_judge = False

    def _generate(
        self,
        model: Any,
        net: Any,
        n: int,
        seed: int,
        context: Any,
        judged: tuple[str, Any, torch.Tensor, Any] | None,
        sample_options: dict[str, Any],
    ) -> tuple[torch.Tensor, int | None]:
        """Features of `n` samples (quantised to uint8, as the PNG ``zoo sample`` writes holds them) and, for a
        conditional model, how many of them the judge labels with the class they were asked for. Classes are
        balanced: sample i is of class i mod K. Under torchrun each rank draws every world_size-th call and the
        features are gathered."""
        from .progress import progress
        from .sample import micro_batch, sample_calls

        device = context.device
        micro = micro_batch(device, self)
        classes = len(self.card.labels) if self.conditional else 0
        parts: list[tuple[int, torch.Tensor]] = []
        correct = 0
        show = context.show_progress and context.env.rank == 0
        steps = getattr(self, "sample_steps", None)
        unit_per_call = steps(**sample_options) if steps else micro
        bar = progress(
            -(-n // micro) * unit_per_call, f"sample {self.card.name}", show, unit="step" if steps else "img"
        )
        calls = sample_calls(
            self,
            model,
            seed,
            n,
            (lambda i: i % classes) if classes else None,
            micro,
            device,
            sample_options,
            mine=context.mine,
            on_step=None if bar is None else bar.update,
        )
        for c, keep, images, labels in calls:
            pixels = (images * 255).round().to(torch.uint8)
            parts.append((c, net(pixels).cpu()[:keep]))
            if judged is not None:
                _, judge, judge_index, judge_task = judged
                seen = pixels.to(device)
                size = tuple(judge_task.card.input_shape[-2:]) if judge_task.card.input_shape else seen.shape[-2:]
                if tuple(seen.shape[-2:]) != size:
                    seen = torch.nn.functional.interpolate(seen.float(), size=size, mode="bilinear").round()
                logits = judge(judge_task.prepare(seen)).float()[:keep]
                # judged: a conditional model, so its calls carry labels
                correct += int((logits.argmax(1).cpu() == judge_index[labels[:keep].cpu()]).sum())  # type: ignore[index]
            if bar is not None and not steps:
                bar.update(keep * context.env.world_size)
        if bar is not None:
            bar.close()
        if context.env.world_size > 1:
            import torch.distributed as dist

            gathered: list[Any] = [None] * context.env.world_size
            dist.all_gather_object(gathered, (parts, correct))
            parts = [p for rank_parts, _ in gathered for p in rank_parts]
            correct = sum(c for _, c in gathered)
        fake = torch.cat([f for _, f in sorted(parts, key=lambda p: p[0])])
        return fake, (correct if judged is not None else None)

    def _floor(
        self, data: ReferenceImages, net: Any, reference: torch.Tensor, n: int, batch_size: int
    ) -> dict[str, Any]:
        """FID/KID of real images against the reference set: what a perfect generator would score with this many
        samples. From the images outside the reference set (the training part) when there are any, else from one
        half of the reference set against the other."""
        from . import generative_metrics as gm

        if data.others is not None and len(data.others) >= 2 * net.dim:
            count = min(n, len(data.others))
            picked = data.others[torch.randperm(len(data.others), generator=torch.Generator().manual_seed(0))[:count]]
            real = gm.reference_features(f"{data.key}|floor|{count}", net, data.image_batches(picked, batch_size))
            against, described = reference, f"{count} real images outside the reference set vs the reference set"
        else:
            half = len(reference) // 2
            real, against = reference[:half], reference[half:]
            count, described = half, "one half of the reference set vs the other"
        kid, kid_std = gm.kernel_inception_distance(against, real)
        return {
            f"fid[{net.name}]": round(gm.frechet_distance(against, real), 3),
            f"kid[{net.name}]": round(kid, 5),
            f"kid_std[{net.name}]": round(kid_std, 5),
            "images": count,
            "set": described,
        }

    def evaluator(self, **options: Any) -> Any:
        raise ZooError(f"{self.card.task} models are measured by sampling (Task.measure), not batch by batch.")

    def render_eval(self, summary: dict[str, Any]) -> list[str]:
        space = summary.get("features", self.features)
        head = f"fid[{space}] {summary[f'fid[{space}]']:.2f}"
        lines = [head]
        if f"kid[{space}]" in summary:
            kid, kid_std = 1000 * summary[f"kid[{space}]"], 1000 * summary[f"kid_std[{space}]"]
            lines.append(
                f"kid[{space}] {kid:.2f} ± {kid_std:.2f} (x1e-3)  precision {summary['precision']:.3f}  "
                f"recall {summary['recall']:.3f}"
            )
        if "judge_accuracy" in summary:
            lines.append(
                f"judge accuracy {summary['judge_accuracy']:.2f}% ({summary['judge']} labels the samples "
                "with the class they were asked for)"
            )
        floor = summary.get("floor")
        if floor:
            lines.append(
                f"real-vs-real floor: fid[{space}] {floor[f'fid[{space}]']:.2f}, kid[{space}] "
                f"{1000 * floor[f'kid[{space}]']:.2f} (x1e-3) ({floor['set']})"
            )
        if "samples" in summary:
            lines.append(
                f"{summary['samples']} samples (seed {summary['sample_seed']}) vs "
                f"{summary['reference']['set']}; features: {space} ({summary['feature_dim']}-d)"
                + ("" if space == STANDARD_FEATURES else " - not comparable with published Inception FIDs")
            )
        return lines

    def write_report(self, record: dict[str, Any], directory: Path) -> list[Path]:
        return []
