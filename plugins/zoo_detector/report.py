"""Detection report figures drawn with Pillow (no matplotlib dependency): per-class AP as horizontal bars, and
the precision-recall curves at IoU 0.5 and 0.75."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["per_class_ap_png", "pr_curve_png"]


def per_class_ap_png(per_class: dict[str, float], path: Path, title: str = "") -> None:
    """One bar per class, sorted from the best AP to the worst, values written beside the bars (AP in points)."""
    from PIL import Image, ImageDraw, ImageFont

    rows = sorted(per_class.items(), key=lambda kv: -kv[1])
    font = ImageFont.load_default()
    row, left, bar_w = 14, 12 + 7 * max((len(k) for k in per_class), default=4), 400
    width, height = left + bar_w + 60, 40 + row * max(1, len(rows)) + 20
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 8), title or "per-class AP@[.5:.95]", fill="black", font=font)
    for i, (name, ap) in enumerate(rows):
        y = 36 + i * row
        draw.text((6, y), name, fill="black", font=font)
        draw.rectangle([left, y + 2, left + int(bar_w * ap / 100.0), y + row - 3], fill=(70, 110, 200))
        draw.text((left + int(bar_w * ap / 100.0) + 4, y), f"{ap:.1f}", fill="black", font=font)
    tmp = path.with_name(path.name + ".partial")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


def pr_curve_png(curve: dict[str, list[float]], path: Path, title: str = "") -> None:
    """Precision (y) against recall (x), COCO's 101 recall points, averaged over the classes with boxes."""
    from PIL import Image, ImageDraw, ImageFont

    width, height, left, bottom, top, right = 520, 420, 50, 40, 36, 20
    plot_w, plot_h = width - left - right, height - top - bottom
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((10, 8), title or "precision-recall", fill="black", font=font)
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="gray")
    for tick in range(0, 11, 2):
        x, y = left + plot_w * tick / 10, top + plot_h * (1 - tick / 10)
        draw.text((x - 8, top + plot_h + 6), f"{tick / 10:.1f}", fill="gray", font=font)
        draw.text((left - 28, y - 5), f"{tick / 10:.1f}", fill="gray", font=font)
    for i, (name, color) in enumerate((("iou50", (40, 110, 200)), ("iou75", (200, 90, 40)))):
        points = [
            (left + plot_w * r, top + plot_h * (1 - p)) for r, p in zip(curve["recall"], curve[name], strict=True)
        ]
        draw.line(points, fill=color, width=2)
        draw.text((left + plot_w - 90, top + 8 + 14 * i), f"IoU {name[3:]}", fill=color, font=font)
    draw.text((left + plot_w // 2 - 15, height - 16), "recall", fill="black", font=font)
    draw.text((4, top - 14), "precision", fill="black", font=font)
    tmp = path.with_name(path.name + ".partial")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)
