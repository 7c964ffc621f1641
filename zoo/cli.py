"""The `zoo` command line (click). Listing commands stay torch-free; heavy imports live inside commands."""

from __future__ import annotations

import json
import math
import os
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


def _human_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def escape(value: Any) -> str:
    """`str(value)` with control characters (ANSI escapes, bidi overrides, newlines) escaped: every string from
    a card or a plugin reaches the terminal through this, so none can fake a line of zoo's output (#20)."""
    from ._plugins import escape as escape_text

    return escape_text(str(value))


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


def _headline(card: ModelCard, metric: Any = None) -> str:
    """The metric column: `metric` (the figure a --sort or --dataset picked), else the default weights' first."""
    if metric is not None:
        return metric.label()
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


def _card_summary(card: ModelCard, display: str, cached: bool | None, metric: Any = None) -> dict[str, Any]:
    variant = card.variant()
    if metric is None and variant is not None and variant.metrics:
        metric = variant.metrics[0]
    return {
        "name": display,
        "qualified_name": card.qualified_name,
        "task": card.task,
        "plugin": card.plugin,
        "params": card.params,
        "input": list(card.input_shape),
        "weights": variant.tag if variant else None,
        "tags": list(card.weights),
        "metric": None if metric is None else {k: v for k, v in metric.__dict__.items() if v is not None},
        "license": (variant.license if variant is not None and variant.license else card.license),
        "cached": cached,
    }


class _TaskOption(click.Option):
    """``--task``, whose help names the tasks the installed plugins register (their ``register_tasks`` hooks,
    which import no torch), found when the help is shown: a fixed list named tasks no plugin had (#19)."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        try:
            from .runtime.tasks import _registered

            tasks = ", ".join(sorted(_registered())) or "none installed; see 'zoo plugins'"
        except Exception:  # noqa: BLE001 - help must print even with a broken plugin installed
            tasks = "see 'zoo plugins'"
        self.help = f"Only models of this task ({tasks})."
        return super().get_help_record(ctx)


@cli.command("list")
@click.argument("pattern", required=False)
@click.option("--task", cls=_TaskOption, help="Only models of this task.")
@click.option("--plugin", help="Only models from this plugin.")
@click.option("--pretrained", is_flag=True, help="Only models with pretrained weights.")
@click.option(
    "--sort",
    "sort_key",
    metavar="KEY",
    help="Order by name (default), params (smallest first), task, or a metric of the default weights, "
    "best first: top1, map highest first; fid, kid, bits_per_dim lowest first. Models without the "
    "figure come last.",
)
@click.option("--max-params", metavar="N", help="Only models with at most N parameters: 270K, 5M, 1.2G or 5000000.")
@click.option(
    "--dataset",
    metavar="NAME",
    help="Only models whose default weights have a figure on this dataset (e.g. cifar10, coco; "
    "case-insensitive, a glob: 'cifar10*'); the metric column shows that figure.",
)
@click.option(
    "--license",
    "license_id",
    metavar="ID",
    help="Only models whose license, the card's or its weights', is ID (e.g. MIT, BSD-2-Clause, 'BSD*'; "
    "case-insensitive).",
)
@click.option("--json", "as_json", is_flag=True, help="JSON records instead of a table.")
@_one_line_errors
def list_command(
    pattern: str | None,
    task: str | None,
    plugin: str | None,
    pretrained: bool,
    sort_key: str | None,
    max_params: str | None,
    dataset: str | None,
    license_id: str | None,
    as_json: bool,
) -> None:
    """List models, optionally filtered by a glob PATTERN (e.g. 'resnet*')."""
    from ._registry import card_metric, get_registry, parse_count
    from ._store import Store

    registry = get_registry()
    store = Store()
    limit = parse_count(max_params, "--max-params") if max_params is not None else None
    cards = registry.select(
        pattern,
        task=task,
        plugin=plugin,
        pretrained=pretrained,
        sort=sort_key,
        max_params=limit,
        dataset=dataset,
        license=license_id,
    )
    # the metric column shows the figure the cards were sorted or filtered on, else the default weights' first
    shown_by = registry.check_sort_key(sort_key) if sort_key is not None else None
    shown_by = shown_by if shown_by not in ("name", "params", "task") else None
    records = []
    for card in cards:
        variant = card.variant()
        cached = store.is_available(variant) if variant else None
        metric = card_metric(card, shown_by, dataset) if shown_by or dataset else None
        records.append((card, metric, _card_summary(card, registry.display_name(card), cached, metric)))
    if shown_by is not None and "[" not in shown_by:
        spaces = sorted({m.name for _, m, _ in records if m is not None and "[" in m.name})
        if len(spaces) > 1:
            click.echo(
                f"note: --sort {shown_by} ranks figures measured in different feature spaces ("
                f"{', '.join(spaces)}); name one, e.g. --sort '{spaces[0]}'",
                err=True,
            )
    if as_json:
        click.echo(json.dumps([r for _, _, r in records], indent=2))
        return
    if not records:
        click.echo("No models match." + (" Run 'zoo plugins' to see what is installed." if registry.cards else ""))
        return
    rows = []
    for card, metric, r in records:
        shape = "x".join(map(str, card.input_shape)) or "-"
        cached = {True: "yes", False: "no", None: "-"}[r["cached"]]  # type: ignore[assignment]  # reused: its label
        rows.append(
            [
                escape(cell)
                for cell in (
                    r["name"],
                    card.task,
                    _human_count(card.params),
                    shape,
                    _weights_label(card),
                    _headline(card, metric),
                    cached,
                    card.plugin,
                )
            ]
        )
    click.echo(_table(["name", "task", "params", "input", "weights (default)", "metric", "cached", "plugin"], rows))
    if any(r["metric"] and r["metric"]["source"] == "published" for _, _, r in records):
        click.echo(
            "* published by the weights' authors; others measured by zoo "
            "('zoo info NAME' gives the source or the command)"
        )


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
        data["weights"][tag]["pin"] = _pin_dict(variant, store)
    return data


def _rate(per_second: float) -> str:
    """A speed with the digits that matter: 0.42 img/s for a 1,000-step sampler, not "0"."""
    return f"{per_second:.0f}" if per_second >= 10 else f"{per_second:.2g}"


def _pin_dict(variant: Any, store: Any) -> dict[str, Any]:
    """Which kind of hash pin a variant has; for a prefix, the full sha256 recorded on first download."""
    if variant.sha256 is not None:
        return {"kind": "sha256", "sha256": variant.sha256}
    from .errors import WeightsError

    record: dict[str, Any] = (
        {"kind": "hub_sha256", "recorded_sha256": None}
        if variant.hub_pinned
        else {"kind": "sha256_prefix", "prefix": variant.sha256_prefix, "recorded_sha256": None}
    )
    try:
        pin = store.read_pin(variant, model=variant.tag)
    except WeightsError as exc:
        return {**record, "error": str(exc)}
    if pin is not None:
        record.update(
            recorded_sha256=pin.sha256,
            recorded=pin.recorded,
            recorded_size=pin.size,
            recorded_from=pin.source,
            record_file=str(pin.path),
        )
    return record


def _pin_text(variant: Any, store: Any) -> str:
    pin = _pin_dict(variant, store)
    if pin["kind"] == "sha256":
        return "sha256 (full)"
    recorded = pin["recorded_sha256"] or ("DAMAGED RECORD, 'zoo cache rm' resets it" if "error" in pin else "not yet")
    when = f" on {pin['recorded']}" if pin.get("recorded") else ""
    if pin["kind"] == "hub_sha256":
        return f"sha256 the hub publishes (checked on fetch; recorded on first verified download: {recorded}{when})"
    return (
        f"sha256 prefix {pin['prefix']} (publisher's; full hash recorded on first verified download: {recorded}{when})"
    )


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
    shown = get_registry().display_name(card)
    out = [f"{card.name}  ({card.qualified_name})" if shown in (card.name, card.qualified_name) else shown]
    if card.description:
        out.append(f"  {card.description}")
    fields = [
        ("task", card.task),
        ("plugin", card.plugin),
        ("builder", card.builder),
        ("kwargs", ", ".join(f"{k}={v!r}" for k, v in card.kwargs.items()) or "-"),
        *([("task cfg", ", ".join(f"{k}={v!r}" for k, v in card.task_config.items()))] if card.task_config else []),
        ("params", f"{card.params:,}" if card.params else "-"),
        ("input", "x".join(map(str, card.input_shape)) or "-"),
        ("head", card.head or "-"),
        ("license", card.license or "-"),
        ("source", card.source or "-"),
        ("citation", card.citation or "-"),
        ("card file", card.origin),
    ]
    out += [f"  {k + ':':<12}{v}" for k, v in fields]
    if card.preprocess:
        p = card.preprocess
        out.append(
            f"  {'preprocess:':<12}resize {p.resize or '-'}, center crop {p.crop or '-'}, "
            f"{p.interpolation}, mean {list(p.mean)}, std {list(p.std)}"
        )
    if card.labels:
        more = f", ... ({len(card.labels)} in all; --json lists them)" if len(card.labels) > 20 else ""
        sep = "; " if any("," in label for label in card.labels) else ", "  # timm's "tench, Tinca tinca"
        out.append(f"  {'labels:':<12}{sep.join(card.labels[:10] if more else card.labels)}{more}")
    if not card.weights:
        out.append(f"  {'weights:':<12}none (zoo.load(..., pretrained=False) builds it with random init)")
    for tag, v in card.weights.items():
        default = " (default)" if tag == card.default_tag else ""
        cached = "yes" if store.is_available(v) else "no"
        out.append(f"  weights {tag}{default}:")
        out.append(f"    uri:      {v.uri}")
        if v.sha256 is not None:
            out.append(f"    sha256:   {v.sha256}")
        out.append(f"    pin:      {_pin_text(v, store)}")
        out.append(f"    size:     {_human_bytes(v.size)}" + (f" ({v.size:,} bytes)" if v.size else ""))
        fmt = v.format + (" -> safetensors on fetch" if v.format != "safetensors" else "")
        out.append(f"    format:   {fmt}, {v.dtype}")
        if v.convert:
            parts = [
                f"key {v.convert.key!r}" if v.convert.key else "",
                f"strip prefix {v.convert.strip_prefix!r}" if v.convert.strip_prefix else "",
                *(f"{a!r} -> {b!r}" for a, b in v.convert.rename),
            ]
            out.append(f"    convert:  {', '.join(p for p in parts if p) or 'as is'}")
        if v.license:
            out.append(f"    license:  {v.license}")
        out.append(f"    cached:   {cached}")
        for m in v.metrics:
            how = f"published: {m.reference}" if m.source == "published" else f"measured: {m.command}"
            selected = {True: " [selected on]", False: " [never selected on]", None: ""}[m.selected_on]
            out.append(f"    metric:   {m.name} {m.value:g} on {m.dataset} {m.split}{selected} ({how})")
            if m.note:
                out.append(f"              {m.note}")
        if v.notes:
            out.append(f"    notes:    {v.notes}")
    click.echo("\n".join(escape(line) for line in out))  # zoo's own text has no control characters to lose


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
    from ._store import Store

    store = Store()
    for card in cards:
        for tag, variant in card.weights.items():
            sha = store.known_sha256(variant)  # a prefix pin owns the file named by its recorded hash
            if sha is not None:
                owners.setdefault(sha, []).append(f"{card.name}.{tag}")
            if variant.sha256 is None:  # ... and its partial download, named by the pin key
                owners.setdefault(store.pin_key(variant), []).append(f"{card.name}.{tag}")
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
    records: list[dict[str, Any]] = [
        {"path": str(e.path), "sha256": e.sha256, "size": e.size, "kind": e.kind, "models": owners.get(e.sha256, [])}
        for e in entries
    ]
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    if not records:
        click.echo(f"The cache at {store.root} is empty. 'zoo fetch NAME' fills it.")
        return
    rows = [
        [", ".join(r["models"]) or "(no card)", r["kind"], _human_bytes(r["size"]), r["sha256"][:12], r["path"]]
        for r in records
    ]
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
        raise click.ClickException(
            f"{bad} of {_plural(len(entries), 'cached file')} corrupt; remove {'it' if bad == 1 else 'them'} with "
            "'zoo cache rm --corrupt' and fetch again."
        )
    click.echo(f"{_plural(len(entries), 'file')} verified.")


@cache_group.command("rm")
@click.argument("names", nargs=-1)
@click.option("--all", "remove_all", is_flag=True, help="Remove every cached weights file.")
@click.option("--corrupt", is_flag=True, help="Remove files that fail verification.")
@click.option("--partial", is_flag=True, help="Remove interrupted downloads.")
@_one_line_errors
def cache_rm_command(names: tuple[str, ...], remove_all: bool, corrupt: bool, partial: bool) -> None:
    """Remove the cached weights of NAME[.TAG] (or --all, --corrupt, --partial).

    For weights pinned by the publisher's sha256 prefix, or by the sha256 the Hugging Face hub publishes, NAME also
    removes the full sha256 recorded on the first download: the next fetch pins what it gets. --all, --corrupt and
    --partial keep those records.
    """
    import os

    from ._registry import get_registry
    from ._store import Store

    store = Store()
    if not (names or remove_all or corrupt or partial):
        raise click.UsageError("name a model, or use --all, --corrupt or --partial.")
    chosen = []
    for name in names:
        resolved = get_registry().resolve(name)
        variants = [resolved.variant] if resolved.tag else list(resolved.card.weights.values())
        chosen += [v for v in variants if v is not None]
    removed: list[Path] = []
    for entry in store.entries():
        if remove_all or (partial and entry.kind == "partial") or (corrupt and store.verify(entry) is not None):
            removed += store.remove(entry.sha256) if entry.kind != "partial" else []
            if os.path.lexists(entry.path):  # a planted link is removed itself, never what it points at (#20)
                entry.path.unlink()
                removed.append(entry.path)
    for variant in chosen:
        removed += [path for path in store.remove_variant(variant) if path not in removed]
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
@click.option(
    "--dtype",
    type=click.Choice(["float16", "bfloat16", "float32"]),
    help="Cast floating tensors (float16 halves the file; zoo.load casts back to the model's dtype).",
)
@_one_line_errors
def convert_command(
    checkpoint: Path, output: Path, expected: str | None, key: str | None, strip_prefix: str | None, dtype: str | None
) -> None:
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
        convert_checkpoint(
            checkpoint,
            tmp,
            ConvertSpec(key=key, strip_prefix=strip_prefix),
            metadata={"source_sha256": actual, "source_uri": checkpoint.name},
            dtype=getattr(torch, dtype) if dtype else None,
        )
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    click.echo(f"{output}  (source sha256 {actual}; output sha256 {sha256_file(output)})")


# -- runtime ----------------------------------------------------------------------------------------


class _TaskCommand(click.Command):
    """A runtime verb whose last options belong to the model's task (``--topk``, ``--conf``...): they are parsed
    once the model, and so its task, is known. ``--help`` lists them for every installed task."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        try:
            from .runtime.tasks import VERBS, _registered, task_class

            verb = self.name if self.name in VERBS else "eval"
            sections = []
            for task in sorted(_registered()):
                cls = task_class(task)
                if verb in getattr(cls, "verbs", ()):
                    rows = [p.get_help_record(ctx) for p in cls.options(verb)]  # type: ignore[attr-defined]  # Task
                    sections.append((task, [r for r in rows if r]))
        except Exception:  # noqa: BLE001 - help must print even with a broken plugin installed
            return
        for task, rows in sections:
            if rows:
                with formatter.section(f"Options of {task} models"):
                    formatter.write_dl(rows)


def _task_arguments(
    name: str, verb: str, tokens: tuple[str, ...], positional: click.Argument | None = None
) -> tuple[Any, dict[str, Any]]:
    """Parse the tokens the command did not know with the options of NAME's task (and an optional positional
    argument, e.g. the image files); a bad value is one line naming the option, exit 1."""
    from ._api import card as get_card
    from .runtime.tasks import task_for

    card = get_card(name)
    task = task_for(card, verb)  # a verb the task does not support: one line naming the ones it does
    params: list[click.Parameter] = list(type(task).options(verb))
    if positional is not None:
        params.append(positional)
    parser = click.Command(f"zoo {verb} {name}", params=params, add_help_option=False)
    try:
        ctx = parser.make_context(parser.name, list(tokens))
    except click.NoSuchOption as exc:
        known = ", ".join(o for p in params if isinstance(p, click.Option) for o in p.opts) or "none"
        raise ZooError(
            f"No such option {exc.option_name!r} for {card.task} models (theirs: {known}; see 'zoo {verb} --help')."
        ) from None
    except click.ClickException as exc:
        raise ZooError(exc.format_message()) from None
    values = dict(ctx.params)
    found = values.pop(positional.name, None) if positional is not None else None
    return found, values


_DEVICE_HELP = "cpu, cuda, cuda:1, mps (default: the best available)."


def _precision_options(func: F) -> F:
    """--precision auto|fp32|bf16 (auto: bf16 autocast where the device has native bf16 matrix units, AMX CPUs and
    CUDA sm80+, else fp32) and --bf16, its short form."""
    func = click.option("--bf16", is_flag=True, help="Same as --precision bf16.")(func)
    return click.option(
        "--precision",
        type=click.Choice(["auto", "fp32", "bf16"]),
        default="auto",
        show_default=True,
        help="auto: bf16 autocast where the device has native bf16 (AMX CPUs, CUDA sm80+), else fp32.",
    )(func)


@cli.command("predict", cls=_TaskCommand, context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="IMAGES... [TASK OPTIONS]")
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write predictions.json and what shows each prediction (detectors: a PNG with the boxes drawn) "
    "into this directory.",
)
@click.option("--json", "as_json", is_flag=True, help="JSON records instead of text.")
@click.option("--skip-bad", is_flag=True, help="Report unreadable images and go on, instead of stopping.")
@_precision_options
@click.option("--device", help=_DEVICE_HELP)
@_one_line_errors
def predict_command(
    name: str,
    args: tuple[str, ...],
    out: Path | None,
    as_json: bool,
    skip_bad: bool,
    precision: str,
    bf16: bool,
    device: str | None,
) -> None:
    """Predict with model NAME on IMAGES: files (JPEG, PNG, WebP, GIF, BMP, TIFF; any mode, any size) or
    directories of them (every image below, sorted)."""
    from ._api import card as get_card
    from .runtime.predict import predict
    from .runtime.tasks import get_task

    images, options = _task_arguments(
        name, "predict", args, click.Argument(["images"], nargs=-1, type=click.Path(path_type=Path))
    )
    if not images:
        raise ZooError(f"Name at least one image: zoo predict {name} IMAGE [IMAGE...].")
    records = predict(
        name,
        list(images),
        device=device,
        skip_bad=skip_bad,
        out=out,
        precision="bf16" if bf16 else precision,
        **options,
    )
    if out is not None:
        _write_json(out / "predictions.json", records)
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    task = get_task(get_card(name))
    for record in records:
        if "error" in record:
            click.echo(f"{record['image']}: SKIPPED ({record['error']})")
            continue
        files = f"  -> {', '.join(record['files'])}" if record.get("files") else ""
        click.echo(f"{record['image']}: {task.render_prediction(record)}{files}")
    if out is not None:
        click.echo(f"wrote {out / 'predictions.json'}")


@cli.command("sample", cls=_TaskCommand, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("name")
@click.option("-n", "n", type=int, default=64, show_default=True, help="How many samples.")
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Sample i comes from a generator seeded blake2b(seed:i): the same seed, the same images.",
)
@click.option(
    "--class",
    "classes",
    multiple=True,
    metavar="CLASS",
    help="Class-conditional models: the class to draw (a name or an index), once for every sample or "
    "repeated once per sample. Default: classes drawn uniformly from the seed.",
)
@click.option(
    "-o",
    "--out",
    "grid",
    type=click.Path(path_type=Path),
    help="Write the samples as one grid PNG, and its manifest beside it (GRID.json).",
)
@click.option(
    "--out-dir",
    type=click.Path(path_type=Path),
    help="Write one PNG per sample (000000.png, 000001.png...) and manifest.json into this folder.",
)
@click.option("--nrow", type=click.IntRange(min=1), default=8, show_default=True, help="Images per row of the grid.")
@click.option("--batch-size", type=int, help="Samples per step (default 256); the images do not depend on it.")
@_precision_options
@click.option("--device", help=_DEVICE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.pass_context
@_one_line_errors
def sample_command(
    ctx: click.Context,
    name: str,
    n: int,
    seed: int,
    classes: tuple[str, ...],
    grid: Path | None,
    out_dir: Path | None,
    nrow: int,
    batch_size: int | None,
    precision: str,
    bf16: bool,
    device: str | None,
    as_json: bool,
) -> None:
    """Draw N new images from generative model NAME (a GAN, a VAE...) into a grid PNG and/or one PNG each.

    Beside the images goes a manifest (model, weights sha256, seed, classes, precision, versions): the same
    command with the same seed draws the same images.
    """
    from ._api import card as get_card
    from .runtime.sample import check_output, draw, save_grid, save_images, write_manifest

    _, options = _task_arguments(name, "sample", tuple(ctx.args))  # a model that does not sample: one line
    if grid is None and out_dir is None:
        raise ZooError(
            f"Say where to write the samples: zoo sample {name} -o GRID.png (one grid image) and/or "
            "--out-dir DIR (one PNG per sample)."
        )
    if grid is not None:
        check_output(grid)
    if out_dir is not None:
        check_output(out_dir, directory=True)
    names = get_card(name).labels
    labels = [int(c) if c not in names and c.isdigit() else c for c in classes] or None
    samples = draw(
        name,
        n,
        seed,
        labels,
        batch_size=batch_size,
        device=device,
        precision="bf16" if bf16 else precision,
        show_progress=True,
        **options,
    )
    written = []
    if out_dir is not None:
        files = save_images(samples.images, out_dir)
        written.append(f"{files[0]}..{files[-1].name}" if len(files) > 1 else str(files[0]))
    if grid is not None:
        save_grid(samples.images, grid, nrow)
        written.insert(0, str(grid))
    manifest = samples.manifest([p for p in (grid, out_dir) if p is not None])
    if out_dir is not None:
        write_manifest(out_dir / "manifest.json", manifest)
    if grid is not None:
        write_manifest(grid.with_name(grid.name + ".json"), manifest)
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
        return
    weights = "" if samples.weights is not None else ", no weights: random init"
    click.echo(
        escape(
            f"wrote {' and '.join(written)} ({_plural(samples.n, 'sample')} of {samples.name}, seed "
            f"{seed}, {samples.precision}{weights}, {_rate(samples.images_per_second)} img/s)"
        )
    )


def _write_json(path: Path, data: Any) -> None:
    """Write JSON by an atomic rename: a reader never sees half a file."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _card_metric(name: str, metric: str, split: str | None = None, *, only_split: bool = False) -> Any:
    """The card's figure to compare with: one measured on the same split (``test`` for ``--split test`` and
    ``--test-split``, ``val`` for ``--val-split``) first, then a measured one (re-runnable on the same data), then
    a published one. `only_split` (``--test-split``: a figure nothing selected on is compared with its kind only,
    never with a validation figure) returns None when no figure was measured on `split`."""
    from ._api import card as get_card

    variant = get_card(name).variant()
    candidates = [m for m in (variant.metrics if variant else ()) if m.name == metric]
    same_split = [m for m in candidates if split is not None and m.split == split and m.source == "measured"]
    if only_split and not same_split:
        return None
    measured = [m for m in candidates if m.source == "measured"]
    return (same_split or measured or candidates or [None])[0]  # type: ignore[list-item]  # None: no figure


def _measured_split(split: str | None, val_split: float | None, test_split: float | None) -> str | None:
    """Which split of the card's figures a measurement is comparable with: the dataset's own `split`, ``test``
    for the images a --test-split held out, ``val`` for a --val-split's."""
    if split is not None:
        return split
    return "test" if test_split is not None else "val" if val_split else None


@cli.command("eval", cls=_TaskCommand, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("name")
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="The dataset, in a format of the model's task: classifiers read an ImageFolder directory, a .zip "
    "of one, or CIFAR-10 python batches; detectors read COCO json, Pascal VOC xml or YOLO txt (a "
    "folder or a .zip).",
)
@click.option("--split", help="The dataset's own split to measure (e.g. test), where it has named splits.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--report",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write metrics.json and the task's figures (confusion matrix, PR curves) into this directory.",
)
@click.option("--batch-size", type=int, help="Default: 64 (fp32) or 128 (bf16), the fastest measured on CPU.")
@_precision_options
@click.option("--device", help=_DEVICE_HELP)
@click.option("--skip-bad", is_flag=True, help="Skip unreadable images (counted) instead of stopping.")
@click.option("--no-cache", is_flag=True, help="Decode the images again instead of using the decode cache.")
@click.option("--compare", is_flag=True, help="Check the measured headline metric against the card's figure.")
@click.option(
    "--tolerance",
    type=float,
    help="How far --compare lets the figure move (default: the task's, e.g. 0.3 points of top-1).",
)
@click.option(
    "--val-split",
    type=click.FloatRange(0, 1, max_open=True),
    help="Measure only the images 'zoo finetune --val-split F --seed S' held out for validation (0: none, for a "
    "run that held out only a --test-split).",
)
@click.option(
    "--test-split",
    type=float,
    help="With --val-split: measure only the test images 'zoo finetune --val-split F --test-split T --seed S' held "
    "out (never selected on; docs/evaluation-protocol.md).",
)
@click.option("--seed", default=0, show_default=True, help="The seed of those splits.")
@click.pass_context
@_one_line_errors
def eval_command(
    ctx: click.Context,
    name: str,
    data: Path,
    split: str | None,
    as_json: bool,
    report: Path | None,
    batch_size: int | None,
    precision: str,
    bf16: bool,
    device: str | None,
    skip_bad: bool,
    no_cache: bool,
    compare: bool,
    tolerance: float | None,
    val_split: float | None,
    test_split: float | None,
    seed: int,
) -> None:
    """Evaluate model NAME on a labelled dataset (the card's preprocessing, batched, no grad)."""
    from ._api import card as get_card
    from .runtime.device import check_device
    from .runtime.evaluate import evaluate
    from .runtime.tasks import get_task

    _, options = _task_arguments(name, "eval", tuple(ctx.args))
    check_device(device)  # before reading the dataset, which can take minutes
    if val_split == 0 and test_split is None:
        raise ZooError("--val-split 0 selects no images; give the fraction the run held out, or add its --test-split.")
    if compare and test_split is not None:  # refused before measuring: a test figure is compared with its kind only
        headline = get_task(get_card(name)).headline[0]
        if _card_metric(name, headline, "test", only_split=True) is None:
            raise ZooError(
                f"Model {name!r} has no {headline} figure measured on a test split on its card to compare with."
            )
    settings = dict(
        batch_size=batch_size,
        device=device,
        precision="bf16" if bf16 else precision,
        skip_bad=skip_bad,
        cache=not no_cache,
        split=split,
        val_split=val_split,
        test_split=test_split,
        seed=seed,
        **options,
    )
    # -- ensembles (#19 part 4): each member is measured too, on the same images with the same settings
    from .runtime.ensemble import evaluate_ensemble, is_ensemble

    members = None
    if is_ensemble(get_card(name)):
        result, members = evaluate_ensemble(name, data, **settings)
    else:
        result = evaluate(name, data, **settings)
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun, rank 0 reports for every rank
    record = result.as_dict()
    if members is not None:
        record["ensemble"] = members
    metric, _higher = result.headline
    task = get_task(get_card(name))
    verdict = None
    if compare:
        reference = _card_metric(
            name, metric, _measured_split(split, val_split, test_split), only_split=test_split is not None
        )
        if reference is None:
            raise ZooError(f"Model {name!r} has no {metric} figure on its card to compare with.")
        allowed = tolerance if tolerance is not None else task.tolerance
        delta = record["metrics"][metric] - reference.value
        verdict = {
            "metric": metric,
            "precision": record["settings"]["precision"],
            "card": reference.value,
            "card_dataset": reference.dataset,
            "card_split": reference.split,
            "card_source": reference.source,
            "measured": record["metrics"][metric],
            "delta": round(delta, 4),
            "tolerance": allowed,
            "reproduces": abs(delta) <= allowed,
        }
        record["compare"] = verdict
    if report is not None:
        from .runtime.report import write_report

        record["report"] = [str(p) for p in write_report(record, report, task)]
    if as_json:
        click.echo(json.dumps(record, indent=2))
    else:
        lines = task.render_eval(record["metrics"])
        part = f" (split {split})" if split is not None else ""
        if test_split is not None:
            part += f" (test split {test_split} held out after validation split {val_split}, seed {seed})"
        elif val_split is not None:
            part += f" (validation split {val_split}, seed {seed})"
        click.echo(
            f"{result.model} on {data}{part}: {lines[0]}  ({result.images} images, "
            f"{result.images_per_second:.0f} img/s, {result.settings['precision']}"
            f"{', decode cached' if result.decode_cached else ''})"
        )
        for line in lines[1:]:
            click.echo(line)
        if members is not None:
            figures = ", ".join(f"{row['model']} {row[members['metric']]:.2f}" for row in members["members"])
            click.echo(
                f"members' {members['metric']}: {figures}; ensemble {members['ensemble']:.2f}, "
                f"{members['gain']:+.2f} over the best member ({members['best_member']})"
            )
        if result.skipped:
            click.echo(f"skipped {len(result.skipped)} unreadable images")
        for path in record.get("report", []):
            click.echo(f"wrote {path}")
        if verdict:
            word = "reproduces" if verdict["reproduces"] else "does NOT reproduce"
            click.echo(
                f"{word} the card's {verdict['card_source']} {metric} {verdict['card']:g} "
                f"({verdict['card_dataset']} {verdict['card_split']}): delta {verdict['delta']:+.2f} "
                f"(tolerance {verdict['tolerance']:g})"
            )
    if verdict and not verdict["reproduces"]:
        raise SystemExit(1)


@cli.command("register")
@click.argument("name")
@click.option(
    "--from",
    "source",
    required=True,
    metavar="CARD",
    help="The card whose architecture (builder), preprocessing and task the new one takes; or "
    "'ensemble:a+b' to save that ensemble under NAME (then no --weights).",
)
@click.option(
    "--weights",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A .safetensors file of CARD's architecture (a checkpoint: convert it with 'zoo convert').",
)
@click.option("--labels", help="Comma-separated class names when they are not CARD's (the head is sized to them).")
@click.option("--description", help="One line for 'zoo info' and 'zoo list'.")
@click.option(
    "--copy",
    "copy_file",
    is_flag=True,
    help="Copy the file into $ZOO_HOME/registered/ so the card survives moving or deleting it "
    "(default: the card names the file where it is).",
)
@click.option("--overwrite", is_flag=True, help="Replace a card of that name already in your registry.")
@_one_line_errors
def register_command(
    name: str,
    source: str,
    weights: Path | None,
    labels: str | None,
    description: str | None,
    copy_file: bool,
    overwrite: bool,
) -> None:
    """Add model NAME to your registry ($ZOO_HOME/registry.yaml): CARD's architecture with your weights (pinned
    by sha256 and size, checked to load before anything is written), or a saved ensemble."""
    from ._api import register

    names = [x.strip() for x in labels.split(",") if x.strip()] if labels else None
    card = register(
        name, from_=source, weights=weights, labels=names, description=description, copy=copy_file, overwrite=overwrite
    )
    variant = card.variant()
    what = (
        f"weights {variant.uri} ({_human_bytes(variant.size)}, sha256 {variant.sha256[:12]}...)"
        if variant is not None and variant.sha256
        else f"members {', '.join(card.kwargs.get('members', []))}"
    )
    click.echo(f"registered {name} ({card.task}, from {source}; {what}) in {card.origin}")
    click.echo(f"load it with zoo.load({name!r}); check it with 'zoo info {name}'")


def _recipe_options(func: F) -> F:
    """One click option per field of the fine-tuning recipe (zoo.runtime.train.recipe.FinetuneConfig): its
    defaults and help live in one place. Imports only the recipe module (no torch) so ``zoo --help`` stays fast."""
    from .runtime.train.recipe import recipe_fields

    for spec in reversed(recipe_fields()):
        meta, default = spec.metadata, spec.default
        flag = meta.get("flag") or "--" + spec.name.replace("_", "-")
        if spec.type in ("bool | None", bool | None):
            # an on/off pair whose default the task chooses (None: the user said neither)
            option = click.option(flag, spec.name, default=None, help=meta["help"])
        elif spec.type in ("bool", bool):
            # --scratch turns a default-on field off; other flags turn one on
            option = click.option(flag, spec.name + "_flag", is_flag=True, help=meta["help"])
        else:
            kind = {"int": int, "int | None": int, "float": float, "float | None": float}.get(str(spec.type), str)
            choices = meta.get("choices")
            option = click.option(
                flag,
                spec.name,
                type=click.Choice(choices) if choices else kind,
                default=default,
                show_default=default is not None,
                help=meta["help"],
            )
        func = option(func)
    return func


@cli.command("finetune")
@click.argument("name")
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="A dataset of the model's task: ImageFolder / .zip / CIFAR batches for classifiers; COCO json, "
    "Pascal VOC xml or YOLO txt (folder or .zip) for detectors.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory; its name becomes the new model's name.",
)
@_recipe_options
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.pt, exactly where it stopped.")
@click.option("--overwrite", is_flag=True, help="Replace the finished run OUT already holds (default: refuse).")
@click.option(
    "--checkpoint-minutes",
    default=10.0,
    show_default=True,
    help="Also write OUT/checkpoint.pt mid-epoch this often (0: at epoch ends only).",
)
@click.option("--device", help="cpu, cuda, mps (default: the best available; torchrun sets it per rank).")
@_one_line_errors
def finetune_command(
    name: str,
    data: Path,
    out: Path,
    resume: bool,
    overwrite: bool,
    checkpoint_minutes: float,
    device: str | None,
    **recipe: Any,
) -> None:
    """Fine-tune model NAME on a dataset of its task; the result loads as zoo.load(OUT's name).

    Ctrl-C (or SIGTERM) stops at the next batch and leaves OUT/checkpoint.pt; --resume continues from there.
    """
    from .runtime.device import check_device
    from .runtime.finetune import FinetuneConfig, finetune

    check_device(device)  # before reading the data: an unavailable device is one line, not a traceback
    finished = out / f"{out.name}.safetensors"  # what finetune writes last (the API stays permissive)
    if finished.is_file() and not (resume or overwrite):
        raise ZooError(
            f"{out} already holds a finished run ({finished.name}); pass --overwrite to replace it, "
            "or choose another --out."
        )
    values = {k: v for k, v in recipe.items() if not k.endswith("_flag")}
    for key, flag in ((k[:-5], v) for k, v in recipe.items() if k.endswith("_flag")):
        default = FinetuneConfig.__dataclass_fields__[key].default
        values[key] = (not default) if flag else default  # a flag always moves its field off the default
    if values["ema"] is not None and not 0.0 <= values["ema"] < 1.0:
        raise click.BadParameter(f"{values['ema']} is not in the range 0<=x<1.", param_hint="'--ema'")
    config = FinetuneConfig(**values)
    # the card records the command that reproduces the run: a resumed run's --resume is not part of it
    command = (
        "zoo " + " ".join(a for a in sys.argv[1:] if a != "--resume")
        if sys.argv and sys.argv[0].endswith("zoo")
        else None
    )

    def report(row: dict[str, Any]) -> None:  # as each epoch ends: long runs show progress in logs too
        figures = "  ".join(
            f"{k.replace('_', ' ')} {v:.2f}"
            for k, v in row.items()
            if k.startswith(("train_", "val_")) and k != "train_loss"
        )
        click.echo(
            f"epoch {row['epoch']}: loss {row['train_loss']:.4f}  {figures}  "
            f"({row['images_per_second']:.0f} img/s, {row['seconds']:.0f} s)"
        )

    result = finetune(
        name,
        data,
        out,
        config=config,
        resume=resume,
        device=device,
        command=command,
        on_epoch=report,
        checkpoint_every=checkpoint_minutes * 60,
    )
    if result.interrupted:  # asked for, so not an "Error:"; 130 is the shell's code for "interrupted"
        if (out / "checkpoint.pt").is_file():
            click.echo(
                f"Stopped; the checkpoint is {out / 'checkpoint.pt'}. Run the same command with --resume to continue.",
                err=True,
            )
        else:
            click.echo("Stopped before the first checkpoint was written; nothing to resume.", err=True)
        raise SystemExit(130)
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return
    if result.skipped:
        shown = ", ".join(result.skipped[:3]) + (
            f" (+{len(result.skipped) - 3} more)" if len(result.skipped) > 3 else ""
        )
        click.echo(f"skipped {len(result.skipped)} unreadable images: {shown}")
    if math.isnan(result.best_value):  # nothing validated (--val-split 0): the last epoch is the result
        click.echo(f"no validation split: kept the last epoch ({result.best_epoch})  -> {result.weights}")
    else:
        click.echo(f"best epoch {result.best_epoch}: val {result.metric} {result.best_value:.2f}  -> {result.weights}")
    if not math.isnan(result.test_value):
        click.echo(
            f"test {result.metric} {result.test_value:.2f} (those weights on the {config.test_split} test split, "
            "measured once: never selected on)"
        )
    click.echo(f"load it with zoo.load({result.name!r}) or 'zoo info {result.name}'")


# -- export -----------------------------------------------------------------------------------------


@cli.command("export")
@click.argument("name")
@click.option(
    "--format",
    "fmt",
    metavar="onnx|exported-program",
    help="What to write: ONNX (checked in onnxruntime) or a torch.export ExportedProgram (checked after "
    "torch.export.load).  [default: from the suffix of -o (.pt2: exported-program), else onnx]",
)
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path), help="The file to write.")
@click.option("--dynamic-batch", is_flag=True, help="Let the graph take any batch size (default: batch 1).")
@click.option(
    "--opset",
    type=int,
    help="ONNX opset to write (torch's exporter writes 18 and later; lower ones are "
    "converted where onnx can, else refused).  [default: the exporter's]",
)
@click.option(
    "--images",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Images (files or folders) to check the export on; repeatable.  [default: examples/images of the checkout]",
)
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@_one_line_errors
def export_command(
    name: str,
    fmt: str | None,
    out: Path,
    dynamic_batch: bool,
    opset: int | None,
    images: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Export the network of model NAME (classifiers, detectors) as ONNX or a torch.export ExportedProgram.

    The task says what is exported: a classifier's network (logits), a detector's network up to its raw output
    (the decoding and NMS it leaves out are named). The written file is run on real images, preprocessed as the
    card says, and compared with eager PyTorch; the largest difference is printed. The file appears whole or
    not at all.
    """
    from .runtime.export import export

    result = export(name, out, fmt, dynamic_batch=dynamic_batch, opset=opset, images=list(images) if images else None)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    kind = f"ONNX opset {result.opset}" if result.format == "onnx" else "ExportedProgram"
    batch = "any batch size" if result.dynamic_batch else "batch 1"
    check = result.check

    def shape(record: dict[str, Any]) -> str:
        return f"{record['name']} {record['dtype']} [{', '.join(map(str, record['shape']))}]"

    lines = [
        f"wrote {result.path} ({kind}, {batch}, {_human_bytes(result.bytes)}, {result.seconds:.1f} s)",
        f"input:     {shape(result.input)}: {result.input['expects']}",
        f"output:    {'; '.join(shape(o) for o in result.outputs)}",
        f"checked:   max abs difference {check['max_abs_diff']:.2g} vs eager PyTorch (tolerance "
        f"{check['tolerance']:.2g}), {check['runtime']}, {_plural(len(check['images']), 'image')}, batches of "
        f"{', '.join(map(str, check['batch_sizes']))}",
    ]
    if result.leaves_out:
        lines.append(f"left out:  {result.leaves_out}")
    click.echo("\n".join(escape(line) for line in lines))


# -- explain (#19 part 3) -----------------------------------------------------------------------------------


@cli.command("explain")
@click.argument("name")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    metavar="OUTDIR",
    help="The folder for the overlay PNGs (IMAGE-CLASS.png), created inside an existing folder.",
)
@click.option(
    "--class",
    "target",
    metavar="CLASS",
    help="The class to explain (a name or an index) for every image.  [default: each image's top-1]",
)
@click.option(
    "--method",
    default="gradcam",
    show_default=True,
    metavar="gradcam",
    help="The attribution method: Grad-CAM (captum's LayerGradCam).",
)
@click.option(
    "--layer",
    metavar="MODULE.PATH",
    help="The module to attribute to (e.g. layer3).  [default: the card's task_config.explain_layer, "
    "else the last convolutional block with a map of at least 7x7]",
)
@click.option("--device", help=_DEVICE_HELP)
@click.option("--json", "as_json", is_flag=True, help="JSON records (without the heat maps) instead of text.")
@_one_line_errors
def explain_command(
    name: str,
    images: tuple[Path, ...],
    out: Path,
    target: str | None,
    method: str,
    layer: str | None,
    device: str | None,
    as_json: bool,
) -> None:
    """Show which part of each image drove classifier NAME's score for a class (Grad-CAM).

    For every image, an overlay PNG in OUTDIR: the heat map over the original picture, at its size, the parts the
    card's center crop cut away dimmed. Each line names the class explained, its probability and the file.
    """
    from .runtime.explain import explain

    records = explain(name, list(images), target, layer=layer, method=method, out=out, device=device)
    if as_json:
        click.echo(json.dumps([{k: v for k, v in r.items() if k != "heatmap"} for r in records], indent=2))
        return
    first = records[0]
    how = {"argument": "--layer", "card": "the card's task_config.explain_layer", "auto": "chosen automatically"}
    click.echo(
        escape(
            f"Grad-CAM at {first['layer']} ({'x'.join(map(str, first['map_size']))} map, {how[first['layer_from']]})"
        )
    )
    for r in records:
        top = r["top1"]
        rank = "top-1" if top["index"] == r["index"] else f"top-1: {top['label']} {100 * top['probability']:.1f}%"
        none = ", no positive evidence at this layer" if not r["evidence"] else ""
        click.echo(escape(f"{r['image']}: {r['class']} {100 * r['probability']:.1f}% ({rank}{none})  -> {r['file']}"))


# -- bench (#19 part 5: choosing a model) -----------------------------------------------------------


@cli.command("bench")
@click.argument("names", nargs=-1, required=True)
@click.option("--device", help=_DEVICE_HELP)
@_precision_options
@click.option(
    "--batch-sizes",
    default="1,8,32,64,128",
    show_default=True,
    metavar="N,N,...",
    help="Batch sizes to try for throughput; the best one is reported.",
)
@click.option(
    "--seconds",
    type=float,
    default=1.0,
    show_default=True,
    help="How long each figure is timed: the latency, and the throughput at each batch size.",
)
@click.option(
    "--random-init",
    is_flag=True,
    help="Time the architecture with random weights (no download); speed does not depend on the weights, "
    "except a detector's post-processing, which sees the boxes they find.",
)
@click.option(
    "--image",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The picture to time on (default: examples/images/chelsea.png, else random pixels).",
)
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the results as JSON.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON instead of a table.")
@_one_line_errors
def bench_command(
    names: tuple[str, ...],
    device: str | None,
    precision: str,
    bf16: bool,
    batch_sizes: str,
    seconds: float,
    random_init: bool,
    image: Path | None,
    out: Path | None,
    as_json: bool,
) -> None:
    """Time models NAMES... on this machine: latency at batch 1 and throughput at the best batch size.

    Classifiers and detectors, run as 'zoo eval' runs them (BatchNorm folded, channels_last, the precision);
    the figures belong to this machine and are never written on the cards.
    """
    from .runtime.bench import bench

    record = bench(
        list(names),
        device=device,
        precision="bf16" if bf16 else precision,
        batch_sizes=batch_sizes,
        seconds=seconds,
        pretrained=not random_init,
        image=image,
        log=None if as_json else lambda line: click.echo(escape(line), err=True),
    )
    if out is not None:
        _write_json(out, record)
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return
    rows = []
    for m in record["models"]:
        t = m["throughput"]
        rows.append(
            [
                escape(c)
                for c in (
                    m["name"],
                    m["task"],
                    _human_count(m["params"]),
                    "x".join(map(str, m["input"].get("model_input", []))) or "-",
                    m["weights"] or "random init",
                    m["precision"],
                    f"{m['latency']['median_ms']:.2f}",
                    f"{t['images_per_second']:.1f}",
                    t["batch_size"],
                )
            ]
        )
    click.echo(
        _table(
            [
                "model",
                "task",
                "params",
                "input",
                "weights",
                "precision",
                "latency b1 ms",
                "throughput img/s",
                "best batch",
            ],
            rows,
        )
    )
    mach = record["machine"]
    click.echo(
        escape(
            f"machine: {mach['cpu']}, {_plural(mach['threads'], 'thread')}, torch {mach['torch']}, "
            f"device {mach['device']}; input: {record['models'][0]['input']['source']}, resized by each "
            f"task; latency: median of batch-1 calls over {seconds:g} s"
        )
    )
    for m in record["models"]:
        if m["throughput"].get("skipped_batch_sizes"):
            sizes = m["throughput"]["skipped_batch_sizes"]
            click.echo(
                escape(
                    f"{m['name']}: batch size{'s' * (len(sizes) > 1)} {', '.join(map(str, sizes))} "
                    f"skipped: {m['throughput']['skipped_because']}"
                )
            )
    if out is not None:
        click.echo(f"wrote {escape(out)}")


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
        status = (
            "FAILED" if info.error else "skipped" if info.skipped else "ok, with problems" if info.problems else "ok"
        )
        dist = f"{info.distribution or '?'} {info.version or ''}".strip()
        ms = None if info.import_seconds is None else info.import_seconds * 1000
        took = "-" if ms is None else f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"
        rows.append(
            [
                escape(cell)
                for cell in (
                    info.name,
                    dist,
                    "built-in" if info.builtin else "third-party",
                    status,
                    took,
                    str(len(info.models)),
                    ", ".join(info.hooks) or "-",
                )
            ]
        )
    click.echo(_table(["plugin", "distribution", "kind", "status", "import", "models", "hooks"], rows))
    for info in infos:
        for message in [info.error] if info.error else [info.skipped] if info.skipped else info.problems:
            click.echo(escape(f"{info.name}: {message}"))
        for claimant in info.refused:
            click.echo(escape(f"{info.name}: the same plugin name from {claimant!r} was refused"))


# -- entry point ------------------------------------------------------------------------------------


def _add_plugin_commands() -> None:
    """Let plugins add subcommands; one that replaces a built-in command is undone and reported."""
    from ._plugins import get_plugins

    plugins = get_plugins()
    builtin = dict(cli.commands)
    for name, call in plugins.each("register_commands", cli=cli):
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - a plugin may raise anything, SystemExit too (#20)
            if isinstance(exc, KeyboardInterrupt):
                raise
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
        click.echo(f"Error: {escape(exc)}", err=True)
        sys.exit(1)
