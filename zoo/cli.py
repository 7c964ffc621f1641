"""The `zoo` command line (click). Listing commands stay torch-free; heavy imports live inside commands."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from ._card import ModelCard
from .errors import ZooError

F = TypeVar("F", bound=Callable[..., Any])


def _human_count(n: int | None) -> str:
    if n is None:
        return "-"
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 1_000:
        return f"{n / 1e3:.0f}K" if n >= 100_000 else f"{n / 1e3:.1f}K"
    return str(n)


def _human_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _table(headers: Sequence[str], rows: list[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def _one_line_errors(func: F) -> F:
    """A ZooError becomes one line on stderr and exit code 1 (no traceback)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ZooError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="visionzoo", prog_name="zoo")
def cli() -> None:
    """zoo: a model zoo for PyTorch computer vision.

    Every model is a card in one registry; weights are verified safetensors, never pickle.
    """


# -- list / info ------------------------------------------------------------------------------------


def _headline(card: ModelCard) -> str:
    variant = card.variant()
    if variant is None or not variant.metrics:
        return "-"
    return variant.metrics[0].label()


def _weights_label(card: ModelCard) -> str:
    variant = card.variant()
    if variant is None:
        return "none"
    how = "converted" if variant.format != "safetensors" else "safetensors"
    dtype = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[variant.dtype]
    return f"{variant.tag} ({how}, {dtype})"


def _card_summary(card: ModelCard, display: str, cached: bool | None) -> dict[str, Any]:
    variant = card.variant()
    return {
        "name": display,
        "qualified_name": card.qualified_name,
        "task": card.task,
        "plugin": card.plugin,
        "params": card.params,
        "input": list(card.input_shape),
        "weights": variant.tag if variant else None,
        "tags": list(card.weights),
        "metric": (None if variant is None or not variant.metrics else
                   {k: v for k, v in variant.metrics[0].__dict__.items() if v is not None}),
        "cached": cached,
    }


@cli.command("list")
@click.argument("pattern", required=False)
@click.option("--task", help="Only this task (classifier, detector, gan, vae, diffusion...).")
@click.option("--plugin", help="Only models from this plugin.")
@click.option("--pretrained", is_flag=True, help="Only models with pretrained weights.")
@click.option("--json", "as_json", is_flag=True, help="JSON records instead of a table.")
@_one_line_errors
def list_command(pattern: str | None, task: str | None, plugin: str | None, pretrained: bool,
                 as_json: bool) -> None:
    """List models, optionally filtered by a glob PATTERN (e.g. 'resnet*')."""
    from ._registry import get_registry
    from ._store import Store

    registry = get_registry()
    store = Store()
    cards = registry.select(pattern, task=task, plugin=plugin, pretrained=pretrained)
    records = []
    for card in cards:
        variant = card.variant()
        cached = store.is_available(variant) if variant else None
        records.append((card, _card_summary(card, registry.display_name(card), cached)))
    if as_json:
        click.echo(json.dumps([r for _, r in records], indent=2))
        return
    if not records:
        click.echo("No models match." + (" Run 'zoo plugins' to see what is installed." if registry.cards else ""))
        return
    rows = []
    for card, r in records:
        shape = "x".join(map(str, card.input_shape)) or "-"
        cached = {True: "yes", False: "no", None: "-"}[r["cached"]]
        rows.append([r["name"], card.task, _human_count(card.params), shape, _weights_label(card),
                     _headline(card), cached, card.plugin])
    click.echo(_table(["name", "task", "params", "input", "weights (default)", "metric", "cached", "plugin"], rows))
    if any(r["metric"] and r["metric"]["source"] == "published" for _, r in records):
        click.echo("* published by the weights' authors; others measured by zoo "
                   "('zoo info NAME' gives the source or the command)")


def _card_dict(card: ModelCard, store: Any) -> dict[str, Any]:
    def clean(obj: Any) -> Any:
        if hasattr(obj, "__dataclass_fields__"):
            return {k: clean(v) for k, v in obj.__dict__.items() if v not in (None, (), {})}
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [clean(v) for v in obj]
        return obj

    data = clean(card)
    # The same keys as the YAML card and `zoo list --json`, not the dataclass attribute names.
    for old, new in (("input_shape", "input"), ("default_tag", "default"), ("origin", "card_file")):
        if old in data:
            data[new] = data.pop(old)
    data["qualified_name"] = card.qualified_name
    for tag, variant in card.weights.items():
        data["weights"][tag]["cached"] = store.is_available(variant)
        data["weights"][tag]["default"] = tag == card.default_tag
    return data


@cli.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="The card as JSON.")
@_one_line_errors
def info_command(name: str, as_json: bool) -> None:
    """Show the whole card of model NAME: source, license, preprocessing, weights, metrics."""
    from ._registry import get_registry
    from ._store import Store

    card = get_registry().card(name)
    store = Store()
    if as_json:
        click.echo(json.dumps(_card_dict(card, store), indent=2))
        return
    out = [f"{card.name}  ({card.qualified_name})"]
    if card.description:
        out.append(f"  {card.description}")
    fields = [
        ("task", card.task), ("plugin", card.plugin), ("builder", card.builder),
        ("kwargs", ", ".join(f"{k}={v!r}" for k, v in card.kwargs.items()) or "-"),
        ("params", f"{card.params:,}" if card.params else "-"),
        ("input", "x".join(map(str, card.input_shape)) or "-"),
        ("head", card.head or "-"), ("license", card.license or "-"), ("source", card.source or "-"),
        ("citation", card.citation or "-"), ("card file", card.origin),
    ]
    out += [f"  {k + ':':<12}{v}" for k, v in fields]
    if card.preprocess:
        p = card.preprocess
        out.append(f"  {'preprocess:':<12}resize {p.resize or '-'}, center crop {p.crop or '-'}, "
                   f"{p.interpolation}, mean {list(p.mean)}, std {list(p.std)}")
    if card.labels:
        out.append(f"  {'labels:':<12}{', '.join(card.labels)}")
    if not card.weights:
        out.append(f"  {'weights:':<12}none (zoo.load(..., pretrained=False) builds it with random init)")
    for tag, v in card.weights.items():
        default = " (default)" if tag == card.default_tag else ""
        cached = "yes" if store.is_available(v) else "no"
        out.append(f"  weights {tag}{default}:")
        out.append(f"    uri:      {v.uri}")
        out.append(f"    sha256:   {v.sha256}")
        out.append(f"    size:     {_human_bytes(v.size)}" + (f" ({v.size:,} bytes)" if v.size else ""))
        fmt = v.format + (" -> safetensors on fetch" if v.format != "safetensors" else "")
        out.append(f"    format:   {fmt}, {v.dtype}")
        if v.convert:
            parts = [f"key {v.convert.key!r}" if v.convert.key else "",
                     f"strip prefix {v.convert.strip_prefix!r}" if v.convert.strip_prefix else "",
                     *(f"{a!r} -> {b!r}" for a, b in v.convert.rename)]
            out.append(f"    convert:  {', '.join(p for p in parts if p) or 'as is'}")
        if v.license:
            out.append(f"    license:  {v.license}")
        out.append(f"    cached:   {cached}")
        for m in v.metrics:
            how = f"published: {m.reference}" if m.source == "published" else f"measured: {m.command}"
            out.append(f"    metric:   {m.name} {m.value:g} on {m.dataset} {m.split} ({how})")
            if m.note:
                out.append(f"              {m.note}")
        if v.notes:
            out.append(f"    notes:    {v.notes}")
    click.echo("\n".join(out))


# -- weights ----------------------------------------------------------------------------------------


@cli.command("fetch")
@click.argument("names", nargs=-1, required=True)
@_one_line_errors
def fetch_command(names: tuple[str, ...]) -> None:
    """Download, verify (sha256) and convert the weights of NAME[.TAG] into the cache."""
    from ._api import fetch

    for name in names:
        path = fetch(name)
        click.echo(f"{name}: {path}")


@cli.group("cache")
def cache_group() -> None:
    """Inspect and manage the weights cache (ZOO_HOME)."""


def _owners() -> dict[str, list[str]]:
    from ._registry import get_registry

    owners: dict[str, list[str]] = {}
    try:
        cards = get_registry().cards
    except ZooError:
        return owners  # a broken registry must not hide what is on disk
    for card in cards:
        for tag, variant in card.weights.items():
            owners.setdefault(variant.sha256, []).append(f"{card.name}.{tag}")
    return owners


@cache_group.command("dir")
def cache_dir_command() -> None:
    """Print the cache root."""
    from ._store import Store

    click.echo(str(Store().root))


@cache_group.command("ls")
@click.option("--json", "as_json", is_flag=True, help="JSON records instead of a table.")
@_one_line_errors
def cache_ls_command(as_json: bool) -> None:
    """List cached weights files and the models they belong to."""
    from ._store import Store

    store = Store()
    owners = _owners()
    entries = store.entries()
    records = [{"path": str(e.path), "sha256": e.sha256, "size": e.size, "kind": e.kind,
                "models": owners.get(e.sha256, [])} for e in entries]
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    if not records:
        click.echo(f"The cache at {store.root} is empty. 'zoo fetch NAME' fills it.")
        return
    rows = [[", ".join(r["models"]) or "(no card)", r["kind"], _human_bytes(r["size"]), r["sha256"][:12],
             r["path"]] for r in records]
    click.echo(_table(["models", "kind", "size", "sha256", "path"], rows))
    total = sum(r["size"] for r in records)
    click.echo(f"{_plural(len(records), 'file')}, {_human_bytes(total)} in {store.root}")


@cache_group.command("verify")
@_one_line_errors
def cache_verify_command() -> None:
    """Re-hash every cached file; exit 1 if any is corrupt."""
    from ._store import Store

    store = Store()
    bad = 0
    entries = [e for e in store.entries() if e.kind != "partial"]
    for entry in entries:
        problem = store.verify(entry)
        status = "ok" if problem is None else f"CORRUPT: {problem}"
        bad += problem is not None
        click.echo(f"{entry.path.name}  {status}")
    if bad:
        raise click.ClickException(f"{bad} of {_plural(len(entries), 'cached file')} corrupt; remove them with "
                                   "'zoo cache rm --corrupt' and fetch again.")
    click.echo(f"{_plural(len(entries), 'file')} verified.")


@cache_group.command("rm")
@click.argument("names", nargs=-1)
@click.option("--all", "remove_all", is_flag=True, help="Remove every cached weights file.")
@click.option("--corrupt", is_flag=True, help="Remove files that fail verification.")
@click.option("--partial", is_flag=True, help="Remove interrupted downloads.")
@_one_line_errors
def cache_rm_command(names: tuple[str, ...], remove_all: bool, corrupt: bool, partial: bool) -> None:
    """Remove the cached weights of NAME[.TAG] (or --all, --corrupt, --partial)."""
    from ._registry import get_registry
    from ._store import Store

    store = Store()
    if not (names or remove_all or corrupt or partial):
        raise click.UsageError("name a model, or use --all, --corrupt or --partial.")
    shas: set[str] = set()
    for name in names:
        resolved = get_registry().resolve(name)
        variants = [resolved.variant] if resolved.tag else list(resolved.card.weights.values())
        shas.update(v.sha256 for v in variants if v is not None)
    removed: list[Path] = []
    for entry in store.entries():
        if (remove_all or (partial and entry.kind == "partial")
                or (corrupt and store.verify(entry) is not None)):
            removed += store.remove(entry.sha256) if entry.kind != "partial" else []
            if entry.path.exists():
                entry.path.unlink()
                removed.append(entry.path)
    for sha in shas:
        removed += store.remove(sha)
    for path in removed:
        click.echo(f"removed {path}")
    if not removed:
        click.echo("nothing to remove")


@cli.command("convert")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--sha256", "expected", help="Refuse to read CHECKPOINT unless its sha256 is this.")
@click.option("--key", help="Entry of the checkpoint dict holding the state dict (default: guess).")
@click.option("--strip-prefix", help="Remove this prefix from every key (e.g. 'module.').")
@click.option("--dtype", type=click.Choice(["float16", "bfloat16", "float32"]),
              help="Cast floating tensors (float16 halves the file; zoo.load casts back to the model's dtype).")
@_one_line_errors
def convert_command(checkpoint: Path, output: Path, expected: str | None, key: str | None,
                    strip_prefix: str | None, dtype: str | None) -> None:
    """Convert a PyTorch checkpoint to safetensors without executing pickle code.

    CHECKPOINT may also be a safetensors file, to rename keys or cast it (--dtype).
    """
    import os

    import torch

    from ._card import ConvertSpec
    from ._convert import convert_checkpoint
    from ._hashing import sha256_file
    from .errors import WeightsError

    actual = sha256_file(checkpoint)
    if expected and actual != expected.lower():
        raise WeightsError(f"{checkpoint}: sha256 {actual}, expected {expected}; not read.")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".partial")
    try:
        convert_checkpoint(checkpoint, tmp, ConvertSpec(key=key, strip_prefix=strip_prefix),
                           metadata={"source_sha256": actual, "source_uri": checkpoint.name},
                           dtype=getattr(torch, dtype) if dtype else None)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    click.echo(f"{output}  (source sha256 {actual}; output sha256 {sha256_file(output)})")


# -- runtime ----------------------------------------------------------------------------------------


@cli.command("predict")
@click.argument("name")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--topk", default=5, show_default=True, help="How many classes to show per image.")
@click.option("--json", "as_json", is_flag=True, help="JSON records instead of text.")
@click.option("--skip-bad", is_flag=True, help="Report unreadable images and go on, instead of stopping.")
@click.option("--device", help="cpu, cuda, cuda:1, mps (default: the best available).")
@_one_line_errors
def predict_command(name: str, images: tuple[Path, ...], topk: int, as_json: bool, skip_bad: bool,
                    device: str | None) -> None:
    """Predict with model NAME on IMAGES (JPEG, PNG, WebP, GIF, BMP, TIFF; any mode, any size)."""
    from .runtime.predict import predict

    records = predict(name, list(images), topk=topk, device=device, skip_bad=skip_bad)
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    for record in records:
        if "error" in record:
            click.echo(f"{record['image']}: SKIPPED ({record['error']})")
            continue
        shown = ", ".join(f"{p['label']} {100 * p['probability']:.1f}%" for p in record["predictions"])
        click.echo(f"{record['image']}: {shown}")


def _card_metric(name: str, metric: str) -> Any:
    """The card's figure to compare with: a measured one (re-runnable on the same data) before a published one."""
    from ._api import card as get_card

    variant = get_card(name).variant()
    candidates = [m for m in (variant.metrics if variant else ()) if m.name == metric]
    measured = [m for m in candidates if m.source == "measured"]
    return (measured or candidates or [None])[0]


@cli.command("eval")
@click.argument("name")
@click.option("--data", required=True, type=click.Path(exists=True, path_type=Path),
              help="ImageFolder directory, a .zip of one, or CIFAR-10 python batches.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--report", type=click.Path(file_okay=False, path_type=Path),
              help="Write metrics.json and confusion.png into this directory.")
@click.option("--batch-size", type=int, help="Default: 64 (fp32) or 128 (bf16), the fastest measured on CPU.")
@click.option("--bf16", is_flag=True, help="bf16 autocast (where the device supports it).")
@click.option("--device", help="cpu, cuda, cuda:1, mps (default: the best available).")
@click.option("--skip-bad", is_flag=True, help="Skip unreadable images (counted) instead of stopping.")
@click.option("--no-cache", is_flag=True, help="Decode the images again instead of using the decode cache.")
@click.option("--compare", is_flag=True, help="Check the measured top-1 against the card's figure.")
@click.option("--tolerance", default=0.3, show_default=True, help="Points of top-1 --compare accepts.")
@click.option("--val-split", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Measure only the images 'zoo finetune --val-split F --seed S' held out for validation.")
@click.option("--seed", default=0, show_default=True, help="The seed of that split.")
@_one_line_errors
def eval_command(name: str, data: Path, as_json: bool, report: Path | None, batch_size: int | None, bf16: bool,
                 device: str | None, skip_bad: bool, no_cache: bool, compare: bool, tolerance: float,
                 val_split: float | None, seed: int) -> None:
    """Evaluate model NAME on a labelled dataset (the card's preprocessing, batched, no grad)."""
    from .runtime.evaluate import evaluate

    result = evaluate(name, data, batch_size=batch_size, device=device, bf16=bf16, skip_bad=skip_bad,
                      cache=not no_cache, val_split=val_split, seed=seed)
    record = result.as_dict()
    verdict = None
    if compare:
        reference = _card_metric(name, "top1")
        if reference is None:
            raise ZooError(f"Model {name!r} has no top1 figure on its card to compare with.")
        delta = record["metrics"]["top1"] - reference.value
        verdict = {"card": reference.value, "card_dataset": reference.dataset, "card_split": reference.split,
                   "card_source": reference.source, "measured": record["metrics"]["top1"],
                   "delta": round(delta, 2), "reproduces": abs(delta) <= tolerance}
        record["compare"] = verdict
    if report is not None:
        from .runtime.report import write_report

        record["report"] = [str(p) for p in write_report(record, report)]
    if as_json:
        click.echo(json.dumps(record, indent=2))
    else:
        m = record["metrics"]
        head = f"top-1 {m['top1']:.2f}%" + (f"  top-5 {m['top5']:.2f}%" if "top5" in m else "")
        part = f" (validation split {val_split}, seed {seed})" if val_split is not None else ""
        click.echo(f"{result.model} on {data}{part}: {head}  ({result.images} images, "
                   f"{result.images_per_second:.0f} img/s{', decode cached' if result.decode_cached else ''})")
        worst = sorted(m["per_class"].items(), key=lambda kv: kv[1])[:3]
        click.echo("lowest per-class top-1: " + ", ".join(f"{k} {v:.1f}%" for k, v in worst))
        if result.skipped:
            click.echo(f"skipped {len(result.skipped)} unreadable images")
        for path in record.get("report", []):
            click.echo(f"wrote {path}")
        if verdict:
            word = "reproduces" if verdict["reproduces"] else "does NOT reproduce"
            click.echo(f"{word} the card's {verdict['card_source']} {verdict['card']:.2f}% "
                       f"({verdict['card_dataset']} {verdict['card_split']}): delta {verdict['delta']:+.2f} points")
    if verdict and not verdict["reproduces"]:
        raise SystemExit(1)


@cli.command("finetune")
@click.argument("name")
@click.option("--data", required=True, type=click.Path(exists=True, path_type=Path),
              help="ImageFolder directory, a .zip of one, or CIFAR-10 python batches.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output directory; its name becomes the new model's name.")
@click.option("--epochs", default=5, show_default=True)
@click.option("--batch-size", default=128, show_default=True)
@click.option("--lr", type=float, help="Peak learning rate (default: 0.05 SGD / 1e-3 AdamW, per 128 images).")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="sgd", show_default=True)
@click.option("--weight-decay", default=5e-4, show_default=True)
@click.option("--schedule", type=click.Choice(["onecycle", "cosine"]), default="onecycle", show_default=True)
@click.option("--warmup", default=0.15, show_default=True, help="Fraction of steps spent warming up.")
@click.option("--label-smoothing", default=0.1, show_default=True)
@click.option("--augment", type=click.Choice(["none", "crop-flip", "crop-flip-erase", "crop-flip-trivial-erase"]),
              default="crop-flip", show_default=True,
              help="Batch augmentation: random crop + flip, then cutout (-erase), TrivialAugmentWide per image "
                   "(-trivial-).")
@click.option("--freeze", type=click.Choice(["none", "backbone"]), default="none", show_default=True)
@click.option("--balance", type=click.Choice(["none", "sampler", "loss"]), default="none", show_default=True,
              help="For imbalanced data: class-balanced sampling or inverse-frequency loss weights.")
@click.option("--accumulate", default=1, show_default=True, help="Gradient accumulation steps.")
@click.option("--val-split", default=0.1, show_default=True, help="Fraction held out (per class) for validation.")
@click.option("--bf16", is_flag=True, help="bf16 autocast (fast on GPUs and CPUs with native bf16).")
@click.option("--no-channels-last", is_flag=True)
@click.option("--compile", "compile_", is_flag=True,
              help="torch.compile the training step: faster steps after a one-off compile (needs a C++ compiler "
                   "on CPU).")
@click.option("--ema", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Keep a moving average of the weights with this decay per step (e.g. 0.999) and validate and "
                   "save it instead (0: off).")
@click.option("--scratch", is_flag=True, help="Start from random initialisation instead of the card's weights.")
@click.option("--seed", default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.pt, exactly where it stopped.")
@click.option("--checkpoint-minutes", default=10.0, show_default=True,
              help="Also write OUT/checkpoint.pt mid-epoch this often (0: at epoch ends only).")
@click.option("--device", help="cpu, cuda, mps (default: the best available; torchrun sets it per rank).")
@_one_line_errors
def finetune_command(name: str, data: Path, out: Path, epochs: int, batch_size: int, lr: float | None,
                     optimizer: str, weight_decay: float, schedule: str, warmup: float, label_smoothing: float,
                     augment: str, freeze: str, balance: str, accumulate: int, val_split: float, bf16: bool,
                     no_channels_last: bool, compile_: bool, ema: float, scratch: bool, seed: int, resume: bool,
                     checkpoint_minutes: float, device: str | None) -> None:
    """Fine-tune model NAME on a labelled dataset; the result loads as zoo.load(OUT's name).

    Ctrl-C (or SIGTERM) stops at the next batch and leaves OUT/checkpoint.pt; --resume continues from there.
    """
    from .runtime.finetune import FinetuneConfig, finetune

    config = FinetuneConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                            weight_decay=weight_decay, schedule=schedule, warmup=warmup,
                            label_smoothing=label_smoothing, augment=augment, freeze=freeze, balance=balance,
                            accumulate=accumulate, val_split=val_split, bf16=bf16,
                            channels_last=not no_channels_last, compile=compile_, ema=ema, seed=seed,
                            pretrained=not scratch)
    # the card records the command that reproduces the run: a resumed run's --resume is not part of it
    command = ("zoo " + " ".join(a for a in sys.argv[1:] if a != "--resume")
               if sys.argv and sys.argv[0].endswith("zoo") else None)

    def report(row: dict[str, Any]) -> None:  # as each epoch ends: long runs show progress in logs too
        val = f"  val top-1 {row['val_top1']:.2f}%" if "val_top1" in row else ""
        click.echo(f"epoch {row['epoch']}: loss {row['train_loss']:.4f}  train top-1 {row['train_top1']:.2f}%"
                   f"{val}  ({row['images_per_second']:.0f} img/s, {row['seconds']:.0f} s)")

    result = finetune(name, data, out, config=config, resume=resume, device=device, command=command,
                      on_epoch=report, checkpoint_every=checkpoint_minutes * 60)
    if result.interrupted:  # asked for, so not an "Error:"; 130 is the shell's code for "interrupted"
        if (out / "checkpoint.pt").is_file():
            click.echo(f"Stopped; the checkpoint is {out / 'checkpoint.pt'}. Run the same command with --resume "
                       "to continue.", err=True)
        else:
            click.echo("Stopped before the first checkpoint was written; nothing to resume.", err=True)
        raise SystemExit(130)
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return
    click.echo(f"best epoch {result.best_epoch}: val top-1 {result.best_val_top1:.2f}%  -> {result.weights}")
    click.echo(f"load it with zoo.load({result.name!r}) or 'zoo info {result.name}'")


# -- plugins ----------------------------------------------------------------------------------------


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="JSON records like `llm plugins`.")
@_one_line_errors
def plugins_command(as_json: bool) -> None:
    """List installed plugins: distribution, version, hooks, models contributed, load errors."""
    from ._registry import get_registry

    registry = get_registry()
    infos = sorted(registry.plugins.infos.values(), key=lambda i: i.name)
    if as_json:
        click.echo(json.dumps([i.as_dict() for i in infos], indent=2))
        return
    if not infos:
        click.echo("No plugins installed.")
        return
    rows = []
    for info in infos:
        status = ("FAILED" if info.error else "skipped" if info.skipped
                  else "ok, with problems" if info.problems else "ok")
        dist = f"{info.distribution or '?'} {info.version or ''}".strip()
        rows.append([info.name, dist, "built-in" if info.builtin else "third-party", status,
                     str(len(info.models)), ", ".join(info.hooks) or "-"])
    click.echo(_table(["plugin", "distribution", "kind", "status", "models", "hooks"], rows))
    for info in infos:
        for message in [info.error] if info.error else [info.skipped] if info.skipped else info.problems:
            click.echo(f"{info.name}: {message}")


# -- entry point ------------------------------------------------------------------------------------


def _add_plugin_commands() -> None:
    """Let plugins add subcommands; one that replaces a built-in command is undone and reported."""
    from ._plugins import get_plugins

    plugins = get_plugins()
    builtin = dict(cli.commands)
    for name, call in plugins.each("register_commands", cli=cli):
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - a plugin may raise anything
            plugins.fail_softly(name, f"raised in register_commands: {type(exc).__name__}: {exc}")
        for command_name, command in builtin.items():
            if cli.commands.get(command_name) is not command:
                cli.commands[command_name] = command
                plugins.fail_softly(name, f"tried to replace the built-in command 'zoo {command_name}' (undone)")


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    import logging

    logging.basicConfig(format="%(message)s", level=logging.WARNING, stream=sys.stderr)
    _add_plugin_commands()
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="zoo")
    except ZooError as exc:  # raised by a plugin's command, which our decorator does not wrap
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
