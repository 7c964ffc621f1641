"""torchvision's COCO detectors under zoo's label convention: labels 0..K-1, no background, no gaps.

torchvision's COCO detectors have 91 class slots: slot 0 is the background and slots 1..90 are COCO's sparse
category ids, with "N/A" at the ten ids COCO never used. zoo exposes labels 0..K-1 in the order of the card's
``labels``. The builder keeps torchvision's slot layout inside the model, so torchvision's checkpoints load as
plain state dicts (no key or shape rewriting), and translates at the model's edge:

* ``num_classes=80`` (the COCO cards): 91 slots; zoo label ``j`` is the ``j``-th real COCO category, in slot
  ``coco_layout()[0][j]`` (1 for person, ..., 90 for toothbrush).
* any other ``K`` (a new head, e.g. ``zoo.load(name, num_classes=5)``): ``K + 1`` slots, slot 0 the background
  (never a target, never reported), zoo label ``j`` in slot ``j + 1``.

In eval mode the detections' ``labels`` come back as zoo labels; detections in a slot that is no class (the
background or an "N/A" id, which an untrained or re-shaped head can still score) are dropped. In training mode
the targets' ``labels`` are zoo labels and are mapped into slots before torchvision computes its losses.

Built with ``weights=None, weights_backbone=None`` (zoo loads the card's weights itself), then given the layout
torchvision uses for its COCO weights: ``FrozenBatchNorm2d`` where torchvision freezes the backbone's statistics,
and the backbone's first layers frozen (``trainable_backbone_layers``, 3 by default). In eval mode this changes
nothing (a frozen BatchNorm with the same statistics computes the same thing); it matters for fine-tuning, and
it makes the parameter count the one torchvision publishes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import torch
from torch import nn
from torchvision.models import detection
from torchvision.models.detection.faster_rcnn import FasterRCNN
from torchvision.models.detection.fcos import FCOS
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.models.detection.ssd import SSD
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = ["ARCHS", "build", "coco_layout"]

COCO_CLASSES: Final = 80


@dataclass(frozen=True)
class Arch:
    """What the builder needs to know about one torchvision detector function."""

    weights: str  # the name of its Weights enum in torchvision.models.detection
    head: str  # the submodule whose shape depends on the number of classes (the card's `head`)
    frozen_bn: bool  # torchvision builds the backbone with FrozenBatchNorm2d for its COCO weights
    backbone: str  # "resnet", "mobilenet" or "vgg": how its trainable layers are counted
    trainable_layers: int | None  # torchvision's default with weights; None: its from-scratch build is the same
    # torchvision's first COCO weights were trained with FrozenBatchNorm2d's old eps of 0: its builder sets it back
    # (overwrite_eps) when it loads them, and so does ours
    frozen_eps: float | None = None


ARCHS: Final = {
    "fasterrcnn_resnet50_fpn": Arch(
        "FasterRCNN_ResNet50_FPN_Weights",
        "roi_heads.box_predictor",
        frozen_bn=True,
        backbone="resnet",
        trainable_layers=3,
        frozen_eps=0.0,
    ),
    "fasterrcnn_resnet50_fpn_v2": Arch(
        "FasterRCNN_ResNet50_FPN_V2_Weights",
        "roi_heads.box_predictor",
        frozen_bn=False,
        backbone="resnet",
        trainable_layers=3,
    ),
    "fasterrcnn_mobilenet_v3_large_320_fpn": Arch(
        "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights",
        "roi_heads.box_predictor",
        frozen_bn=True,
        backbone="mobilenet",
        trainable_layers=3,
    ),
    "fasterrcnn_mobilenet_v3_large_fpn": Arch(
        "FasterRCNN_MobileNet_V3_Large_FPN_Weights",
        "roi_heads.box_predictor",
        frozen_bn=True,
        backbone="mobilenet",
        trainable_layers=3,
    ),
    "retinanet_resnet50_fpn": Arch(
        "RetinaNet_ResNet50_FPN_Weights",
        "head.classification_head.cls_logits",
        frozen_bn=True,
        backbone="resnet",
        trainable_layers=3,
        frozen_eps=0.0,
    ),
    "retinanet_resnet50_fpn_v2": Arch(
        "RetinaNet_ResNet50_FPN_V2_Weights",
        "head.classification_head.cls_logits",
        frozen_bn=False,
        backbone="resnet",
        trainable_layers=3,
    ),
    "fcos_resnet50_fpn": Arch(
        "FCOS_ResNet50_FPN_Weights",
        "head.classification_head.cls_logits",
        frozen_bn=True,
        backbone="resnet",
        trainable_layers=3,
    ),
    # SSD300's VGG16 keeps its BatchNorm-free layers; torchvision freezes the first of its 5 stages for its weights.
    "ssd300_vgg16": Arch(
        "SSD300_VGG16_Weights",
        "head.classification_head",
        frozen_bn=False,
        backbone="vgg",
        trainable_layers=4,
    ),
    # SSDlite's classification head is one conv stack per feature map: the whole stack is the head. torchvision
    # trains all 6 backbone stages with or without weights, so its from-scratch build is the pretrained layout.
    "ssdlite320_mobilenet_v3_large": Arch(
        "SSDLite320_MobileNet_V3_Large_Weights",
        "head.classification_head",
        frozen_bn=False,
        backbone="mobilenet",
        trainable_layers=None,
    ),
}

_NOT_CLASSES: Final = ("__background__", "N/A")


def coco_layout(categories: Sequence[str] | None = None) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """COCO's 80 real categories: (their torchvision slots, their names), in slot order.

    Args:
        categories: torchvision's 91 slot names (``Weights.meta["categories"]``); default: those of
            ``FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1``, which every COCO detector of torchvision shares.
    """
    if categories is None:
        categories = detection.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1.meta["categories"]
    slots = tuple(i for i, name in enumerate(categories) if name not in _NOT_CLASSES)
    return slots, tuple(categories[i] for i in slots)


class _ZooLabels:
    """Mixin over a torchvision detector: zoo labels 0..K-1 outside, torchvision's class slots inside."""

    zoo_slots: tuple[int, ...]  # zoo label j lives in slot zoo_slots[j]
    zoo_num_slots: int  # the head's width, background and gaps included

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        if targets is not None:
            targets = [{**t, "labels": self._to_slots(t["labels"])} for t in targets]
        out = super().forward(images, targets)  # type: ignore[misc]
        if isinstance(out, dict):  # training mode: the losses
            return out
        return [self._from_slots(d) for d in out]

    def _to_slots(self, labels: torch.Tensor) -> torch.Tensor:
        k = len(self.zoo_slots)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
            raise ValueError(
                f"Target labels must be zoo labels 0..{k - 1} (this model has {k} classes); got "
                f"{int(labels.min())}..{int(labels.max())}."
            )
        return torch.as_tensor(self.zoo_slots, device=labels.device)[labels.long()]

    def _from_slots(self, detections: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        labels = detections["labels"]
        lookup = torch.full((self.zoo_num_slots,), -1, dtype=torch.int64, device=labels.device)
        lookup[torch.as_tensor(self.zoo_slots, device=labels.device)] = torch.arange(
            len(self.zoo_slots), device=labels.device
        )
        mapped = lookup[labels]
        keep = mapped >= 0
        n = labels.shape[0]
        out = {
            key: value[keep] if isinstance(value, torch.Tensor) and value.shape[:1] == (n,) else value
            for key, value in detections.items()
        }
        out["labels"] = mapped[keep]
        return out


# Importable classes (not made on the fly), so a built model can be pickled and deep-copied like torchvision's.
class ZooFasterRCNN(_ZooLabels, FasterRCNN):
    """torchvision's FasterRCNN with zoo labels 0..K-1 (see the module docstring)."""


class ZooRetinaNet(_ZooLabels, RetinaNet):
    """torchvision's RetinaNet with zoo labels 0..K-1 (see the module docstring)."""


class ZooFCOS(_ZooLabels, FCOS):
    """torchvision's FCOS with zoo labels 0..K-1 (see the module docstring)."""


class ZooSSD(_ZooLabels, SSD):
    """torchvision's SSD with zoo labels 0..K-1 (see the module docstring)."""


_ZOO_CLASSES: Final = {FasterRCNN: ZooFasterRCNN, RetinaNet: ZooRetinaNet, FCOS: ZooFCOS, SSD: ZooSSD}


def _freeze_batchnorm(module: nn.Module, eps: float | None = None) -> None:
    """Replace every BatchNorm2d under `module` by a FrozenBatchNorm2d with the same statistics (in place), with
    its eps or `eps` (torchvision's legacy weights need 0)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps if eps is None else eps)
            with torch.no_grad():
                for key in ("weight", "bias", "running_mean", "running_var"):
                    getattr(frozen, key).copy_(getattr(child, key))
            setattr(module, name, frozen)
        else:
            _freeze_batchnorm(child, eps)


def _freeze_layers(body: nn.Module, backbone: str, trainable: int) -> None:
    """Stop gradients to the backbone's first layers, as torchvision's detection builders do.

    The same rules as torchvision's ``_resnet_fpn_extractor`` (layers named from layer4 down to conv1),
    ``_mobilenet_extractor`` (stages cut at the blocks marked ``_is_cn``) and SSD's ``_vgg_extractor`` (stages cut
    at the max-pools); `body` is ``model.backbone.body``, or ``model.backbone`` for SSD's VGG.
    """
    if backbone == "vgg":
        # VGG16's layers up to conv4_3 are `features`; conv5 leads the first `extra` block, before fc6/fc7
        layers = [*body.get_submodule("features").children(), *list(body.get_submodule("extra.0").children())[:-1]]
        stages = [0] + [i for i, layer in enumerate(layers) if isinstance(layer, nn.MaxPool2d)]
        if not 0 <= trainable <= len(stages):
            raise ValueError(f"trainable_backbone_layers must be 0..{len(stages)} for a VGG backbone, got {trainable}.")
        for layer in layers[: len(layers) if trainable == 0 else stages[len(stages) - trainable]]:
            for parameter in layer.parameters():
                parameter.requires_grad_(False)
        return
    if backbone == "resnet":
        if not 0 <= trainable <= 5:
            raise ValueError(f"trainable_backbone_layers must be 0..5 for a ResNet backbone, got {trainable}.")
        train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable] + (["bn1"] if trainable == 5 else [])
        for name, parameter in body.named_parameters():
            if not any(name.startswith(layer) for layer in train):
                parameter.requires_grad_(False)
        return
    blocks = list(body.children())
    stages = [0] + [i for i, b in enumerate(blocks) if getattr(b, "_is_cn", False)] + [len(blocks) - 1]
    if not 0 <= trainable <= len(stages):
        raise ValueError(f"trainable_backbone_layers must be 0..{len(stages)} for this backbone, got {trainable}.")
    freeze_before = len(blocks) if trainable == 0 else stages[len(stages) - trainable]
    for block in blocks[:freeze_before]:
        for parameter in block.parameters():
            parameter.requires_grad_(False)


def build(
    *,
    arch: str,
    num_classes: int = COCO_CLASSES,
    pretrained_layout: bool = True,
    trainable_backbone_layers: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """A torchvision COCO detector whose labels are 0..num_classes-1, without any weights.

    Args:
        arch: the torchvision function, e.g. ``fasterrcnn_mobilenet_v3_large_320_fpn`` (see ``ARCHS``).
        num_classes: 80 keeps torchvision's 91-slot COCO head (so its weights load); any other number builds a
            head with ``num_classes + 1`` slots, slot 0 the hidden background.
        pretrained_layout: torchvision's layout for its COCO weights (FrozenBatchNorm2d where it uses it, first
            backbone layers frozen); False gives its from-scratch layout (BatchNorm2d, everything trainable).
        trainable_backbone_layers: how many backbone layers train (default: torchvision's, 3 or all).
        **kwargs: passed on to torchvision's function, e.g. ``min_size``, ``max_size``, ``box_score_thresh``.
    """
    if arch not in ARCHS:
        raise ValueError(f"Unknown torchvision detector {arch!r}; zoo builds {', '.join(sorted(ARCHS))}.")
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}.")
    for key in ("weights", "weights_backbone"):
        if key in kwargs:
            raise ValueError(
                f"{key!r} is not a builder argument here: zoo loads the card's weights itself "
                "(zoo.load(name) for pretrained, zoo.load(name, pretrained=False) for none)."
            )
    spec = ARCHS[arch]
    if num_classes == COCO_CLASSES:
        slots, _ = coco_layout(getattr(detection, spec.weights).COCO_V1.meta["categories"])
        num_slots = len(getattr(detection, spec.weights).COCO_V1.meta["categories"])
    else:
        slots, num_slots = tuple(range(1, num_classes + 1)), num_classes + 1
    if trainable_backbone_layers is not None and spec.trainable_layers is None:
        raise ValueError(f"{arch} trains every backbone layer; trainable_backbone_layers is not supported for it.")
    if trainable_backbone_layers is not None and not pretrained_layout:
        raise ValueError("trainable_backbone_layers needs pretrained_layout=True (from scratch, everything trains).")
    model = getattr(detection, arch)(weights=None, weights_backbone=None, num_classes=num_slots, **kwargs)
    if pretrained_layout and spec.trainable_layers is not None:
        body = model.backbone if spec.backbone == "vgg" else model.backbone.body
        if spec.frozen_bn:
            _freeze_batchnorm(body, spec.frozen_eps)
        layers = spec.trainable_layers if trainable_backbone_layers is None else trainable_backbone_layers
        _freeze_layers(body, spec.backbone, layers)
    model.__class__ = _ZOO_CLASSES[type(model)]
    model.zoo_slots = slots
    model.zoo_num_slots = num_slots
    return model
