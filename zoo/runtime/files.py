"""Writing output files so that a reader never sees half of one: `zoo sample`'s PNGs and manifests, `zoo explain`'s
overlays."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ZooError

__all__ = ["write_atomic"]


def write_atomic(path: Path, data: bytes) -> None:
    """Write by a rename, so a reader never sees half a file; an OS error is one line naming the file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise ZooError(f"Cannot write {path}: {exc.strerror or exc}.") from None
    finally:
        tmp.unlink(missing_ok=True)
