"""Fine-tuning throughput: `zoo finetune`'s loop against the seed document's training loop, in one run.

Anchor (seed document 000): ``ImageFolder`` + per-image ``RandomCrop(32, padding=4)``,
``RandomHorizontalFlip``, ``ToTensor``, ``Normalize`` + ``DataLoader(batch_size=128, shuffle=True,
num_workers=2)``, SGD, cross-entropy. zoo: ``zoo.runtime.finetune`` (decoded uint8 tensor, crop+flip on
whole batches, channels_last, the same SGD step), fp32 and, with ``--bf16``, bf16 autocast; ``--compile``
adds bf16 autocast with the model under torch.compile, timed on its second epoch (the first pays the
compile, printed separately). Same model
architecture (CIFAR ResNet-20 by default), same images: the last N per class of the CIFAR-10 train split in
../shared, one epoch each. Training images/s are reported without zoo's one-off decode (shown separately).

Run: .venv/bin/python bench/bench_finetune.py [--images-per-class 300] [--model resnet20-cifar] [--bf16] [--compile]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import AKAMASTER, extract_cifar_subset, require, scratch_dir  # noqa: E402


def seed_loop(model, root: Path, mean, std) -> float:  # noqa: ANN001
    """One epoch of the seed's loop; returns images/s."""
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    dataset = datasets.ImageFolder(
        str(root),
        transform=transforms.Compose(
            [
                transforms.RandomCrop(32, padding=4),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(mean, std),
            ]
        ),
    )
    loader = DataLoader(dataset, batch_size=128, shuffle=True, num_workers=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    start, seen = time.perf_counter(), 0
    for images, targets in loader:
        optimizer.zero_grad()
        loss = criterion(model(images), targets)
        loss.backward()
        optimizer.step()
        seen += len(targets)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images-per-class", type=int, default=300)
    parser.add_argument("--model", default="resnet20-cifar")
    parser.add_argument("--bf16", action="store_true", help="also measure zoo with bf16 autocast")
    parser.add_argument("--compile", action="store_true", help="also measure zoo with bf16 + torch.compile")
    args = parser.parse_args()
    require(AKAMASTER)
    work = scratch_dir("zoo-bench-ft-")
    os.environ.update(ZOO_HOME=str(work / "home"), ZOO_MIRROR=str(AKAMASTER), ZOO_NO_PROGRESS="1")
    import torch

    import zoo
    from zoo.runtime.datasets import load_dataset
    from zoo.runtime.finetune import FinetuneConfig, finetune
    from zoo.runtime.tasks import get_task

    root = extract_cifar_subset(work / "images", args.images_per_class)
    card = zoo.card(args.model)
    n = 10 * args.images_per_class
    seed_ips = seed_loop(zoo.load(args.model, device="cpu"), root, card.preprocess.mean, card.preprocess.std)
    start = time.perf_counter()
    load_dataset(root, geometry=get_task(card).geometry())  # decode once (cached for the runs below)
    decode_seconds = time.perf_counter() - start
    rows = [("seed loop: ImageFolder + per-image transforms, 2 workers", seed_ips)]
    for bf16 in [False, True] if args.bf16 else [False]:
        config = FinetuneConfig(epochs=1, batch_size=128, val_split=0.0, bf16=bf16, label_smoothing=0.0)
        result = finetune(
            args.model,
            root,
            work / ("run-bf16" if bf16 else "run-fp32"),
            config=config,
            device="cpu",
            register=False,
            show_progress=False,
        )
        rows.append(
            (
                f"zoo finetune loop ({'bf16 autocast' if bf16 else 'fp32'}, channels_last)",
                result.history[0]["images_per_second"],
            )
        )
    compile_seconds = None
    if args.compile:
        config = FinetuneConfig(epochs=2, batch_size=128, val_split=0.0, bf16=True, label_smoothing=0.0, compile=True)
        result = finetune(
            args.model, root, work / "run-compile", config=config, device="cpu", register=False, show_progress=False
        )
        first, second = result.history
        compile_seconds = first["seconds"] - second["seconds"]
        rows.append(("zoo finetune loop (bf16, channels_last, torch.compile; epoch 2)", second["images_per_second"]))
    print(f"{args.model}, one epoch of {n} CIFAR-10 train JPEGs, batch 128, {torch.get_num_threads()} threads")
    print(f"zoo decodes the {n} JPEGs once in {decode_seconds:.2f} s (then cached)")
    if compile_seconds is not None:
        print(f"torch.compile made epoch 1 {compile_seconds:.1f} s longer than epoch 2 (the one-off compile)")
    print(f"{'loop':<64}{'img/s':>8}{'x seed':>8}")
    for name, ips in rows:
        print(f"{name:<64}{ips:>8.0f}{ips / seed_ips:>8.2f}")


if __name__ == "__main__":
    main()
