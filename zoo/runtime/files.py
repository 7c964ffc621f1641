"""Writing output files so that a reader never sees half of one: `zoo sample`'s PNGs and manifests, `zoo explain`'s
overlays."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ZooError

__all__ = ["default_mode", "write_atomic"]


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


def default_mode(path: Path) -> None:
    """Give a file zoo created through a private temporary file the mode a plain ``open`` would have given it:
    0o666 less the umask (0644 under the usual 022). ``tempfile`` and safetensors' writer create files 0600,
    which made cached datasets and fine-tuned weights unreadable to the other users of a shared $ZOO_HOME;
    pip and huggingface_hub set their files to the umask's mode the same way. Reading the umask means setting
    it and back (pip's ``current_umask``)."""
    mask = os.umask(0o022)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
