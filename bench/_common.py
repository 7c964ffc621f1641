"""Helpers shared by the bench scripts: the shared data, a CIFAR subset on disk, timing."""

from __future__ import annotations

import atexit
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CIFAR_ZIP = SHARED / "datasets" / "cifar10-train-jpeg.zip"
AKAMASTER = SHARED / "weights" / "akamaster-resnet-cifar"


def scratch_dir(prefix: str) -> Path:
    """A fresh temporary folder that is deleted when the script exits: a bench leaves nothing in /tmp (the
    100 MB ZOO_HOMEs of earlier runs once filled a CI machine's disk)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    return work


def require(path: Path) -> Path:
    if not path.exists():
        sys.exit(f"skipped: needs {path} (../shared is only on the project's dev and CI machines)")
    return path


def extract_cifar_subset(dest: Path, per_class: int, *, last: bool = True) -> Path:
    """Write `per_class` JPEGs of each class (the last ones by file name: never the first 300 that
    bench_accuracy uses) into an ImageFolder directory `dest/<class>/`, byte for byte."""
    require(CIFAR_ZIP)
    with zipfile.ZipFile(CIFAR_ZIP) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".jpg"))
        by_class: dict[str, list[str]] = {}
        for name in names:
            by_class.setdefault(name.split("/")[-2], []).append(name)
        for label, members in by_class.items():
            (dest / label).mkdir(parents=True, exist_ok=True)
            for name in members[-per_class:] if last else members[:per_class]:
                (dest / label / Path(name).name).write_bytes(zf.read(name))
    return dest


def timed(function: Callable[[], object], repeat: int = 1) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return times, result


def median(values: list[float]) -> float:
    return statistics.median(values)
