"""Object-detection datasets as people have them (COCO json, Pascal VOC xml, YOLO txt): read into one model, written
back in any of the three.

Torch-free on purpose (the standard library, PyYAML, and Pillow for image headers only): ``zoo data info`` and
``zoo data convert`` never import a model, and decoding images (grayscale, RGBA, 16-bit) is the decoder's job.

Reading
    A folder or a ``.zip``. Archive members are read in memory, never extracted; a member with an absolute path or a
    ``..`` component makes the whole archive refused. When every file sits in one top folder (``coco128/...``), that
    folder is the dataset's, so a folder and its zip read the same. Formats are tried in this order: COCO (a ``.json``
    with ``images``, ``annotations`` and ``categories``), Pascal VOC (``.xml`` files whose root is ``<annotation>``),
    YOLO (``labels/*.txt`` beside ``images/``, names in a data ``.yaml``, a ``classes.txt`` or a ``*.names``).
    Classes: YOLO's names in order; COCO's categories sorted by id (the ids kept in ``category_ids``); VOC's names
    found in the files, sorted, unless a top-level ``classes.txt`` (zoo's VOC writer leaves one, so classes without
    boxes and the order survive) or CVAT's ``labelmap.txt`` lists them. Images without boxes are kept; images that
    no annotation file mentions are not part of a COCO or VOC dataset.
Boxes
    ``(x1, y1, x2, y2)`` in absolute pixels, as floats. VOC coordinates are taken as written (no 1-based shift:
    LabelImg, CVAT and Roboflow write pixel coordinates); COCO's ``[x, y, w, h]`` becomes ``[x, y, x + w, y + h]``;
    YOLO's normalised centre and size are scaled by the image size from the file's header. A box that reaches past
    the image by more than ``CLIP_TOLERANCE_PX`` is clipped and counted (``clipped``); smaller overshoots are the
    rounding of YOLO's usual six decimals (up to 0.0003 px on coco128) and are clamped without being counted. A box
    with no area left is dropped and counted (``dropped``). Width and height come from the annotation where it gives
    them, else from the image header; EXIF orientation is not applied (zoo's decoder does not apply it either).
    COCO ``iscrowd: 1`` regions mark crowds to ignore, not objects: they are left out and counted (``crowd``).
Splits
    The dataset's own: the data yaml's ``train``/``val``/``test`` (folders or ``.txt`` lists), one COCO json per split
    (``instances_train2017.json`` -> ``train``), VOC ``ImageSets/Main/<split>.txt``, YOLO ``images/<split>/`` folders
    when the yaml names none, and, where the format gives none, ``<split>_labels.csv`` files with a ``filename``
    column (the raccoon dataset's). A split whose images are exactly another's (coco128's yaml says ``val`` is
    ``train``) is recorded in ``split_aliases``; any other overlap is an error, since a sample has one split.
Round trips and their tolerance
    Classes, image sizes, labels and splits survive every conversion exactly, COCO category ids every COCO-to-COCO
    one (VOC and YOLO have none: datasets read from them number the classes 1..K). Box
    coordinates survive within ``ROUND_TRIP_TOLERANCE_PX`` (1e-6 px), the figure the tests hold chains of two and
    three conversions of coco128 and raccoon to (measured: below 1e-8 px). They cannot be bit-exact because no format
    stores the four floats: COCO stores ``[x, y, x2 - x, y2 - y]`` and ``x + (x2 - x)`` is not always ``x2`` in binary
    floating point; YOLO stores ``(x1 + x2) / 2 / W`` and ``(x2 - x1) / W``, which scaling back with
    ``(cx - w / 2) * W`` rounds again (and a YOLO file's usual 6 decimals would cost up to 1e-6 x W, 6e-4 px at
    640 px); and each value is printed as decimal text. The writers print COCO and VOC pixels with 9 decimals (error
    <= 1e-9 px for COCO's x + w) and YOLO's normalised values with 12 (error <= 5e-13 x W: 5e-8 px for a 100,000-px
    image), far below the tolerance, and a value read back prints to the same text, so repeated conversions do not
    drift.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import posixpath
import re
import shutil
import zipfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Final
from xml.etree import ElementTree

import yaml
from PIL import Image, UnidentifiedImageError

from zoo.errors import ZooError

__all__ = [
    "CLIP_TOLERANCE_PX",
    "FORMATS",
    "ROUND_TRIP_TOLERANCE_PX",
    "AnnotationError",
    "DetectionDataset",
    "DetectionSample",
    "read_detection_dataset",
    "write_detection_dataset",
]

FORMATS: Final = ("coco", "voc", "yolo")
CLIP_TOLERANCE_PX: Final = 1e-3
ROUND_TRIP_TOLERANCE_PX: Final = 1e-6
# COCO train2017's instances json is 448 MB; no xml, txt, yaml or csv annotation file comes near 64 MiB.
MAX_JSON_BYTES: Final = 512 * 2**20
MAX_TEXT_BYTES: Final = 64 * 2**20
MAX_IMAGE_BYTES: Final = 2**30
IMAGE_SUFFIXES: Final = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
SPLIT_ORDER: Final = ("train", "val", "test")
_SPLIT_WORDS: Final = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "minival": "val",
    "test": "test",
    "testing": "test",
    "trainval": "trainval",
}
_SAFE_SPLIT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

Box = tuple[float, float, float, float]


class AnnotationError(ZooError):
    """An annotation file zoo cannot use: the message names the file, the line or element, and the fix."""


def _check_inflation(info: zipfile.ZipInfo, where: str) -> None:
    """Refuse an archive member that inflates more than ``ZOO_MAX_ZIP_RATIO`` times (default 100; 0: no limit)
    before a byte of it is inflated (#20): the size caps bound memory, this stops a 5 MB zip from making zoo
    inflate and parse 512 MB of JSON. COCO json compresses about 5-10x, images about 1x; members under 1 MiB pass."""
    raw = os.environ.get("ZOO_MAX_ZIP_RATIO", "").strip()
    try:
        limit = int(raw) if raw else 100
    except ValueError:
        raise AnnotationError(f"ZOO_MAX_ZIP_RATIO={raw!r} is not a whole number.") from None
    ratio = info.file_size / max(info.compress_size, 1)
    if limit and info.file_size > (1 << 20) and ratio > limit:
        raise AnnotationError(
            f"{where}: inflates from {info.compress_size:,} to {info.file_size:,} bytes "
            f"({ratio:.0f}x; a zip bomb?). Set ZOO_MAX_ZIP_RATIO above {limit} (0: no limit) if "
            "it is genuine."
        )


@dataclass
class DetectionSample:
    """One image and its boxes."""

    image: str  # path of the image relative to the dataset root (inside the folder or the zip), "/"-separated
    width: int  # of the image file: from the annotation where given, else the image header
    height: int
    boxes: list[Box]  # xyxy, absolute pixels, clipped to the image
    labels: list[int]  # 0..K-1, index into DetectionDataset.classes
    split: str | None = None  # "train"/"val"/"test" where the dataset itself says so


@dataclass
class DetectionDataset:
    """A detection dataset in memory: classes, samples (sorted by image path) and what reading it counted.

    Image bytes stay where they are (``read_bytes``); the file of ``sample.image`` is ``root/subdir/image``, inside
    the archive when ``root`` is a ``.zip``.
    """

    root: Path
    format: str  # "coco" | "voc" | "yolo"
    classes: tuple[str, ...]
    samples: list[DetectionSample]  # sorted by image path: a stable reading order
    dropped: int = 0  # degenerate boxes (zero/negative area after clipping) dropped
    clipped: int = 0  # boxes clipped to the image
    category_ids: tuple[int, ...] = ()  # COCO category id of each class (COCO input keeps its own; else 1..K)
    split_aliases: dict[str, str] = field(default_factory=dict)  # split -> the split whose images it repeats
    orphan_labels: int = 0  # YOLO label files without an image (ignored)
    crowd: int = 0  # COCO iscrowd regions left out
    subdir: str = ""  # the folder inside root (or the archive) that image paths are relative to

    def __post_init__(self) -> None:
        if not self.category_ids:
            self.category_ids = tuple(range(1, len(self.classes) + 1))

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers get the fields, not the open archive
        return {k: v for k, v in self.__dict__.items() if k != "_zip"}

    def read_bytes(self, sample: DetectionSample) -> bytes:
        """The bytes of the sample's image file, from the folder or the archive."""
        rel = sample.image.replace("\\", "/")
        if rel.startswith("/") or ".." in rel.split("/"):
            raise AnnotationError(f"Image path {sample.image!r} leaves the dataset; give a path inside {self.root}.")
        name = f"{self.subdir}/{rel}" if self.subdir else rel
        if self.root.is_dir():
            path = self.root / name
            try:
                if path.stat().st_size > MAX_IMAGE_BYTES:
                    raise AnnotationError(f"{path}: more than {MAX_IMAGE_BYTES >> 20} MiB; not an image zoo reads.")
                return path.read_bytes()
            except OSError as exc:
                raise AnnotationError(f"Cannot read image {path}: {exc.strerror or exc}.") from None
        zf = self._archive()
        try:
            _check_inflation(zf.getinfo(name), f"{self.root}:{name}")
            with zf.open(name) as f:
                data = f.read(MAX_IMAGE_BYTES + 1)
        except KeyError:
            raise AnnotationError(f"{self.root}: the archive has no member {name!r}.") from None
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise AnnotationError(f"{self.root}:{name}: cannot read the member ({exc}).") from None
        if len(data) > MAX_IMAGE_BYTES:
            raise AnnotationError(f"{self.root}:{name}: more than {MAX_IMAGE_BYTES >> 20} MiB; not an image zoo reads.")
        return data

    def _archive(self) -> zipfile.ZipFile:
        # One handle per process: a forked worker must not share the parent's file offset.
        cached = self.__dict__.get("_zip")
        if cached is None or cached[0] != os.getpid():
            try:
                cached = (os.getpid(), zipfile.ZipFile(self.root))
            except (zipfile.BadZipFile, OSError) as exc:
                raise AnnotationError(f"{self.root}: cannot open the archive ({exc}).") from None
            self.__dict__["_zip"] = cached
        return cached[1]

    def splits(self) -> tuple[str, ...]:
        """The dataset's splits (its own, then aliases), train/val/test first."""
        names = {s.split for s in self.samples if s.split is not None} | set(self.split_aliases)
        return tuple(sorted(names, key=_split_key))

    def select(self, split: str) -> DetectionDataset:
        """The samples of one split (an alias gives its target's samples, relabelled)."""
        if split in self.split_aliases:
            target = self.split_aliases[split]
            samples = [replace(s, split=split) for s in self.samples if s.split == target]
        elif any(s.split == split for s in self.samples):
            samples = [s for s in self.samples if s.split == split]
        else:
            available = self.splits()
            if not available:
                raise AnnotationError(
                    f"{self.root}: has no splits, so no {split!r}; the dataset does not divide its "
                    "images (use all samples, or make a split of your own)."
                )
            raise AnnotationError(
                f"{self.root}: has no split {split!r}; its splits are {', '.join(repr(s) for s in available)}."
            )
        return replace(self, samples=samples, split_aliases={})


# -- the files of a dataset, in a folder or an archive ----------------------------------------------


def _split_key(name: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(name) if name in SPLIT_ORDER else len(SPLIT_ORDER), name)


def _split_of_dir(name: str) -> str | None:
    return _SPLIT_WORDS.get(re.sub(r"\d+$", "", name.lower()))


def _split_of_stem(stem: str) -> str | None:
    for token in re.split(r"[^a-z0-9]+", stem.lower()):
        split = _split_of_dir(token) if token else None
        if split:
            return split
    return None


def _suffix(rel: str) -> str:
    return posixpath.splitext(rel)[1].lower()


def _decode(data: bytes, label: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise AnnotationError(f"{label}, line {line}: not UTF-8 text ({exc.reason}); save the file as UTF-8.") from None


class _Files:
    """The files of a dataset by "/"-separated path relative to its folder (or to its folder inside an archive)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.zip: zipfile.ZipFile | None = None
        if root.is_dir():
            listing = self._walk(root)
        else:
            try:
                self.zip = zipfile.ZipFile(root)
            except (zipfile.BadZipFile, OSError) as exc:
                raise AnnotationError(
                    f"{root}: neither a folder nor a readable .zip archive ({exc}); give the "
                    "dataset's folder or a .zip of it."
                ) from None
            listing = self._zip_listing(self.zip)
        self.prefix = ""
        while listing and all("/" in rel for rel in listing) and len({r.split("/", 1)[0] for r in listing}) == 1:
            top = next(iter(listing)).split("/", 1)[0]
            self.prefix += top + "/"
            listing = {rel.split("/", 1)[1]: v for rel, v in listing.items()}
        self.where = {rel: v[0] for rel, v in listing.items()}  # rel -> path on disk or member name
        self.sizes = {rel: v[1] for rel, v in listing.items()}
        self.paths = sorted(listing)
        self.dirs = {""} | {rel[:i] for rel in listing for i, ch in enumerate(rel) if ch == "/"}
        self.images = [rel for rel in self.paths if _suffix(rel) in IMAGE_SUFFIXES]
        self.image_set = set(self.images)
        self.by_basename: dict[str, list[str]] = {}
        self.by_stem: dict[str, list[str]] = {}
        for rel in self.images:
            base = posixpath.basename(rel)
            self.by_basename.setdefault(base, []).append(rel)
            self.by_stem.setdefault(posixpath.splitext(base)[0], []).append(rel)

    @staticmethod
    def _walk(root: Path) -> dict[str, tuple[str, int]]:
        out: dict[str, tuple[str, int]] = {}
        stack = [("", str(root))]
        try:
            while stack:
                rel_dir, directory = stack.pop()
                with os.scandir(directory) as entries:
                    for entry in entries:
                        if entry.name.startswith(".") or entry.name == "__MACOSX":
                            continue
                        rel = rel_dir + entry.name
                        if entry.is_dir(follow_symlinks=False):
                            stack.append((rel + "/", entry.path))
                        elif entry.is_file():
                            out[rel] = (entry.path, entry.stat().st_size)
        except OSError as exc:
            raise AnnotationError(f"Cannot list {exc.filename or root}: {exc.strerror or exc}.") from None
        return out

    @staticmethod
    def _zip_listing(zf: zipfile.ZipFile) -> dict[str, tuple[str, int]]:
        out: dict[str, tuple[str, int]] = {}
        for info in zf.infolist():
            raw = info.filename
            name = raw.replace("\\", "/")
            if name.startswith("/") or re.match(r"[A-Za-z]:", name) or ".." in name.split("/"):
                raise AnnotationError(
                    f"{zf.filename}: member {raw!r} has an absolute path or a '..' component; zoo "
                    "refuses archives whose members could point outside their folder. Re-create "
                    "the archive with relative paths."
                )
            parts = [p for p in name.split("/") if p not in ("", ".")]
            if name.endswith("/") or not parts or any(p.startswith(".") or p == "__MACOSX" for p in parts):
                continue
            rel = "/".join(parts)
            if rel in out:
                raise AnnotationError(
                    f"{zf.filename}: member {raw!r} appears twice; an archive with duplicate names "
                    "is ambiguous. Re-create it."
                )
            out[rel] = (raw, info.file_size)
        return out

    def label(self, rel: str) -> str:
        """How messages name a file: its path, or archive:member."""
        if self.zip is not None:
            return f"{self.root}:{self.where[rel]}"
        return self.where[rel]

    def read(self, rel: str, cap: int | None = None) -> bytes:
        cap = MAX_TEXT_BYTES if cap is None else cap
        limit = f"{cap >> 20} MiB" if cap >= 2**20 else f"{cap:,} bytes"
        too_big = (
            f"{self.label(rel)}: larger than the {limit} zoo reads from one annotation file; is it "
            "really one? Split it, or remove it from the dataset."
        )
        if self.sizes[rel] > cap:
            raise AnnotationError(too_big)
        try:
            if self.zip is None:
                with open(self.where[rel], "rb") as f:
                    data = f.read(cap + 1)
            else:
                _check_inflation(self.zip.getinfo(self.where[rel]), self.label(rel))
                with self.zip.open(self.where[rel]) as f:
                    data = f.read(cap + 1)
        except (OSError, zipfile.BadZipFile, EOFError) as exc:
            raise AnnotationError(f"Cannot read {self.label(rel)}: {getattr(exc, 'strerror', None) or exc}.") from None
        if len(data) > cap:  # an archive member that lied about its size
            raise AnnotationError(too_big)
        return data

    def text(self, rel: str) -> str:
        return _decode(self.read(rel), self.label(rel))

    def open(self, rel: str) -> IO[bytes]:
        if self.zip is None:
            return open(self.where[rel], "rb")
        return self.zip.open(self.where[rel])

    def image_size(self, rel: str) -> tuple[int, int]:
        """Width and height from the image header (Pillow reads the header only)."""
        try:
            with self.open(rel) as f, Image.open(f) as im:
                return im.size
        except (
            UnidentifiedImageError,
            OSError,
            ValueError,
            EOFError,
            zipfile.BadZipFile,
            Image.DecompressionBombError,
        ) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise AnnotationError(
                f"{self.label(rel)}: cannot read the image size from its header ({reason}); "
                "replace the image or remove it from the dataset."
            ) from None

    def find(self, name: str, bases: Iterable[str], wanted: set[str] | None = None) -> str | None:
        """The dataset file `name` points at: relative to one of `bases`, or (absolute paths) by its tail."""
        wanted = self.image_set if wanted is None else wanted
        name = name.strip().replace("\\", "/")
        absolute = name.startswith("/") or bool(re.match(r"[A-Za-z]:", name))
        if not absolute:
            for base in bases:
                candidate = posixpath.normpath(posixpath.join(base, name))
                candidate = "" if candidate == "." else candidate
                if candidate in wanted:
                    return candidate
        parts = [p for p in name.split("/") if p not in ("", ".", "..") and not re.fullmatch(r"[A-Za-z]:", p)]
        # an absolute path from the author's machine: its longest tail that is in the dataset; a relative one that
        # climbs out of the yaml's folder (Roboflow's '../train/images'): the same path from the dataset's top
        for i in range(len(parts) if absolute else 1 if name.startswith("../") else 0):
            candidate = "/".join(parts[i:])
            if candidate in wanted:
                return candidate
        return None

    def find_image(self, name: str, bases: Iterable[str], where: str, stems: Iterable[str] = ()) -> str:
        """Find an image named by an annotation: under one of `bases`, else by a unique file name or stem."""
        found = self.find(name, bases)
        if found is not None:
            return found
        base = posixpath.basename(name.strip().replace("\\", "/"))
        tried = [("name", base, self.by_basename.get(base, []))]
        tried += [("stem", s, self.by_stem.get(s, [])) for s in (posixpath.splitext(base)[0], *stems) if s]
        for _, _, hits in tried:
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise AnnotationError(
                    f"{where}: image {name!r} matches {len(hits)} files ({', '.join(hits[:3])}); "
                    "give its path relative to the dataset folder."
                )
        raise AnnotationError(
            f"{where}: image {name!r} is not in the dataset {self.root}; add the image or remove its annotation."
        )

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()


# -- shared steps -------------------------------------------------------------------------------------


def _clip(x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> tuple[Box | None, bool]:
    """The box clipped to the image (None: no area left) and whether it moved by more than the tolerance."""
    box = (min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height))
    if box[2] <= box[0] or box[3] <= box[1]:
        return None, False
    moved = max(abs(a - b) for a, b in zip(box, (x1, y1, x2, y2), strict=True))
    return box, moved > CLIP_TOLERANCE_PX


class _Builder:
    """Samples as a reader finds them, with the per-image counts that sum to the dataset's."""

    def __init__(self) -> None:
        self.samples: dict[str, DetectionSample] = {}
        self.counts: dict[str, tuple[int, int]] = {}
        self.declared: list[tuple[str, str, list[str]]] = []  # (split, where it is declared, images)

    def make(
        self, image: str, width: int, height: int, raw: list[tuple[float, float, float, float, int]]
    ) -> tuple[DetectionSample, tuple[int, int]]:
        boxes: list[Box] = []
        labels: list[int] = []
        dropped = clipped = 0
        for x1, y1, x2, y2, label in raw:
            box, moved = _clip(x1, y1, x2, y2, width, height)
            if box is None:
                dropped += 1
                continue
            clipped += moved
            boxes.append(box)
            labels.append(label)
        return DetectionSample(image, width, height, boxes, labels), (dropped, clipped)

    def add(
        self, image: str, width: int, height: int, raw: list[tuple[float, float, float, float, int]], where: str
    ) -> None:
        sample, counts = self.make(image, width, height, raw)
        if image in self.samples:
            raise AnnotationError(
                f"{where}: annotates {image!r} again (an earlier file did too); keep one annotation file per image."
            )
        self.samples[image] = sample
        self.counts[image] = counts

    def finish(
        self,
        files: _Files,
        fmt: str,
        classes: tuple[str, ...],
        category_ids: tuple[int, ...] = (),
        *,
        orphan_labels: int = 0,
        crowd: int = 0,
    ) -> DetectionDataset:
        if not any(split for split, _, images in self.declared if images):
            self.declared = _csv_splits(files, self.samples)
        aliases = _assign_splits(self.samples, self.declared)
        return DetectionDataset(
            root=files.root,
            format=fmt,
            classes=classes,
            samples=[self.samples[k] for k in sorted(self.samples)],
            dropped=sum(c[0] for c in self.counts.values()),
            clipped=sum(c[1] for c in self.counts.values()),
            category_ids=category_ids,
            split_aliases=aliases,
            orphan_labels=orphan_labels,
            crowd=crowd,
            subdir=files.prefix.rstrip("/"),
        )


def _assign_splits(samples: dict[str, DetectionSample], declared: list[tuple[str, str, list[str]]]) -> dict[str, str]:
    merged: dict[str, tuple[list[str], set[str]]] = {}
    for split, where, images in declared:
        sources, members = merged.setdefault(split, ([], set()))
        sources.append(where)
        members.update(images)
    if "trainval" in merged and "train" in merged and "val" in merged:
        del merged["trainval"]  # VOC's union of train and val
    owner: dict[str, tuple[str, str]] = {}
    sets: dict[str, set[str]] = {}
    aliases: dict[str, str] = {}
    for split in sorted(merged, key=_split_key):
        sources, members = merged[split]
        if not members:
            continue
        same = next((other for other, images in sets.items() if images == members), None)
        if same is not None:
            aliases[split] = same
            continue
        where = " and ".join(sources)
        for image in sorted(members):
            if image in owner:
                raise AnnotationError(
                    f"{where}: {image!r} is in split {split!r} and also in {owner[image][0]!r} "
                    f"({owner[image][1]}); an image belongs to one split. Remove it from one."
                )
            owner[image] = (split, where)
        sets[split] = members
    for image, (split, _) in owner.items():
        samples[image].split = split
    return aliases


def _csv_splits(files: _Files, samples: dict[str, DetectionSample]) -> list[tuple[str, str, list[str]]]:
    """Splits from <split>_labels.csv files with a filename column (the raccoon dataset's)."""
    by_name: dict[str, list[str]] = {}
    for image in samples:
        by_name.setdefault(posixpath.basename(image), []).append(image)
    declared = []
    for rel in files.paths:
        split = _split_of_stem(posixpath.splitext(posixpath.basename(rel))[0]) if _suffix(rel) == ".csv" else None
        if split is None:
            continue
        reader = csv.reader(io.StringIO(files.text(rel)))
        header = [h.strip().lower() for h in next(reader, [])]
        if "filename" not in header:
            continue
        column = header.index("filename")
        images = []
        for row in reader:
            if not row:
                continue
            name = row[column].strip() if column < len(row) else ""
            hits = by_name.get(posixpath.basename(name.replace("\\", "/")), [])
            if len(hits) != 1:
                problem = "matches no annotated image" if not hits else f"matches {len(hits)} images"
                raise AnnotationError(
                    f"{files.label(rel)}, line {reader.line_num}: filename {name!r} {problem}; "
                    "fix the name or remove the row."
                )
            images.append(hits[0])
        declared.append((split, files.label(rel), images))
    return declared


def _number(text: Any, where: str) -> float:
    if text is None:
        raise AnnotationError(f"{where}: missing; give the number.")
    if isinstance(text, bool):
        raise AnnotationError(f"{where}: {text!r} is not a number; write a number.")
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise AnnotationError(f"{where}: {text!r} is not a number; write a number.") from None
    if not math.isfinite(value):
        raise AnnotationError(f"{where}: {text!r} is not a finite number; write a finite one.")
    return value


def _size(value: Any, where: str) -> int | None:
    """An image dimension from an annotation: None when absent or zero (then the header decides)."""
    if value is None or value == "":
        return None
    number = _number(value, where)
    if not number.is_integer() or number < 0:
        raise AnnotationError(f"{where}: image size {value!r} is not a whole number of pixels; fix it or remove it.")
    return int(number) or None


# -- COCO ---------------------------------------------------------------------------------------------


def _parse_json(files: _Files, rel: str, data: bytes) -> Any:
    label = files.label(rel)
    try:
        return json.loads(_decode(data, label))
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            f"{label}, line {exc.lineno} column {exc.colno}: not valid JSON ({exc.msg}); fix the file."
        ) from None
    except RecursionError:
        raise AnnotationError(f"{label}: JSON nested too deeply to be an annotation file.") from None


def _coco_docs(files: _Files) -> list[tuple[str, dict[str, Any]]]:
    docs = []
    keys = (b'"images"', b'"annotations"', b'"categories"')
    for rel in files.paths:
        if _suffix(rel) != ".json":
            continue
        if files.sizes[rel] > MAX_JSON_BYTES:
            with files.open(rel) as f:
                head = f.read(1 << 20)
            if any(k in head for k in keys):
                files.read(rel, MAX_JSON_BYTES)  # raises: too large
            continue
        data = files.read(rel, MAX_JSON_BYTES)
        if not all(k in data for k in keys):
            continue
        doc = _parse_json(files, rel, data)
        if isinstance(doc, dict) and all(isinstance(doc.get(k), list) for k in ("images", "annotations", "categories")):
            docs.append((rel, doc))
    if any(posixpath.basename(rel).startswith("instances") for rel, _ in docs):
        # COCO's own folder also holds person_keypoints_* and stuff_* files over the same images
        docs = [(rel, doc) for rel, doc in docs if posixpath.basename(rel).startswith("instances")]
    return docs


def _coco_split(rel: str, several: bool) -> tuple[str | None, str]:
    """(split, the stem's split-ish part) of a COCO json file."""
    stem = posixpath.splitext(posixpath.basename(rel))[0]
    core = stem[len("instances_") :] if stem.startswith("instances_") else stem
    split = _split_of_stem(core) or _split_of_dir(posixpath.basename(posixpath.dirname(rel)))
    if split is None and several and stem.startswith("instances_") and _SAFE_SPLIT.fullmatch(core):
        split = core
    return split, core


def _entry(obj: Any, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(obj, dict):
        raise AnnotationError(f"{where}: expected an object, got {type(obj).__name__}; fix the entry.")
    value = obj.get(key)
    if value is None:
        raise AnnotationError(f"{where}: no {key!r}; add it.")
    if isinstance(value, bool) or not isinstance(value, kind):
        expected = "an integer" if kind is int else "a string"
        raise AnnotationError(f"{where}: {key!r} is {value!r}, not {expected}; fix the entry.")
    return value


def _read_coco(files: _Files, docs: list[tuple[str, dict[str, Any]]]) -> DetectionDataset:
    names_by_id: dict[int, tuple[str, str]] = {}  # id -> (name, where)
    ids_by_name: dict[str, tuple[int, str]] = {}
    for rel, doc in docs:
        for i, cat in enumerate(doc["categories"]):
            where = f"{files.label(rel)}, categories[{i}]"
            cid = _entry(cat, "id", where, int)
            name = str(_entry(cat, "name", where, (str, int))).strip()
            if cid in names_by_id and names_by_id[cid][0] != name:
                raise AnnotationError(
                    f"{where}: category id {cid} is {name!r} here but {names_by_id[cid][0]!r} in "
                    f"{names_by_id[cid][1]}; give each id one name."
                )
            if name in ids_by_name and ids_by_name[name][0] != cid:
                raise AnnotationError(
                    f"{where}: category {name!r} has id {cid} here but {ids_by_name[name][0]} in "
                    f"{ids_by_name[name][1]}; give each name one id."
                )
            names_by_id[cid] = (name, where)
            ids_by_name[name] = (cid, where)
    category_ids = tuple(sorted(names_by_id))
    label_of = {cid: i for i, cid in enumerate(category_ids)}
    builder = _Builder()
    crowd = 0
    for rel, doc in docs:
        label = files.label(rel)
        split, core = _coco_split(rel, len(docs) > 1)
        here = posixpath.dirname(rel)
        up = posixpath.dirname(here)
        bases = [
            here,
            up,
            posixpath.join(up, core),
            posixpath.join(up, "images", core),
            posixpath.join(up, "images"),
            posixpath.join(here, "images"),
            "",
            posixpath.join("images", core),
            "images",
            core,
        ]
        own_categories = {cat["id"] for cat in doc["categories"]}
        images: dict[int, tuple[str, int | None, int | None, str]] = {}
        for i, entry in enumerate(doc["images"]):
            where = f"{label}, images[{i}]"
            image_id = _entry(entry, "id", where, int)
            if image_id in images:
                raise AnnotationError(
                    f"{where}: image id {image_id} is used twice in this file; give each image its own id."
                )
            file_name = _entry(entry, "file_name", where, str)
            image = files.find_image(file_name, bases, where)
            images[image_id] = (
                image,
                _size(entry.get("width"), f"{where}, 'width'"),
                _size(entry.get("height"), f"{where}, 'height'"),
                where,
            )
        raw: dict[int, list[tuple[float, float, float, float, int]]] = {image_id: [] for image_id in images}
        for i, ann in enumerate(doc["annotations"]):
            where = f"{label}, annotations[{i}]"
            image_id = _entry(ann, "image_id", where, int)
            if image_id not in images:
                raise AnnotationError(
                    f"{where}: image_id {image_id} is not in this file's 'images'; add the image "
                    "or remove the annotation."
                )
            if ann.get("iscrowd") in (1, True):
                crowd += 1
                continue
            cid = _entry(ann, "category_id", where, int)
            if cid not in own_categories:
                raise AnnotationError(
                    f"{where}: category_id {cid} is not in this file's 'categories'; add the category or fix the id."
                )
            bbox = ann.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise AnnotationError(f"{where}: 'bbox' must be [x, y, width, height], got {bbox!r}; fix the box.")
            x, y, w, h = (_number(v, f"{where}, bbox[{k}]") for k, v in enumerate(bbox))
            if w < 0 or h < 0:
                what = "width (x2 < x1)" if w < 0 else "height (y2 < y1)"
                raise AnnotationError(
                    f"{where}: bbox {bbox!r} has a negative {what}; COCO boxes are [x, y, width, height]. Fix the box."
                )
            raw[image_id].append((x, y, x + w, y + h, label_of[cid]))
        members = []
        for image_id, (image, width, height, where) in images.items():
            if width is None or height is None:
                width, height = files.image_size(image)
            if image in builder.samples:  # the same image in two files (e.g. val repeating train)
                sample, _ = builder.make(image, width, height, raw[image_id])
                old = builder.samples[image]
                if (sample.width, sample.height, sample.boxes, sample.labels) != (
                    old.width,
                    old.height,
                    old.boxes,
                    old.labels,
                ):
                    raise AnnotationError(
                        f"{where}: {image!r} is annotated differently in another file; give an "
                        "image one set of annotations."
                    )
            else:
                builder.add(image, width, height, raw[image_id], where)
            members.append(image)
        if split is not None:
            builder.declared.append((split, label, members))
    classes = tuple(names_by_id[cid][0] for cid in category_ids)
    return builder.finish(files, "coco", classes, category_ids, crowd=crowd)


# -- Pascal VOC ---------------------------------------------------------------------------------------

_VOC_ROOT = re.compile(rb"<annotation[\s>/]")
_DTD = re.compile(rb"<!(?:DOCTYPE|ENTITY)", re.IGNORECASE)


def _parse_xml(files: _Files, rel: str, data: bytes) -> ElementTree.Element:
    label = files.label(rel)
    probe = data.decode("utf-16", "replace").encode() if data[:2] in (b"\xff\xfe", b"\xfe\xff") else data
    if _DTD.search(probe):
        raise AnnotationError(
            f"{label}: has a DTD (<!DOCTYPE or <!ENTITY>); zoo refuses XML entities, which can "
            "expand to gigabytes or read local files. Remove the DTD."
        )
    try:
        return ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        line, column = exc.position
        reason = str(exc).split(":")[0]
        raise AnnotationError(
            f"{label}, line {line} column {column + 1}: not well-formed XML ({reason}); fix the file."
        ) from None


def _voc_items(files: _Files) -> list[tuple[str, bytes]]:
    items = []
    for rel in files.paths:
        if _suffix(rel) == ".xml":
            data = files.read(rel)
            if _VOC_ROOT.search(data[:65536]) or (
                data[:2] in (b"\xff\xfe", b"\xfe\xff") and "<annotation" in data.decode("utf-16", "replace")
            ):
                items.append((rel, data))
    return items


def _class_list(files: _Files, rel: str) -> list[str]:
    """classes.txt / *.names: one name a line; CVAT's labelmap.txt: name:color:parts:actions, background skipped."""
    names = []
    for line in files.text(rel).splitlines():
        line = line.strip()
        if not line or (posixpath.basename(rel) == "labelmap.txt" and line.startswith("#")):
            continue
        name = line.split(":", 1)[0].strip() if posixpath.basename(rel) == "labelmap.txt" else line
        if name and not (posixpath.basename(rel) == "labelmap.txt" and name == "background"):
            names.append(name)
    return names


def _unique_names(names: list[str], where: str) -> tuple[str, ...]:
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise AnnotationError(
                f"{where}: class {name!r} is listed twice (entries {seen[name]} and {i}); classes "
                "are matched by name, so give each one once."
            )
        seen[name] = i
    return tuple(names)


def _read_voc(files: _Files, items: list[tuple[str, bytes]]) -> DetectionDataset:
    parsed = []
    for rel, data in items:
        root = _parse_xml(files, rel, data)
        if root.tag != "annotation":
            continue
        label = files.label(rel)
        objects = []
        for k, obj in enumerate(root.findall("object"), start=1):
            where = f"{label}, annotation/object[{k}]"
            name = (obj.findtext("name") or "").strip()
            if not name:
                raise AnnotationError(f"{where}: no <name>; give the object its class name.")
            box = obj.find("bndbox")
            if box is None:
                raise AnnotationError(f"{where}: no <bndbox>; give the object xmin, ymin, xmax, ymax.")
            x1, y1, x2, y2 = (_number(box.findtext(t), f"{where}/bndbox/{t}") for t in ("xmin", "ymin", "xmax", "ymax"))
            if x2 < x1 or y2 < y1:
                axis = ("xmax", x2, "xmin", x1) if x2 < x1 else ("ymax", y2, "ymin", y1)
                raise AnnotationError(
                    f"{where}/bndbox: {axis[0]} {axis[1]:g} < {axis[2]} {axis[3]:g}; swap or fix the coordinates."
                )
            objects.append((x1, y1, x2, y2, name))
        parsed.append((rel, root, objects))
    class_files = [rel for rel in ("classes.txt", "labelmap.txt") if rel in files.sizes]
    if class_files:
        classes = _unique_names(_class_list(files, class_files[0]), files.label(class_files[0]))
    else:
        classes = tuple(sorted({obj[4] for _, _, objects in parsed for obj in objects}))
    index = {name: i for i, name in enumerate(classes)}
    builder = _Builder()
    stems: dict[str, str] = {}  # image id (xml stem, image stem) -> image
    for rel, root, objects in parsed:
        label = files.label(rel)
        here = posixpath.dirname(rel)
        up = posixpath.dirname(here)
        folder = (root.findtext("folder") or "").strip().replace("\\", "/")
        bases = [here, posixpath.join(up, "JPEGImages"), posixpath.join(up, "images"), up]
        if folder and not folder.startswith("/") and ".." not in folder.split("/"):
            bases += [posixpath.join(up, folder), folder]
        xml_stem = posixpath.splitext(posixpath.basename(rel))[0]
        file_name = (root.findtext("filename") or "").strip() or xml_stem
        image = files.find_image(file_name, bases, f"{label}, annotation/filename", stems=(xml_stem,))
        width = _size(root.findtext("size/width"), f"{label}, annotation/size/width")
        height = _size(root.findtext("size/height"), f"{label}, annotation/size/height")
        if width is None or height is None:
            width, height = files.image_size(image)
        raw = []
        for k, (x1, y1, x2, y2, name) in enumerate(objects, start=1):
            if name not in index:
                raise AnnotationError(
                    f"{label}, annotation/object[{k}]/name: {name!r} is not in "
                    f"{files.label(class_files[0])}; add it there or fix the name."
                )
            raw.append((x1, y1, x2, y2, index[name]))
        builder.add(image, width, height, raw, label)
        stems.setdefault(xml_stem, image)
        stems.setdefault(posixpath.splitext(posixpath.basename(image))[0], image)
    for rel in files.paths:
        match = re.search(r"(?:^|/)ImageSets/Main/([^/]+)\.txt$", rel)
        if not match:
            continue
        split = match.group(1)
        if "_" in split and split.rsplit("_", 1)[0] in index:
            continue  # per-class lists (aeroplane_train.txt)
        images = []
        for n, line in enumerate(files.text(rel).splitlines(), start=1):
            tokens = line.split()
            if not tokens:
                continue
            if tokens[0] not in stems:
                raise AnnotationError(
                    f"{files.label(rel)}, line {n}: {tokens[0]!r} has no annotation file; add "
                    "Annotations/<id>.xml or remove the line."
                )
            images.append(stems[tokens[0]])
        builder.declared.append((split, files.label(rel), images))
    return builder.finish(files, "voc", classes)


# -- YOLO ---------------------------------------------------------------------------------------------


def _yaml_line(text: str, key: str) -> str:
    """', line N' of a top-level key, for messages (empty when it cannot be found)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return ""
    for key_node, _ in getattr(node, "value", []) if isinstance(node, yaml.MappingNode) else []:
        if getattr(key_node, "value", None) == key:
            return f", line {key_node.start_mark.line + 1}"
    return ""


def _load_yaml(files: _Files, rel: str) -> tuple[Any, str]:
    text = files.text(rel)
    try:
        return yaml.safe_load(text), text
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise AnnotationError(f"{files.label(rel)}{where}: not valid YAML ({problem}); fix the file.") from None


def _yolo_names(files: _Files, rel: str, doc: dict[str, Any], text: str) -> tuple[str, ...]:
    where = f"{files.label(rel)}{_yaml_line(text, 'names')}"
    names = doc["names"]
    if isinstance(names, dict):
        try:
            keyed = {int(k): v for k, v in names.items() if not isinstance(k, bool)}
        except (TypeError, ValueError):
            keyed = {}
        if len(keyed) != len(names) or sorted(keyed) != list(range(len(names))):
            raise AnnotationError(
                f"{where}: 'names' keys must be the class ids 0..{len(names) - 1}, got "
                f"{list(names)[:5]}; number the classes from 0 without gaps."
            )
        names = [keyed[i] for i in range(len(keyed))]
    if not isinstance(names, list) or not names or any(not isinstance(n, (str, int, float)) for n in names):
        raise AnnotationError(f"{where}: 'names' must be a list of class names or a {{id: name}} mapping; fix it.")
    nc = doc.get("nc")
    if nc is not None and nc != len(names):
        raise AnnotationError(
            f"{files.label(rel)}{_yaml_line(text, 'nc')}: nc is {nc} but 'names' has "
            f"{len(names)} entries; make them agree."
        )
    return _unique_names([str(n).strip() for n in names], where)


def _yolo_source(files: _Files) -> tuple[str, Any, str] | None:
    """(file, parsed yaml or None, yaml text) holding the class names, or None."""
    has_data = bool(files.images) or any("labels" in rel.split("/")[:-1] for rel in files.paths)
    if not has_data:
        return None
    found = []
    broken: list[AnnotationError] = []  # a yaml that does not parse matters only if no other file names the classes
    for rel in files.paths:
        if _suffix(rel) in (".yaml", ".yml"):
            try:
                doc, text = _load_yaml(files, rel)
            except AnnotationError as exc:
                broken.append(exc)
                continue
            if isinstance(doc, dict) and "names" in doc:
                found.append((rel.count("/"), posixpath.basename(rel) != "data.yaml", rel, doc, text))
    if found:
        _, _, rel, doc, text = min(found)
        return rel, doc, text
    lists = [
        (rel.count("/"), posixpath.basename(rel) != "classes.txt", rel)
        for rel in files.paths
        if posixpath.basename(rel) == "classes.txt" or _suffix(rel) == ".names"
    ]
    if lists:
        return min(lists)[2], None, ""
    if broken:
        raise broken[0]
    return None


def _yolo_label_rel(image: str) -> str:
    parts = image.split("/")
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return posixpath.splitext("/".join(parts))[0] + ".txt"


def _yolo_entry(files: _Files, base: str, entry: Any, where: str) -> tuple[list[str], str | None]:
    """The images a yaml split entry names (a folder or a .txt list) and the list file, if any."""
    if not isinstance(entry, str) or not entry.strip():
        raise AnnotationError(f"{where}: expected a folder or a .txt list of images, got {entry!r}; fix the entry.")
    target = files.find(entry, [base], files.dirs | set(files.sizes))
    if target is not None and target in files.dirs:
        prefix = f"{target}/" if target else ""
        return [rel for rel in files.images if rel.startswith(prefix)], None
    if target is not None and _suffix(target) == ".txt":
        images = []
        here = posixpath.dirname(target)
        for n, line in enumerate(files.text(target).splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            image = files.find(line, [here, base] if line.startswith("./") else [base, here])
            if image is None:
                raise AnnotationError(
                    f"{files.label(target)}, line {n}: image {line!r} is not in the dataset; add "
                    "the image or remove the line."
                )
            images.append(image)
        return images, target
    raise AnnotationError(
        f"{where}: {entry!r} is neither a folder nor a .txt list in the dataset; give a path "
        "relative to the yaml's folder, or remove the entry."
    )


def _yolo_boxes(
    files: _Files, rel: str, classes: tuple[str, ...], names_from: str, size: tuple[int, int]
) -> list[tuple[float, float, float, float, int]]:
    label = files.label(rel)
    width, height = size
    raw = []
    for n, line in enumerate(files.text(rel).splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        where = f"{label}, line {n}"
        if len(tokens) != 5 and (len(tokens) < 7 or len(tokens) % 2 == 0):
            raise AnnotationError(
                f"{where}: expected 'class cx cy w h' (5 values) or a polygon 'class x1 y1 x2 y2 "
                f"x3 y3 ...', got {len(tokens)} values {line.strip()[:60]!r}; fix or remove the "
                "line."
            )
        try:
            cls = float(tokens[0])
        except ValueError:
            cls = math.nan
        if not cls.is_integer():
            raise AnnotationError(f"{where}: class id {tokens[0]!r} is not a whole number; fix the line.")
        if not 0 <= cls < len(classes):
            raise AnnotationError(
                f"{where}: class id {int(cls)} is outside the {len(classes)} names in {names_from} "
                f"(0..{len(classes) - 1}); fix the id or add the class name."
            )
        values = [_number(t, f"{where}, value {k}") for k, t in enumerate(tokens[1:], start=2)]
        if len(tokens) == 5:
            cx, cy, w, h = values
            if w < 0 or h < 0:
                raise AnnotationError(
                    f"{where}: negative {'width' if w < 0 else 'height'} {min(w, h):g}; fix the line."
                )
            x1, y1, x2, y2 = (cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height
        else:  # a segment: its bounding box
            xs, ys = values[0::2], values[1::2]
            x1, y1, x2, y2 = min(xs) * width, min(ys) * height, max(xs) * width, max(ys) * height
        raw.append((x1, y1, x2, y2, int(cls)))
    return raw


def _read_yolo(files: _Files, source: tuple[str, Any, str]) -> DetectionDataset:
    rel, doc, text = source
    names_from = files.label(rel)
    classes = (
        _yolo_names(files, rel, doc, text) if doc is not None else _unique_names(_class_list(files, rel), names_from)
    )
    builder = _Builder()
    listed: set[str] = set()
    lists: set[str] = {rel}
    if doc is not None:
        base = posixpath.dirname(rel)
        path = doc.get("path")
        if isinstance(path, str) and path.strip():
            candidate = files.find(path, [base], files.dirs)
            base = candidate if candidate is not None else base
        for key in SPLIT_ORDER:
            value = doc.get(key)
            if value in (None, "", []):
                continue
            images: list[str] = []
            for entry in value if isinstance(value, list) else [value]:
                found, list_file = _yolo_entry(files, base, entry, f"{names_from}{_yaml_line(text, key)} ({key!r})")
                images += found
                lists.update([list_file] if list_file else [])
            builder.declared.append((key, f"{names_from} {key!r}", images))
            listed.update(images)
    # `images` is reused: the loop's list of a split, here the set of every image
    images = set(listed)  # type: ignore[assignment]
    for image in files.images:
        if "images" in image.split("/")[:-1] or _yolo_label_rel(image) in files.sizes:
            images.add(image)  # type: ignore[attr-defined]
    claimed = set()
    for image in sorted(images):
        label_rel = _yolo_label_rel(image)
        size = files.image_size(image)
        raw = []
        if label_rel in files.sizes:
            claimed.add(label_rel)
            raw = _yolo_boxes(files, label_rel, classes, names_from, size)
        builder.add(image, size[0], size[1], raw, files.label(label_rel) if label_rel in files.sizes else image)
    if not builder.declared:  # images/<split>/ or <split>/images/ folders
        by_dir: dict[str, list[str]] = {}
        for image in builder.samples:
            parts = image.split("/")[:-1]
            for i, part in enumerate(parts):
                split = _split_of_dir(part)
                if split and "images" in (parts[i - 1] if i else "", parts[i + 1] if i + 1 < len(parts) else ""):
                    by_dir.setdefault(split, []).append(image)
                    break
        builder.declared = [(split, f"{files.root} images/{split}/", images) for split, images in by_dir.items()]
    orphans = sum(
        1
        for r in files.paths
        if _suffix(r) == ".txt" and "labels" in r.split("/")[:-1] and r not in claimed and r not in lists
    )
    return builder.finish(files, "yolo", classes, orphan_labels=orphans)


# -- reading ------------------------------------------------------------------------------------------


def _unknown_format(files: _Files) -> AnnotationError:
    count = Counter(_suffix(rel) or "(no suffix)" for rel in files.paths)
    found = ", ".join(f"{n} {ext}" for ext, n in count.most_common(6)) or "no files"
    labels = sum(1 for rel in files.paths if _suffix(rel) == ".txt" and "labels" in rel.split("/")[:-1])
    yolo_hint = (
        f"; found {labels} labels/*.txt but no class names: add a data.yaml with 'names' or a classes.txt"
        if labels
        else ""
    )
    return AnnotationError(
        f"{files.root}: not a detection dataset zoo can read (it holds {found}). Tried COCO (a .json file with "
        "'images', 'annotations' and 'categories' lists), Pascal VOC (.xml files whose root element is <annotation>, "
        "with <object> boxes), and YOLO (labels/*.txt beside images/, with class names in a data .yaml 'names' entry, "
        f"a classes.txt or a *.names file){yolo_hint}. Point at the folder that holds the dataset, or convert it to "
        "one of these."
    )


def read_detection_dataset(path: str | Path) -> DetectionDataset:
    """Read a COCO, Pascal VOC or YOLO detection dataset from a folder or a ``.zip``.

    Args:
        path: the dataset's folder or a ``.zip`` of it.

    Returns:
        The dataset: classes, samples sorted by image path, splits, and the boxes clipped or dropped.

    Raises:
        AnnotationError: no format matches, or an annotation is broken (the message names file and line or element).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise AnnotationError(f"Dataset {str(path)!r} does not exist; give a dataset folder or a .zip.")
    files = _Files(path)
    try:
        docs = _coco_docs(files)
        if docs:
            return _read_coco(files, docs)
        items = _voc_items(files)
        if items:
            return _read_voc(files, items)
        source = _yolo_source(files)
        if source is not None:
            return _read_yolo(files, source)
        raise _unknown_format(files)
    finally:
        files.close()


# -- writing ------------------------------------------------------------------------------------------


def _pixels(value: float) -> float | int:
    rounded = round(float(value), 9)
    return int(rounded) if rounded.is_integer() else rounded


def _pixel_text(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".") or "0"


def _normalised(value: float) -> str:
    return f"{value:.12f}".rstrip("0").rstrip(".") or "0"


def check_output(out: Path) -> None:
    """Refuse an output folder that exists with something in it, or a leftover ``.partial``."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AnnotationError(f"{out} already exists and is not empty; choose a new output folder or remove it.")
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        raise AnnotationError(f"{partial} exists (left by an interrupted conversion?); remove it and run again.")


def _output_names(samples: list[DetectionSample]) -> dict[str, str]:
    """A file name per image, unique by stem (VOC and YOLO name files by stem): the base name where it is."""

    def stem(name: str) -> str:
        return posixpath.splitext(name)[0].casefold()

    names = {s.image: posixpath.basename(s.image) for s in samples}
    clashes = Counter(stem(n) for n in names.values())
    names = {image: image.replace("/", "__") if clashes[stem(n)] > 1 else n for image, n in names.items()}
    clashes = Counter(stem(n) for n in names.values())
    for image, name in names.items():
        if clashes[stem(name)] > 1:
            base, ext = posixpath.splitext(name)
            names[image] = f"{base}_{ext.lstrip('.')}{ext}"
    return names


def _groups(dataset: DetectionDataset) -> list[tuple[str | None, list[DetectionSample]]]:
    groups: dict[str | None, list[DetectionSample]] = {}
    for sample in dataset.samples:
        groups.setdefault(sample.split, []).append(sample)
    for split in list(groups) + list(dataset.split_aliases):
        if split is not None and (not _SAFE_SPLIT.fullmatch(split) or split in (".", "..")):
            raise AnnotationError(
                f"Split name {split!r} cannot be a folder name; rename the split (letters, digits, '.', '_', '-')."
            )
    for alias, target in dataset.split_aliases.items():
        if target not in groups:
            raise AnnotationError(f"Split {alias!r} repeats {target!r}, which has no samples; drop the alias.")
    return sorted(groups.items(), key=lambda kv: (kv[0] is None, _split_key(kv[0] or "")))


def _write_images(
    dataset: DetectionDataset, samples: list[DetectionSample], folder: Path, names: dict[str, str]
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for sample in samples:
        (folder / names[sample.image]).write_bytes(dataset.read_bytes(sample))


def _write_coco(dataset: DetectionDataset, out: Path, names: dict[str, str]) -> None:
    ids = dataset.category_ids
    if len(ids) != len(dataset.classes) or any(b <= a for a, b in zip(ids, ids[1:], strict=False)):
        raise AnnotationError(
            f"category_ids {ids} must be increasing, one per class ({len(dataset.classes)}): COCO "
            "readers order classes by id."
        )
    categories = [
        {"id": cid, "name": name, "supercategory": ""} for cid, name in zip(ids, dataset.classes, strict=True)
    ]
    image_ids = {s.image: i for i, s in enumerate(dataset.samples, start=1)}
    first_ann: dict[str, int] = {}
    next_id = 1
    for sample in dataset.samples:
        first_ann[sample.image] = next_id
        next_id += len(sample.boxes)
    docs: dict[str | None, str] = {}
    (out / "annotations").mkdir()
    for split, samples in _groups(dataset):
        _write_images(dataset, samples, out / "images" / (split or ""), names)
        images, annotations = [], []
        for sample in samples:
            images.append(
                {
                    "id": image_ids[sample.image],
                    "file_name": names[sample.image],
                    "width": sample.width,
                    "height": sample.height,
                }
            )
            for k, ((x1, y1, x2, y2), label) in enumerate(zip(sample.boxes, sample.labels, strict=True)):
                x, y, w, h = _pixels(x1), _pixels(y1), _pixels(x2 - x1), _pixels(y2 - y1)
                annotations.append(
                    {
                        "id": first_ann[sample.image] + k,
                        "image_id": image_ids[sample.image],
                        "category_id": ids[label],
                        "bbox": [x, y, w, h],
                        "area": _pixels(w * h),
                        "iscrowd": 0,
                    }
                )
        doc = {
            "info": {"description": f"written by zoo from a {dataset.format} dataset"},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        docs[split] = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        (out / "annotations" / (f"instances_{split}.json" if split else "instances.json")).write_text(
            docs[split], encoding="utf-8"
        )
    for alias, target in dataset.split_aliases.items():
        (out / "annotations" / f"instances_{alias}.json").write_text(docs[target], encoding="utf-8")


def _write_voc(dataset: DetectionDataset, out: Path, names: dict[str, str]) -> None:
    _write_images(dataset, dataset.samples, out / "JPEGImages", names)
    (out / "Annotations").mkdir()
    for sample in dataset.samples:
        root = ElementTree.Element("annotation")
        ElementTree.SubElement(root, "folder").text = "JPEGImages"
        ElementTree.SubElement(root, "filename").text = names[sample.image]
        size = ElementTree.SubElement(root, "size")
        ElementTree.SubElement(size, "width").text = str(sample.width)
        ElementTree.SubElement(size, "height").text = str(sample.height)
        ElementTree.SubElement(root, "segmented").text = "0"
        for box, label in zip(sample.boxes, sample.labels, strict=True):
            obj = ElementTree.SubElement(root, "object")
            ElementTree.SubElement(obj, "name").text = dataset.classes[label]
            ElementTree.SubElement(obj, "pose").text = "Unspecified"
            ElementTree.SubElement(obj, "truncated").text = "0"
            ElementTree.SubElement(obj, "difficult").text = "0"
            bndbox = ElementTree.SubElement(obj, "bndbox")
            for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True):
                ElementTree.SubElement(bndbox, tag).text = _pixel_text(value)
        ElementTree.indent(root, space="\t")
        stem = posixpath.splitext(names[sample.image])[0]
        (out / "Annotations" / f"{stem}.xml").write_text(
            ElementTree.tostring(root, encoding="unicode") + "\n", encoding="utf-8"
        )
    lists = {
        split: [posixpath.splitext(names[s.image])[0] for s in samples]
        for split, samples in _groups(dataset)
        if split is not None
    }
    lists.update({alias: lists[target] for alias, target in dataset.split_aliases.items()})
    if lists:
        (out / "ImageSets" / "Main").mkdir(parents=True)
        for split, stems in lists.items():
            (out / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems), encoding="utf-8")
    # the class order (and classes without boxes) survive only in this file; VOC itself has no class list
    (out / "classes.txt").write_text("".join(f"{name}\n" for name in dataset.classes), encoding="utf-8")


def _write_yolo(dataset: DetectionDataset, out: Path, names: dict[str, str]) -> None:
    doc: dict[str, Any] = {}
    for split, samples in _groups(dataset):
        _write_images(dataset, samples, out / "images" / (split or ""), names)
        labels = out / "labels" / (split or "")
        labels.mkdir(parents=True, exist_ok=True)
        for sample in samples:
            lines = []
            for (x1, y1, x2, y2), label in zip(sample.boxes, sample.labels, strict=True):
                values = (
                    (x1 + x2) / 2 / sample.width,
                    (y1 + y2) / 2 / sample.height,
                    (x2 - x1) / sample.width,
                    (y2 - y1) / sample.height,
                )
                lines.append(" ".join([str(label), *(_normalised(v) for v in values)]) + "\n")
            stem = posixpath.splitext(names[sample.image])[0]
            (labels / f"{stem}.txt").write_text("".join(lines), encoding="utf-8")
        if split is not None:
            doc[split] = f"images/{split}"
    doc.update({alias: f"images/{target}" for alias, target in dataset.split_aliases.items()})
    doc = {k: doc[k] for k in sorted(doc, key=_split_key)}
    doc["nc"] = len(dataset.classes)
    doc["names"] = dict(enumerate(dataset.classes))
    header = f"# written by zoo from a {dataset.format} dataset; labels: 'class cx cy w h', normalised\n"
    if not dataset.splits():
        header += "# no splits: add 'train: images' and 'val: ...' entries for Ultralytics\n"
    (out / "data.yaml").write_text(header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")


_WRITERS: Final = {"coco": _write_coco, "voc": _write_voc, "yolo": _write_yolo}


def write_detection_dataset(dataset: DetectionDataset, out: Path, format: str) -> None:
    """Write `dataset` (annotations and image bytes) to the folder `out` as COCO, Pascal VOC or YOLO.

    Layouts: COCO ``annotations/instances_<split>.json`` + ``images/<split>/``; VOC ``Annotations/*.xml``,
    ``JPEGImages/``, ``ImageSets/Main/<split>.txt`` and ``classes.txt``; YOLO ``images/<split>/``,
    ``labels/<split>/*.txt`` and ``data.yaml``. Images without a split go to the top of those folders. Everything is
    written into ``<out>.partial`` and renamed at the end, so an error leaves nothing half-written.

    Raises:
        AnnotationError: an unknown format, `out` exists and is not empty, or an image cannot be read.
    """
    fmt = format.lower()
    if fmt not in _WRITERS:
        raise AnnotationError(f"Unknown dataset format {format!r}; choose one of {', '.join(FORMATS)}.")
    out = Path(out).expanduser()
    check_output(out)
    names = _output_names(dataset.samples)
    partial = out.with_name(out.name + ".partial")
    partial.mkdir(parents=True)
    try:
        _WRITERS[fmt](dataset, partial, names)
        if out.is_dir():
            out.rmdir()  # empty (checked above)
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
