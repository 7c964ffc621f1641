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
import math
import os
import pickle
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast, overload

from .. import _config
from ..errors import ZooError
from .files import default_mode
from .images import IMAGE_SUFFIXES, ImageError, decode_image

if TYPE_CHECKING:
    import torch

__all__ = [
    "DatasetError",
    "Geometry",
    "ImageDataset",
    "PixelWriter",
    "VariableImages",
    "content_key",
    "decoded",
    "load_dataset",
    "read_pixels",
]

CACHE_VERSION: Final = "2"  # 2: pixels in one memory-mapped file + a JSON index


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
    names = [
        n
        for n in zf.namelist()
        if not n.endswith("/") and Path(n).suffix.lower() in IMAGE_SUFFIXES and "__MACOSX" not in n
    ]
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


DEFAULT_MAX_ZIP_RATIO: Final = 100  # image files barely compress (JPEG/PNG ~1x, BMP/TIFF a few x); a bomb does 1000x
DEFAULT_MAX_IMAGE_BYTES: Final = 256 << 20


def _limit(var: str, default: int) -> int:
    raw = os.environ.get(var, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        raise DatasetError(f"{var}={raw!r} is not a whole number.") from None


def _zip_items(path: Path) -> Iterator[Item]:
    """Members of a dataset zip, each checked before it is inflated (#20).

    A member's declared size bounds what zipfile will inflate, so the checks are on the directory entry: the
    size (``ZOO_MAX_IMAGE_BYTES``, default 256 MiB) and the inflation ratio (``ZOO_MAX_ZIP_RATIO``, default
    100; 0 switches either off). A 1.5 MB zip that inflates to 1.5 GiB is refused before a byte is inflated.
    """
    max_bytes = _limit("ZOO_MAX_IMAGE_BYTES", DEFAULT_MAX_IMAGE_BYTES)
    max_ratio = _limit("ZOO_MAX_ZIP_RATIO", DEFAULT_MAX_ZIP_RATIO)
    with zipfile.ZipFile(path) as zf:
        for label, name in _zip_members(zf):
            info = zf.getinfo(name)
            if max_bytes and info.file_size > max_bytes:
                raise DatasetError(
                    f"{path}: member {name!r} inflates to {info.file_size:,} bytes, over the limit of "
                    f"{max_bytes:,} for one image. Set ZOO_MAX_IMAGE_BYTES (0: no limit) if it is "
                    "genuine."
                )
            ratio = info.file_size / max(info.compress_size, 1)
            if max_ratio and info.file_size > (1 << 20) and ratio > max_ratio:
                raise DatasetError(
                    f"{path}: member {name!r} inflates from {info.compress_size:,} to "
                    f"{info.file_size:,} bytes ({ratio:.0f}x; a zip bomb?). Images barely compress; "
                    f"set ZOO_MAX_ZIP_RATIO above {max_ratio} (0: no limit) if it is genuine."
                )
            with zf.open(info) as member:
                data = member.read(info.file_size + 1)  # zipfile stops at the declared size; belt and braces
            yield label, f"{path}:{name}", data


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and builtin containers only: CIFAR batches need nothing else."""

    ALLOWED: Final = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
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
    arrays: list[Any] = []
    labels: list[int] = []
    for batch in _cifar_batches(root):
        data = unpickle(batch)
        arrays.append(np.asarray(data["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(int(v) for v in data["labels"])
    return torch.from_numpy(np.concatenate(arrays)), torch.tensor(labels, dtype=torch.int64), classes


# -- content key and cache ---------------------------------------------------------------------------


def content_key(path: Path, geometry: str) -> str:
    """sha256 of every byte the dataset is made of, plus how it is decoded."""
    digest = hashlib.sha256(f"zoo-dataset-{CACHE_VERSION}|{geometry}|".encode())
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(f"{file.relative_to(path) if file != path else file.name}|".encode())
        with open(file, "rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):  # type: ignore[misc]  # default-arg lambda
                digest.update(block)
    return digest.hexdigest()


def _cache_paths(key: str) -> tuple[Path, Path]:
    """(the decoded pixels, their index): the index is written last, so its presence means complete."""
    folder = _config.cache_root() / "datasets"
    return folder / f"{key}.u8", folder / f"{key}.json"


def _map_images(path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    """The decoded images as one uint8 tensor backed by the file (memory-mapped, copy-on-write): batches are
    read from the page cache as they are indexed, so a dataset larger than RAM costs no more than its batches."""
    import numpy as np
    import torch

    if shape[0] == 0:
        return torch.zeros(shape, dtype=torch.uint8)
    return torch.from_numpy(np.memmap(path, dtype=np.uint8, mode="c", shape=shape))


class VariableImages:
    """Images of different sizes in one memory-mapped file plus an offsets index: ``images[i]`` is a C x H x W
    view, ``images[a:b]`` a list of them (what a variable-size model takes)."""

    def __init__(self, flat: torch.Tensor, shapes: list[tuple[int, ...]]) -> None:
        self.flat, self.shapes = flat, [tuple(s) for s in shapes]
        self.offsets = [0]
        for shape in self.shapes:
            self.offsets.append(self.offsets[-1] + math.prod(shape))

    def __len__(self) -> int:
        return len(self.shapes)

    @overload
    def __getitem__(self, index: int) -> torch.Tensor: ...
    @overload
    def __getitem__(self, index: slice) -> list[torch.Tensor]: ...

    def __getitem__(self, index: int | slice) -> torch.Tensor | list[torch.Tensor]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        begin = self.offsets[index]
        return self.flat[begin : self.offsets[index + 1]].view(self.shapes[index])


def read_pixels(key: str) -> tuple[torch.Tensor | VariableImages, dict[str, Any]] | None:
    """A complete decode-cache entry: (the images, memory-mapped: N x C x H x W, or VariableImages when their
    sizes differ; the task's index), or None when there is none or it is damaged (then removed, to be rebuilt)."""
    data, index = _cache_paths(key)
    if not index.is_file():
        return None
    try:
        meta = json.loads(index.read_text())
        if "shapes" in meta:  # variable sizes
            shapes = [tuple(s) for s in meta["shapes"]]
            total = sum(math.prod(s) for s in shapes)
            if data.stat().st_size != total:
                raise ValueError("size mismatch")
            return VariableImages(_map_images(data, (total,)), shapes), meta
        shape = tuple(meta["shape"])
        if data.stat().st_size != math.prod(shape):
            raise ValueError("size mismatch")
        return _map_images(data, shape), meta
    except Exception:  # noqa: BLE001 - a damaged cache entry is simply rebuilt
        index.unlink(missing_ok=True)
        data.unlink(missing_ok=True)
        return None


def _read_cache(key: str, source: str) -> ImageDataset | None:
    import torch

    found = read_pixels(key)
    if found is None:
        return None
    images, meta = found
    # an ImageDataset's key names a fixed geometry, so its entry is never VariableImages
    return ImageDataset(
        cast("torch.Tensor", images),
        torch.tensor(meta["targets"], dtype=torch.int64),
        tuple(meta["classes"]),
        source,
        skipped=meta.get("skipped", []),
        from_cache=True,
    )


class PixelWriter:
    """Decoded images appended to one file as they come (nothing is held in memory but the batch in flight),
    then published by renaming the pixels and, last, writing the index."""

    def __init__(self, key: str | None) -> None:
        import tempfile

        folder = _config.cache_root() / "datasets"
        self.key = key
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.file = tempfile.NamedTemporaryFile(dir=folder, prefix=".decode-", suffix=".partial", delete=False)
        except OSError:  # a read-only cache: decode into the system's temporary directory, uncached
            self.key = None
            self.file = tempfile.NamedTemporaryFile(prefix="zoo-decode-", suffix=".partial", delete=False)
        self.path = Path(self.file.name)
        self.shapes: list[tuple[int, ...]] = []

    def add(self, image: torch.Tensor) -> None:
        self.file.write(image.contiguous().numpy().tobytes())
        self.shapes.append(tuple(image.shape))

    def finish(self, targets: list[int], classes: tuple[str, ...], source: str, skipped: list[str]) -> ImageDataset:
        import torch

        meta = {"targets": targets, "classes": list(classes), "skipped": skipped, "source": source}
        return ImageDataset(
            cast("torch.Tensor", self.publish(meta, source)),  # not variable: one tensor
            torch.tensor(targets, dtype=torch.int64),
            classes,
            source,
            skipped=skipped,
        )

    def publish(self, meta: dict[str, Any], source: str, variable: bool = False) -> torch.Tensor | VariableImages:
        """Close the file, write the index (`meta` plus the shape, or every image's shape when `variable`) and
        return the images, memory-mapped."""
        self.file.close()
        if len(set(self.shapes)) > 1 and not variable:
            self.path.unlink(missing_ok=True)
            raise DatasetError(
                f"{source}: images have different sizes ({len(set(self.shapes))} kinds); "
                "give a geometry (the model card's preprocessing) so they are resized."
            )
        if variable:
            shape: tuple[int, ...] = (sum(math.prod(s) for s in self.shapes),)
            meta = {"shapes": [list(s) for s in self.shapes], **meta}
        else:
            shape = (len(self.shapes), *(self.shapes[0] if self.shapes else (3, 0, 0)))
            meta = {"shape": list(shape), **meta}
        path = self.path
        if self.key is not None:
            data, index = _cache_paths(self.key)
            try:
                default_mode(path)  # tempfile made it 0600: a shared $ZOO_HOME's other users read it too
                os.replace(path, data)
                path = data
                tmp = index.with_name(f"{index.name}.{os.getpid()}.partial")
                tmp.write_text(json.dumps(meta))
                os.replace(tmp, index)
            except OSError:
                pass  # a full cache costs a re-decode next time, nothing more
        images = _map_images(path, shape)
        if self.key is None or path == self.path:
            path.unlink(missing_ok=True)  # the mapping keeps the pixels readable until it is dropped
        return VariableImages(images, self.shapes) if variable else images

    def abort(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


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


SMALL_FILE_BYTES: Final = 8192  # mean image file size below which decoding stays in one thread


def decoded(
    items: Iterator[Item], geometry: Any, skip_bad: bool, chunk: int = 512
) -> Iterator[tuple[str, str, torch.Tensor | None]]:
    """(label, name, image or None when skipped) in reading order, decoded a chunk at a time, each chunk split
    between a few threads (libjpeg-turbo and libpng run outside the GIL), so decoding uses every core without
    holding more than one chunk of images in memory. One task per thread and chunk, not per image: for 32x32
    JPEGs a future per image cost more than the decoding (measured: 10,000 CIFAR JPEGs 1.7 s that way, 1.0 s
    serially)."""
    from concurrent.futures import ThreadPoolExecutor

    def decode(part: list[Item]) -> list[tuple[str, str, torch.Tensor | None]]:
        out: list[tuple[str, str, torch.Tensor | None]] = []
        for label, name, data in part:
            try:
                out.append((label, name, _fit(decode_image(data, name=name), geometry)))
            except ImageError:
                if not skip_bad:
                    raise
                out.append((label, name, None))
        return out

    workers = max(1, min(4, os.cpu_count() or 1))

    def chunks() -> Iterator[list[Item]]:
        batch: list[Item] = []
        for item in items:
            batch.append(item)
            if len(batch) == chunk:
                yield batch
                batch = []
        if batch:
            yield batch

    with ThreadPoolExecutor(workers) as pool:
        for batch in chunks():
            # small files (CIFAR's 32x32 JPEGs, ~1.5 KB) decode faster in one thread: the Python around each
            # decode holds the GIL longer than libjpeg-turbo runs (10,000 of them: 0.96 s serial, 1.2-1.4 s on
            # two threads); 256x256 JPEGs decode 1.6x faster on two (bench/bench_memory.py)
            if workers == 1 or sum(len(data) for _, _, data in batch) < SMALL_FILE_BYTES * len(batch):
                yield from decode(batch)
                continue
            step = -(-len(batch) // workers)
            for part in pool.map(decode, [batch[i : i + step] for i in range(0, len(batch), step)]):
                yield from part


def _decode_items(
    items: Iterator[Item], geometry: Geometry | None, skip_bad: bool, source: str, key: str | None
) -> ImageDataset:
    writer = PixelWriter(key)
    labels: list[str] = []
    skipped: list[str] = []
    try:
        for label, name, image in decoded(items, geometry, skip_bad):
            if image is None:
                skipped.append(name)
                continue
            writer.add(image)
            labels.append(label)
        if not labels:
            raise DatasetError(
                f"{source}: no readable images found. Expected an ImageFolder layout "
                "(<root>/<class>/<image>.jpg), a .zip of one, or CIFAR-10 python batches."
            )
    except BaseException:
        writer.abort()
        raise
    classes = tuple(sorted(set(labels)))
    index = {c: i for i, c in enumerate(classes)}
    return writer.finish([index[c] for c in labels], classes, source, skipped)


def load_dataset(
    path: str | Path, *, geometry: Geometry | None = None, skip_bad: bool = False, cache: bool = True
) -> ImageDataset:
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
    key = content_key(path, f"{geometry}|skip={skip_bad}") if cache else None
    if key is not None and _cache_paths(key)[1].is_file():
        cached = _read_cache(key, str(path))
        if cached is not None:
            return cached
    if path.is_dir() and (path / "batches.meta").is_file():
        images, targets, classes = _load_cifar(path)
        writer = PixelWriter(key)
        for image in images:
            writer.add(_fit(image, geometry))
        return writer.finish(targets.tolist(), classes, str(path), [])
    if path.is_dir():
        return _decode_items(_folder_items(path), geometry, skip_bad, str(path), key)
    if zipfile.is_zipfile(path):
        return _decode_items(_zip_items(path), geometry, skip_bad, str(path), key)
    raise DatasetError(f"Dataset {str(path)!r} is neither a directory nor a .zip archive.")
