"""Environment variables and the cache root, read in one place so their names are documented once."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "cache_root",
    "disabled_plugins",
    "mirror_dirs",
    "offline",
    "selected_plugins",
    "user_registry_files",
]

TRUTHY = frozenset({"1", "true", "yes", "on"})


def cache_root() -> Path:
    """`ZOO_HOME`, else the platform's user cache directory (e.g. ~/.cache/zoo on Linux)."""
    home = os.environ.get("ZOO_HOME")
    if home:
        return Path(home).expanduser()
    import platformdirs  # only paid by commands that touch the cache

    return Path(platformdirs.user_cache_dir("zoo", appauthor=False))


def offline() -> bool:
    """`ZOO_OFFLINE=1`: never open a socket; missing weights are an error that says how to provide them."""
    return os.environ.get("ZOO_OFFLINE", "").strip().lower() in TRUTHY


def mirror_dirs() -> list[Path]:
    """`ZOO_MIRROR`: directories (os.pathsep-separated) searched by file name before the network."""
    raw = os.environ.get("ZOO_MIRROR", "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


def user_registry_files() -> list[Path]:
    """The user's registries: `$ZOO_HOME/registry.yaml` (if it exists) plus every path in `ZOO_REGISTRY`."""
    files = []
    default = cache_root() / "registry.yaml"
    if default.is_file():
        files.append(default)
    raw = os.environ.get("ZOO_REGISTRY", "")
    files.extend(Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip())
    return files


def _name_set(var: str) -> set[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def selected_plugins() -> set[str] | None:
    """`ZOO_LOAD_PLUGINS`: only these plugins load (comma-separated; empty means none). None: all."""
    return _name_set("ZOO_LOAD_PLUGINS")


def disabled_plugins() -> set[str]:
    """`ZOO_DISABLE_PLUGINS`: plugins that never load (comma-separated)."""
    return _name_set("ZOO_DISABLE_PLUGINS") or set()
