"""Classifier architectures: the seed's CIFAR ResNet-18 and the paper's CIFAR ResNet-20/32/44/56.

Module and parameter names follow the published checkpoints (akamaster/pytorch_resnet_cifar10 for the
option-A ResNets), so converted weights load without renaming beyond the DataParallel prefix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CifarResNet", "CifarResNet18", "build_cifar_resnet", "build_resnet18_cifar"]


class _ShortcutA(nn.Module):
    """Option A of He et al. (2016): subsample by 2 and zero-pad the new channels; no parameters."""

    def __init__(self, planes: int) -> None:
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class _BasicBlockA(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = _ShortcutA(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: 16/32/64 channels, option-A shortcuts, global pool, linear head.

    ``num_classes=0`` leaves the head out (timm's convention): the output is the pooled 64-d feature vector.
    """

    # The stages ``zoo.load(..., features_only=True)`` returns, in order (their output feature maps).
    feature_stages = ("layer1", "layer2", "layer3")

    def __init__(self, depth: int = 20, num_classes: int = 10) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110...), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.in_planes = 16
        self.layer1 = self._make_layer(16, n, 1)
        self.layer2 = self._make_layer(32, n, 2)
        self.layer3 = self._make_layer(64, n, 2)
        self.linear: nn.Module = nn.Linear(64, num_classes) if num_classes else nn.Identity()
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(_BasicBlockA(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


class _BasicBlock(nn.Module):
    """The seed's block: two 3x3 convs, a 1x1 conv + BN projection shortcut when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet18(nn.Module):
    """The CIFAR ResNet-18 of seed document 000: 3x3 stem, no max-pool, 64-512 channels, [2, 2, 2, 2].
    ``num_classes=0``: no head, the pooled 512-d features (timm's convention)."""

    feature_stages = ("layer1", "layer2", "layer3", "layer4")

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, 2, 1)
        self.layer2 = self._make_layer(128, 2, 2)
        self.layer3 = self._make_layer(256, 2, 2)
        self.layer4 = self._make_layer(512, 2, 2)
        self.linear: nn.Module = nn.Linear(512, num_classes) if num_classes else nn.Identity()

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(_BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        # The seed uses AvgPool2d(4) on the 4x4 map; adaptive pooling is the same there and
        # also accepts other input sizes.
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def build_cifar_resnet(*, depth: int = 20, num_classes: int = 10) -> CifarResNet:
    """The paper's CIFAR-10 ResNet of `depth` (6n+2) layers."""
    return CifarResNet(depth=depth, num_classes=num_classes)


def build_resnet18_cifar(*, num_classes: int = 10) -> CifarResNet18:
    """The seed's CIFAR ResNet-18."""
    return CifarResNet18(num_classes=num_classes)


# What zoo.load(..., features_only=True) reads to name the cards that support it, without building them.
build_cifar_resnet.feature_stages = CifarResNet.feature_stages  # type: ignore[attr-defined]
build_resnet18_cifar.feature_stages = CifarResNet18.feature_stages  # type: ignore[attr-defined]
