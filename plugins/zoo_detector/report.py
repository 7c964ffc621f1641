"""Detection report figures drawn with Pillow (no matplotlib dependency): per-class AP as horizontal bars."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["per_class_ap_png"]


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
