"""The card a fine-tuning run leaves in the user registry: the source card with the data's labels, the new
weights (full sha256) and the measured validation figure (and, with --test-split, the test figure), each with the
command that measures it again."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from ... import _config
from ..._card import ModelCard
from ...errors import ZooError
from .recipe import FinetuneConfig

__all__ = ["CardFigure", "add_user_entry", "check_name", "user_registry", "weights_uri", "write_user_card"]


@dataclasses.dataclass(frozen=True)
class CardFigure:
    """One figure a fine-tuning run measured, as its card records it: on which held-out part and whether the run
    chose its weights by it (docs/evaluation-protocol.md: val is selected on, test never)."""

    metric: str  # the task's headline metric (top1, map...)
    value: float
    split: str  # "val" or "test"
    selected_on: bool  # whether the weights were chosen on these images
    images: str  # which images (the task says: "5000 images held out ... by --val-split 0.1 (seed 0)")
    how: str  # how the weights relate to them ("best of 30 epochs, chosen on these images")
    eval_args: str  # the ``zoo eval`` options that select them again

    def as_metric(self, name: str, data: str, command: str) -> dict[str, Any]:
        """The card's metric entry for model `name`, fine-tuned on `data` by `command`."""
        return {
            "name": self.metric,
            "value": round(self.value, 4),
            "dataset": data,
            "split": self.split,
            "source": "measured",
            "selected_on": self.selected_on,
            "command": command,
            "note": f"{self.images}; {self.how}. Measure again: zoo eval {name} --data {data} {self.eval_args} "
            "--compare",
        }


def user_registry() -> Path:
    """The user's own registry file, ``$ZOO_HOME/registry.yaml`` (which zoo writes)."""
    return _config.cache_root() / "registry.yaml"


def weights_uri(weights: Path, registry: Path) -> str:
    """How a card in `registry` names a local weights file: relative to the registry's folder when the file lies
    inside it (the card keeps loading when that folder moves as a whole; the card parser resolves relative paths
    against the registry file, not the cwd), else the absolute path."""
    path, base = weights.resolve(), registry.parent.resolve()
    return path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)


def add_user_entry(name: str, entry: dict[str, Any], *, by: str = "zoo finetune") -> Path:
    """Add (or replace) card `name` in the user registry: under a lock, written to a temporary file and renamed
    over the registry, so a reader never sees half a file and a crash leaves the old one."""
    import yaml
    from filelock import FileLock

    registry = user_registry()
    registry.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(registry) + ".lock"):
        data_now = yaml.safe_load(registry.read_text()) if registry.is_file() else None
        document: dict[str, Any] = data_now if isinstance(data_now, dict) else {"schema": 1, "models": {}}
        document["models"] = document.get("models") or {}
        document["models"][name] = entry
        tmp = registry.with_name(registry.name + ".partial")
        tmp.write_text(
            f"# zoo user registry: written by {by!r} (and safe to edit by hand)\n"
            + yaml.safe_dump(document, sort_keys=False)
        )
        os.replace(tmp, registry)
    return registry


def check_name(name: str, option: str = "--out name") -> None:
    """A new model's name must be a valid card name that no plugin owns (user cards may be replaced)."""
    from ..._card import NAME_RE
    from ..._registry import get_registry

    if not NAME_RE.fullmatch(name):
        raise ZooError(f"Bad model name {name!r}: use lower-case letters, digits, '-' and '_'.")
    for card in get_registry().by_short.get(name, []):
        if card.plugin != "user":
            raise ZooError(f"Model name {name!r} is taken by plugin {card.plugin!r}; choose another {option}.")


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def write_user_card(
    name: str,
    card: ModelCard,
    weights: Path,
    classes: tuple[str, ...],
    kwargs: dict[str, Any],
    figures: list[CardFigure],
    data: str,
    config: FinetuneConfig,
    command: str,
    *,
    params: int | None = None,
) -> Path:
    """Add (or replace) the user-registry card `name` for the fine-tuned weights, atomically and under a lock.

    Args:
        figures: the task's headline figure on the held-out images (validation, and test with --test-split), in
            the card's order: the first is the one ``zoo list`` shows. None (``--val-split 0``): the card is
            written all the same, without a figure; "load it with zoo.load" must hold after every run (#19).
        params: the model's parameter count, for ``zoo list`` and ``--max-params`` (the card's ``params``).
    """
    import hashlib

    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    registry = user_registry()
    entry: dict[str, Any] = {
        "task": card.task,
        "builder": card.builder,
        "kwargs": kwargs,
        "description": f"{card.name} fine-tuned on {data} ({len(classes)} classes) with zoo finetune.",
        "input": {"shape": list(card.input_shape)} if card.input_shape else None,
        "preprocess": _plain(dataclasses.asdict(card.preprocess)) if card.preprocess else None,
        "labels": list(classes),
        "task_config": _plain(dict(card.task_config)) or None,  # the task's settings (a GAN's feature space)
        "head": card.head,
        "params": params,
        "license": card.license,
        "source": f"zoo finetune of {card.qualified_name}",
        "weights": {
            "finetuned": {
                "uri": weights_uri(weights, registry),  # relative inside $ZOO_HOME, as zoo register's
                "sha256": digest,
                "size": weights.stat().st_size,
                "format": "safetensors",
                "dtype": "float32",
                "notes": "recipe: " + json.dumps(dataclasses.asdict(config), sort_keys=True),
                "metrics": [figure.as_metric(name, data, command) for figure in figures],
            }
        },
    }
    entry = {k: v for k, v in entry.items() if v is not None}
    return add_user_entry(name, entry)
