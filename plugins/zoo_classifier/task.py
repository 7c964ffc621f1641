"""The classifier task: uint8 batches in, logits out, top-k accuracy, per-class accuracy, confusion matrix."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from zoo._card import ModelCard
from zoo.errors import ZooError
from zoo.runtime.datasets import Geometry

__all__ = ["ClassifierTask"]


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
