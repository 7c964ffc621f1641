"""Where the timm index and its parameter counts live, and how they become registry mappings. Standard library only.

The generic pieces (one JSON file per library version under ``$ZOO_HOME/index/``, written atomically, label lists
stored once) are zoo's (``zoo.namespaces``); this module names timm's files and merges the parameter counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from zoo.namespaces import dist_version, expand, index_file, read_json

INDEX_FORMAT: Final = 1  # bump when the index's content changes: an index of another format is built again


def timm_version() -> str:
    """The installed timm's version, read from its metadata (no import of timm)."""
    return dist_version("timm")


def index_path() -> Path:
    """``$ZOO_HOME/index/timm-<version>-f<format>.json``: one index per timm version."""
    return index_file("timm", timm_version(), INDEX_FORMAT)


def params_path() -> Path:
    """``$ZOO_HOME/index/timm-<version>-f<format>-params.json``: ``arch.tag -> parameter count``, filled in
    lazily (counting needs building each architecture, minutes for all of timm): by every model zoo builds with
    its card's arguments, and for chosen patterns by ``python -m zoo_timm.index --params PATTERN``."""
    return index_file("timm", timm_version(), INDEX_FORMAT, "-params")


def read_params() -> dict[str, int]:
    """The parameter counts recorded so far (none if the file is missing or damaged: they are only a cache)."""
    data = read_json(params_path()) or {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, int) and v > 0}


def with_params(data: dict[str, Any], params: dict[str, int], origin: str) -> dict[str, Any]:
    """The registry's namespace mapping of the stored index, with the recorded parameter counts on the cards."""
    mapping = expand(data, origin)
    for key, count in params.items():
        card = mapping["models"].get(key)
        if card is not None:
            card["params"] = count
    return mapping
