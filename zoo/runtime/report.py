"""Reports on disk: metrics.json, and the figures tasks draw with Pillow (confusion matrix, training curves).

Pillow rather than matplotlib: it is already installed with torchvision, and a labelled heat map needs
nothing more than rectangles and text.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["confusion_png", "write_report"]


def confusion_png(matrix: list[list[int]], labels: list[str], path: Path, title: str = "") -> None:
    """Row-normalised confusion matrix (rows: true class, columns: predicted), counts in the cells."""
    from PIL import Image, ImageDraw, ImageFont

    n = len(labels)
    cell = 44 if n <= 20 else max(8, 880 // n)
    font = ImageFont.load_default()
    margin_left = 12 + 7 * max((len(label) for label in labels), default=1)
    margin_top = 40 + 7 * max((len(label) for label in labels), default=1)
    width, height = margin_left + n * cell + 20, margin_top + n * cell + 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 8), title, fill="black", font=font)
    for i, row in enumerate(matrix):
        total = sum(row) or 1
        for j, count in enumerate(row):
            share = count / total
            shade = int(255 * (1 - share))
            color = (shade, shade, 255) if i == j else (255, shade, shade)
            x0, y0 = margin_left + j * cell, margin_top + i * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=color, outline=(220, 220, 220))
            if cell >= 28:
                draw.text((x0 + 3, y0 + cell // 2 - 5), str(count), fill="black" if share < 0.6 else "white", font=font)
    for i, label in enumerate(labels):
        draw.text((6, margin_top + i * cell + cell // 2 - 5), label, fill="black", font=font)
        # column labels, written vertically letter by letter (no rotation needed)
        for k, char in enumerate(label[: (margin_top - 40) // 7]):
            draw.text((margin_left + i * cell + cell // 2 - 3, 30 + 7 * k), char, fill="black", font=font)
    draw.text((margin_left, height - 24), "rows: true class, columns: predicted", fill="gray", font=font)
    tmp = path.with_name(path.name + ".partial")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


def write_report(result: dict[str, Any], directory: Path, task: Any = None) -> list[Path]:
    """metrics.json, plus the task's own figures (a classifier's confusion matrix, a detector's PR curves), in
    `directory`; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    metrics_path = directory / "metrics.json"
    tmp = metrics_path.with_name("metrics.json.partial")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, metrics_path)
    return [metrics_path, *(task.write_report(result, directory) if task is not None else [])]


def curves_png(history: list[dict[str, Any]], path: Path) -> None:
    """Training curves: train loss (left axis) and the percent figures (train/val top-1, val mAP; right axis) per
    epoch, drawn with Pillow."""
    from PIL import Image, ImageDraw, ImageFont

    width, height, left, right, top, bottom = 640, 360, 60, 60, 30, 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    epochs = [row["epoch"] for row in history]
    losses = [row["train_loss"] for row in history]
    series = [("train_loss", losses, (200, 60, 60), max(losses) * 1.1 or 1.0)]
    # percent figures: a classifier's train/val top-1, a detector's val mAP...
    percent = [
        k
        for k in dict.fromkeys(k for row in history for k in row)
        if k.startswith(("train_", "val_")) and k != "train_loss"
    ]
    colors = [(60, 60, 200), (40, 150, 40), (150, 90, 30), (120, 40, 160)]
    for key, color in zip(percent, colors, strict=False):
        values = [row[key] for row in history if key in row]
        if values:
            series.append((key, values, color, 100.0))
    plot_w, plot_h = width - left - right, height - top - bottom
    x_of = (
        (lambda e: left + plot_w * (e - epochs[0]) / (epochs[-1] - epochs[0]))
        if len(epochs) > 1
        else (lambda e: left + plot_w / 2)
    )
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="gray")
    for i, (name, values, color, scale) in enumerate(series):
        points = [(x_of(e), top + plot_h * (1 - v / scale)) for e, v in zip(epochs, values, strict=False)]
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        for x, y in points:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
        draw.text((left + 10 + 150 * i, 8), f"{name} (last {values[-1]:.3g})", fill=color, font=font)
    draw.text((6, top), f"{series[0][3]:.2f}", fill=(200, 60, 60), font=font)
    draw.text((width - right + 6, top), "100%", fill="black", font=font)
    draw.text((left, height - 24), f"epoch {epochs[0]} .. {epochs[-1]}", fill="gray", font=font)
    tmp = path.with_name(path.name + ".partial")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)
