"""The classifier task: uint8 batches in, logits out, top-k accuracy, per-class accuracy, confusion matrix."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from zoo._card import ModelCard
from zoo.errors import ZooError
from zoo.runtime.datasets import Geometry

__all__ = ["AUGMENT_PRESETS", "ClassifierTask"]

# In the order of their strength; each one's operations are in its name (docs/usage.md, zoo finetune --augment).
AUGMENT_PRESETS = ("none", "crop-flip", "crop-flip-erase", "crop-flip-trivial-erase")


class ClassifierTask:
    """Task behaviour for image classifiers (see zoo.runtime.tasks.Task)."""

    def geometry(self, card: ModelCard) -> Geometry:
        pre = card.preprocess
        if pre is None:
            raise ZooError(f"Model {card.name!r} declares no preprocessing; it cannot be evaluated on images.")
        return Geometry(resize=pre.resize, crop=pre.crop, interpolation=pre.interpolation)

    def prepare(self, images: torch.Tensor, card: ModelCard) -> torch.Tensor:
        pre = card.preprocess
        mean = torch.tensor(pre.mean, device=images.device).view(1, -1, 1, 1) * 255.0
        std = torch.tensor(pre.std, device=images.device).view(1, -1, 1, 1) * 255.0
        # One fused affine step on the whole batch: (x / 255 - mean) / std == (x - 255 mean) / (255 std).
        return (images.float() - mean) / std

    def align_targets(self, classes: tuple[str, ...], card: ModelCard) -> torch.Tensor:
        if not card.labels:
            return torch.arange(len(classes))
        index = {label: i for i, label in enumerate(card.labels)}
        missing = [c for c in classes if c not in index]
        if missing:
            raise ZooError(
                f"Dataset classes {missing[:5]} are not labels of model {card.name!r} "
                f"({', '.join(card.labels[:10])}). Fine-tune it on this data with 'zoo finetune' instead.")
        return torch.tensor([index[c] for c in classes])

    def metrics(self, card: ModelCard) -> MetricCollection:
        n = len(card.labels) or int(card.kwargs.get("num_classes", 0))
        collection = {
            "top1": MulticlassAccuracy(num_classes=n, top_k=1, average="micro"),
            "per_class": MulticlassAccuracy(num_classes=n, top_k=1, average="none"),
            "confusion": MulticlassConfusionMatrix(num_classes=n),
        }
        if n > 5:
            collection["top5"] = MulticlassAccuracy(num_classes=n, top_k=5, average="micro")
        return MetricCollection(collection)

    def summarize(self, computed: dict[str, torch.Tensor], card: ModelCard) -> dict[str, Any]:
        labels = card.labels or tuple(str(i) for i in range(computed["confusion"].shape[0]))
        summary: dict[str, Any] = {"top1": round(100.0 * float(computed["top1"]), 2)}
        if "top5" in computed:
            summary["top5"] = round(100.0 * float(computed["top5"]), 2)
        support = computed["confusion"].sum(1)
        summary["per_class"] = {label: round(100.0 * float(v), 2) for label, v, n in
                                zip(labels, computed["per_class"], support, strict=True) if n > 0}
        summary["confusion"] = computed["confusion"].tolist()
        summary["labels"] = list(labels)
        return summary

    def predict(self, outputs: torch.Tensor, card: ModelCard, topk: int) -> list[list[dict[str, Any]]]:
        probs = outputs.float().softmax(dim=1)
        k = min(topk, probs.shape[1])
        values, indices = probs.topk(k, dim=1)
        labels = card.labels or tuple(str(i) for i in range(probs.shape[1]))
        return [[{"label": labels[i], "index": int(i), "probability": round(float(p), 4)}
                 for p, i in zip(row_p, row_i, strict=True)] for row_p, row_i in zip(values, indices, strict=True)]

    # -- training -----------------------------------------------------------------------------------

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, *, label_smoothing: float = 0.0,
             class_weights: torch.Tensor | None = None) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(outputs.float(), targets, weight=class_weights,
                                                 label_smoothing=label_smoothing)

    def augment(self, images: torch.Tensor, preset: str, generator: torch.Generator) -> torch.Tensor:
        """Augment a whole uint8 batch at once (no per-image Python, except TrivialAugment's one op per image):
        the fine-tuning hot loop."""
        if preset == "none":
            return images
        if preset not in AUGMENT_PRESETS:
            raise ZooError(f"Unknown augmentation preset {preset!r}; use one of: {', '.join(AUGMENT_PRESETS)}.")
        n, _, h, w = images.shape
        pad = max(1, h // 8)  # 4 pixels at 32x32, the CIFAR recipe
        padded = torch.nn.functional.pad(images, (pad, pad, pad, pad), mode="reflect" if images.is_floating_point()
                                         else "constant")
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).to(images.device)
        cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).to(images.device)
        batch_index = torch.arange(n, device=images.device).view(n, 1, 1)
        cropped = padded.permute(0, 2, 3, 1)[batch_index, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)
        flip = (torch.rand(n, generator=generator) < 0.5).to(images.device)
        out = torch.where(flip.view(n, 1, 1, 1), cropped.flip(3), cropped)
        if preset == "crop-flip-trivial-erase":
            out = _trivial_augment(out, generator)
        if preset.endswith("-erase"):  # Cutout: one h/2 square of zeros per image, half of the time
            size = h // 2
            cy = torch.randint(0, h, (n,), generator=generator).to(images.device)
            cx = torch.randint(0, w, (n,), generator=generator).to(images.device)
            ys = torch.arange(h, device=images.device).view(1, h, 1)
            xs = torch.arange(w, device=images.device).view(1, 1, w)
            mask = ((ys - cy.view(n, 1, 1)).abs() <= size // 2) & ((xs - cx.view(n, 1, 1)).abs() <= size // 2)
            mask &= (torch.rand(n, generator=generator) < 0.5).to(images.device).view(n, 1, 1)
            out = out.masked_fill(mask.unsqueeze(1), 0)
        return out.contiguous()


def _trivial_augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """TrivialAugmentWide (Müller & Hutter, 2021): one random op at a random strength per image, torchvision's
    implementation. Its draws come from torch's global generator, so they are seeded from the loop's own
    generator inside fork_rng: a run stays reproducible and resumable, and the caller's global state is untouched.
    About 0.1 ms per 32x32 image in Python: small beside a training step on a CPU, and the one per-image cost."""
    from torchvision.transforms import v2

    augment = v2.TrivialAugmentWide()
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([augment(image) for image in images])
