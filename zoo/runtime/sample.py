"""Sampling from generative models: per-sample noise, batching, the runtime's precision policy (#17).

``Noise`` is what a task draws every random number from: one ``torch.Generator`` per sample, seeded from
(seed, index), so sample i is the same image whatever the batch size or the rank that drew it.

The loop (:func:`draw`, :func:`sample`) owns the device, precision, inference mode and batching; the task
(``Task.sample``) owns how noise and labels become images. Writing (:func:`save_grid`, :func:`save_images`,
:func:`write_manifest`) is here too, so ``zoo sample`` and a Python caller write the same files.

Torch is imported inside the functions: ``zoo sample --help`` must not pay for it.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ZooError
from .files import write_atomic

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .._card import ModelCard

__all__ = [
    "CLASS_RULE",
    "MICRO_BATCH",
    "SEED_RULE",
    "Noise",
    "Samples",
    "check_output",
    "class_seed",
    "draw",
    "micro_batch",
    "sample",
    "sample_calls",
    "sample_seed",
    "save_grid",
    "save_images",
    "to_uint8",
    "write_manifest",
]

#: How sample i's generator is seeded, as the manifest states it (:func:`sample_seed`).
SEED_RULE = "blake2b(seed:index)"
#: How a conditional model's classes are chosen when none are given (:func:`class_seed`).
CLASS_RULE = "uniform: torch.randint(K) from a torch.Generator seeded blake2b(seed:index:class), per sample"

#: Samples per call of the task (so of the model), by device type; every call is padded to exactly this many.
#: Why fixed: CPU kernels differ by batch size. Measured (torch 2.14, this project's 2-core AMX Xeon, fp32):
#: nn.Linear and nn.Conv2d outputs for batches of 1, 3, 7, 15 or 17 rows differ from those of the same rows in a
#: batch of 64 by up to 2e-6, while a row's position inside a batch of a given size changes nothing. Enough to
#: flip a PNG pixel now and then, so the same seed would not give the same file at another ``batch_size``.
#: Calling the model with a fixed number of rows (the last call padded with the next indices' seeds, whose
#: images are dropped) makes sample i's pixels depend on (seed, i, label, precision, device) alone. 256 rows
#: everywhere: a DCGAN's throughput on the CPU was 76 / 202 / 310 img/s in calls of 16 / 64 / 256 rows (fp32),
#: and with calls of 64 zoo.sample ran at 0.85x a plain batch-256 loop over cgan-cifar's generator
#: (bench/bench_gan.py); the price is that a 1-sample run computes 255 images it throws away (~0.3 s there).
MICRO_BATCH: dict[str, int] = {"cpu": 256}
_MICRO_BATCH_ELSEWHERE = 256
DEFAULT_BATCH_SIZE = 256  # samples per step (fp32 and bf16 alike), rounded up to whole micro-batches


def micro_batch(device: torch.device, task: Any = None) -> int:
    """How many samples each call of a generative model gets on `device`: the task's ``sample_batch`` when it
    sets one (a diffusion model calls its network tens of times per sample: padding 1 sample to 256 would cost
    minutes), else :data:`MICRO_BATCH`. Evaluations that sample (FID) use it too, so they measure exactly the
    images ``zoo sample`` writes."""
    own = getattr(task, "sample_batch", None)
    if own:
        return int(own)
    return MICRO_BATCH.get(device.type, _MICRO_BATCH_ELSEWHERE)


def sample_calls(
    task: Any,
    model: Any,
    seed: int,
    n: int,
    label_of: Callable[[int], int] | None,
    micro: int,
    device: torch.device,
    options: dict[str, Any],
    mine: Callable[[int], bool] | None = None,
    on_step: Callable[[int], Any] | None = None,
) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor | None]]:
    """The calls of ``task.sample`` that draw samples 0..n-1: (call index, how many of its images to keep,
    images in [0, 1] as float32, class indices or None), `micro` rows per call, the last call padded with the
    next indices' seeds. Both ``zoo sample`` (:func:`draw`) and the evaluations that sample go through here, so
    a figure measures exactly the images ``zoo sample`` writes. `mine(c)`: whether call c is this process's
    (torchrun shards); `on_step`: handed to tasks that report their steps (``sample_steps``)."""
    import threading

    import torch

    from .streams import caller_modes, cpu_streams, map_in_streams

    streams = cpu_streams(device)
    if on_step is not None and streams > 1:  # the streams report their steps from their own threads
        lock, report = threading.Lock(), on_step

        def on_step(steps: int) -> Any:
            with lock:
                return report(steps)

    extra = {"on_step": on_step} if on_step is not None and hasattr(task, "sample_steps") else {}

    def call(c: int) -> tuple[int, int, torch.Tensor, torch.Tensor | None]:
        first = c * micro
        span = range(first, first + micro)
        labels = (
            None if label_of is None else torch.tensor([label_of(i) for i in span], dtype=torch.long, device=device)
        )
        images = task.sample(model, Noise([sample_seed(seed, i) for i in span], device), labels, **options, **extra)
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or len(images) != micro:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ZooError(
                f"The {task.card.task} task's sample() returned {shape} for {micro} samples; expected N x C x H x W."
            )
        return c, min(micro, n - first), images.float().clamp_(0, 1), labels

    calls = (c for c in range(-(-n // micro)) if mine is None or mine(c))
    # on a CPU, one call per core at a time, each on one thread (zoo.runtime.streams): 1.2-1.27x for ddpm-cifar's
    # UNet, and the same pixels in every comparison made (every call keeps its `micro` rows)
    yield from map_in_streams(call, calls, streams, caller_modes(device))


def _sample_progress(task: Any, name: str, n: int, micro: int, enabled: bool, options: dict[str, Any]):  # noqa: ANN202
    """A bar over the images, or over the network calls for a task that takes many steps per sample."""
    from .progress import progress

    if not hasattr(task, "sample_steps"):
        return progress(n, f"sample {name}", enabled)
    return progress(-(-n // micro) * task.sample_steps(**options), f"sample {name}", enabled, unit="step")


def sample_seed(seed: int, index: int) -> int:
    """The generator seed of sample `index` of a run with `seed`: a hash, so neighbouring runs' samples do not
    overlap (seed 0's sample 1 is not seed 1's sample 0)."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def class_seed(seed: int, index: int) -> int:
    """The seed of the generator that picks sample `index`'s class when none is given: its own hash (not
    :func:`sample_seed`, whose generator the task draws the noise from), so the class of sample i depends on
    (seed, i) alone, not on `n` or the batch size."""
    digest = hashlib.blake2b(f"{seed}:{index}:class".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class Noise:
    """Random draws for a batch of samples, each from its own generator (on the CPU: the same numbers on every
    device), moved to `device` afterwards."""

    def __init__(self, seeds: list[int], device: torch.device | str = "cpu") -> None:
        import torch

        self.device = torch.device(device)
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, *shape: int) -> torch.Tensor:
        """N x `shape` standard normal draws (float32), row i from sample i's generator."""
        import torch

        return torch.stack([torch.randn(shape, generator=g) for g in self.generators]).to(self.device)

    def rand(self, *shape: int) -> torch.Tensor:
        """N x `shape` uniform draws in [0, 1)."""
        import torch

        return torch.stack([torch.rand(shape, generator=g) for g in self.generators]).to(self.device)

    def truncated_randn(self, bound: float, *shape: int) -> torch.Tensor:
        """N x `shape` standard normal draws truncated to [-bound, bound] (float32; torch's inverse-CDF
        ``trunc_normal_``, so each row stays a function of its own generator)."""
        import torch

        draw = torch.nn.init.trunc_normal_
        return torch.stack([draw(torch.empty(shape), a=-bound, b=bound, generator=g) for g in self.generators]).to(
            self.device
        )


# -- labels -------------------------------------------------------------------------------------------------


def _class_list(classes: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(classes[:limit])
    return shown + (f", ... ({len(classes)} in all)" if len(classes) > limit else "")


def _class_index(card: ModelCard, label: str | int) -> int:
    classes = card.labels
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        raise ZooError(f"A class is a name or an index, not {type(label).__name__} {label!r}.")
    if isinstance(label, int):
        if not 0 <= label < len(classes):
            raise ZooError(
                f"Class index {label} is out of range for model {card.name!r}: it has {len(classes)} "
                f"classes (0-{len(classes) - 1}: {_class_list(classes)})."
            )
        return label
    if label in classes:
        return classes.index(label)
    import difflib

    close = difflib.get_close_matches(label, classes, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ZooError(f"Unknown class {label!r} for model {card.name!r}; its classes: {_class_list(classes)}.{hint}")


def resolve_labels(
    card: ModelCard, conditional: bool, n: int, seed: int, labels: str | int | Sequence[str | int] | None
) -> tuple[list[int] | None, bool]:
    """Class indices for samples 0..n-1 (None for an unconditional model) and whether they were drawn.

    `labels`: None, one class (a name or an index: every sample), or one per sample. A conditional model given
    none draws each sample's class uniformly from its own generator (:func:`class_seed`).
    """
    import torch

    if not conditional:
        if labels is not None:
            raise ZooError(f"{card.name!r} is unconditional: it takes no --class.")
        return None, False
    if not card.labels:
        raise ZooError(
            f"Model {card.name!r} is class-conditional but its card lists no labels (its 'labels' "
            "field names the classes it draws)."
        )
    if labels is None:
        k = len(card.labels)
        drawn = [
            int(torch.randint(k, (1,), generator=torch.Generator().manual_seed(class_seed(seed, i)))) for i in range(n)
        ]
        return drawn, True
    if isinstance(labels, (str, int)):
        return [_class_index(card, labels)] * n, False
    given = list(labels)
    if len(given) == 1:
        return [_class_index(card, given[0])] * n, False
    if len(given) != n:
        raise ZooError(f"{len(given)} classes for {n} samples: give one class (for every sample) or one per sample.")
    return [_class_index(card, label) for label in given], False


# -- the loop -----------------------------------------------------------------------------------------------


@dataclass
class Samples:
    """What :func:`draw` made: the images and everything the manifest records about how."""

    images: torch.Tensor  # float32 N x C x H x W in [0, 1], on the CPU
    model: str  # the card's qualified name
    name: str  # the card's short name
    seed: int
    labels: list[str] | None  # class names per sample; None for an unconditional model
    labels_drawn: bool
    options: dict[str, Any]
    precision: str
    device: str
    seconds: float
    weights: dict[str, Any] | None  # {"variant", "sha256"}; None: the card has no weights (random init)

    @property
    def n(self) -> int:
        return len(self.images)

    @property
    def images_per_second(self) -> float:
        return self.n / self.seconds if self.seconds else 0.0

    def manifest(self, outputs: Sequence[str | Path] = ()) -> dict[str, Any]:
        """The JSON record written beside the files: enough to draw the same images again."""
        import torch

        import zoo

        record: dict[str, Any] = {
            "model": self.model,
            "weights": self.weights,
            "seed": self.seed,
            "n": self.n,
            "labels": self.labels,
        }
        if self.labels_drawn:
            record["labels_drawn"] = CLASS_RULE
        record.update(
            {
                "sample_seeds": SEED_RULE,
                "options": self.options,
                "precision": self.precision,
                "device": self.device,
                "zoo": zoo.__version__,
                "torch": torch.__version__,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "images_per_second": round(self.images_per_second, 1),
                "outputs": [str(p) for p in outputs],
            }
        )
        return record


def _json_safe(value: Any) -> Any:
    return value if isinstance(value, (bool, int, float, str, type(None))) else str(value)


def draw(
    name: str,
    n: int,
    seed: int = 0,
    labels: str | int | Sequence[str | int] | None = None,
    *,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    precision: str = "auto",
    model: nn.Module | None = None,
    show_progress: bool = False,
    **options: Any,
) -> Samples:
    """Draw `n` samples from model `name`, with how they were made (:class:`Samples`); :func:`sample` returns
    the images only. Arguments as :func:`sample`'s; `model` is an already-loaded model of that card;
    `show_progress`: a bar over the images (over the model calls, for a task with ``sample_steps``)."""
    import torch

    from .._api import load
    from .._registry import get_registry
    from .._store import Store
    from .device import autocast, resolve_precision
    from .tasks import task_for

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ZooError(f"The number of samples must be at least 1, not {n!r} (-n).")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ZooError(f"The batch size must be at least 1, not {batch_size!r}.")
    resolved = get_registry().resolve(name)
    card, variant = resolved.card, resolved.variant
    task = task_for(card, "sample")  # a classifier or a detector: one line naming the verbs it has
    recorded = dict(options)
    if hasattr(task, "check_options"):  # bad options are refused before the model is built
        recorded = task.check_options(**options) or recorded  # with the card's defaults filled in
    indices, drawn = resolve_labels(card, bool(getattr(task, "conditional", False)), n, seed, labels)
    given = model is not None
    if model is None and variant is None:
        # A card without weights samples from a random initialisation, seeded from `seed` so the manifest's
        # promise (the same command, the same images) holds for it too; the caller's RNG state is untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = load(name, pretrained=False, device=device)
    elif model is None:
        model = load(name, device=device)
    callers = model if given else None
    was_training = model.training
    model.eval()
    # channels_last, as `zoo eval` runs the model: the images an evaluation measures are the ones written here
    # (and convolutions run faster in it on CPUs: ~1.3x for ddpm-cifar's UNet in bf16)
    model.to(memory_format=torch.channels_last)
    target = next(iter(model.parameters()), torch.empty(0)).device
    precision = resolve_precision(precision, target)
    micro = micro_batch(target, task)
    step = -(-(batch_size or DEFAULT_BATCH_SIZE) // micro) * micro  # whole micro-batches per step
    label_of = None if indices is None else (lambda i: indices[i] if i < n else 0)  # padding: any class

    chunks: list[torch.Tensor] = []
    pending: list[torch.Tensor] = []
    bar = _sample_progress(task, card.name, n, micro, show_progress, options)
    start = time.perf_counter()
    try:
        with torch.inference_mode(), autocast(target, precision == "bf16"):
            for c, keep, images, _ in sample_calls(
                task, model, seed, n, label_of, micro, target, options, on_step=None if bar is None else bar.update
            ):
                pending.append(images[:keep])
                if (c + 1) * micro % step == 0 or (c + 1) * micro >= n:
                    chunks.append(torch.cat(pending).cpu())  # one device-to-host copy (and sync) per step
                    pending = []
                if bar is not None and not hasattr(task, "sample_steps"):
                    bar.update(keep)
    finally:
        if bar is not None:
            bar.close()
        if callers is not None:  # hand the caller's model back as it came
            callers.to(memory_format=torch.contiguous_format)
            callers.train(was_training)
    seconds = time.perf_counter() - start
    weights = None
    if variant is not None:
        weights = {"variant": variant.tag, "sha256": Store().known_sha256(variant)}
    return Samples(
        images=torch.cat(chunks),
        model=card.qualified_name,
        name=card.name,
        seed=seed,
        labels=None if indices is None else [card.labels[i] for i in indices],
        labels_drawn=drawn,
        options={k: _json_safe(v) for k, v in recorded.items()},
        precision=precision,
        device=str(target),
        seconds=seconds,
        weights=weights,
    )


def sample(
    name: str,
    n: int,
    seed: int = 0,
    labels: str | int | Sequence[str | int] | None = None,
    *,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    precision: str = "auto",
    **task_options: Any,
) -> torch.Tensor:
    """`n` new images from generative model `name`: float32 N x C x H x W in [0, 1], on the CPU.

    Sample i is drawn from its own generator, seeded ``blake2b(seed:index)`` (:func:`sample_seed`), and the
    model always sees batches of the same size (:data:`MICRO_BATCH`), so the same seed gives the same pixels
    whatever `batch_size` and `n` (on one device, at one precision).

    Args:
        name: a model whose task supports sampling (a GAN, a VAE...).
        n: how many samples (at least 1).
        seed: the run's seed.
        labels: for a class-conditional model: None (classes drawn uniformly, per sample, from the seed), one
            class name or index (every sample), or one per sample. An unconditional model takes none.
        batch_size: samples per step (default 256); does not change the images.
        device: ``"cpu"``, ``"cuda"``...; default: the best available.
        precision: ``"auto"`` (bf16 where the device has native bf16), ``"fp32"`` or ``"bf16"``.
        **task_options: the task's own options (``zoo sample --help`` lists them).

    Raises:
        ZooError: a model that does not sample, n < 1, an unknown class, a class for an unconditional model.

    Example:
        >>> images = zoo.sample("cgan-cifar", 16, seed=0, labels="cat")
        >>> images.shape
        torch.Size([16, 3, 32, 32])
    """
    return draw(name, n, seed, labels, batch_size=batch_size, device=device, precision=precision, **task_options).images


# -- files ----------------------------------------------------------------------------------------------------


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Floats in [0, 1] -> uint8, rounded as torchvision's ``save_image`` rounds."""
    import torch

    return images.mul(255).add_(0.5).clamp_(0, 255).to("cpu", dtype=torch.uint8)


def check_output(path: Path, *, directory: bool = False) -> None:
    """Refuse, before anything is drawn, an output whose folder is missing or not writable: one line naming
    it. `directory`: `path` is a folder to write into (created if missing, inside an existing folder)."""
    if directory and path.is_dir():
        folder, what = path, f"Cannot write into {path}: the folder"
    else:
        folder, what = path.parent, f"Cannot write {path}: its folder"
    if not folder.is_dir():
        raise ZooError(f"{what} {folder} does not exist.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ZooError(f"{what} {folder} is not writable.")
    if not directory and path.is_dir():
        raise ZooError(f"Cannot write {path}: it is a folder (-o names an image file, --out-dir a folder).")
    if directory and path.exists() and not path.is_dir():
        raise ZooError(f"Cannot write into {path}: it is a file, not a folder.")


def _png(image: torch.Tensor) -> bytes:
    from torchvision.io import encode_png

    return encode_png(to_uint8(image)).numpy().tobytes()


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8) -> Path:
    """One PNG of every image, `nrow` to a row, 2 pixels apart (torchvision's ``make_grid``)."""
    from torchvision.utils import make_grid

    path = Path(path)
    if nrow < 1:
        raise ZooError(f"--nrow must be at least 1, not {nrow}.")
    write_atomic(path, _png(make_grid(images, nrow=nrow, padding=2)))
    return path


def save_images(images: torch.Tensor, directory: str | Path) -> list[Path]:
    """One PNG per image, ``000000.png``, ``000001.png``..., in `directory` (created inside an existing one)."""
    directory = Path(directory)
    try:
        directory.mkdir(exist_ok=True)
    except OSError as exc:
        raise ZooError(f"Cannot create {directory}: {exc.strerror or exc}.") from None
    paths = []
    for i, image in enumerate(images):
        paths.append(directory / f"{i:06d}.png")
        write_atomic(paths[-1], _png(image))
    return paths


def write_manifest(path: str | Path, manifest: dict[str, Any]) -> Path:
    """The manifest as JSON, atomically."""
    import json

    path = Path(path)
    write_atomic(path, (json.dumps(manifest, indent=2) + "\n").encode())
    return path
