"""Where the index lives and how its stored form becomes registry mappings. Standard library only."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

INDEX_FORMAT: Final = 1  # bump when the index's content changes: an index of another format is built again


def torchvision_version() -> str:
    """The installed torchvision's version, read from its metadata (no import of torchvision)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torchvision")
    except PackageNotFoundError:
        return "missing"


def index_path() -> Path:
    """``$ZOO_HOME/index/torchvision-<version>-f<format>.json``: one index per torchvision version."""
    from zoo import _config

    safe = "".join(c if c.isalnum() or c in "._+-" else "_" for c in torchvision_version())
    return _config.cache_root() / "index" / f"torchvision-{safe}-f{INDEX_FORMAT}.json"


def expand(data: dict[str, Any], origin: str) -> dict[str, Any]:
    """The stored index (label lists kept once, named by the cards) as the registry's namespace mapping."""
    label_sets = data.get("label_sets", {})
    models = {}
    for key, raw in data["models"].items():
        card = dict(raw)
        if isinstance(card.get("labels"), str):
            card["labels"] = label_sets[card["labels"]]
        models[key] = card
    return {"models": models, "defaults": data.get("defaults", {}), "origin": origin}
