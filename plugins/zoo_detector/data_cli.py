"""``zoo data``: look at and convert object-detection datasets (COCO, Pascal VOC, YOLO).

The detector plugin's ``register_commands`` hook calls :func:`add_commands`. Only click and ``zoo.cli`` are imported
here; the annotation readers are imported when a command runs, so ``zoo --help`` stays fast.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from zoo.cli import _one_line_errors

if TYPE_CHECKING:
    from .annotations import DetectionDataset

__all__ = ["add_commands", "data_group"]


def _count(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def _summary(dataset: DetectionDataset) -> dict[str, Any]:
    samples = dataset.samples
    per_class = Counter(label for s in samples for label in s.labels)
    splits = {}
    for split in dataset.splits():
        part = dataset.select(split).samples
        splits[split] = {
            "images": len(part),
            "boxes": sum(len(s.boxes) for s in part),
            "background": sum(not s.boxes for s in part),
            "same_images_as": dataset.split_aliases.get(split),
        }
    unsplit = [s for s in samples if s.split is None]
    if unsplit and splits:
        splits["(none)"] = {
            "images": len(unsplit),
            "boxes": sum(len(s.boxes) for s in unsplit),
            "background": sum(not s.boxes for s in unsplit),
            "same_images_as": None,
        }
    return {
        "path": str(dataset.root),
        "format": dataset.format,
        "images": len(samples),
        "boxes": sum(len(s.boxes) for s in samples),
        "background_images": sum(not s.boxes for s in samples),
        "classes": list(dataset.classes),
        "classes_with_boxes": len(per_class),
        "boxes_per_class": {dataset.classes[i]: per_class.get(i, 0) for i in range(len(dataset.classes))},
        "category_ids": list(dataset.category_ids),
        "splits": splits,
        "dropped": dataset.dropped,
        "clipped": dataset.clipped,
        "orphan_labels": dataset.orphan_labels,
        "crowd": dataset.crowd,
    }


@click.group("data")
def data_group() -> None:
    """Read, check and convert object-detection datasets (COCO json, Pascal VOC xml, YOLO txt)."""


@data_group.command("info")
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="The summary as JSON.")
@_one_line_errors
def info_command(src: Path, as_json: bool) -> None:
    """Describe the dataset SRC (a folder or a .zip): format, classes, images per split, boxes."""
    from .annotations import read_detection_dataset

    info = _summary(read_detection_dataset(src))
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    out = [
        f"{src}: {info['format']}, {_count(info['images'], 'image', 'images')} "
        f"({info['background_images']:,} without boxes), {_count(info['boxes'], 'box', 'boxes')}, "
        f"{_count(len(info['classes']), 'class', 'classes')} ({info['classes_with_boxes']} with boxes)"
    ]
    if not info["splits"]:
        out.append("  splits:     none (the dataset does not divide its images)")
    for split, part in info["splits"].items():
        same = f", the same images as {part['same_images_as']!r}" if part["same_images_as"] else ""
        out.append(
            f"  {split + ':':<11} {_count(part['images'], 'image', 'images')}, "
            f"{_count(part['boxes'], 'box', 'boxes')}, "
            f"{part['background']:,} without boxes{same}"
        )
    counts = [
        ("boxes dropped (no area inside the image)", info["dropped"]),
        ("boxes clipped to the image", info["clipped"]),
        ("label files without an image (ignored)", info["orphan_labels"]),
        ("crowd regions (iscrowd, left out)", info["crowd"]),
    ]
    out.append("  " + "; ".join(f"{what}: {n:,}" for what, n in counts if n or what.startswith("boxes")))
    out.append("  classes:    " + ", ".join(f"{name} ({n})" for name, n in info["boxes_per_class"].items()))
    click.echo("\n".join(out))


@data_group.command("convert")
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--to", "to", type=click.Choice(["coco", "voc", "yolo"]), required=True, help="The format to write.")
@_one_line_errors
def convert_command(src: Path, out: Path, to: str) -> None:
    """Convert the detection dataset SRC (COCO, VOC or YOLO; a folder or a .zip) into a new folder OUT.

    Images are copied as they are. OUT must not exist or be empty; the result is written to OUT.partial and
    renamed, so an error leaves nothing half-written.
    """
    from .annotations import check_output, read_detection_dataset, write_detection_dataset

    check_output(out)  # before reading: a large dataset should not be read for nothing
    dataset = read_detection_dataset(src)
    write_detection_dataset(dataset, out, to)
    boxes = sum(len(s.boxes) for s in dataset.samples)
    background = sum(not s.boxes for s in dataset.samples)
    splits = ", ".join(f"{split} {len(dataset.select(split).samples)}" for split in dataset.splits())
    click.echo(
        f"{out}: {to}, {len(dataset.samples):,} images ({background:,} without boxes"
        f"{'; ' + splits if splits else ''}), {_count(boxes, 'box', 'boxes')}, "
        f"{_count(len(dataset.classes), 'class', 'classes')}, from "
        f"{dataset.format} {src} (boxes dropped: {dataset.dropped}, clipped: {dataset.clipped})"
    )


def add_commands(cli: click.Group) -> None:
    """Add the ``data`` group to `cli` (the detector plugin's ``register_commands`` hook calls this)."""
    cli.add_command(data_group)
