"""The Inception-v3 that FID is defined with: TensorFlow's 2015-12-05 graph, as pytorch-fid ports it.

FID numbers are comparable across papers only when computed with this exact network, which differs from
torchvision's ImageNet Inception-v3 in its weights, its 1008-way classifier and four pooling details: the
average pools inside the A, C and E blocks ignore the zero padding (TensorFlow's default), and the last E
block max-pools its pool branch. Module names follow torchvision's, so pytorch-fid's published state dict
(``pt_inception-2015-12-05-6726825d.pth``) loads without renaming. Only the 2048-d input of ``fc`` is used
for FID; the model's own forward returns the 1008 logits so that it is an ordinary classifier card.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.models.inception import Inception3, InceptionA, InceptionC, InceptionE

__all__ = ["build_fid_inception"]


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """TensorFlow's 3x3 'SAME' average pool: padded zeros are not counted in the mean."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class _FIDInceptionA(InceptionA):
    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return [self.branch1x1(x), branch5x5, branch3x3dbl, self.branch_pool(_tf_avg_pool(x))]


class _FIDInceptionC(InceptionC):
    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = x
        for conv in (
            self.branch7x7dbl_1,
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            branch7x7dbl = conv(branch7x7dbl)
        return [self.branch1x1(x), branch7x7, branch7x7dbl, self.branch_pool(_tf_avg_pool(x))]


class _FIDInceptionE(InceptionE):
    """Mixed_7b (`max_pool=False`) and Mixed_7c (`max_pool=True`: the TF graph max-pools there, likely a bug
    upstream, kept because every published FID depends on it)."""

    def __init__(self, in_channels: int, *, max_pool: bool) -> None:
        super().__init__(in_channels)
        self.max_pool = max_pool

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        return [self.branch1x1(x), branch3x3, branch3x3dbl, self.branch_pool(pooled)]


def build_fid_inception(num_classes: int = 1008) -> Inception3:
    """torchvision's Inception3 (no aux head, no input transform: the card's mean/std do [0,1] -> [-1,1])
    with pytorch-fid's FID blocks in place of Mixed_5b-5d, 6b-6e and 7b-7c."""
    # init_weights=False: torchvision's truncated-normal init is slow and the weights are loaded over it anyway
    model = Inception3(num_classes=num_classes, aux_logits=False, transform_input=False, init_weights=False)
    model.Mixed_5b = _FIDInceptionA(192, pool_features=32)
    model.Mixed_5c = _FIDInceptionA(256, pool_features=64)
    model.Mixed_5d = _FIDInceptionA(288, pool_features=64)
    model.Mixed_6b = _FIDInceptionC(768, channels_7x7=128)
    model.Mixed_6c = _FIDInceptionC(768, channels_7x7=160)
    model.Mixed_6d = _FIDInceptionC(768, channels_7x7=160)
    model.Mixed_6e = _FIDInceptionC(768, channels_7x7=192)
    model.Mixed_7b = _FIDInceptionE(1280, max_pool=False)
    model.Mixed_7c = _FIDInceptionE(2048, max_pool=True)
    return model
