"""The registry: every card from the built-in catalogue, the plugins and the user, and name lookup.

Merge rule (docs/architecture.md): every card is reachable as ``<plugin>/<name>``; a short ``<name>``
resolves when exactly one plugin claims it, and is an error listing every claimant otherwise — never a
silent overwrite. A trailing ``.<tag>`` picks a weights variant. Torch-free.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from . import _config
from ._card import Metric, ModelCard, WeightsVariant, parse_registry, parse_trust
from ._plugins import Plugins, get_plugins
from .errors import RegistryError, UnknownModelError, ZooError

__all__ = [
    "Registry",
    "builtin_registry_path",
    "card_metric",
    "get_registry",
    "license_matches",
    "load_yaml",
    "lower_is_better",
    "parse_count",
    "reset_registry",
    "sort_cards",
]

USER_PLUGIN: Final = "user"
MAX_REGISTRY_BYTES: Final = 8 * 1024 * 1024


def builtin_registry_path() -> Path:
    """The built-in catalogue: inside the installed wheel, or at the top of a source checkout."""
    # A plain path check rather than importlib.resources: that import alone costs ~8 ms per `zoo list`.
    here = Path(__file__).resolve().parent
    packaged = here / "registry.yaml"
    return packaged if packaged.is_file() else here.parent / "registry.yaml"


def _yaml_loader() -> type:
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader is ~10x faster

    class UniqueKeyLoader(base):  # type: ignore[misc, valid-type]
        """Safe loading (no Python objects) that also refuses duplicate keys, which YAML would merge silently."""

    def construct_mapping(loader: Any, node: Any, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:  # before merging: `<<: *anchor` may be overridden on purpose
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = loader.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, f"unhashable key {key!r}", key_node.start_mark
                ) from None
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return loader.construct_mapping_orig(node, deep=deep)

    UniqueKeyLoader.construct_mapping_orig = base.construct_mapping  # type: ignore[attr-defined]
    UniqueKeyLoader.add_constructor(
        "tag:yaml.org,2002:map", lambda loader, node: construct_mapping(loader, node, deep=True)
    )
    return UniqueKeyLoader


def _read_bounded(path: Path) -> bytes:
    """The bytes of a regular file of at most MAX_REGISTRY_BYTES; anything else is a RegistryError.

    Opened non-blocking and checked with fstat on the open descriptor, so a FIFO cannot block and
    /dev/zero cannot be read forever (#20); the size is checked again on what was actually read.
    """
    import stat

    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise RegistryError(
            "file not found; check ZOO_REGISTRY or the plugin's register() path", file=str(path)
        ) from None
    except OSError as exc:
        raise RegistryError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise RegistryError(
                "not a regular file (a device, FIFO or directory); a registry is a YAML file", file=str(path)
            )
        if st.st_size > MAX_REGISTRY_BYTES:
            raise RegistryError(
                f"file is {st.st_size} bytes; a registry is at most {MAX_REGISTRY_BYTES}", file=str(path)
            )
        try:
            data = f.read(MAX_REGISTRY_BYTES + 1)
        except OSError as exc:
            raise RegistryError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None
    if len(data) > MAX_REGISTRY_BYTES:
        raise RegistryError(
            f"file is over {MAX_REGISTRY_BYTES} bytes; a registry is at most {MAX_REGISTRY_BYTES}", file=str(path)
        )
    return data


def load_yaml(path: Path) -> Any:
    """Parse a registry file safely (no Python tags, no duplicate keys, bounded size, only RegistryError)."""
    import yaml

    try:
        text = _read_bounded(Path(path)).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RegistryError(f"cannot read: {exc}", file=str(path)) from None
    try:
        return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RegistryError(f"invalid YAML: {problem}", file=where) from None
    except Exception as exc:  # noqa: BLE001 - PyYAML's constructors raise ValueError, OverflowError, KeyError,
        # IndexError, AttributeError, TypeError, RecursionError on crafted values (`!!timestamp 2001-13-45`,
        # `!!binary =`, deep nesting...): found by fuzzing, one line all the same (#20)
        reason = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise RegistryError(
            f"invalid YAML: {type(exc).__name__}" + (f": {reason}" if reason else ""), file=str(path)
        ) from None


@dataclass(frozen=True)
class Resolved:
    card: ModelCard
    tag: str | None  # the weights tag named explicitly, else None (use the default)

    @property
    def variant(self) -> WeightsVariant | None:
        return self.card.variant(self.tag)


class Registry:
    """All active cards, indexed by qualified and short name."""

    def __init__(self, plugins: Plugins) -> None:
        self.plugins = plugins
        self.cards: list[ModelCard] = []
        self.by_qualified: dict[str, ModelCard] = {}
        self.by_short: dict[str, list[ModelCard]] = {}
        self.inactive: dict[str, str] = {}  # card name -> why it is hidden (its plugin did not load)
        self.trusted: set[str] = set()  # modules the user's own registry trusts (`trust:`), see _builder (#20)
        self.skipped_user_registry: str | None = None  # why $ZOO_HOME/registry.yaml was skipped, if it was
        # On-demand namespaces (a plugin whose register_models hands over a callable; docs/architecture.md §15):
        # plugin -> the callable; read only when a name or pattern in `<plugin>/` is asked for, never by plain
        # `zoo list`. Once read: plugin -> arch -> tag -> a card with that one weights variant, and the default tags.
        self.namespaces: dict[str, Callable[[], Any]] = {}
        self.namespace_cards: dict[str, dict[str, dict[str, ModelCard]]] = {}
        self.namespace_defaults: dict[str, dict[str, str]] = {}

    # -- building ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, plugins: Plugins | None = None) -> Registry:
        registry = cls(plugins or get_plugins())
        registry._load_builtin()
        registry._load_plugin_cards()
        try:
            files = _config.user_registry_files()
        except (OSError, RuntimeError) as exc:  # a symlink loop in ZOO_REGISTRY (RuntimeError before 3.13)
            raise RegistryError(f"ZOO_REGISTRY: cannot resolve a path: {exc}") from None
        for path in files:
            try:
                registry._load_user_file(path)
            except RegistryError as exc:
                if not _is_own_registry(path):
                    raise
                registry.skipped_user_registry = str(exc)
                Plugins._warn(f"zoo: your registry is broken, its models are skipped: {exc}")
        return registry

    def _load_user_file(self, path: Path) -> None:
        """Add the cards of one user registry file: all of them, or none and a RegistryError.

        How a broken file is treated depends on who named it. Your own registry, ``$ZOO_HOME/registry.yaml``,
        is read by every command, so one typo in it would stop ``zoo list``, ``zoo cache`` and every model
        that is not in it (#19): it becomes a warning naming the file and the problem, and its cards are
        skipped, as a broken plugin's are. A file named in ``ZOO_REGISTRY`` stays an error: it was named for
        this run (a script, a CI job), and skipping it would only turn into a misleading "Unknown model"
        further on. A broken built-in catalogue is an error too: it is a packaging bug, and tests catch it.
        """
        data = load_yaml(path)
        trusted: set[str] = set()
        if isinstance(data, dict) and "trust" in data:
            trusted = self._user_trust(path, data["trust"])
            data = {k: v for k, v in data.items() if k != "trust"}
        cards = parse_registry(data, file=str(path), plugin=USER_PLUGIN)
        for card in cards:  # a clash with an earlier file must not leave half of this one added
            existing = self.by_qualified.get(card.qualified_name)
            if existing is not None:
                raise RegistryError(
                    f"model {card.qualified_name!r} is defined twice: in {existing.origin} and in {card.origin}",
                    file=card.origin,
                    entry=card.name,
                )
        self.trusted |= trusted
        self._add_all(cards)

    @staticmethod
    def _user_trust(path: Path, raw: Any) -> set[str]:
        """`trust:` counts only in the user's own registry ($ZOO_HOME/registry.yaml, which zoo writes): a file
        handed over through ZOO_REGISTRY must not vouch for its own builders (#20)."""
        home = _config.cache_root() / "registry.yaml"
        try:
            own = home.is_file() and os.path.samefile(path, home)
        except OSError:
            own = False
        if not own:
            raise RegistryError(
                f"is honoured only in {home} (your own registry); to trust modules for another file, set ZOO_TRUST",
                file=str(path),
                field="trust",
            )
        return parse_trust(raw, file=str(path))

    def _load_builtin(self) -> None:
        path = builtin_registry_path()
        active = self.plugins.active()
        cards = parse_registry(load_yaml(path), file=str(path))
        for card in cards:
            if card.plugin in active:
                self._add(card)
            else:
                info = self.plugins.infos.get(card.plugin)
                why = (
                    info.error
                    if info and info.error
                    else f"is not loaded ({info.skipped})"
                    if info and info.skipped
                    else "is not loaded (see ZOO_LOAD_PLUGINS / ZOO_DISABLE_PLUGINS)"
                )
                self.inactive[card.name] = f"its plugin {card.plugin!r} {why}"

    def _load_plugin_cards(self) -> None:
        pending: dict[str, list[ModelCard]] = {}

        def make_kwargs(plugin_name: str) -> dict[str, Any]:
            def register(source: Path | str | dict[str, Any] | Callable[[], Any]) -> None:
                if callable(source):  # an on-demand namespace: called only when `<plugin>/...` is asked for
                    self.namespaces[plugin_name] = source
                    return
                if isinstance(source, dict):
                    data, file = source, f"<plugin {plugin_name} register_models>"
                else:
                    data, file = load_yaml(Path(source)), str(source)
                pending.setdefault(plugin_name, []).extend(parse_registry(data, file=file, plugin=plugin_name))

            return {"register": register}

        self.plugins.call_isolated("register_models", make_kwargs)
        # A plugin whose hook raised half-way, or whose cards clash with each other or with the built-in
        # catalogue's cards for it, contributes nothing: all of its cards or none, and never an error
        # that stops `zoo list` for everyone.
        active = self.plugins.active()
        for plugin_name, cards in pending.items():
            if plugin_name not in active:
                continue
            names = [card.name for card in cards]
            clash = next((n for n in names if names.count(n) > 1 or f"{plugin_name}/{n}" in self.by_qualified), None)
            if clash is not None:
                self.plugins.fail(plugin_name, f"registers model {clash!r} twice")
                continue
            self._add_all(cards)

    def _add_all(self, cards: list[ModelCard]) -> None:
        for card in cards:
            self._add(card)

    def _add(self, card: ModelCard) -> None:
        existing = self.by_qualified.get(card.qualified_name)
        if existing is not None:
            raise RegistryError(
                f"model {card.qualified_name!r} is defined twice: in {existing.origin} and in {card.origin}",
                file=card.origin,
                entry=card.name,
            )
        self.cards.append(card)
        self.by_qualified[card.qualified_name] = card
        self.by_short.setdefault(card.name, []).append(card)
        info = self.plugins.infos.get(card.plugin)
        if info is not None:
            info.models.append(card.name)

    # -- lookup ------------------------------------------------------------------------------------
    def resolve(self, name: str) -> Resolved:
        """`name`, `name.tag`, `plugin/name` or `plugin/name.tag` -> (card, tag)."""
        base, _, tag = name.partition(".")
        if "/" in base and base not in self.by_qualified and base.partition("/")[0] in self.namespaces:
            return self._resolve_in_namespace(base, tag)
        if "/" in base:
            card = self.by_qualified.get(base)
        else:
            claimants = self.by_short.get(base, [])
            if len(claimants) > 1:
                options = " or ".join(repr(c.qualified_name) for c in claimants)
                raise UnknownModelError(
                    f"Model name {base!r} is ambiguous: plugins {', '.join(c.plugin for c in claimants)} all "
                    f"define it. Use {options}."
                )
            card = claimants[0] if claimants else None
        if card is None:
            raise UnknownModelError(self._unknown_message(base))
        if tag and tag not in card.weights:
            tags = ", ".join(card.weights) or "none"
            raise UnknownModelError(
                f"Model {card.name!r} has no weights tag {tag!r}. Its tags: {tags}. "
                f"Run 'zoo info {self.display_name(card)}'."
            )
        return Resolved(card, tag or None)

    def _resolve_in_namespace(self, base: str, tag: str) -> Resolved:
        """`<plugin>/<arch>[.<tag>]` in an on-demand namespace: the card of that weights variant (its own
        preprocessing, metrics and builder arguments), the default one without a tag. Tags match regardless of
        case, so torchvision's spelling (`IMAGENET1K_V2`) finds the card's lower-case tag."""
        import difflib

        plugin, _, arch = base.partition("/")
        variants = self.namespace(plugin).get(arch)
        if not variants:
            close = difflib.get_close_matches(arch, sorted(self.namespace_cards.get(plugin, {})), n=3, cutoff=0.6)
            hint = f" Did you mean {' or '.join(repr(f'{plugin}/{c}') for c in close)}?" if close else ""
            raise UnknownModelError(f"Unknown model {base!r}.{hint} Run \"zoo list '{plugin}/*'\" to see them.")
        wanted = tag.lower() if tag else self.namespace_defaults[plugin][arch]
        if wanted not in variants:
            raise UnknownModelError(
                f"Model {base!r} has no weights tag {tag!r}. Its tags: {', '.join(variants)}. "
                f"Run \"zoo list '{base}.*'\"."
            )
        return Resolved(variants[wanted], None)

    def namespace(self, plugin: str) -> dict[str, dict[str, ModelCard]]:
        """The cards of on-demand namespace `plugin` (arch -> tag -> card), read on first use; a namespace whose
        callable raises or hands over a bad card is a failed plugin with no cards, like a broken register_models."""
        if plugin in self.namespace_cards or plugin not in self.namespaces:
            return self.namespace_cards.get(plugin, {})
        cards: dict[str, dict[str, ModelCard]] = {}
        defaults: dict[str, str] = {}
        try:
            data = self.namespaces[plugin]()
            origin = data.get("origin") or f"<plugin {plugin} index>"
            for key, raw in data["models"].items():
                arch, _, tag = key.partition(".")
                (card,) = parse_registry({"models": {arch: raw}}, file=origin, plugin=plugin)
                if list(card.weights) != [tag]:
                    raise RegistryError(f"entry {key!r} must have exactly the weights tag {tag!r}", file=origin)
                cards.setdefault(arch, {})[tag] = card
            for arch, variants in cards.items():
                default = data.get("defaults", {}).get(arch)
                defaults[arch] = default if default in variants else next(iter(variants))
        except BaseException as exc:  # noqa: BLE001 - a plugin may raise anything; Ctrl-C goes through
            if isinstance(exc, KeyboardInterrupt):
                raise
            self.plugins.fail(plugin, f"raised while reading its model index: {type(exc).__name__}: {exc}")
            cards, defaults = {}, {}
        self.namespace_cards[plugin] = cards
        self.namespace_defaults[plugin] = defaults
        return cards

    def _namespace_cards(self, pattern: str | None, plugin: str | None) -> list[ModelCard]:
        """The cards of the on-demand namespaces a `select` names: by `plugin`, or by a pattern `<ns>/...`."""
        wanted = []
        for ns in self.namespaces:
            if plugin == ns or (
                plugin is None and pattern and "/" in pattern and fnmatch.fnmatchcase(ns, pattern.partition("/")[0])
            ):
                wanted.append(ns)
        return [card for ns in wanted for variants in self.namespace(ns).values() for card in variants.values()]

    def _unknown_message(self, name: str) -> str:
        short = name.rsplit("/", 1)[-1]
        if short in self.inactive:
            return f"Model {short!r} is unavailable: {self.inactive[short]}."
        close = self._suggestions(name)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        if self.skipped_user_registry:
            hint += f" (Your registry was skipped: {self.skipped_user_registry})"
        return f"Unknown model {name!r}.{hint} Run 'zoo list' to see available models."

    def _suggestions(self, name: str, n: int = 3) -> list[str]:
        """Up to `n` names close to `name`, each model once: a match but for case first, then difflib's.

        A qualified `name` is compared with qualified names, a short one with short names, and each
        suggestion is spelt as `zoo list` shows it. Comparing against short and qualified names together
        offered 'vae-cifar' or 'vae/vae-cifar', one model twice, and 'ResNet56-CIFAR' got no suggestion (#19).
        """
        import difflib

        qualified = "/" in name
        by_key: dict[str, list[ModelCard]] = {}  # lower-cased key -> its cards (a short name may have several)
        for card in self.cards:
            by_key.setdefault((card.qualified_name if qualified else card.name).lower(), []).append(card)
        wanted = name.lower()
        keys = [wanted] if wanted in by_key else []
        keys += [k for k in difflib.get_close_matches(wanted, sorted(by_key), n=n, cutoff=0.6) if k != wanted]
        spelt = [card.qualified_name if qualified else self.display_name(card) for k in keys for card in by_key[k]]
        return list(dict.fromkeys(spelt))[:n]

    def card(self, name: str) -> ModelCard:
        return self.resolve(name).card

    def display_name(self, card: ModelCard) -> str:
        """The short name when it is unambiguous, else the qualified one; `<plugin>/<arch>.<tag>` in an on-demand
        namespace, where each weights variant is a card of its own."""
        if card.plugin in self.namespace_cards and card.qualified_name not in self.by_qualified:
            return f"{card.qualified_name}.{card.default_tag}"
        return card.name if len(self.by_short.get(card.name, [])) == 1 else card.qualified_name

    def select(
        self,
        pattern: str | None = None,
        *,
        task: str | None = None,
        plugin: str | None = None,
        pretrained: bool = False,
        sort: str | None = None,
        max_params: int | str | None = None,
        dataset: str | None = None,
        license: str | None = None,
    ) -> list[ModelCard]:
        """Cards filtered like `zoo list` filters them (fnmatch on short and qualified names), sorted by name, or
        by `sort` (see :meth:`sort_cards`). `max_params`: at most this many parameters (an int or ``"5M"``;
        cards that do not state their count are left out); `dataset`: the default weights have a figure on this
        dataset; `license`: the card's or the default weights' license is this one (see :func:`license_matches`).
        Names and patterns of datasets and licenses match case-insensitively, as globs."""
        limit = parse_count(max_params, "max_params") if max_params is not None else None
        extra = self._namespace_cards(pattern, plugin)  # read first: their metrics are sort keys too
        key = self.check_sort_key(sort) if sort is not None else None
        out = []
        for card in [*self.cards, *extra]:
            if task and card.task != task:
                continue
            if plugin and card.plugin != plugin:
                continue
            if pretrained and not card.weights:
                continue
            if pattern and not (
                fnmatch.fnmatchcase(card.name, pattern)
                or fnmatch.fnmatchcase(card.qualified_name, pattern)
                or fnmatch.fnmatchcase(self.display_name(card), pattern)
            ):
                continue
            if limit is not None and (card.params is None or card.params > limit):
                continue
            if dataset is not None and card_metric(card, dataset=dataset) is None:
                continue
            if license is not None and not license_matches(card, license):
                continue
            out.append(card)
        out.sort(key=lambda c: (c.name, c.plugin, c.default_tag or ""))
        return sort_cards(out, key, dataset=dataset) if key is not None else out

    def check_sort_key(self, key: str) -> str:
        """`key` (lower-cased) when ``zoo list --sort`` knows it: one of SORT_KEYS or the name of a metric on a card's
        default weights (``fid`` stands for every ``fid[...]``); else a ZooError naming what it could be."""
        import difflib

        wanted = key.strip().lower()
        loaded = [card for ns in self.namespace_cards.values() for arch in ns.values() for card in arch.values()]
        metrics = sorted(
            {
                name
                for card in [*self.cards, *loaded]
                for m in _default_metrics(card)
                for name in (m.name.lower(), m.name.split("[", 1)[0].lower())
            }
        )
        if wanted in SORT_KEYS or wanted in metrics:
            return wanted
        close = difflib.get_close_matches(wanted, [*SORT_KEYS, *metrics], n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ZooError(
            f"Unknown sort key {key!r}.{hint} Sort by {', '.join(SORT_KEYS)} or a "
            f"metric on the cards: {', '.join(metrics) or 'none'}."
        )


# -- choosing a model: sorting and filtering on the cards' figures (#19 part 5); torch-free ---------------

SORT_KEYS: Final = ("name", "params", "task")
#: Metrics where a lower figure is better; every other metric sorts highest first. ``fid[resnet56-cifar]`` is
#: an ``fid``: the part before ``[`` names the metric, the bracket its feature space.
LOWER_IS_BETTER: Final = frozenset({"fid", "kid", "bits_per_dim", "nll", "loss", "error", "top1_error", "top5_error"})
_COUNT_RE: Final = re.compile(r"(\d+(?:_\d+)*(?:\.\d+)?)([kmgt]?)", re.IGNORECASE)
_COUNT_UNITS: Final = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def lower_is_better(metric: str) -> bool:
    """Whether a lower figure of `metric` is the better one (FID, KID, bits per dimension, losses, errors)."""
    base = metric.split("[", 1)[0].lower()
    return base in LOWER_IS_BETTER or base.endswith("_error")


def parse_count(value: int | str, what: str = "max_params") -> int:
    """A parameter count: an int, or text like ``270K``, ``5M``, ``1.2G``, ``5000000`` (K, M, G are 10^3, 10^6,
    10^9; case-insensitive). A ZooError naming `what` otherwise, or when the count is not positive."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ZooError(f"{what}: expected a count like 270K, 5M, 1.2G or 5000000, got {value!r}.")
    if isinstance(value, int):
        count = value
    else:
        match = _COUNT_RE.fullmatch(value.strip())
        if match is None:
            raise ZooError(f"{what}: expected a count like 270K, 5M, 1.2G or 5000000, got {value!r}.")
        count = round(float(match[1].replace("_", "")) * _COUNT_UNITS[match[2].lower()])
    if count <= 0:
        raise ZooError(f"{what}: must be positive, got {str(value)!r}.")
    return count


def _default_metrics(card: ModelCard) -> tuple[Metric, ...]:
    variant = card.variant()
    return variant.metrics if variant is not None else ()


def _name_matches(metric: str, key: str) -> bool:
    metric = metric.lower()
    return metric == key or ("[" not in key and metric.split("[", 1)[0] == key)


def card_metric(card: ModelCard, name: str | None = None, dataset: str | None = None) -> Metric | None:
    """The first figure of `card`'s default weights named `name` (any, when None; ``fid`` also matches
    ``fid[...]``) on `dataset` (a case-insensitive glob; any, when None); None when there is none."""
    key = name.lower() if name is not None else None
    wanted = dataset.lower() if dataset is not None else None
    for metric in _default_metrics(card):
        if key is not None and not _name_matches(metric.name, key):
            continue
        if wanted is not None and not fnmatch.fnmatchcase(metric.dataset.lower(), wanted):
            continue
        return metric
    return None


def _license_id(text: str) -> str:
    """The identifier a license text starts with: "BSD-3-Clause (torchvision)" -> "bsd-3-clause"."""
    return re.split(r"[\s(;,]", text.strip(), maxsplit=1)[0].lower()


def license_matches(card: ModelCard, wanted: str) -> bool:
    """Whether the card's license or its default weights' license is `wanted`: compared with the identifier the
    license text starts with ("BSD-3-Clause (torchvision)" is BSD-3-Clause), case-insensitively; `wanted` may be
    a glob ('BSD*'). A name inside the rest of the text (a note on the data's license) does not count."""
    variant = card.variant()
    pattern = wanted.strip().lower()
    return any(
        text and fnmatch.fnmatchcase(_license_id(text), pattern)
        for text in (card.license, variant.license if variant is not None else None)
    )


def sort_cards(cards: list[ModelCard], key: str, *, dataset: str | None = None) -> list[ModelCard]:
    """`cards` (already in name order) sorted by `key`, best first, ties kept in name order: ``name``;
    ``params``, smallest first; ``task``; or a metric of the default weights (on `dataset` when given), highest
    first, or lowest first for :func:`lower_is_better` ones. Cards without the figure come last."""
    if key == "name":
        return list(cards)
    if key == "task":
        return sorted(cards, key=lambda c: c.task)
    if key == "params":
        return sorted(cards, key=lambda c: (c.params is None, c.params or 0))

    def order(card: ModelCard) -> tuple[bool, float]:
        metric = card_metric(card, key, dataset)
        if metric is None:
            return (True, 0.0)
        return (False, metric.value if lower_is_better(metric.name) else -metric.value)

    return sorted(cards, key=order)


def _is_own_registry(path: Path) -> bool:
    """Whether `path` is the user's own registry, ``$ZOO_HOME/registry.yaml`` (see Registry._load_user_file)."""
    home = _config.cache_root() / "registry.yaml"
    try:
        return home.is_file() and os.path.samefile(path, home)
    except OSError:
        return False


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry.load()
    return _REGISTRY


def reset_registry() -> None:
    """Forget the registry and the plugins (after changing ZOO_* variables or installing a plugin)."""
    global _REGISTRY
    _REGISTRY = None
    from ._plugins import reset_plugins

    reset_plugins()
