"""The detector task: COCO / VOC / YOLO data in, boxes in original pixels out, COCO mAP (faster-coco-eval).

Labels are 0..K-1 for the user everywhere (the card's ``labels``); a background slot is the builder's business.
Two kinds of detector models fit: those that return torchvision-style detections (a list of dicts with
``boxes`` in the input's pixels, ``scores``, ``labels``) and those with a raw head output that this module knows
how to decode (``DECODERS``, keyed by the builder's module: FastestDet).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import torch

from zoo._card import ModelCard
from zoo.errors import ZooError
from zoo.runtime.images import decode_image
from zoo.runtime.splits import check_fractions, random_split, random_test_split, seed_for_test_split
from zoo.runtime.tasks import Batch, Exportable, task_config

from .annotations import DetectionDataset, read_detection_dataset
from .fastestdet import decode_fastestdet

__all__ = ["DetectionData", "DetectorEvaluator", "DetectorTask"]

# Raw-output detectors: builder module -> decode(raw, conf, iou, max_det) giving boxes normalised to the input.
DECODERS: dict[str, Callable[..., list[dict[str, torch.Tensor]]]] = {"zoo_detector.fastestdet": decode_fastestdet}

# COCO's convention for mAP: keep nearly every candidate (upstream evaluators use 0.001), at most 100 per image.
EVAL_DEFAULTS = {"conf": 0.001, "iou": 0.45, "max_det": 100}
PREDICT_DEFAULTS = {"conf": 0.25, "iou": 0.45, "max_det": 100}


# The card's own defaults (task_config), checked when the task is made for it: name -> (type, min, max).
CARD_FIELDS = {"conf": (float, 0.0, 1.0), "iou": (float, 0.0, 1.0), "max_det": (int, 1, None)}


def _threshold_options(defaults: dict[str, float]) -> list[click.Option]:
    """Default None: the card's task_config decides, else `defaults` (predict and eval differ in --conf)."""
    return [
        click.Option(
            ["--conf"],
            type=click.FloatRange(0, 1),
            default=None,
            help=f"Keep detections scoring at least this (0..1)  [default: the card's, else {defaults['conf']}]",
        ),
        click.Option(
            ["--iou"],
            type=click.FloatRange(0, 1),
            default=None,
            help=f"Non-maximum suppression IoU threshold (0..1)  [default: the card's, else {defaults['iou']}]",
        ),
        click.Option(
            ["--max-det"],
            type=click.IntRange(min=1),
            default=None,
            help=f"At most this many detections per image  [default: the card's, else {defaults['max_det']}]",
        ),
    ]


class _Stretch:
    """The geometry object zoo.runtime.datasets.decoded applies: the detector's fixed-size stretch."""

    def __init__(self, size: tuple[int, int] | None) -> None:  # None: a variable-size model, left as is
        self.size = size

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        return _resize(image, self.size)

    def __repr__(self) -> str:
        return f"stretch{self.size}"


class DetectionData:
    """A detection dataset decoded for one model: images in the model's geometry, boxes in original pixels.

    The decoded images go through the runtime's decode cache (one memory-mapped file keyed by the data's
    content, the geometry and the images chosen), so a second ``zoo eval`` decodes nothing: one N x C x H x W
    tensor for a fixed-size model, the original sizes with an offsets index for a variable-size one
    (torchvision's detectors).
    """

    def __init__(
        self,
        dataset: DetectionDataset,
        size: tuple[int, int] | None,
        label_map: torch.Tensor,
        indices: list[int],
        skip_bad: bool,
        cache: bool = True,
    ) -> None:
        self.skipped: list[str]
        self.source, self.skipped, self.from_cache = str(dataset.root), [], False
        samples = [dataset.samples[i] for i in indices]
        self.images, kept = self._decode_cached(dataset, samples, size, skip_bad, cache)
        self.meta: list[dict[str, Any]] = []
        self.targets: list[dict[str, torch.Tensor]] = []
        for i in kept:
            sample = samples[i]
            self.meta.append({"image": sample.image, "width": sample.width, "height": sample.height})
            labels = torch.tensor(sample.labels, dtype=torch.int64)
            self.targets.append(
                {
                    "boxes": torch.tensor(sample.boxes, dtype=torch.float32).reshape(-1, 4),
                    "labels": label_map[labels] if len(labels) else labels,
                }
            )

    def _items(self, dataset: DetectionDataset, samples: list) -> Iterator[tuple[str, str, bytes]]:
        for i, sample in enumerate(samples):
            yield str(i), f"{dataset.root}:{sample.image}", dataset.read_bytes(sample)

    def _decode_cached(
        self, dataset: DetectionDataset, samples: list, size: tuple[int, int] | None, skip_bad: bool, cache: bool
    ) -> tuple[Any, list[int]]:
        import hashlib

        from zoo.runtime.datasets import PixelWriter, content_key, decoded, read_pixels

        key = None
        if cache:
            chosen = hashlib.sha256("\n".join(f"{dataset.subdir}/{s.image}" for s in samples).encode()).hexdigest()
            key = content_key(dataset.root, f"detection|{size}|skip={skip_bad}|{chosen}")
            found = read_pixels(key)
            if found is not None:
                images, meta = found
                self.skipped, self.from_cache = meta["skipped"], True
                return images, meta["kept"]
        writer = PixelWriter(key)
        kept: list[int] = []
        try:
            for index, name, image in decoded(self._items(dataset, samples), _Stretch(size), skip_bad):
                if image is None:
                    self.skipped.append(name)
                    continue
                writer.add(image)
                kept.append(int(index))
        except BaseException:
            writer.abort()
            raise
        return writer.publish({"kept": kept, "skipped": self.skipped}, self.source, variable=size is None), kept

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, batch_size: int) -> Iterator[Batch]:
        for begin in range(0, len(self), batch_size):
            yield Batch(
                self.images[begin : begin + batch_size],
                self.targets[begin : begin + batch_size],
                self.meta[begin : begin + batch_size],
            )


def training_split(
    dataset: DetectionDataset, val_split: float, seed: int, test_split: float | None = None
) -> tuple[DetectionDataset, tuple[list[int], list[int], list[int]], str]:
    """The images ``zoo finetune`` trains, validates and tests on, and a description of the validation part.

    The dataset's own splits decide first: with a 'val' split, train on 'train' (or everything else) and
    validate on 'val'; without one, validate on a seeded random `val_split` of the 'train' split (or of all
    images when the dataset has no splits). A 'test' split is never touched: it is for ``zoo eval --split test``,
    and a dataset that has one refuses `test_split` (a second test part would only compete with it). With
    `test_split`, a seeded random part of the images left for training is held out as well, drawn after the
    validation part so that it stays the same images (zoo.runtime.splits). ``zoo eval --val-split F --seed S``
    calls this too, so it measures exactly the images the card's figure came from. Returns (the dataset the
    indices refer to, (train, validation, test indices; the last empty without `test_split`), description).
    """
    own = {s.split for s in dataset.samples}  # real splits only: coco128's 'val' merely repeats 'train'
    if test_split is not None and "test" in own:
        raise ZooError(
            f"{dataset.root} has its own 'test' split: measure on it with 'zoo eval --split test' instead of "
            "holding out another with --test-split."
        )
    if "val" in own:
        train = [i for i, s in enumerate(dataset.samples) if s.split not in ("val", "test")]
        val = [i for i, s in enumerate(dataset.samples) if s.split == "val"]
        train, test = _test_part(train, test_split, seed)
        return dataset, (train, val, test), f"the dataset's own 'val' split ({len(val)} images)"
    pool = dataset.select("train") if "train" in own else dataset
    if "test" in own and "train" not in own:
        pool = replace(dataset, samples=[s for s in dataset.samples if s.split != "test"])
    if test_split is None:
        train_idx, val_idx = random_split(len(pool.samples), val_split, seed)
        test_idx = val_idx[:0]
    else:
        train_idx, val_idx, test_idx = random_test_split(len(pool.samples), val_split, test_split, seed)
    whence = (
        "of its 'train' split"
        if "train" in own
        else "of its images, its 'test' split left out"
        if "test" in own
        else "of its images"
    )
    return (
        pool,
        (train_idx.tolist(), val_idx.tolist(), test_idx.tolist()),
        f"{len(val_idx)} images held out at random {whence} by --val-split {val_split} (seed {seed})",
    )


def _test_part(train: list[int], test_split: float | None, seed: int) -> tuple[list[int], list[int]]:
    """(train, test): a seeded random `test_split` of the training images of a dataset whose own 'val' split
    validates (the same generator as zoo.runtime.splits' test parts); no test part without `test_split`."""
    if test_split is None:
        return train, []
    check_fractions(0.0, test_split)
    k = max(1, round(len(train) * test_split))
    if len(train) - k < 1:
        raise ZooError(f"{len(train)} training images are too few for --test-split {test_split}.")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed_for_test_split(seed)))
    return sorted(train[i] for i in order[k:].tolist()), sorted(train[i] for i in order[:k].tolist())


def _resize(image: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Stretch to the model's fixed input (no letterbox: boxes normalised to the input are normalised to the
    image), bilinear without antialiasing as cv2.INTER_LINEAR, which FastestDet was trained with."""
    if size is None or tuple(image.shape[-2:]) == size:
        return image
    from torchvision.transforms.v2 import functional as F

    return F.resize(image, list(size), interpolation=F.InterpolationMode.BILINEAR, antialias=False)


AUGMENT_PRESETS = ("none", "flip", "ssd")


def _augmentation(preset: str) -> Any:
    """torchvision.transforms.v2 pipelines that move the boxes with the pixels (tv_tensors.BoundingBoxes).

    ``ssd`` is torchvision's detection reference recipe for SSD (random photometric distortion, zoom out, IoU
    crop, flip): the strong augmentation small datasets need; ``flip`` only mirrors; the result is always resized
    by the task afterwards and boxes that left the image are dropped (SanitizeBoundingBoxes)."""
    from torchvision.transforms import v2

    if preset == "none":
        return None
    steps = [v2.RandomHorizontalFlip(0.5)]
    if preset == "ssd":
        steps = [
            v2.RandomPhotometricDistort(p=0.5),
            v2.RandomZoomOut(fill=114, side_range=(1.0, 2.0), p=0.5),
            v2.RandomIoUCrop(),
            *steps,
        ]
    return v2.Compose([*steps, v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes()])


class DetectionTrainData:
    """Decoded training images (original sizes, kept in memory) with their boxes, augmented per image on every
    draw, and the validation part as DetectionData (the task's TrainData)."""

    def __init__(self, task: DetectorTask, source: str | Path, config: Any) -> None:
        if config.augment not in AUGMENT_PRESETS:
            raise ZooError(
                f"Unknown augmentation preset {config.augment!r} for detectors; use one of: "
                f"{', '.join(AUGMENT_PRESETS)}."
            )
        if config.balance != "none":
            raise ZooError(f"--balance {config.balance} is for classifiers; detectors train with --balance none.")
        dataset, (train, val, test), self.validation = training_split(
            read_detection_dataset(source), config.val_split, config.seed, config.test_split
        )
        if not train:
            raise ZooError(f"{source}: no training images left after --val-split {config.val_split}.")
        self.task, self.dataset, self.classes = task, dataset, dataset.classes
        self.val_indices, self.test_indices = val, test
        own_val = any(s.split == "val" for s in dataset.samples)  # training_split validates on it when present
        self.eval_args = "--split val" if own_val else f"--val-split {config.val_split} --seed {config.seed}"
        self.testing = (
            f"{len(test)} images held out at random by --test-split {config.test_split} (seed {config.seed}), "
            "after the validation split"
        )
        self.test_eval_args = f"--val-split {config.val_split} --test-split {config.test_split} --seed {config.seed}"
        self.transform = _augmentation(config.augment)
        self.images, self.targets = [], []
        for i in train:
            sample = dataset.samples[i]
            self.images.append(decode_image(dataset.read_bytes(sample), name=f"{dataset.root}:{sample.image}"))
            self.targets.append(
                (
                    torch.tensor(sample.boxes, dtype=torch.float32).reshape(-1, 4),
                    torch.tensor(sample.labels, dtype=torch.int64),
                )
            )

    def __len__(self) -> int:
        return len(self.images)

    def sample_weights(self, config: Any) -> None:
        return None

    def train_batch(self, indices: torch.Tensor, generator: torch.Generator, config: Any) -> Batch:
        from torchvision import tv_tensors

        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        images, targets, meta = [], [], []
        with torch.random.fork_rng(devices=[]):  # v2 draws from the global generator: seed it from the loop's
            torch.manual_seed(seed)
            for i in indices.tolist():
                image, (boxes, labels) = self.images[i], self.targets[i]
                height, width = image.shape[-2:]
                if self.transform is not None:
                    image, target = self.transform(
                        image,
                        {
                            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
                            "labels": labels,
                        },
                    )
                    boxes, labels = target["boxes"].as_subclass(torch.Tensor), target["labels"]
                    height, width = image.shape[-2:]
                resized = _resize(image, self.task.size)
                images.append(resized)
                targets.append({"boxes": boxes.float(), "labels": labels})
                meta.append({"width": int(width), "height": int(height)})
        stacked = torch.stack(images) if self.task.size is not None else images
        return Batch(stacked, targets, meta)

    def val_data(self) -> DetectionData | None:
        if not self.val_indices:
            return None
        identity = torch.arange(len(self.classes), dtype=torch.int64)
        return DetectionData(self.dataset, self.task.size, identity, self.val_indices, skip_bad=False)

    def test_data(self) -> DetectionData | None:
        if not self.test_indices:
            return None
        identity = torch.arange(len(self.classes), dtype=torch.int64)
        return DetectionData(self.dataset, self.task.size, identity, self.test_indices, skip_bad=False)


class DetectorEvaluator:
    """COCO box mAP@[.5:.95], mAP50, mAP75, AR@100 and per-class AP, computed by faster-coco-eval (pycocotools'
    algorithm in C++) through the same steps as pycocotools' own recipe: a ground-truth COCO, ``loadRes`` of the
    detections (xywh, float32), ``COCOeval(..., "bbox")``. torchmetrics' MeanAveragePrecision builds its COCO
    objects another way and measured 0.05 points of mAP off pycocotools on the same detections, so it is not used.
    Under torchrun every rank's detections are gathered before computing (rank-local image ids are made unique).
    """

    def __init__(self, labels: tuple[str, ...]) -> None:
        self.labels = labels
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.results: list[dict[str, Any]] = []

    def update(self, outputs: list[dict[str, torch.Tensor]], batch: Batch) -> None:
        from torchvision.ops import box_area, box_convert

        for det, target, meta in zip(outputs, batch.targets, batch.meta, strict=True):
            image_id = len(self.images) + 1
            self.images.append({"id": image_id, "width": meta["width"], "height": meta["height"]})
            boxes = target["boxes"].float().cpu()
            for box, area, label in zip(
                box_convert(boxes, "xyxy", "xywh").tolist(),
                box_area(boxes).tolist(),
                target["labels"].tolist(),
                strict=True,
            ):
                self.annotations.append(
                    {
                        "id": len(self.annotations) + 1,
                        "image_id": image_id,
                        "category_id": label,
                        "bbox": box,
                        "area": area,
                        "iscrowd": 0,
                    }
                )
            for box, score, label in zip(
                box_convert(det["boxes"].float().cpu(), "xyxy", "xywh").tolist(),
                det["scores"].float().tolist(),
                det["labels"].tolist(),
                strict=True,
            ):
                self.results.append({"image_id": image_id, "category_id": label, "bbox": box, "score": score})

    def _gathered(self) -> tuple[list, list, list]:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self.images, self.annotations, self.results
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, (self.images, self.annotations, self.results))
        images: list[dict[str, Any]]
        annotations: list[dict[str, Any]]
        images, annotations, results = [], [], []
        for rank_images, rank_annotations, rank_results in parts:
            offset = {im["id"]: len(images) + i + 1 for i, im in enumerate(rank_images)}
            images += [{**im, "id": offset[im["id"]]} for im in rank_images]
            annotations += [
                {**a, "id": len(annotations) + i + 1, "image_id": offset[a["image_id"]]}
                for i, a in enumerate(rank_annotations)
            ]
            results += [{**r, "image_id": offset[r["image_id"]]} for r in rank_results]
        return images, annotations, results

    def compute(self) -> dict[str, Any]:
        import logging

        import numpy as np
        from faster_coco_eval import COCO, COCOeval_faster

        images, annotations, results = self._gathered()
        summary: dict[str, Any] = {
            "map": 0.0,
            "map50": 0.0,
            "map75": 0.0,
            "ar100": 0.0,
            "per_class": {},
            "images": len(images),
            "boxes": len(annotations),
        }
        if not annotations:
            return summary
        logging.getLogger("faster_coco_eval").setLevel(logging.ERROR)
        ground_truth = COCO()
        ground_truth.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": i, "name": name} for i, name in enumerate(self.labels)],
        }
        ground_truth.createIndex()
        evaluation = COCOeval_faster(
            ground_truth,
            ground_truth.loadRes(results) if results else COCO(),
            "bbox",
            print_function=lambda *args: None,
        )
        if not results:
            return summary
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
        stats = [float(v) for v in evaluation.stats]

        def pct(value: float) -> float:
            return round(100.0 * max(value, 0.0), 2)

        summary.update(
            map=pct(stats[0]),
            map50=pct(stats[1]),
            map75=pct(stats[2]),
            ar100=pct(stats[8]),
            map_small=pct(stats[3]),
            map_medium=pct(stats[4]),
            map_large=pct(stats[5]),
        )
        precision = np.asarray(evaluation.eval["precision"])  # T x R x K x A x M; area "all" = 0, maxDets 100 = -1
        present = {a["category_id"] for a in annotations}
        # the precision-recall curves at IoU 0.5 and 0.75, averaged over the classes with boxes (101 recall points)
        curves = {}
        for name, t in (("iou50", 0), ("iou75", 5)):
            values = precision[t, :, :, 0, -1]
            valid = values > -1
            curves[name] = [
                round(float(v), 4)
                for v in np.where(valid.any(1), np.where(valid, values, 0).sum(1) / np.maximum(valid.sum(1), 1), 0)
            ]
        summary["pr_curve"] = {
            "recall": [round(r, 2) for r in np.linspace(0, 1, precision.shape[1]).tolist()],
            **curves,
        }
        for k, category in enumerate(evaluation.params.catIds):
            values = precision[:, :, k, 0, -1]
            if category in present:
                summary["per_class"][self.labels[category]] = pct(float(values[values > -1].mean()))
        return summary


class DetectorTask:
    """Task behaviour for object detectors (the contract: zoo.runtime.tasks.Task)."""

    verbs = frozenset({"predict", "eval", "finetune"})
    headline = ("map", True)
    tolerance = 0.5  # points of mAP: bf16 vs fp32 moves it by about 0.1

    def __init__(self, card: ModelCard) -> None:
        self.card = card
        if not card.labels:
            raise ZooError(f"Detector card {card.name!r} names no labels; a detector card lists its classes.")
        shape = card.input_shape
        self.size: tuple[int, int] | None = (int(shape[1]), int(shape[2])) if len(shape) == 3 else None
        self.decode = DECODERS.get(card.builder.split(":")[0])
        # eval keeps COCO's conf 0.001 whatever the card says: mAP integrates over every score
        configured = task_config(card, CARD_FIELDS)
        self.thresholds = {
            "predict": {**PREDICT_DEFAULTS, **configured},
            "eval": {**EVAL_DEFAULTS, **{k: v for k, v in configured.items() if k != "conf"}},
        }

    @classmethod
    def options(cls, verb: str) -> list[click.Option]:
        if verb in ("predict", "eval"):
            return _threshold_options(PREDICT_DEFAULTS if verb == "predict" else EVAL_DEFAULTS)
        return []

    # -- data ---------------------------------------------------------------------------------------
    def eval_data(
        self,
        source: str | Path,
        *,
        split: str | None = None,
        val_split: float | None = None,
        seed: int = 0,
        cache: bool = True,
        skip_bad: bool = False,
        test_split: float | None = None,
    ) -> DetectionData:
        """The dataset, its own `split`, or the part ``zoo finetune`` held out with the same fractions and seed:
        the validation part with `val_split`, the test part with `test_split` too."""
        dataset = read_detection_dataset(source)
        if split is not None:
            dataset = dataset.select(split)
        index = {label: i for i, label in enumerate(self.card.labels)}
        missing = [c for c in dataset.classes if c not in index]
        if missing:
            raise ZooError(
                f"{source}: classes {missing[:5]} are not labels of model {self.card.name!r} "
                f"({', '.join(self.card.labels[:8])}{'...' if len(self.card.labels) > 8 else ''}). "
                f"Fine-tune it on this data: zoo finetune {self.card.name} --data {source} --out NAME."
            )
        label_map = torch.tensor([index[c] for c in dataset.classes], dtype=torch.int64)
        indices = list(range(len(dataset.samples)))
        if test_split is not None:
            if val_split is None:  # the runtime checks this first; an API caller may not go through it
                raise ZooError("--test-split needs the run's --val-split too (0 for a run that held none out).")
            dataset, (_, _, indices), _ = training_split(dataset, val_split, seed, test_split)
        elif val_split is not None:
            dataset, (_, indices, _), _ = training_split(dataset, val_split, seed)
        return DetectionData(dataset, self.size, label_map, indices, skip_bad, cache)

    def predict_batch(self, images: list[torch.Tensor], names: list[str]) -> Batch:
        resized = [_resize(image, self.size) for image in images]
        meta = [
            {"image": n, "width": int(im.shape[-1]), "height": int(im.shape[-2])}
            for n, im in zip(names, images, strict=True)
        ]
        return Batch(torch.stack(resized) if self.size is not None else resized, meta=meta, extras={"verb": "predict"})

    # -- around the forward pass ----------------------------------------------------------------------
    def prepare(self, images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        pre = self.card.preprocess
        if isinstance(images, list):  # variable sizes: the model normalises itself (torchvision detectors)
            return [image.float() / 255.0 for image in images]
        x = images.float() / 255.0
        if pre is not None and (any(pre.mean) or any(s != 1 for s in pre.std)):
            mean = torch.tensor(pre.mean, device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(pre.std, device=x.device).view(1, -1, 1, 1)
            x = (x - mean) / std
        return x

    def postprocess(
        self,
        raw: Any,
        batch: Batch,
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        **options: Any,
    ) -> list[dict[str, torch.Tensor]]:
        """Detections per image with boxes in the original image's pixels. Thresholds left None come from the
        card's task_config, else the verb's defaults (the batch says whether it is predicting or evaluating)."""
        defaults = self.thresholds[batch.extras.get("verb", "eval")]
        conf = defaults["conf"] if conf is None else conf
        iou = defaults["iou"] if iou is None else iou
        max_det = defaults["max_det"] if max_det is None else max_det
        if self.decode is not None:
            detections = self.decode(raw.float(), conf=conf, iou=iou, max_det=max_det)
            for det, meta in zip(detections, batch.meta, strict=True):
                scale = torch.tensor([meta["width"], meta["height"]] * 2, device=det["boxes"].device)
                det["boxes"] = det["boxes"].float() * scale
            return detections
        out = []
        for det, meta, image in zip(raw, batch.meta, batch.images, strict=True):
            boxes = det["boxes"].float()
            if self.size is not None:  # the model saw a resized image: back to the original's pixels
                sx, sy = meta["width"] / image.shape[-1], meta["height"] / image.shape[-2]
                boxes = boxes * torch.tensor([sx, sy, sx, sy], device=boxes.device)
            keep = det["scores"] >= conf
            order = det["scores"][keep].argsort(descending=True)[:max_det]
            out.append(
                {
                    "boxes": boxes[keep][order],
                    "scores": det["scores"][keep][order].float(),
                    "labels": det["labels"][keep][order],
                }
            )
        return out

    def export_module(self, model: torch.nn.Module) -> Exportable:
        """The network up to its raw head output; the decoding, thresholds and NMS stay in Python (``leaves_out``
        says so). torchvision's detectors are refused: their post-processing is data-dependent code inside the
        network, not a separable raw head."""
        if self.decode is None:
            raise ZooError(
                f"Model {self.card.name!r} returns finished detections (its boxes, thresholds and NMS "
                "are data-dependent code inside the network); 'zoo export' writes raw-head detectors "
                "(FastestDet) only."
            )
        pre = self.card.preprocess
        scale = (
            "x / 255"
            if pre is None or not (any(pre.mean) or any(s != 1 for s in pre.std))
            else f"x / 255 then (x - mean) / std with mean {list(pre.mean)}, std {list(pre.std)}"
        )
        size = "x".join(map(str, self.size)) if self.size else "its own size"
        thresholds = self.thresholds["predict"]
        return Exportable(
            model,
            outputs=("raw",),
            input=f"RGB, the whole image stretched to {size} (bilinear, no antialiasing, no letterbox), {scale}",
            leaves_out=f"decoding the raw head output into scored boxes normalised to the input "
            f"({self.decode.__module__}.{self.decode.__name__}), the confidence threshold "
            f"(conf {thresholds['conf']:g}), per-class NMS (IoU {thresholds['iou']:g}), "
            f"max_det {thresholds['max_det']} and scaling boxes to the image's pixels",
        )

    # -- training -----------------------------------------------------------------------------------
    augment_presets = AUGMENT_PRESETS
    # Small batches and strong augmentation: detection fine-tuning sets are small (raccoon: 160 images); the
    # classifier's SGD rate is five times what detectors are trained with (FastestDet: 0.001 per 96 images).
    recipe_defaults = {"batch_size": 16, "augment": "ssd"}
    base_lr = {"sgd": 0.01, "adamw": 1e-3}  # per 128 images

    def train_data(self, source: str | Path, *, config: Any) -> DetectionTrainData:
        return DetectionTrainData(self, source, config)

    def model_overrides(self, classes: tuple[str, ...]) -> dict[str, Any]:
        """A new class head when the data's classes are not the card's labels (matched by name, in order)."""
        return {} if tuple(self.card.labels) == tuple(classes) else {"num_classes": len(classes)}

    def training_step(self, model: torch.nn.Module, x: Any, batch: Batch, config: Any) -> dict[str, Any]:
        """The detector's own loss: FastestDet's (boxes normalised to the input), or the dict of losses a
        torchvision detector returns in training mode (boxes in the input's pixels)."""
        if self.decode is not None:
            from .fastestdet import fastestdet_loss

            targets = []
            for target, meta in zip(batch.targets, batch.meta, strict=True):
                scale = torch.tensor([meta["width"], meta["height"]] * 2, dtype=torch.float32)
                targets.append(
                    {"boxes": (target["boxes"] / scale).to(x.device), "labels": target["labels"].to(x.device)}
                )
            return {"loss": fastestdet_loss(model(x).float(), targets)["loss"]}
        targets = []
        for target, meta, image in zip(batch.targets, batch.meta, x, strict=True):
            boxes = target["boxes"]
            if self.size is not None:
                sx, sy = image.shape[-1] / meta["width"], image.shape[-2] / meta["height"]
                boxes = boxes * torch.tensor([sx, sy, sx, sy])
            targets.append({"boxes": boxes.to(image.device), "labels": target["labels"].to(image.device)})
        losses = model(x, targets)
        return {"loss": sum(losses.values())}

    def train_metrics(self, sums: dict[str, float], seen: int) -> dict[str, float]:
        return {}

    # -- results --------------------------------------------------------------------------------------
    def evaluator(self, **options: Any) -> DetectorEvaluator:
        return DetectorEvaluator(self.card.labels)

    def records(self, outputs: list[dict[str, torch.Tensor]], batch: Batch, **options: Any) -> list[dict[str, Any]]:
        """Per image: detections with the label name, and the box both as xyxy pixels and as COCO's
        [x, y, width, height] (``bbox``, what COCO results files hold)."""
        records = []
        for det, meta in zip(outputs, batch.meta, strict=True):
            items = []
            for box, score, label in zip(
                det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist(), strict=True
            ):
                x1, y1, x2, y2 = (round(v, 2) for v in box)
                items.append(
                    {
                        "label": self.card.labels[label],
                        "index": int(label),
                        "score": round(score, 4),
                        "box": [x1, y1, x2, y2],
                        "bbox": [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)],
                    }
                )
            records.append({"width": meta["width"], "height": meta["height"], "detections": items})
        return records

    def render_prediction(self, record: dict[str, Any]) -> str:
        detections = record["detections"]
        if not detections:
            return "no objects"
        shown = ", ".join(f"{d['label']} {d['score']:.2f}" for d in detections[:8])
        more = f", ... ({len(detections) - 8} more)" if len(detections) > 8 else ""
        return f"{len(detections)} object{'s' if len(detections) != 1 else ''}: {shown}{more}"

    def save_prediction(self, record: dict[str, Any], image: torch.Tensor, directory: Path) -> list[Path]:
        """The image with its boxes drawn (torchvision.utils.draw_bounding_boxes), as ``<stem>.png``."""
        import os

        from torchvision.io import write_png
        from torchvision.utils import draw_bounding_boxes

        detections = record["detections"]
        if detections:
            boxes = torch.tensor([d["box"] for d in detections], dtype=torch.float32)
            names = [f"{d['label']} {d['score']:.2f}" for d in detections]
            palette = _palette(len(self.card.labels))
            colors = [palette[d["index"]] for d in detections]
            width = max(1, round(max(image.shape[-2:]) / 320))
            image = draw_bounding_boxes(image, boxes, labels=names, colors=colors, width=width)
        path = directory / f"{Path(record['image']).stem}.png"
        tmp = path.with_name(path.name + ".partial")
        write_png(image, str(tmp))
        os.replace(tmp, path)
        return [path]

    def render_eval(self, summary: dict[str, Any]) -> list[str]:
        head = (
            f"mAP {summary['map']:.2f}  mAP50 {summary['map50']:.2f}  mAP75 {summary['map75']:.2f}  "
            f"AR100 {summary['ar100']:.2f}"
        )
        lines = [head]
        worst = sorted(summary["per_class"].items(), key=lambda kv: kv[1])[:3]
        if len(summary["per_class"]) > 1 and worst:
            lines.append("lowest per-class AP: " + ", ".join(f"{k} {v:.1f}" for k, v in worst))
        classes = len(summary["per_class"])
        lines.append(
            f"{summary['boxes']} boxes in {summary['images']} images, {classes} "
            f"class{'es' if classes != 1 else ''} with boxes"
        )
        return lines

    def write_report(self, record: dict[str, Any], directory: Path) -> list[Path]:
        from .report import per_class_ap_png, pr_curve_png

        png = directory / "per_class_ap.png"
        metrics = record["metrics"]
        title = (
            f"{record['model']} on {Path(record['data']).name}: mAP {metrics['map']:.2f}, mAP50 {metrics['map50']:.2f}"
        )
        per_class_ap_png(metrics["per_class"], png, title=title)
        (directory / "per_class_ap.json").write_text(json.dumps(metrics["per_class"], indent=2))
        written = [png, directory / "per_class_ap.json"]
        if "pr_curve" in metrics:
            pr_curve_png(metrics["pr_curve"], directory / "pr_curve.png", title=title)
            written.append(directory / "pr_curve.png")
        return written


def _palette(n: int) -> list[tuple[int, int, int]]:
    """Distinct, stable colours per class (golden-ratio hues)."""
    import colorsys

    return [
        tuple(int(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.85, 0.95))  # type: ignore[misc]
        for i in range(n)
    ]  # hsv_to_rgb gives 3 values
