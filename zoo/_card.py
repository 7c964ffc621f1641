"""Model cards: frozen dataclasses and the one parser that turns registry YAML into them.

The same parser reads the built-in catalogue, plugin registry files and user registries, so an error
in any of them reads the same: file, entry, field, what was expected, what was found. Validation is
hand-written rather than JSON-Schema because the messages are the product here, and because it walks
only the fields it expects (hostile YAML with deep alias nesting is rejected at the first wrong type
instead of being expanded).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from .errors import RegistryError

__all__ = ["ConvertSpec", "Metric", "ModelCard", "Preprocess", "WeightsVariant", "parse_registry", "parse_trust"]

SCHEMA_VERSION: Final = 1
NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
TAG_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
SHA256_RE: Final = re.compile(r"^[0-9a-f]{64}$")
SHA256_PREFIX_RE: Final = re.compile(r"^[0-9a-f]{8,63}$")
BUILDER_RE: Final = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
MODULE_RE: Final = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
# Task and plugin names are shown in every `zoo list` row: one word, no whitespace or control characters (#20).
WORD_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Every pattern above is applied with fullmatch: `$` alone also matches before a trailing newline, which let
# "resnet56-cifar\n" through as a second, different model (#20).
FORMATS: Final = ("safetensors", "torch-pickle")
DTYPES: Final = ("float32", "float16", "bfloat16")
INTERPOLATIONS: Final = ("nearest", "bilinear", "bicubic")
METRIC_SOURCES: Final = ("measured", "published")


@dataclass(frozen=True)
class Metric:
    """One number measured with one weights variant on one dataset split."""

    name: str
    value: float
    dataset: str
    split: str
    source: str  # "measured" (by zoo, with `command`) or "published" (by the authors, with `reference`)
    reference: str | None = None
    command: str | None = None
    note: str | None = None
    # Whether the weights (epoch, recipe) were chosen by their score on these images: True for a fine-tuning
    # run's validation figure, False for a test figure nothing selected on, None where the card does not say
    # (docs/evaluation-protocol.md).
    selected_on: bool | None = None

    def label(self) -> str:
        star = "*" if self.source == "published" else ""
        return f"{self.split} {self.name} {self.value:.2f}{star}"


@dataclass(frozen=True)
class ConvertSpec:
    """How a third-party checkpoint becomes a safetensors state dict."""

    key: str | None = None  # the entry of the checkpoint dict that holds the state dict
    strip_prefix: str | None = None  # e.g. "module." left by nn.DataParallel
    rename: tuple[tuple[str, str], ...] = ()  # (regex, replacement) applied in order


@dataclass(frozen=True)
class WeightsVariant:
    """One set of weights for a card: where it lives, its identity, and what it measured."""

    tag: str
    uri: str
    sha256: str | None  # the full sha256; None when the publisher gives only a prefix, or for hf:// the hub's
    format: str = "safetensors"
    size: int | None = None
    dtype: str = "float32"
    license: str | None = None
    convert: ConvertSpec | None = None
    metrics: tuple[Metric, ...] = ()
    notes: str | None = None
    # Publishers such as torchvision give only the first hex digits of a file's sha256 (in its file name). Such a
    # variant is pinned by the prefix until its first verified download, then by the full sha256 recorded then.
    sha256_prefix: str | None = None

    @property
    def hub_pinned(self) -> bool:
        """An hf:// file with no hash on the card: verified against the sha256 the hub publishes, recorded on the
        first verified fetch and enforced from then on (zoo/_hf.py)."""
        return self.sha256 is None and self.sha256_prefix is None and self.uri.lower().startswith("hf://")

    @property
    def file_name(self) -> str:
        """The last path segment of the URI: what a mirror directory is searched for."""
        return self.uri.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Preprocess:
    """Eval-time preprocessing, declared as data so `zoo info` can show it without torch."""

    resize: int | None = None
    crop: int | None = None
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class ModelCard:
    """Everything zoo knows about a model without importing it."""

    name: str
    task: str
    plugin: str
    builder: str
    origin: str  # the file (or "<plugin> hook") the card was read from, for error messages
    kwargs: dict[str, Any] = field(default_factory=dict)
    task_config: dict[str, Any] = field(default_factory=dict)  # the task's own fields, validated by the task
    input_shape: tuple[int, ...] = ()
    preprocess: Preprocess | None = None
    labels: tuple[str, ...] = ()
    head: str | None = None
    params: int | None = None
    license: str | None = None
    source: str | None = None
    citation: str | None = None
    description: str | None = None
    weights: dict[str, WeightsVariant] = field(default_factory=dict)
    default_tag: str | None = None

    @property
    def qualified_name(self) -> str:
        return f"{self.plugin}/{self.name}"

    def variant(self, tag: str | None = None) -> WeightsVariant | None:
        """The weights variant `tag`, or the default one; None when the card has no weights."""
        key = tag or self.default_tag
        return self.weights.get(key) if key else None


# --------------------------------------------------------------------------------------------------
# Parsing


class _Ctx:
    """Where we are in a registry file, so every error can say file, entry and field."""

    def __init__(self, file: str, entry: str | None = None) -> None:
        self.file = file
        self.entry = entry

    def error(self, field_name: str | None, message: str) -> RegistryError:
        return RegistryError(message, file=self.file, entry=self.entry, field=field_name)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _expect(ctx: _Ctx, name: str | None, value: Any, types: type | tuple[type, ...], what: str) -> Any:
    # bool is an int subclass; a YAML `yes` must not pass as a number.
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ctx.error(name, f"expected {what}, got {_kind(value)} {value!r}")
    if not isinstance(value, types):
        raise ctx.error(name, f"expected {what}, got {_kind(value)} {_short(value)}")
    return value


def _short(value: Any) -> str:
    if isinstance(value, (list, dict)):  # never repr a container: aliases can make it astronomically big
        return f"of length {len(value)}"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 160:
        return f"an integer of {value.bit_length()} bits"  # repr() refuses ints past 4300 digits
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a plugin's mapping may hold any object
        return f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


def _check_keys(ctx: _Ctx, where: str, mapping: dict, allowed: set[str], required: set[str]) -> None:
    for key in mapping:
        if not isinstance(key, str):
            raise ctx.error(where or None, f"keys must be strings, got {_kind(key)} {_short(key)}")
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        import difflib

        hint = difflib.get_close_matches(unknown[0], sorted(allowed), n=1)
        suffix = f" Did you mean {hint[0]!r}?" if hint else f" Allowed: {', '.join(sorted(allowed))}."
        field_name = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ctx.error(field_name, f"unknown field.{suffix}")
    for key in sorted(required - set(mapping)):
        raise ctx.error(f"{where}.{key}" if where else key, "missing required field")


def _str(ctx: _Ctx, name: str, value: Any) -> str:
    value = _expect(ctx, name, value, str, "a string")
    if not value.strip():
        raise ctx.error(name, "must not be empty")
    return value


def _opt_str(ctx: _Ctx, name: str, value: Any) -> str | None:
    return None if value is None else _str(ctx, name, value)


def _opt_bool(ctx: _Ctx, name: str, value: Any) -> bool | None:
    return None if value is None else _expect(ctx, name, value, bool, "true or false")


def _number(ctx: _Ctx, name: str, value: Any) -> float:
    """A finite float: YAML ints have no size limit and `.nan`/`.inf` are floats, neither is a measurement."""
    _expect(ctx, name, value, (int, float), "a number")
    try:
        number = float(value)
    except OverflowError:
        raise ctx.error(name, f"number out of range: {_short(value)}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ctx.error(name, f"expected a finite number, got {number}")
    return number


def _word(ctx: _Ctx, name: str, value: Any) -> str:
    value = _str(ctx, name, value)
    if not WORD_RE.fullmatch(value):
        raise ctx.error(name, f"expected one word of letters, digits, '.', '-' and '_', got {_short(value)}")
    return value


def _floats(ctx: _Ctx, name: str, value: Any, length: int | None = None) -> tuple[float, ...]:
    _expect(ctx, name, value, list, "a list of numbers")
    out = tuple(_number(ctx, f"{name}[{i}]", v) for i, v in enumerate(value))
    if length is not None and len(out) != length:
        raise ctx.error(name, f"expected {length} numbers, got {len(out)}")
    return out


MAX_KWARGS_NODES: Final = 10_000


def _check_plain(ctx: _Ctx, name: str, value: Any) -> None:
    """Builder kwargs are free-form, but bounded: YAML aliases can make a small file a huge tree."""
    budget = MAX_KWARGS_NODES
    stack = [value]
    while stack:
        item = stack.pop()
        budget -= 1
        if budget < 0:
            raise ctx.error(name, f"more than {MAX_KWARGS_NODES} values (nested aliases?); keep kwargs small")
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif not isinstance(item, (str, int, float, bool)) and item is not None:
            raise ctx.error(name, f"values must be plain YAML scalars, lists or mappings, got {_kind(item)}")


def _positive_int(ctx: _Ctx, name: str, value: Any) -> int:
    value = _expect(ctx, name, value, int, "an integer")
    if value <= 0:
        raise ctx.error(name, f"must be positive, got {_short(value)}")
    if value >= 1 << 63:  # a count or a byte size; a 5000-digit one would only break printing it later
        raise ctx.error(name, f"too large: {_short(value)}")
    return value


_CARD_FIELDS = {
    "task",
    "plugin",
    "builder",
    "kwargs",
    "input",
    "preprocess",
    "labels",
    "head",
    "params",
    "license",
    "source",
    "citation",
    "description",
    "weights",
    "default",
    "task_config",
}
_WEIGHTS_FIELDS = {
    "uri",
    "sha256",
    "sha256_prefix",
    "size",
    "format",
    "dtype",
    "license",
    "convert",
    "metrics",
    "notes",
}
_METRIC_FIELDS = {"name", "value", "dataset", "split", "source", "reference", "command", "note", "selected_on"}
_PREPROCESS_FIELDS = {"resize", "crop", "interpolation", "mean", "std"}
_CONVERT_FIELDS = {"key", "strip_prefix", "rename"}
_INPUT_FIELDS = {"shape"}


def _parse_metric(ctx: _Ctx, where: str, raw: Any) -> Metric:
    _expect(ctx, where, raw, dict, "a mapping")
    _check_keys(ctx, where, raw, _METRIC_FIELDS, {"name", "value", "dataset", "split", "source"})
    source = _str(ctx, f"{where}.source", raw["source"])
    if source not in METRIC_SOURCES:
        raise ctx.error(f"{where}.source", f"expected one of {', '.join(METRIC_SOURCES)}, got {_short(source)}")
    metric = Metric(
        name=_str(ctx, f"{where}.name", raw["name"]),
        value=_number(ctx, f"{where}.value", raw["value"]),
        dataset=_str(ctx, f"{where}.dataset", raw["dataset"]),
        split=_str(ctx, f"{where}.split", raw["split"]),
        source=source,
        reference=_opt_str(ctx, f"{where}.reference", raw.get("reference")),
        command=_opt_str(ctx, f"{where}.command", raw.get("command")),
        note=_opt_str(ctx, f"{where}.note", raw.get("note")),
        selected_on=_opt_bool(ctx, f"{where}.selected_on", raw.get("selected_on")),
    )
    # Honest metrics: a published figure says where it was published, a measured one how to re-run it.
    if source == "published" and not metric.reference:
        raise ctx.error(f"{where}.reference", "a published metric needs a reference (URL or paper)")
    if source == "measured" and not metric.command:
        raise ctx.error(f"{where}.command", "a measured metric needs the command that measures it")
    return metric


def _parse_convert(ctx: _Ctx, where: str, raw: Any) -> ConvertSpec:
    _expect(ctx, where, raw, dict, "a mapping")
    _check_keys(ctx, where, raw, _CONVERT_FIELDS, set())
    rename_raw = raw.get("rename") or {}
    _expect(ctx, f"{where}.rename", rename_raw, dict, "a mapping of regex: replacement")
    rename = []
    for pattern, repl in rename_raw.items():
        _str(ctx, f"{where}.rename", pattern)
        _expect(ctx, f"{where}.rename.{pattern}", repl, str, "a replacement string")
        try:
            re.compile(pattern)
        except (re.error, OverflowError, RecursionError, ValueError) as exc:  # a{4294967296}: OverflowError
            raise ctx.error(f"{where}.rename", f"invalid regex {_short(pattern)}: {exc}") from None
        rename.append((pattern, repl))
    return ConvertSpec(
        key=_opt_str(ctx, f"{where}.key", raw.get("key")),
        strip_prefix=_opt_str(ctx, f"{where}.strip_prefix", raw.get("strip_prefix")),
        rename=tuple(rename),
    )


def _parse_pin(ctx: _Ctx, where: str, raw: dict) -> tuple[str | None, str | None]:
    """The variant's hash pin: (full sha256, None) or (None, the publisher's sha256 prefix); exactly one, except
    that an ``hf://`` file may give neither: it is pinned by the sha256 the hub publishes (zoo/_hf.py)."""
    given = [key for key in ("sha256", "sha256_prefix") if raw.get(key) is not None]
    hub = isinstance(raw.get("uri"), str) and raw["uri"].lower().startswith("hf://")
    if hub and "sha256_prefix" in given:
        raise ctx.error(
            f"{where}.sha256_prefix",
            "an hf:// file is pinned by the full sha256 the hub publishes; give 'sha256' to pin it yourself, or "
            "neither",
        )
    if not given and hub:
        return None, None
    if not given:
        raise ctx.error(
            f"{where}.sha256",
            "missing required field (or 'sha256_prefix' where the publisher gives "
            "only the first hex digits of the hash)",
        )
    if len(given) == 2:
        raise ctx.error(
            f"{where}.sha256_prefix",
            "give either 'sha256' (the full hash) or 'sha256_prefix', not "
            "both; with the full hash the prefix says nothing more",
        )
    if given == ["sha256"]:
        sha = _str(ctx, f"{where}.sha256", raw["sha256"])
        if not SHA256_RE.fullmatch(sha):
            raise ctx.error(f"{where}.sha256", "expected the full sha256: 64 lower-case hex digits")
        return sha, None
    if isinstance(raw["sha256_prefix"], int) and not isinstance(raw["sha256_prefix"], bool):
        raise ctx.error(
            f"{where}.sha256_prefix",
            f"expected a string, got int {raw['sha256_prefix']!r}: hex digits "
            "that are all decimal read as a number in YAML; put them in quotes",
        )
    prefix = _str(ctx, f"{where}.sha256_prefix", raw["sha256_prefix"])
    if not SHA256_PREFIX_RE.fullmatch(prefix):
        raise ctx.error(
            f"{where}.sha256_prefix",
            "expected the first 8 to 63 lower-case hex digits of the sha256 "
            f"(the full 64 go in 'sha256'), got {_short(prefix)}",
        )
    return None, prefix


def _parse_weights(ctx: _Ctx, tag: Any, raw: Any) -> WeightsVariant:
    where = f"weights.{tag if isinstance(tag, str) else _short(tag)}"
    if not isinstance(tag, str) or not TAG_RE.fullmatch(tag):
        raise ctx.error(where, "weights tags are lower-case letters, digits, '-' and '_'")
    _expect(ctx, where, raw, dict, "a mapping")
    _check_keys(ctx, where, raw, _WEIGHTS_FIELDS, {"uri"})
    sha, prefix = _parse_pin(ctx, where, raw)
    fmt = raw.get("format", "safetensors")
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise ctx.error(f"{where}.format", f"expected one of {', '.join(FORMATS)}, got {_short(fmt)}")
    dtype = raw.get("dtype", "float32")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ctx.error(f"{where}.dtype", f"expected one of {', '.join(DTYPES)}, got {_short(dtype)}")
    uri = _str(ctx, f"{where}.uri", raw["uri"])
    from ._uri import check_uri, parse_uri  # stdlib-only

    problem = check_uri(uri)
    if problem:
        raise ctx.error(f"{where}.uri", problem)
    if prefix is not None and fmt == "safetensors" and parse_uri(uri).scheme in ("pkg", "file", "path"):
        raise ctx.error(
            f"{where}.sha256_prefix",
            "a local safetensors file is used in place and needs the full "
            "'sha256' (sha256sum prints it); 'sha256_prefix' is for downloads whose publisher gives "
            "only a prefix",
        )
    if parse_uri(uri).scheme == "path" and not Path(uri).is_absolute() and Path(ctx.file).is_file():
        uri = str(Path(ctx.file).resolve().parent / uri)  # relative to the registry file, not the cwd
    convert = _parse_convert(ctx, f"{where}.convert", raw["convert"]) if raw.get("convert") else None
    if fmt != "safetensors" and convert is None:
        convert = ConvertSpec()
    metrics_raw = raw.get("metrics") or []
    _expect(ctx, f"{where}.metrics", metrics_raw, list, "a list of metrics")
    return WeightsVariant(
        tag=tag,
        uri=uri,
        sha256=sha,
        sha256_prefix=prefix,
        format=fmt,
        size=_positive_int(ctx, f"{where}.size", raw["size"]) if raw.get("size") is not None else None,
        dtype=dtype,
        license=_opt_str(ctx, f"{where}.license", raw.get("license")),
        convert=convert,
        metrics=tuple(_parse_metric(ctx, f"{where}.metrics[{i}]", m) for i, m in enumerate(metrics_raw)),
        notes=_opt_str(ctx, f"{where}.notes", raw.get("notes")),
    )


def _parse_preprocess(ctx: _Ctx, raw: Any) -> Preprocess:
    _expect(ctx, "preprocess", raw, dict, "a mapping")
    _check_keys(ctx, "preprocess", raw, _PREPROCESS_FIELDS, {"mean", "std"})
    interpolation = raw.get("interpolation", "bilinear")
    if not isinstance(interpolation, str) or interpolation not in INTERPOLATIONS:
        raise ctx.error(
            "preprocess.interpolation", f"expected one of {', '.join(INTERPOLATIONS)}, got {_short(interpolation)}"
        )
    mean = _floats(ctx, "preprocess.mean", raw["mean"])
    std = _floats(ctx, "preprocess.std", raw["std"], len(mean))
    if any(s <= 0 for s in std):
        raise ctx.error("preprocess.std", "every std must be positive")
    return Preprocess(
        resize=_positive_int(ctx, "preprocess.resize", raw["resize"]) if raw.get("resize") is not None else None,
        crop=_positive_int(ctx, "preprocess.crop", raw["crop"]) if raw.get("crop") is not None else None,
        interpolation=interpolation,
        mean=mean,
        std=std,
    )


def _parse_card(ctx: _Ctx, name: str, raw: Any, plugin: str | None) -> ModelCard:
    _expect(ctx, None, raw, dict, "a mapping of card fields")
    _check_keys(ctx, "", raw, _CARD_FIELDS, {"task", "builder"} | (set() if plugin else {"plugin"}))
    card_plugin = _word(ctx, "plugin", raw["plugin"]) if "plugin" in raw else plugin
    if plugin and card_plugin != plugin:
        raise ctx.error("plugin", f"this file belongs to plugin {plugin!r}, the card says {card_plugin!r}")
    assert card_plugin is not None  # "plugin" is a required field when no plugin is given
    builder = _str(ctx, "builder", raw["builder"])
    if not BUILDER_RE.fullmatch(builder):
        raise ctx.error("builder", f"expected 'package.module:callable', got {_short(builder)}")
    kwargs = raw.get("kwargs") or {}
    _expect(ctx, "kwargs", kwargs, dict, "a mapping of keyword arguments")
    _check_plain(ctx, "kwargs", kwargs)
    task_config = raw.get("task_config") or {}  # the task's own fields: the task validates them, not this parser
    _expect(ctx, "task_config", task_config, dict, "a mapping of the task's settings")
    _check_plain(ctx, "task_config", task_config)
    input_shape: tuple[int, ...] = ()
    if raw.get("input") is not None:
        _expect(ctx, "input", raw["input"], dict, "a mapping")
        _check_keys(ctx, "input", raw["input"], _INPUT_FIELDS, {"shape"})
        shape = _expect(ctx, "input.shape", raw["input"]["shape"], list, "a list like [3, 32, 32]")
        input_shape = tuple(_positive_int(ctx, f"input.shape[{i}]", d) for i, d in enumerate(shape))
    labels_raw = raw.get("labels") or []
    _expect(ctx, "labels", labels_raw, list, "a list of class names")
    if all(type(v) is str and v.strip() for v in labels_raw):  # one pass: a timm index holds ~3M labels
        labels = tuple(labels_raw)
    else:  # find the first bad one, with its message
        labels = tuple(_str(ctx, f"labels[{i}]", v) for i, v in enumerate(labels_raw))
    weights_raw = raw.get("weights") or {}
    _expect(ctx, "weights", weights_raw, dict, "a mapping of tag: weights")
    weights = {tag: _parse_weights(ctx, tag, w) for tag, w in weights_raw.items()}
    default = raw.get("default")
    if default is not None:
        default = _str(ctx, "default", default)
        if default not in weights:
            raise ctx.error("default", f"no weights tag {_short(default)}; tags: {', '.join(weights) or 'none'}")
    elif weights:
        default = next(iter(weights))  # the first tag listed is the default (timm's convention)
    return ModelCard(
        name=name,
        task=_word(ctx, "task", raw["task"]),
        plugin=card_plugin,
        builder=builder,
        origin=ctx.file,
        kwargs=dict(kwargs),
        task_config=dict(task_config),
        input_shape=input_shape,
        preprocess=_parse_preprocess(ctx, raw["preprocess"]) if raw.get("preprocess") is not None else None,
        labels=labels,
        head=_opt_str(ctx, "head", raw.get("head")),
        params=_positive_int(ctx, "params", raw["params"]) if raw.get("params") is not None else None,
        license=_opt_str(ctx, "license", raw.get("license")),
        source=_opt_str(ctx, "source", raw.get("source")),
        citation=_opt_str(ctx, "citation", raw.get("citation")),
        description=_opt_str(ctx, "description", raw.get("description")),
        weights=weights,
        default_tag=default,
    )


def parse_registry(data: Any, *, file: str, plugin: str | None = None) -> list[ModelCard]:
    """Validate a parsed registry document and return its cards.

    Args:
        data: what `yaml.safe_load` returned for the file (or a mapping a plugin handed over).
        file: shown in every error message.
        plugin: the plugin that owns every card of this file; None for the built-in catalogue, where
            each card names its plugin.
    """
    try:
        return _parse_registry(data, file=file, plugin=plugin)
    except RegistryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a safety net: the parser raises only RegistryError, on any input (#20)
        raise RegistryError(
            f"cannot be read as a registry ({type(exc).__name__}: {_short(str(exc))})", file=file
        ) from None


def parse_trust(data: Any, *, file: str) -> set[str]:
    """The `trust:` list of a registry: module names whose builders the user allows (#20)."""
    ctx = _Ctx(file)
    _expect(ctx, "trust", data, list, "a list of module names like [my_models, other.pkg]")
    modules = set()
    for i, item in enumerate(data):
        name = _str(ctx, f"trust[{i}]", item)
        if not MODULE_RE.fullmatch(name):
            raise ctx.error(f"trust[{i}]", f"expected a module name like 'my_models', got {_short(name)}")
        modules.add(name)
    return modules


def _parse_registry(data: Any, *, file: str, plugin: str | None) -> list[ModelCard]:
    ctx = _Ctx(file)
    if not isinstance(data, dict):
        raise ctx.error(None, f"expected a mapping with 'schema' and 'models', got {_kind(data)}")
    _check_keys(ctx, "", data, {"schema", "models"}, {"models"})
    schema = data.get("schema", SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        raise ctx.error(
            "schema", f"this zoo reads schema {SCHEMA_VERSION}, the file says {_short(schema)}; upgrade zoo"
        )
    models = data["models"] or {}
    _expect(ctx, "models", models, dict, "a mapping of name: card")
    cards = []
    for name, raw in models.items():
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise ctx.error("models", f"bad model name {_short(name)}: use lower-case letters, digits, '-' and '_'")
        cards.append(_parse_card(_Ctx(file, name), name, raw, plugin))
    return cards
