"""The VAE task: images in, the negative ELBO in bits per sub-pixel out, reconstructions and samples to look at.

The figure is the single-sample negative ELBO, -log p(x | z) + KL(q(z | x) || N(0, I)) with z drawn from the
posterior, in bits per dimension (3 x 32 x 32 sub-pixels), lower is better: an upper bound on the model's code
length for the 8-bit image. In evaluation mode every image's latent is drawn with the same fixed standard-normal
noise (``ConvVAE.eval_noise``), so the figure does not move between runs or batch sizes. Data: ImageFolder
directories and zips (the labels are read, to hold out the same stratified validation images a classifier does,
and otherwise ignored).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import click
import torch
from torchmetrics import MeanMetric, SumMetric

from zoo._card import ModelCard
from zoo.errors import ZooError
from zoo.runtime.datasets import Geometry, ImageDataset, load_dataset
from zoo.runtime.preprocess import card_geometry, normalize
from zoo.runtime.splits import stratified_split
from zoo.runtime.tasks import Batch, unwrap

from .likelihood import bits_per_dim
from .models import mean_image, negative_elbo

__all__ = ["AUGMENT_PRESETS", "VaeData", "VaeEvaluator", "VaeTask", "VaeTrainData"]

AUGMENT_PRESETS = ("none", "flip")
SUMMARY_KEYS = ("bits_per_dim", "nll_bits_per_dim", "kl_bits_per_dim", "mse", "psnr")
LATENT_DECIMALS = 3


def _unwrap(model: Any) -> Any:
    return unwrap(model, "latent_shape", "a VAE of zoo_vae")


class VaeData:
    """Decoded images (labels kept only for the stratified split), optionally cut down to the validation part that
    ``zoo finetune --val-split F --seed S`` held out."""

    def __init__(self, dataset: ImageDataset, keep: torch.Tensor | None) -> None:
        self.source, self.skipped, self.from_cache = dataset.source, dataset.skipped, dataset.from_cache
        self.images = dataset.images if keep is None else dataset.images[keep]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batches(self, batch_size: int) -> Iterator[Batch]:
        for begin in range(0, len(self), batch_size):
            yield Batch(self.images[begin : begin + batch_size])


class VaeEvaluator:
    """Means over images of bits/dim (and its NLL and KL parts), MSE and PSNR (torchmetrics: DDP-aware)."""

    def __init__(self) -> None:
        self.metrics = {key: MeanMetric().set_dtype(torch.float64) for key in SUMMARY_KEYS}
        self.images = SumMetric().set_dtype(torch.float64)

    def update(self, outputs: dict[str, torch.Tensor], batch: Batch) -> None:
        for key in SUMMARY_KEYS:
            self.metrics[key].update(outputs[key].detach().double().cpu())
        self.images.update(torch.tensor(float(len(batch)), dtype=torch.float64))

    def compute(self) -> dict[str, Any]:
        summary: dict[str, Any] = {key: round(float(self.metrics[key].compute()), 4) for key in SUMMARY_KEYS}
        summary["images"] = int(self.images.compute())
        return summary


class VaeTrainData:
    """The training part of an image dataset (flipped at random) and its stratified validation part."""

    def __init__(self, dataset: ImageDataset, config: Any) -> None:
        if config.augment not in AUGMENT_PRESETS:
            raise ZooError(
                f"Unknown augmentation preset {config.augment!r} for VAEs; use one of: {', '.join(AUGMENT_PRESETS)}."
            )
        if config.balance != "none":
            raise ZooError(f"--balance {config.balance} is for classifiers; a VAE has no classes to balance.")
        if config.freeze != "none":
            raise ZooError(f"--freeze {config.freeze}: a VAE has no head to train alone; use --freeze none.")
        self.dataset = dataset
        if dataset.images.numel() < _memory_budget():  # random gathers run faster from anonymous memory
            self.dataset = ImageDataset(
                dataset.images.clone(),
                dataset.targets,
                dataset.classes,
                dataset.source,
                dataset.skipped,
                dataset.from_cache,
            )
        self.classes: tuple[str, ...] = ()  # a VAE has no labels; the data's folders only stratify the split
        self.train_idx, self.val_idx = stratified_split(dataset.targets, config.val_split, config.seed)
        if len(self.train_idx) == 0:
            raise ZooError(f"{dataset.source}: no training images left after --val-split {config.val_split}.")
        self.validation = (
            f"{len(self.val_idx)} images held out (stratified by class folder) by --val-split "
            f"{config.val_split} (seed {config.seed})"
        )
        self.eval_args = f"--val-split {config.val_split} --seed {config.seed}"

    def __len__(self) -> int:
        return len(self.train_idx)

    def sample_weights(self, config: Any) -> None:
        return None

    def train_batch(self, indices: torch.Tensor, generator: torch.Generator, config: Any) -> Batch:
        images = self.dataset.images[self.train_idx[indices]]
        if config.augment == "flip":
            flip = torch.rand(len(images), generator=generator) < 0.5
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)
        # the posterior's noise is drawn in training_step from this seed: every random number of a step comes
        # from the loop's generator, so a stopped run resumes to the same weights
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        return Batch(images.contiguous(), extras={"noise_seed": seed})

    def val_data(self) -> VaeData | None:
        if len(self.val_idx) == 0:
            return None
        return VaeData(self.dataset, self.val_idx)


def _memory_budget() -> int:
    """A quarter of the machine's RAM, in bytes (1 GiB where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 1 << 30


class VaeTask:
    """Task behaviour for variational autoencoders (the contract: zoo.runtime.tasks.Task)."""

    verbs = frozenset({"predict", "eval", "finetune", "sample"})
    headline = ("bits_per_dim", False)
    # bits/dim: bf16 autocast moved the figure by 0.0004 (5.6540 fp32, 5.6544 bf16 on the 5,000 CIFAR-10 images
    # --val-split 0.1 --seed 0 holds out, after a third of an epoch; the heads run in float32); the evaluation
    # noise is fixed, so fp32 measures the same figure again exactly, at any batch size
    tolerance = 0.02
    conditional = False  # samples come from the prior alone: no class labels

    def __init__(self, card: ModelCard) -> None:
        self.card = card
        # predict -> save_prediction: the 32x32 input and the reconstruction of each image of the batch in hand, by
        # image name, kept between records() and save_prediction() (the record itself must stay JSON)
        self._shown: dict[str, deque[tuple[torch.Tensor, torch.Tensor]]] = defaultdict(deque)

    @classmethod
    def options(cls, verb: str) -> list[click.Option]:
        if verb == "sample":
            return [
                click.Option(
                    ["--temperature"],
                    type=click.FloatRange(min=0.0),
                    default=1.0,
                    show_default=True,
                    help="Scale of the prior's noise: z ~ N(0, T^2 I); below 1 trades variety for cleaner images.",
                )
            ]
        return []

    # -- data ---------------------------------------------------------------------------------------
    def geometry(self) -> Geometry:
        return card_geometry(self.card)

    def eval_data(
        self,
        source: str | Path,
        *,
        split: str | None = None,
        val_split: float | None = None,
        seed: int = 0,
        cache: bool = True,
        skip_bad: bool = False,
    ) -> VaeData:
        if split is not None:
            raise ZooError(
                f"--split {split!r}: image folders carry no named splits; point --data at the split's "
                "folder, or use --val-split."
            )
        dataset = load_dataset(source, geometry=self.geometry(), skip_bad=skip_bad, cache=cache)
        keep = None if val_split is None else stratified_split(dataset.targets, val_split, seed)[1]
        return VaeData(dataset, keep)

    def predict_batch(self, images: list[torch.Tensor], names: list[str]) -> Batch:
        geometry = self.geometry()
        return Batch(torch.stack([geometry.apply(image) for image in images]), meta=[{"image": n} for n in names])

    # -- around the forward pass ----------------------------------------------------------------------
    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return normalize(images, self.card.preprocess)  # mean 0.5, std 0.5: the bin centres 2k/255 - 1 of [-1, 1]

    def postprocess(self, raw: Any, batch: Batch, **options: Any) -> dict[str, torch.Tensor]:
        """Per image: bits/dim (and its NLL and KL parts), MSE and PSNR of the decoder's mean image against the
        input on [0, 1] pixels, the posterior mean, and the reconstruction itself (uint8)."""
        model_images = cast(torch.Tensor, batch.images).to(raw.mean.device)  # fixed geometry: one tensor
        dims = model_images[0].numel()
        nll, kl = negative_elbo(model_images, raw)
        recon = mean_image(raw)
        target = model_images.float() / 255.0
        mse = (recon - target).square().flatten(1).mean(1)
        return {
            "bits_per_dim": bits_per_dim(nll + kl, dims),
            "nll_bits_per_dim": bits_per_dim(nll, dims),
            "kl_bits_per_dim": bits_per_dim(kl, dims),
            "mse": mse,
            "psnr": 10.0 * torch.log10(1.0 / mse.clamp(min=1e-10)),
            "latent": raw.mu.float(),
            "reconstruction": (recon * 255.0).round().to(torch.uint8),
        }

    # -- results --------------------------------------------------------------------------------------
    def evaluator(self, **options: Any) -> VaeEvaluator:
        return VaeEvaluator()

    def records(self, outputs: dict[str, torch.Tensor], batch: Batch, **options: Any) -> list[dict[str, Any]]:
        # the runtime saves a batch's predictions before it asks for the next batch's records: keep only this one
        self._shown.clear()
        records = []
        for i in range(len(batch)):
            records.append(
                {
                    "bits_per_dim": round(float(outputs["bits_per_dim"][i]), 4),
                    "mse": round(float(outputs["mse"][i]), 6),
                    "psnr": round(float(outputs["psnr"][i]), 2),
                    "latent": [round(v, LATENT_DECIMALS) for v in outputs["latent"][i].flatten().tolist()],
                }
            )
            if i < len(batch.meta):
                self._shown[batch.meta[i]["image"]].append((batch.images[i].cpu(), outputs["reconstruction"][i].cpu()))
        return records

    def render_prediction(self, record: dict[str, Any]) -> str:
        return (
            f"{record['bits_per_dim']:.3f} bits/dim, reconstruction PSNR {record['psnr']:.2f} dB "
            f"(MSE {record['mse']:.5f}), latent of {len(record['latent'])}"
        )

    def save_prediction(self, record: dict[str, Any], image: torch.Tensor, directory: Path) -> list[Path]:
        """``<stem>-reconstruction.png``: the 32x32 input the model saw | its reconstruction, each scaled 4x."""
        from torchvision.io import write_png

        shown = self._shown.get(record["image"])
        if not shown:
            return []
        seen, recon = shown.popleft()
        pair = torch.cat([seen, torch.full_like(seen[:, :, :1], 255), recon], dim=2)  # a white column between
        pair = pair.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{Path(record['image']).stem}-reconstruction.png"
        partial = path.with_name(path.name + ".partial")
        write_png(pair.contiguous(), str(partial))
        os.replace(partial, path)
        return [path]

    def render_eval(self, summary: dict[str, Any]) -> list[str]:
        return [
            f"{summary['bits_per_dim']:.4f} bits/dim (negative ELBO; lower is better)",
            f"NLL {summary['nll_bits_per_dim']:.4f} + KL {summary['kl_bits_per_dim']:.4f} bits/dim; "
            f"reconstruction MSE {summary['mse']:.5f}, PSNR {summary['psnr']:.2f} dB (mean over images)",
        ]

    def write_report(self, record: dict[str, Any], directory: Path) -> list[Path]:
        return []  # metrics.json holds the whole summary

    # -- sampling -------------------------------------------------------------------------------------
    def sample(
        self, model: Any, noise: Any, labels: torch.Tensor | None, temperature: float = 1.0, **options: Any
    ) -> torch.Tensor:
        """z ~ N(0, T^2 I) from `noise` (one generator per sample), decoded to the decoder's mean image in [0, 1].
        The pixels are the logistics' locations, not a draw of per-pixel noise (ConvVAE.sample_images)."""
        vae = _unwrap(model)
        device = next(vae.parameters()).device
        z = noise.randn(*vae.latent_shape).to(device) * temperature
        return vae.sample_images(vae.decode(z))

    # -- training -----------------------------------------------------------------------------------
    augment_presets = AUGMENT_PRESETS
    # What the VAE trains with: AdamW at 5e-4 per 128 images, gradients clipped to norm 1, no weight decay, cosine
    # after a short warm-up. Measured on CIFAR-10 (bf16, 2-core CPU): at 1e-3 unclipped a gradient spike (norm 20)
    # collapsed the posterior (KL -> 0, stuck at 7.0 bits/dim) and a full epoch ended in NaN; at 5e-4 clipped to 1
    # the loss fell steadily (5.6 bits/dim after 340 steps, KL 0.3 bits/dim and rising).
    recipe_defaults = {
        "batch_size": 128,
        "augment": "flip",
        "optimizer": "adamw",
        "schedule": "cosine",
        "weight_decay": 0.0,
        "warmup": 0.02,
        "clip_grad": 1.0,
    }
    base_lr = {"adamw": 5e-4, "sgd": 0.01}  # per 128 images

    def train_data(self, source: str | Path, *, config: Any) -> VaeTrainData:
        return VaeTrainData(load_dataset(source, geometry=self.geometry()), config)

    def model_overrides(self, classes: tuple[str, ...]) -> dict[str, Any]:
        return {}  # a VAE's shape does not depend on the data's classes

    def training_step(self, model: torch.nn.Module, x: torch.Tensor, batch: Batch, config: Any) -> dict[str, Any]:
        """The negative ELBO in nats per sub-pixel, averaged over the batch (the loss); its sum over the batch in
        bits/dim for the epoch row. The posterior's noise comes from the batch's seed (resumable)."""
        vae = _unwrap(model)
        generator = torch.Generator().manual_seed(batch.extras["noise_seed"])
        eps = torch.randn((len(batch), *vae.latent_shape), generator=generator).to(x.device)
        out = model(x, eps)
        target = cast(torch.Tensor, batch.images).to(x.device)  # fixed geometry: one tensor
        nll, kl = vae.nelbo(target, out)
        dims = target[0].numel()
        nelbo = nll + kl
        return {
            "loss": nelbo.mean() / dims,
            "nelbo_bits": bits_per_dim(nelbo.detach(), dims).sum(),
            "kl_bits": bits_per_dim(kl.detach(), dims).sum(),
        }

    def train_metrics(self, sums: dict[str, float], seen: int) -> dict[str, float]:
        seen = max(seen, 1)
        return {
            "train_bits_per_dim": round(sums.get("nelbo_bits", math.nan) / seen, 4),
            "train_kl_bits_per_dim": round(sums.get("kl_bits", math.nan) / seen, 4),
        }
