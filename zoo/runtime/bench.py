"""``zoo bench``: latency and throughput of models on this machine, as ``zoo eval`` runs them.

What is timed, per call: the task's forward pass around the model, exactly the runtime's
:func:`zoo.runtime.evaluate.forward` — the uint8 batch moved to the device, the task's ``prepare``
(normalisation), the model, and the task's ``postprocess`` (a detector's decoding, thresholds and NMS, at ``zoo
predict``'s thresholds) — under ``inference_mode``, with the model placed as ``zoo eval`` places it: BatchNorm
folded (:func:`fuse_for_inference`), channels_last, bf16 autocast when the precision resolves to bf16
(:func:`resolve_precision`, ``auto`` as on the other commands), in fp32 on a CPU the fused oneDNN graph
(:mod:`zoo.runtime.graph`, prepared per batch size outside the timing; ``graph`` in the record); one stream of
calls (``zoo eval`` on a CPU runs one per core: :mod:`zoo.runtime.streams`, for throughput). Decoding and
resizing the image are not timed: the input is one real picture (``examples/images/chelsea.png`` in a checkout,
or ``image=``), brought to the card's geometry by the task's own ``predict_batch`` once, and repeated to the
batch size; where the picture is missing, uniform random uint8 pixels of the card's input shape (3x480x640 for a
model that takes any size).

Figures:
- latency: batch 1, after two warm-up calls; the median (and min, p90) of the calls made in ``seconds``
  (at least 5 calls).
- throughput: images per second at each batch size in turn (one warm-up call, then calls for ``seconds``);
  the best one is the headline. Once a call (the median at a batch size) takes longer than ``seconds``,
  larger batch sizes are skipped (they would only take longer) and the record says so.

The figures belong to the machine, so they go to the caller (a table, JSON, a file), never onto a card.
Generative tasks (those with the ``sample`` verb: GANs, VAEs, diffusion) are refused: what users wait for there
is sampling, which ``zoo sample`` times.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from ..errors import ZooError

__all__ = ["DEFAULT_BATCH_SIZES", "DEFAULT_SECONDS", "bench", "check_benchable", "machine", "parse_batch_sizes"]

DEFAULT_BATCH_SIZES: Final = (1, 8, 32, 64, 128)
DEFAULT_SECONDS: Final = 1.0
EXAMPLE_IMAGE: Final = Path(__file__).resolve().parents[2] / "examples" / "images" / "chelsea.png"
ANY_SIZE_SHAPE: Final = (3, 480, 640)  # synthetic input for a model that takes any size (torchvision detectors)
WARMUP_CALLS: Final = 2
MIN_LATENCY_CALLS: Final = 5
MAX_CALLS: Final = 10_000
MAX_BATCH: Final = 4096


def parse_batch_sizes(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"1,8,32"`` (or a sequence of ints) -> (1, 8, 32): positive, at most MAX_BATCH, sorted, no repeats."""
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",")]
        try:
            sizes = [int(p) for p in parts]
        except ValueError:
            raise ZooError(
                f"--batch-sizes: expected positive integers separated by commas, like 1,8,32,64,128; got {text!r}."
            ) from None
    else:
        sizes = [int(s) for s in text]
    if not sizes or any(s < 1 or s > MAX_BATCH for s in sizes):
        raise ZooError(
            f"--batch-sizes: every size must be between 1 and {MAX_BATCH}, like 1,8,32,64,128; "
            f"got {text if isinstance(text, str) else ','.join(map(str, sizes))!r}."
        )
    return tuple(sorted(set(sizes)))


def check_benchable(name: str) -> Any:
    """The card of `name` if ``zoo bench`` measures its task; otherwise one line saying what it measures."""
    from .._api import card as get_card
    from .tasks import task_class

    card = get_card(name)  # an unknown name: did-you-mean, as everywhere
    verbs = frozenset(getattr(task_class(card.task), "verbs", frozenset()))
    if "predict" not in verbs or "sample" in verbs:
        instead = f", which generates: time 'zoo sample {name}' instead" if "sample" in verbs else ""
        raise ZooError(
            f"zoo bench measures models that predict on images (classifiers, detectors); {name!r} is a "
            f"{card.task} model{instead}."
        )
    return card


def machine(device: Any, precision: str) -> dict[str, Any]:
    """What the figures depend on: CPU model, threads, torch, device and precision."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    record: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "precision": precision,
    }
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
    return record


def _input_image(card: Any, image: str | Path | None) -> tuple[Any, dict[str, Any]]:
    """One uint8 3xHxW picture and a description of it for the record."""
    import torch

    from .images import read_image

    if image is not None or EXAMPLE_IMAGE.is_file():
        path = Path(image) if image is not None else EXAMPLE_IMAGE
        picture = read_image(path)
        shown = str(path) if image is not None else "examples/images/chelsea.png"
        return picture, {"source": shown, "size": list(picture.shape)}
    shape = tuple(card.input_shape) if len(card.input_shape) == 3 else ANY_SIZE_SHAPE
    generator = torch.Generator().manual_seed(0)
    picture = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    return picture, {"source": "synthetic uint8 (uniform random pixels)", "size": list(shape)}


def _timed_calls(call: Callable[[], None], seconds: float, min_calls: int) -> list[float]:
    """Call until `seconds` have passed and at least `min_calls` were made; the duration of each call."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < MAX_CALLS and (len(times) < min_calls or time.perf_counter() - start < seconds):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return times


def bench_model(
    name: str,
    *,
    device: str | None = None,
    precision: str = "auto",
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    seconds: float = DEFAULT_SECONDS,
    pretrained: bool = True,
    image: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Latency (batch 1) and throughput (best of `batch_sizes`) of model `name`; see the module's docstring."""
    import torch

    from .._api import load
    from .device import autocast, fuse_for_inference, resolve_precision, tune_malloc
    from .evaluate import forward, model_input
    from .graph import MIN_BATCHES, graph_for_inference, onednn_fusion
    from .graph import wanted as graph_wanted
    from .tasks import task_for

    tune_malloc()
    card = check_benchable(name)
    task = task_for(card, "predict")
    with_weights = pretrained and card.variant() is not None
    model = load(name, pretrained=with_weights, device=device)
    model.eval()
    target = next(model.parameters()).device
    resolved = resolve_precision(precision, target)
    bf16 = resolved == "bf16"
    model = fuse_for_inference(model)
    model = model.to(memory_format=torch.channels_last)
    picture, described = _input_image(card, image)
    sync = torch.cuda.synchronize if target.type == "cuda" else (lambda: None)
    use_graph = graph_wanted(target, bf16, MIN_BATCHES)  # timed calls are many: as zoo eval on a large dataset
    graphs: list[bool] = []  # per batch size: whether the fused graph ran
    fusion = onednn_fusion if use_graph else contextlib.nullcontext  # a fresh context per call

    def runner(batch_size: int) -> Callable[[], None]:
        batch = task.predict_batch([picture] * batch_size, [f"image{i}" for i in range(batch_size)])
        described.setdefault("model_input", list(batch.images[0].shape))
        runs = model
        if use_graph:  # made for this batch size, as zoo eval makes it for its own; its preparation is not timed
            with onednn_fusion(), torch.inference_mode():
                runs = graph_for_inference(model, model_input(task, batch, target, True), True) or model
        graphs.append(runs is not model)

        def call() -> None:
            with fusion(), torch.inference_mode(), autocast(target, bf16):
                forward(task, runs, batch, target, True)
            sync()

        return call

    say = log or (lambda _line: None)
    call = runner(1)
    for _ in range(WARMUP_CALLS):
        call()
    times = _timed_calls(call, seconds, MIN_LATENCY_CALLS)
    ms = sorted(t * 1e3 for t in times)
    latency = {
        "batch_size": 1,
        "median_ms": round(statistics.median(ms), 3),
        "min_ms": round(ms[0], 3),
        "p90_ms": round(ms[min(len(ms) - 1, int(0.9 * len(ms)))], 3),
        "calls": len(ms),
    }
    say(f"{name}: latency at batch 1 {latency['median_ms']:.2f} ms (median of {len(ms)})")
    by_size: dict[str, float] = {}
    skipped: list[int] = []
    if 1 in batch_sizes:
        by_size["1"] = round(len(times) / sum(times), 2)
    typical_call = statistics.median(times)
    for size in batch_sizes:
        if size == 1:
            continue
        if typical_call > seconds:  # a larger batch would take longer still: skip it, and say so
            skipped.append(size)
            continue
        call = runner(size)
        call()  # warm-up (allocations of this size)
        sized = _timed_calls(call, seconds, 1)
        typical_call = statistics.median(sized)
        by_size[str(size)] = round(size * len(sized) / sum(sized), 2)
        say(f"{name}: batch {size}: {by_size[str(size)]:.1f} images/s ({len(sized)} call{'s' * (len(sized) != 1)})")
    best = max(by_size, key=lambda k: by_size[k])
    throughput: dict[str, Any] = {"images_per_second": by_size[best], "batch_size": int(best), "by_batch_size": by_size}
    if skipped:
        throughput["skipped_batch_sizes"] = skipped
        throughput["skipped_because"] = (
            f"a call took {typical_call:.2f} s (median), longer than "
            f"seconds={seconds:g}; larger batches would take longer still"
        )
    variant = card.variant()
    return {
        "name": name,
        "task": card.task,
        "params": card.params,
        "weights": variant.tag if with_weights and variant is not None else None,
        "device": str(target),
        "precision": resolved,
        "graph": all(graphs),
        "input": described,
        "latency": latency,
        "throughput": throughput,
    }


def bench(
    names: Sequence[str],
    *,
    device: str | None = None,
    precision: str = "auto",
    batch_sizes: Sequence[int] | str = DEFAULT_BATCH_SIZES,
    seconds: float = DEFAULT_SECONDS,
    pretrained: bool = True,
    image: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Benchmark every model of `names` on this machine; one record: ``machine``, ``settings``, ``models``.

    Every name is checked (known, a task that predicts) before any model is built, so a typo in the third name
    does not cost the first two measurements. `pretrained=False` times the architecture with random weights
    (no download); a card without weights is always timed that way (its record says ``"weights": null``).
    """
    import torch

    from .device import check_device, resolve_precision

    if not names:
        raise ZooError("Name at least one model to benchmark, e.g. 'zoo bench resnet20-cifar resnet56-cifar'.")
    sizes = parse_batch_sizes(batch_sizes)
    if not seconds > 0:
        raise ZooError(f"--seconds must be positive, got {seconds:g}.")
    if image is not None and not Path(image).is_file():
        raise ZooError(f"--image {image}: no such file.")
    check_device(device)
    for name in names:
        check_benchable(name)
    started = time.perf_counter()
    models = [
        bench_model(
            name,
            device=device,
            precision=precision,
            batch_sizes=sizes,
            seconds=seconds,
            pretrained=pretrained,
            image=image,
            log=log,
        )
        for name in names
    ]
    first = torch.device(models[0]["device"])
    return {
        "machine": machine(first, resolve_precision(precision, first)),
        "settings": {
            "precision": precision,
            "batch_sizes": list(sizes),
            "seconds": seconds,
            "pretrained": pretrained,
            "warmup_calls": WARMUP_CALLS,
            "timed": "task prepare + model + task postprocess, inference_mode, BatchNorm folded, "
            "channels_last, in fp32 on a CPU the fused oneDNN graph; decoding and resizing not timed",
        },
        "models": models,
        "seconds": round(time.perf_counter() - started, 2),
    }
