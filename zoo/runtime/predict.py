"""Predict with any model on image files: decode, the task's geometry and input, the model, the task's records."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._api import card as get_card
from .._api import load
from .device import autocast, resolve_precision
from .evaluate import forward
from .images import IMAGE_SUFFIXES, ImageError, read_image
from .tasks import task_for

if TYPE_CHECKING:
    from torch import nn

__all__ = ["expand_images", "predict"]


def predict(
    name: str,
    images: list[str | Path],
    *,
    model: nn.Module | None = None,
    device: str | None = None,
    skip_bad: bool = False,
    batch_size: int = 64,
    bf16: bool = False,
    out: str | Path | None = None,
    precision: str | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """One record per image (a directory stands for the image files in it, sorted, subfolders included):
    ``{"image": path, ...}`` with the task's fields (classes for a classifier, boxes
    for a detector). `options` are the task's own (``topk=3``; ``conf=0.5, iou=0.45, max_det=100``).

    With `out`, the task also writes what shows each prediction there (a PNG with the boxes drawn, for
    detectors), listed in the record's ``"files"``. Unreadable images raise :class:`ImageError` naming the
    file, or with ``skip_bad`` yield a record with ``"error"`` instead.
    """
    import torch

    card = get_card(name)
    task = task_for(card, "predict")
    if hasattr(task, "check_options"):  # bad options are refused before an image is read
        task.check_options(**options)
    records: list[dict[str, Any]] = []
    decoded: list[tuple[int, torch.Tensor]] = []
    for path in expand_images(images):
        try:
            decoded.append((len(records), read_image(path)))
            records.append({"image": str(path)})
        except ImageError as exc:
            if not skip_bad:
                raise
            records.append({"image": str(path), "error": exc.reason})  # no "pass --skip-bad": it was passed
    if not decoded:
        return records
    if model is None:
        model = load(name, device=device)
    model.eval()
    target = next(model.parameters()).device
    if precision is not None:  # "auto": bf16 where the device has native bf16 matrix units
        bf16 = resolve_precision(precision, target) == "bf16"
    directory = Path(out) if out is not None else None
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode(), autocast(target, bf16):
        for begin in range(0, len(decoded), batch_size):
            chunk = decoded[begin : begin + batch_size]
            batch = task.predict_batch([image for _, image in chunk], [records[i]["image"] for i, _ in chunk])
            outputs = forward(task, model, batch, target, channels_last=False, **options)
            for (index, image), fields in zip(chunk, task.records(outputs, batch, **options), strict=True):
                records[index].update(fields)
                if directory is not None:
                    files = task.save_prediction(records[index], image, directory)
                    if files:
                        records[index]["files"] = [str(f) for f in files]
    return records


def expand_images(paths: list[str | Path]) -> list[Path]:
    """`paths` with each directory replaced by the image files under it (by suffix, sorted, subfolders included),
    so ``zoo predict NAME photos/`` works as ``zoo eval --data photos/`` does. A directory without images is one
    line naming it."""
    from ..errors import ZooError

    expanded: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            expanded.append(path)  # a missing or unreadable file is read_image's to report
            continue
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not found:
            raise ZooError(
                f"{path} is a directory with no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in it or below."
            )
        expanded.extend(found)
    return expanded
