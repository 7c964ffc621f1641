"""GAN training and sampling throughput: zoo against plain PyTorch loops over the same models, in one run.

Training. Anchor: the seed document's GAN loop (003, "4.2"), corrected so that it runs and trains what it says:
``ImageFolder`` + per-image ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize(0.5, 0.5)`` +
``DataLoader(batch_size=64, shuffle=True, num_workers=2)``; per batch one discriminator step on the real batch
and a fresh fake batch (labelled fake, not with the real labels as the seed had it), then one generator step;
Adam(2e-4, betas 0.5/0.999) for both, the card's hinge loss, fp32. zoo: ``zoo finetune cgan-cifar --scratch``
for one epoch without validation (decoded uint8 batches, batch-level flips, channels_last, D frozen during G's
backward), fp32 and bf16 autocast. Same architecture (the ``cgan-cifar`` card), same images: the last N per class
of the CIFAR-10 train split in ../shared.

Sampling. Anchor: ``torch.no_grad`` loop over the same generator, batch 256, ``torch.randn`` per batch. zoo:
``zoo.sample`` (one generator per sample, so any batch size gives the same images), fp32 and bf16.

Run: .venv/bin/python bench/bench_gan.py [--images-per-class 300] [--samples 10000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import extract_cifar_subset, require, scratch_dir  # noqa: E402

MODEL = "cgan-cifar"


def seed_training_loop(gan, root: Path) -> float:  # noqa: ANN001
    """One epoch of the seed's GAN loop, corrected; returns images/s."""
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    dataset = datasets.ImageFolder(
        str(root),
        transform=transforms.Compose(
            [transforms.RandomHorizontalFlip(), transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)]
        ),
    )
    loader = DataLoader(dataset, batch_size=64, shuffle=True, num_workers=2)
    generator, discriminator = gan.generator, gan.discriminator
    optimizer_g = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    gan.train()
    start, seen = time.perf_counter(), 0
    for images, labels in loader:
        z = torch.randn(len(images), generator.z_dim)
        fake = generator(z, labels)
        optimizer_d.zero_grad()
        loss_d = (
            torch.relu(1 - discriminator(images, labels)).mean()
            + torch.relu(1 + discriminator(fake.detach(), labels)).mean()
        )
        loss_d.backward()
        optimizer_d.step()
        optimizer_g.zero_grad()
        loss_g = -discriminator(fake, labels).mean()
        loss_g.backward()
        optimizer_g.step()
        seen += len(images)
    return seen / (time.perf_counter() - start)


def plain_sampling_loop(gan, n: int, bf16: bool) -> float:  # noqa: ANN001
    """Images/s of a torch.no_grad loop over the generator, batch 256."""
    import contextlib

    import torch

    gan.eval()
    start = time.perf_counter()
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16) if bf16 else contextlib.nullcontext():
        for begin in range(0, n, 256):
            count = min(256, n - begin)
            labels = torch.arange(begin, begin + count) % gan.num_classes
            images = gan(torch.randn(count, gan.z_dim), labels)
            _ = ((images.float() + 1) / 2).clamp(0, 1).cpu()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images-per-class", type=int, default=300)
    parser.add_argument("--samples", type=int, default=10_000)
    args = parser.parse_args()
    work = scratch_dir("zoo-bench-gan-")
    os.environ.update(ZOO_HOME=str(work / "home"), ZOO_NO_PROGRESS="1")
    import torch

    import zoo
    from zoo.runtime.datasets import load_dataset
    from zoo.runtime.finetune import FinetuneConfig, finetune
    from zoo.runtime.sample import draw
    from zoo.runtime.tasks import get_task

    root = require(extract_cifar_subset(work / "images", args.images_per_class))
    n = 10 * args.images_per_class
    torch.manual_seed(0)
    seed_ips = seed_training_loop(zoo.load(MODEL, pretrained=False, device="cpu"), root)
    load_dataset(root, geometry=get_task(zoo.card(MODEL)).geometry())  # zoo decodes once; cached below
    train_rows = [("seed loop, corrected: ImageFolder + per-image transforms, 2 workers, fp32", seed_ips)]
    for bf16 in (False, True):
        config = FinetuneConfig(epochs=1, val_split=0.0, bf16=bf16, pretrained=False)
        result = finetune(
            MODEL,
            root,
            work / ("gan-bf16" if bf16 else "gan-fp32"),
            config=config,
            device="cpu",
            register=False,
            show_progress=False,
        )
        train_rows.append(
            (
                f"zoo finetune loop ({'bf16 autocast' if bf16 else 'fp32'}, channels_last)",
                result.history[0]["images_per_second"],
            )
        )

    torch.manual_seed(0)
    gan = zoo.load(MODEL, pretrained=False, device="cpu")
    labels = [i % gan.num_classes for i in range(args.samples)]
    sample_rows = []
    for bf16 in (False, True):
        plain = plain_sampling_loop(gan, args.samples, bf16)
        start = time.perf_counter()
        images = draw(
            MODEL, args.samples, seed=0, labels=labels, model=gan, precision="bf16" if bf16 else "fp32"
        ).images
        mine = args.samples / (time.perf_counter() - start)
        assert images.shape == (args.samples, 3, 32, 32)
        sample_rows.append((f"{'bf16' if bf16 else 'fp32'}", plain, mine))

    print(f"{MODEL} (random init), {torch.get_num_threads()} threads")
    print(f"training: one epoch of {n} CIFAR-10 train JPEGs, batch 64")
    print(f"{'loop':<72}{'img/s':>8}{'x seed':>8}")
    for name, ips in train_rows:
        print(f"{name:<72}{ips:>8.0f}{ips / seed_ips:>8.2f}")
    print(f"sampling: {args.samples} images, batch 256")
    print(f"{'precision':<12}{'plain loop img/s':>18}{'zoo.sample img/s':>18}{'x plain':>9}")
    for name, plain, mine in sample_rows:
        print(f"{name:<12}{plain:>18.0f}{mine:>18.0f}{mine / plain:>9.2f}")


if __name__ == "__main__":
    main()
