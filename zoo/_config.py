"""Environment variables and the cache root, read in one place so their names are documented once."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "build_strategy",
    "cache_root",
    "cpu_graph",
    "cpu_streams",
    "disabled_plugins",
    "download_deadline",
    "download_retries",
    "download_timeout",
    "lock_timeout",
    "mirror_dirs",
    "offline",
    "selected_plugins",
    "show_progress",
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
    """The user's registries: `$ZOO_HOME/registry.yaml` (if it exists) plus every path in `ZOO_REGISTRY`.

    Each file once, even when ZOO_REGISTRY names the default one too.
    """
    candidates = []
    default = cache_root() / "registry.yaml"
    if default.is_file():
        candidates.append(default)
    raw = os.environ.get("ZOO_REGISTRY", "")
    candidates.extend(Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip())
    files, seen = [], set()
    for path in candidates:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            files.append(path)
    return files


def _number(var: str, default: float) -> float:
    raw = os.environ.get(var, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        from .errors import ZooError

        raise ZooError(f"{var}={raw!r} is not a number.") from None


def cpu_streams() -> int | None:
    """`ZOO_CPU_STREAMS`: how many batches zoo eval and sampling run at once on a CPU (None: one per core)."""
    raw = os.environ.get("ZOO_CPU_STREAMS", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        from .errors import ZooError

        raise ZooError(f"ZOO_CPU_STREAMS={raw!r} is not a positive whole number; unset it or use e.g. 1.")
    return int(raw)


def cpu_graph() -> bool:
    """`ZOO_CPU_GRAPH=0`: fp32 evaluation on a CPU runs the eager model, not its fused oneDNN graph
    (zoo.runtime.graph); on by default."""
    raw = os.environ.get("ZOO_CPU_GRAPH", "").strip().lower()
    if raw in ("", *TRUTHY):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    from .errors import ZooError

    raise ZooError(f"ZOO_CPU_GRAPH={raw!r} is not 0 or 1; unset it, or use 0 to turn the fused graph off.")


def download_retries() -> int:
    """`ZOO_DOWNLOAD_RETRIES` (default 5): retries after a dropped connection, each resuming with Range."""
    return int(_number("ZOO_DOWNLOAD_RETRIES", 5))


def download_timeout() -> float:
    """`ZOO_DOWNLOAD_TIMEOUT` (default 30): seconds without data before a connection counts as dropped."""
    return _number("ZOO_DOWNLOAD_TIMEOUT", 30.0)


def download_deadline() -> float:
    """`ZOO_DOWNLOAD_DEADLINE` (default 3600): seconds for a whole download, retries included (#20).

    `ZOO_DOWNLOAD_TIMEOUT` bounds one read only, so a server sending a byte a second would never time out;
    the deadline also bounds how long the download holds the lock other loaders wait on.
    """
    return _number("ZOO_DOWNLOAD_DEADLINE", 3600.0)


def lock_timeout() -> float:
    """`ZOO_LOCK_TIMEOUT` (default 900): seconds to wait for another process fetching the same weights."""
    return _number("ZOO_LOCK_TIMEOUT", 900.0)


def show_progress() -> bool:
    """Progress bars on a terminal unless `ZOO_NO_PROGRESS=1`."""
    return os.environ.get("ZOO_NO_PROGRESS", "").strip().lower() not in TRUTHY


def build_strategy() -> str:
    """`ZOO_BUILD_STRATEGY`: noinit (default), meta or eager; see zoo/_builder.py."""
    return os.environ.get("ZOO_BUILD_STRATEGY", "").strip() or "noinit"


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
