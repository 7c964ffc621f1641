"""Train zoo-tinynet's weights on synthetic stripes and write zoo_tinynet/weights/tinynet-stripes.safetensors.

Deterministic (fixed seeds, one CPU thread): re-running it gives the same file. The data: 16x16 RGB images
of horizontal or vertical stripes with random period, phase, colours and noise.

Run: python examples/zoo-tinynet/train_weights.py   (a few seconds on a CPU)
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
LABELS = ("horizontal", "vertical")


def stripes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` uint8 images (n x 3 x 16 x 16) and their labels (0 horizontal, 1 vertical)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    period = torch.randint(2, 6, (n, 1, 1), generator=g).float()
    phase = torch.rand(n, 1, 1, generator=g) * 6.28
    coords = torch.arange(16).float()
    rows = torch.sin(coords.view(1, 16, 1) * 6.28 / period + phase).expand(n, 16, 16)
    cols = torch.sin(coords.view(1, 1, 16) * 6.28 / period + phase).expand(n, 16, 16)
    wave = torch.where(labels.view(n, 1, 1) == 0, rows, cols)  # horizontal stripes vary down the rows
    low, high = torch.rand(n, 3, 1, 1, generator=g) * 0.4, 0.6 + torch.rand(n, 3, 1, 1, generator=g) * 0.4
    image = low + (high - low) * (wave.unsqueeze(1) + 1) / 2 + 0.08 * torch.randn(n, 3, 16, 16, generator=g)
    return (image.clamp(0, 1) * 255).round().to(torch.uint8), labels


def normalize(images: torch.Tensor) -> torch.Tensor:
    return (images.float() / 255 - 0.5) / 0.25  # the card's preprocess: mean 0.5, std 0.25


def main() -> None:
    from safetensors.torch import save_file

    # The model code of the package next to this script (it need not be installed). Importing it here, not at
    # the top, keeps `stripes` importable without putting the source tree on sys.path (the tests use the
    # installed package), and no __pycache__ is left in the source tree.
    sys.dont_write_bytecode = True
    sys.path.insert(0, str(HERE))
    from zoo_tinynet.models import build_tinynet

    torch.manual_seed(0)
    torch.set_num_threads(1)
    train_x, train_y = stripes(4000, seed=1)
    val_x, val_y = stripes(1000, seed=2)  # a held-out synthetic split, never trained on
    model = build_tinynet()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for epoch in range(6):
        model.train()
        order = torch.randperm(len(train_x))
        for batch in order.split(64):
            loss = torch.nn.functional.cross_entropy(model(normalize(train_x[batch])), train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(normalize(val_x)).argmax(1) == val_y).float().mean().item()
        print(f"epoch {epoch + 1}: loss {loss.item():.4f}, held-out synthetic val accuracy {100 * accuracy:.2f}%")
    out = HERE / "zoo_tinynet" / "weights" / "tinynet-stripes.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
    data = out.read_bytes()
    print(f"wrote {out}\n  sha256: {hashlib.sha256(data).hexdigest()}\n  size:   {len(data)}")
    print(f"  params: {sum(p.numel() for p in model.parameters())}")


if __name__ == "__main__":
    main()
