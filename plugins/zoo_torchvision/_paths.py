"""Where torchvision's index lives. Standard library only; reading, building and expanding an index are zoo's
generic helpers for on-demand namespaces (``zoo.namespaces``), shared with the timm bridge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from zoo.namespaces import (  # noqa: F401 - re-exported: this plugin's modules and tests use them from here
    announce,
    built,
    cached_index,
    dist_version,
    expand,
    index_file,
    read_json,
    write_json,
)

INDEX_FORMAT: Final = 2  # bump when the content changes (2: detectors, #19); an index of another format is rebuilt


def torchvision_version() -> str:
    """The installed torchvision's version, read from its metadata (no import of torchvision)."""
    return dist_version("torchvision")


def index_path() -> Path:
    """``$ZOO_HOME/index/torchvision-<version>-f<format>.json``: one index per torchvision version."""
    return index_file("torchvision", torchvision_version(), INDEX_FORMAT)
