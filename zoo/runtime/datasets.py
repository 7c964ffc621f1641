"""Labelled image datasets as people have them, decoded once into a uint8 tensor and cached.

Formats: an ImageFolder directory (``root/<class>/<image>``), the same inside a ``.zip``, and the CIFAR-10
"python version" batches (read with a restricted unpickler that only rebuilds numpy arrays). Decoding is
the expensive part of evaluating small models, so the decoded tensor is cached under
``$ZOO_HOME/datasets/`` keyed by the sha256 of the files' content (and the decode geometry): a second
``zoo eval`` on the same data reads one memory-mapped file, and any change to the data changes the key.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from .. import _config
from ..errors import ZooError
from .images import IMAGE_SUFFIXES, ImageError, decode_image

if TYPE_CHECKING:
    import torch

__all__ = ["DatasetError", "Geometry", "ImageDataset", "load_dataset"]

CACHE_VERSION: Final = "1"


class DatasetError(ZooError):
    """A dataset path that zoo cannot read, with what it expected."""


@dataclass
class ImageDataset:
    """Decoded images (N x 3 x H x W uint8), their labels and class names."""

    images: torch.Tensor
    targets: torch.Tensor
    classes: tuple[str, ...]
    source: str
    skipped: list[str] = field(default_factory=list)  # files that could not be decoded (with --skip-bad)
    from_cache: bool = False

    def __len__(self) -> int:
        return int(self.targets.shape[0])


# -- readers: each yields (class name, file name, raw bytes) -----------------------------------------

Item = tuple[str, str, bytes]


def _folder_items(root: Path) -> Iterator[Item]:
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(class_dir.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                yield class_dir.name, str(path), path.read_bytes()


def _zip_members(zf: zipfile.ZipFile) -> list[tuple[str, str]]:
    """(class, member) pairs: the class is the folder right under the archive's common root."""
    names = [n for n in zf.namelist() if not n.endswith("/") and Path(n).suffix.lower() in IMAGE_SUFFIXES
             and "__MACOSX" not in n]
    if not names:
        return []
    parts = [n.split("/") for n in names]
    depth = min(len(p) for p in parts)
    # The common root: leading folders shared by every image (e.g. "train/"); the next folder is the class.
    root = 0
    while root < depth - 2 and len({p[root] for p in parts}) == 1:
        root += 1
    if depth - root < 2:
        return []
    return sorted((p[root], n) for p, n in zip(parts, names, strict=True))


def _zip_items(path: Path) -> Iterator[Item]:
    with zipfile.ZipFile(path) as zf:
        for label, name in _zip_members(zf):
            yield label, f"{path}:{name}", zf.read(name)


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and builtin containers only: CIFAR batches need nothing else."""

    ALLOWED: Final = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _cifar_batches(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.name.startswith(("data_batch", "test_batch")))


def _load_cifar(root: Path) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    import numpy as np
    import torch

    def unpickle(path: Path) -> dict:
        try:
            with open(path, "rb") as f:
                data = _ArrayUnpickler(f, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise DatasetError(f"{path}: not a CIFAR-10 python batch ({exc}).") from None
        return {k.decode() if isinstance(k, bytes) else k: v for k, v in data.items()}

    meta = unpickle(root / "batches.meta")
    classes = tuple(n.decode() if isinstance(n, bytes) else n for n in meta["label_names"])
    arrays, labels = [], []
    for batch in _cifar_batches(root):
        data = unpickle(batch)
        arrays.append(np.asarray(data["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(int(v) for v in data["labels"])
    return torch.from_numpy(np.concatenate(arrays)), torch.tensor(labels, dtype=torch.int64), classes


# -- content key and cache ---------------------------------------------------------------------------

def _content_key(path: Path, geometry: str) -> str:
    """sha256 of every byte the dataset is made of, plus how it is decoded."""
    digest = hashlib.sha256(f"zoo-dataset-{CACHE_VERSION}|{geometry}|".encode())
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(f"{file.relative_to(path) if file != path else file.name}|".encode())
        with open(file, "rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _cache_path(key: str) -> Path:
    return _config.cache_root() / "datasets" / f"{key}.safetensors"


def _read_cache(path: Path, source: str) -> ImageDataset | None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
        return ImageDataset(tensors["images"], tensors["targets"], tuple(json.loads(meta["classes"])), source,
                            skipped=json.loads(meta.get("skipped", "[]")), from_cache=True)
    except Exception:  # noqa: BLE001 - a damaged cache entry is simply rebuilt
        path.unlink(missing_ok=True)
        return None


def _write_cache(path: Path, dataset: ImageDataset) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        save_file({"images": dataset.images.contiguous(), "targets": dataset.targets}, str(tmp),
                  metadata={"classes": json.dumps(list(dataset.classes)), "skipped": json.dumps(dataset.skipped),
                            "source": dataset.source})
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only or full cache costs a re-decode next time, nothing more
    finally:
        tmp.unlink(missing_ok=True)


# -- the entry point ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Geometry:
    """The geometric half of a card's eval preprocessing, applied once at decode time (on uint8)."""

    resize: int | None = None  # shorter side
    crop: int | None = None  # square center crop
    interpolation: str = "bilinear"

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        if self.resize is not None and min(image.shape[-2:]) != self.resize:
            mode = getattr(InterpolationMode, self.interpolation.upper())
            image = F.resize(image, [self.resize], interpolation=mode, antialias=True)
        if self.crop is not None and tuple(image.shape[-2:]) != (self.crop, self.crop):
            image = F.center_crop(image, [self.crop, self.crop])
        return image


def _fit(image: torch.Tensor, geometry: Geometry | None) -> torch.Tensor:
    return image if geometry is None else geometry.apply(image)


def _decode_items(items: Iterator[Item], geometry: Geometry | None, skip_bad: bool,
                  source: str) -> ImageDataset:
    import torch

    images, labels, names, skipped = [], [], [], []
    for label, name, data in items:
        try:
            image = decode_image(data, name=name)
        except ImageError:
            if not skip_bad:
                raise
            skipped.append(name)
            continue
        images.append(_fit(image, geometry))
        labels.append(label)
        names.append(name)
    classes = tuple(sorted(set(labels)))
    if not images:
        raise DatasetError(f"{source}: no readable images found. Expected an ImageFolder layout "
                           "(<root>/<class>/<image>.jpg), a .zip of one, or CIFAR-10 python batches.")
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) > 1:
        raise DatasetError(f"{source}: images have different sizes ({len(shapes)} kinds); "
                           "give a geometry (the model card's preprocessing) so they are resized.")
    index = {c: i for i, c in enumerate(classes)}
    return ImageDataset(torch.stack(images), torch.tensor([index[c] for c in labels]), classes, source,
                        skipped=skipped)


def load_dataset(path: str | Path, *, geometry: Geometry | None = None, skip_bad: bool = False,
                 cache: bool = True) -> ImageDataset:
    """Read a labelled dataset, decoding each image once per content (cached in ZOO_HOME).

    Args:
        path: an ImageFolder directory, a ``.zip`` of one, or a CIFAR-10 python batches directory.
        geometry: the resize / center crop every image gets once, at decode time (the card's).
        skip_bad: skip undecodable files (counted in ``skipped``) instead of failing on the first.
        cache: read/write the decoded tensor cache.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(f"Dataset {str(path)!r} does not exist.")
    key = _content_key(path, f"{geometry}|skip={skip_bad}") if cache else ""
    if cache:
        cached = _read_cache(_cache_path(key), str(path)) if _cache_path(key).is_file() else None
        if cached is not None:
            return cached
    if path.is_dir() and (path / "batches.meta").is_file():
        import torch

        images, targets, classes = _load_cifar(path)
        if geometry is not None:
            images = torch.stack([_fit(im, geometry) for im in images])
        dataset = ImageDataset(images, targets, classes, str(path))
    elif path.is_dir():
        dataset = _decode_items(_folder_items(path), geometry, skip_bad, str(path))
    elif zipfile.is_zipfile(path):
        dataset = _decode_items(_zip_items(path), geometry, skip_bad, str(path))
    else:
        raise DatasetError(f"Dataset {str(path)!r} is neither a directory nor a .zip archive.")
    if cache:
        _write_cache(_cache_path(key), dataset)
    return dataset
