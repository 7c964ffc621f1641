"""Sampling from generative models: per-sample noise, batching, the runtime's precision policy.

``Noise`` is what a task draws every random number from: one ``torch.Generator`` per sample, seeded from
(seed, index), so sample i is the same image whatever the batch size or the rank that drew it.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["Noise", "sample_seed"]


def sample_seed(seed: int, index: int) -> int:
    """The generator seed of sample `index` of a run with `seed`: a hash, so neighbouring runs' samples do not
    overlap (seed 0's sample 1 is not seed 1's sample 0)."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class Noise:
    """Random draws for a batch of samples, each from its own generator (on the CPU: the same numbers on every
    device), moved to `device` afterwards."""

    def __init__(self, seeds: list[int], device: torch.device | str = "cpu") -> None:
        import torch

        self.device = torch.device(device)
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, *shape: int) -> torch.Tensor:
        """N x `shape` standard normal draws (float32), row i from sample i's generator."""
        import torch

        return torch.stack([torch.randn(shape, generator=g) for g in self.generators]).to(self.device)

    def rand(self, *shape: int) -> torch.Tensor:
        """N x `shape` uniform draws in [0, 1)."""
        import torch

        return torch.stack([torch.rand(shape, generator=g) for g in self.generators]).to(self.device)
