"""Diffusion sampling and training throughput: zoo against diffusers' own pipeline and a plain PyTorch DDPM loop
over the same UNet, in one run.

Sampling. Anchor: diffusers' ``DDIMPipeline`` (the pipeline people call) over the same ``UNet2DModel`` and the same
DDIM scheduler zoo builds (trailing spacing, x_0 clipped), 50 steps, eta 0, fp32, the whole batch in one call, the
initial noise from one generator per sample (a list: diffusers' per-sample seeding). zoo: ``zoo.sample``'s loop
(:func:`zoo.runtime.sample.draw`) with the same per-sample seeds, in fp32 (its images are compared with the
pipeline's: the same samples from the same noise) and with bf16 autocast. The UNet is ``ddpm-cifar``'s
architecture made unconditional (the pipeline has no class input), random weights: speed does not depend on them.

Training. Anchor: the loop a diffusers tutorial writes: ``ImageFolder`` + per-image ``RandomHorizontalFlip``,
``ToTensor``, ``Normalize(0.5, 0.5)``, ``DataLoader(batch_size=128, shuffle=True, num_workers=2)``, uniform
timesteps, ``DDPMScheduler.add_noise``, MSE on the noise, AdamW 3e-4, gradients clipped at 1, fp32. zoo:
``zoo finetune ddpm-cifar --scratch`` for one epoch without validation (decoded uint8 batches, batch-level flips,
the task's memory format (contiguous), EMA on, class dropout), fp32 and bf16 autocast. Same architecture (the
``ddpm-cifar`` card), same images: the last N per class of the CIFAR-10 train split in ../shared.

Run: .venv/bin/python bench/bench_diffusion.py [--images-per-class 100] [--samples 64] [--steps 50]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import extract_cifar_subset, require, scratch_dir  # noqa: E402

MODEL = "ddpm-cifar"


def plain_training_loop(model, root: Path) -> float:  # noqa: ANN001
    """One epoch of a plain DDPM loop over `model` (a zoo_diffusion Denoiser); returns images/s."""
    import torch
    from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    dataset = datasets.ImageFolder(
        str(root),
        transform=transforms.Compose(
            [transforms.RandomHorizontalFlip(), transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)]
        ),
    )
    loader = DataLoader(dataset, batch_size=128, shuffle=True, num_workers=2)
    scheduler = DDPMScheduler(**model.scheduler_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.0)
    model.train()
    start, seen = time.perf_counter(), 0
    for images, labels in loader:
        noise = torch.randn_like(images)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(images),))
        noisy = scheduler.add_noise(images, noise, t)
        loss = torch.nn.functional.mse_loss(model(noisy, t, labels), noise)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        seen += len(images)
    return seen / (time.perf_counter() - start)


def pipeline_sampling(model, n: int, steps: int) -> tuple[float, object]:  # noqa: ANN001
    """Images/s of diffusers' DDIMPipeline over `model`'s UNet, and its images (N x C x H x W in [0, 1])."""
    import torch
    from diffusers import DDIMPipeline

    from zoo.runtime.sample import sample_seed
    from zoo_diffusion.samplers import make_scheduler

    pipe = DDIMPipeline(unet=model.unet, scheduler=make_scheduler(model, "ddim", steps))
    pipe.set_progress_bar_config(disable=True)
    generators = [torch.Generator().manual_seed(sample_seed(0, i)) for i in range(n)]
    start = time.perf_counter()
    images = pipe(batch_size=n, generator=generators, num_inference_steps=steps, eta=0.0, output_type="np").images
    seconds = time.perf_counter() - start
    return n / seconds, torch.from_numpy(images).permute(0, 3, 1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images-per-class", type=int, default=100)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    work = scratch_dir("zoo-bench-diffusion-")
    os.environ.update(ZOO_HOME=str(work / "home"), ZOO_NO_PROGRESS="1")
    import torch
    import yaml

    import zoo
    import zoo._registry
    from zoo.runtime.datasets import load_dataset
    from zoo.runtime.finetune import FinetuneConfig, finetune
    from zoo.runtime.sample import draw
    from zoo.runtime.tasks import get_task
    from zoo.runtime.train.recipe import resolve

    # the card's architecture without classes, as a user card (diffusers' DDIMPipeline takes no class input)
    card = zoo.card(MODEL)
    registry = work / "registry.yaml"
    registry.write_text(
        yaml.safe_dump(
            {
                "models": {
                    "bench-uddpm": {
                        "task": "diffusion",
                        "builder": card.builder,
                        "kwargs": {**card.kwargs, "num_classes": 0},
                        "input": {"shape": [3, 32, 32]},
                        "preprocess": {"resize": 32, "crop": 32, "mean": [0.5] * 3, "std": [0.5] * 3},
                    }
                }
            }
        )
    )
    os.environ["ZOO_REGISTRY"] = str(registry)
    zoo._registry.reset_registry()

    torch.manual_seed(0)
    model = zoo.load("bench-uddpm", pretrained=False, device="cpu").eval()
    with torch.inference_mode():
        pipe_ips, pipe_images = pipeline_sampling(model, args.samples, args.steps)
    sample_rows = [("diffusers DDIMPipeline, fp32", pipe_ips, None)]
    for precision in ("fp32", "bf16"):
        samples = draw(
            "bench-uddpm", args.samples, seed=0, model=model, precision=precision, steps=args.steps, sampler="ddim"
        )
        diff = float((samples.images - pipe_images).abs().max()) if precision == "fp32" else None
        sample_rows.append((f"zoo.sample, {precision}", samples.images_per_second, diff))

    root = require(extract_cifar_subset(work / "images", args.images_per_class))
    n = 10 * args.images_per_class
    torch.manual_seed(0)
    plain_ips = plain_training_loop(zoo.load(MODEL, pretrained=False, device="cpu"), root)
    load_dataset(root, geometry=get_task(zoo.card(MODEL)).geometry())  # zoo decodes once; cached below
    train_rows = [("plain loop: ImageFolder + per-image transforms, 2 workers, fp32", plain_ips)]
    # the task chooses the memory format (contiguous for diffusion: GroupNorm's backward is slow in channels_last)
    cl = resolve(FinetuneConfig(), get_task(zoo.card(MODEL))).channels_last
    memory_format = "channels_last" if cl else "contiguous"
    for bf16 in (False, True):
        config = FinetuneConfig(epochs=1, val_split=0.0, bf16=bf16, pretrained=False)
        result = finetune(
            MODEL,
            root,
            work / ("ddpm-bf16" if bf16 else "ddpm-fp32"),
            config=config,
            device="cpu",
            register=False,
            show_progress=False,
        )
        train_rows.append(
            (
                f"zoo finetune loop ({'bf16 autocast' if bf16 else 'fp32'}, {memory_format}, EMA)",
                result.history[0]["images_per_second"],
            )
        )

    print(
        f"{MODEL}'s UNet ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, random init), "
        f"{torch.get_num_threads()} threads"
    )
    print(f"sampling: {args.samples} images, DDIM {args.steps} steps, eta 0")
    print(f"{'sampler':<34}{'img/s':>8}{'x diffusers':>13}{'max |diff| vs diffusers':>26}")
    for name, ips, diff in sample_rows:
        shown = "-" if diff is None else f"{diff:.2e}"
        print(f"{name:<34}{ips:>8.2f}{ips / pipe_ips:>13.2f}{shown:>26}")
    print(f"training: one epoch of {n} CIFAR-10 train JPEGs, batch 128")
    print(f"{'loop':<72}{'img/s':>8}{'x plain':>9}")
    for name, ips in train_rows:
        print(f"{name:<72}{ips:>8.1f}{ips / plain_ips:>9.2f}")


if __name__ == "__main__":
    main()
