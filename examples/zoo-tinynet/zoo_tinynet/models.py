"""A tiny CNN that tells horizontal from vertical stripes in 16x16 RGB images."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TinyNet", "build_tinynet"]


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def build_tinynet(*, num_classes: int = 2) -> TinyNet:
    return TinyNet(num_classes=num_classes)
