"""The train/validation split that `zoo finetune --val-split` makes and `zoo eval --val-split` re-creates.

It depends only on the labels (in the dataset's reading order, which is sorted), the fraction and the seed,
so anyone with the same data can measure a card's validation figure again on exactly the same images.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["random_split", "stratified_split"]


def stratified_split(targets: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices), sorted: per class, a seeded random `fraction` (at least one image)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    train, val = [], []
    for cls in targets.unique():
        idx = (targets == cls).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        k = max(1, round(len(idx) * fraction)) if fraction > 0 and len(idx) > 1 else 0
        val.append(idx[:k])
        train.append(idx[k:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def random_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices), sorted: a seeded random `fraction` of n items (at least one when
    fraction > 0 and n > 1), for data without one class per item (detection: split by image)."""
    import torch

    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = max(1, round(n * fraction)) if fraction > 0 and n > 1 else 0
    return order[k:].sort().values, order[:k].sort().values
