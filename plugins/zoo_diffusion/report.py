"""The steps-vs-quality figure of a sweep (``zoo eval --steps 10,25,50,100 --report DIR``), drawn with Pillow
like the detector's figures (no matplotlib dependency): FID (left axis) and judge accuracy (right axis) against
the number of sampling steps on a log scale, each point labelled with its value."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

__all__ = ["sweep_png"]


def _ticks(low: float, high: float) -> tuple[float, float]:
    """An axis range around [low, high] with a little room."""
    if high <= low:
        high = low + 1.0
    pad = 0.08 * (high - low)
    return max(0.0, low - pad), high + pad


def sweep_png(rows: list[dict[str, Any]], metric: str, path: Path, title: str = "") -> None:
    from PIL import Image, ImageDraw, ImageFont

    width, height, left, right, top, bottom = 560, 400, 60, 60, 40, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((10, 8), title or f"{metric} vs sampling steps", fill="black", font=font)
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="gray")
    steps = [row["steps"] for row in rows]
    lo, hi = math.log(min(steps)), math.log(max(steps))
    span = hi - lo or 1.0

    def x_of(value: int) -> float:
        return left + plot_w * ((math.log(value) - lo) / span if hi > lo else 0.5)

    for value in steps:
        draw.text((x_of(value) - 8, top + plot_h + 6), str(value), fill="gray", font=font)
    draw.text((left + plot_w // 2 - 30, height - 18), "sampling steps (log)", fill="black", font=font)
    series = [(metric, (40, 110, 200), "left")]
    if all("judge_accuracy" in row for row in rows):
        series.append(("judge_accuracy", (200, 90, 40), "right"))
    for i, (key, color, side) in enumerate(series):
        values = [float(row[key]) for row in rows]
        y0, y1 = _ticks(min(values), max(values))

        def y_of(value: float, y0: float = y0, y1: float = y1) -> float:
            return top + plot_h * (1 - (value - y0) / (y1 - y0))

        points = [(x_of(s), y_of(v)) for s, v in zip(steps, values, strict=True)]
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        for (x, y), value in zip(points, values, strict=True):
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
            draw.text((x + 5, y - 12), f"{value:.2f}", fill=color, font=font)
        axis_x = 4 if side == "left" else left + plot_w + 6
        for frac in (0.0, 0.5, 1.0):
            value = y0 + frac * (y1 - y0)
            draw.text((axis_x, y_of(value) - 5), f"{value:.1f}", fill=color, font=font)
        label = key if key != "judge_accuracy" else "judge accuracy %"
        draw.text((left + 8 + 200 * i, top + 6), label, fill=color, font=font)
    tmp = path.with_name(path.name + ".partial")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)
