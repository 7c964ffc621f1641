"""Helpers for a plugin's on-demand namespace index (docs/architecture.md §15): one JSON file per library version
under ``$ZOO_HOME/index/``, built once by importing the library, read afterwards with the standard library only.

The torchvision (``tv``) and timm bridges keep their indexes this way; a third-party plugin that turns another
library's metadata into cards can too. Standard library only: these run when a ``<plugin>/...`` name is asked for,
and must not import torch.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["announce", "built", "cached_index", "dist_version", "expand", "index_file", "read_json", "write_json"]


def dist_version(distribution: str) -> str:
    """An installed distribution's version from its metadata (no import of it); "missing" if not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "missing"


def index_file(library: str, version: str, fmt: int, suffix: str = "") -> Path:
    """``$ZOO_HOME/index/<library>-<version>-f<fmt><suffix>.json``, the version made safe for a file name."""
    from zoo import _config

    safe = "".join(c if c.isalnum() or c in "._+-" else "_" for c in version)
    return _config.cache_root() / "index" / f"{library}-{safe}-f{fmt}{suffix}.json"


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object stored at `path`, or None if it is missing or unreadable (then it is built again)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: Any) -> None:
    """Write `data` to `path` atomically: readers see the old file or the new one, never a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cached_index(path: Path, fmt: int, build: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """The index stored at `path` if it has format `fmt`, else `build(path)` (which imports the library)."""
    data = read_json(path)
    if data is None or data.get("format") != fmt:
        data = build(path)
    return data


def announce(library: str, version: str) -> float:
    """Say on stderr that an index is being built (it takes a while, once); the start time for `built`."""
    print(
        f"zoo: building the index of {library} {version}'s pretrained models (once per {library} version) ...",
        file=sys.stderr,
        flush=True,
    )
    return time.perf_counter()


def built(data: dict[str, Any], what: str, path: Path, start: float) -> None:
    """Say on stderr how many cards the new index holds, what it skipped, how long it took and where it is."""
    skipped = data.get("skipped", {})
    names = ", ".join(list(skipped)[:8]) + (f" and {len(skipped) - 8} more" if len(skipped) > 8 else "")
    detail = f", {len(skipped)} skipped ({names})" if skipped else ""
    print(
        f"zoo: indexed {len(data['models'])} {what}{detail} in {time.perf_counter() - start:.1f} s: {path}",
        file=sys.stderr,
        flush=True,
    )


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
