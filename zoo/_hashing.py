"""sha256 of files, the identity of every weights file zoo touches, and opening them without following links."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["open_nofollow", "sha256_file"]


def sha256_file(path: Path, *, follow_symlinks: bool = True) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (constant memory for any size).

    `follow_symlinks=False` (files in the cache) refuses a link with OSError(ELOOP) rather than hashing
    whatever it points at (#20).
    """
    digest = hashlib.sha256()
    flags = os.O_RDONLY | (0 if follow_symlinks else getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(os.open(path, flags), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def open_nofollow(path: Path, flags: int, mode: int = 0o644) -> int:
    """`os.open` that refuses a symlink at `path`: a link planted in the cache must not redirect a write (#20)."""
    import errno

    try:
        return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP or (exc.errno == errno.EEXIST and os.path.islink(path)):
            from .errors import WeightsError

            raise WeightsError(
                f"{path} is a symbolic link; zoo never writes through a link (a planted one could "
                "send the bytes anywhere on disk). Remove it and try again."
            ) from None
        raise
