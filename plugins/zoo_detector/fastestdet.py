"""FastestDet: a 0.24M-parameter anchor-free detector on one 22x22 grid (xuehao.ma, BSD-3-Clause).

A port of github.com/dog-qiuqiu/FastestDet at commit 50473cd (module/, utils/tool.py, example/onnx-runtime),
checked against the upstream ONNX export (tests/test_fastestdet.py). Module names follow the upstream
``Detector`` so its state dict loads without renaming; ``detect_head.cls_layers`` is the class head.

Input contract of the published weights (upstream trains and tests on ``cv2.imread`` output, never converted):

* N x 3 x 352 x 352 float, channels in **BGR** order, values ``uint8 / 255`` (range [0, 1]), no mean/std.
* The whole image is stretched to 352 x 352 (no letterbox). Training, ``test.py`` and the evaluator resize
  with ``cv2.INTER_LINEAR`` (bilinear, no antialiasing); ``example/onnx-runtime/runtime.py`` uses
  ``cv2.INTER_AREA``. Boxes normalised to the input are therefore normalised to the original image too.

Raw output (exactly the ONNX graph's): N x (1 + 4 + C) x 22 x 22, stride 16.

* channel 0: objectness, sigmoid applied;
* channels 1-4: box regression, no activation: centre = ((col, row) + tanh(t_x, t_y)) / 22, width and height =
  sigmoid(t_w, t_h) as fractions of the input;
* channels 5..: class probabilities, softmax over the C classes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FastestDet", "build_fastestdet", "decode_fastestdet", "fastestdet_loss"]

_BACKBONE_REPEATS = (4, 8, 4)
_BACKBONE_CHANNELS = (24, 48, 96, 192)  # stem, stage2, stage3, stage4
# The ImageNet ShuffleNetV2 (upstream's module/shufflenetv2.pth) the COCO weights were trained from.
_BACKBONE_URI = (
    "https://github.com/dog-qiuqiu/FastestDet/raw/50473cd155cb088aa4a99e64ff6a4b3c24fa07e1/module/shufflenetv2.pth"
)
_BACKBONE_SHA256 = "c9e6e3ac1c4997e05529cfb4897a3b5d29165e3ed4105cfb6897fc11efa72e4b"


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels)


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, depthwise: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=cin if depthwise else 1, bias=False)


class _ShuffleBlock(nn.Module):
    """ShuffleNetV2 unit (Ma et al., 2018); its Sequential indices match upstream's ShuffleV2Block."""

    def __init__(self, inp: int, oup: int, stride: int) -> None:
        super().__init__()
        mid = oup // 2
        self.stride = stride
        self.branch_main = nn.Sequential(
            _conv(inp, mid, 1),
            _bn(mid),
            nn.ReLU(inplace=True),
            _conv(mid, mid, 3, stride, depthwise=True),
            _bn(mid),
            _conv(mid, oup - inp, 1),
            _bn(oup - inp),
            nn.ReLU(inplace=True),
        )
        self.branch_proj: nn.Sequential | None = None
        if stride == 2:
            self.branch_proj = nn.Sequential(
                _conv(inp, inp, 3, stride, depthwise=True),
                _bn(inp),
                _conv(inp, inp, 1),
                _bn(inp),
                nn.ReLU(inplace=True),
            )

    def forward(self, x: Tensor) -> Tensor:
        if self.branch_proj is not None:
            return torch.cat((self.branch_proj(x), self.branch_main(x)), 1)
        # Upstream's reshape/permute channel shuffle hands even channels to the shortcut, odd ones to the branch.
        return torch.cat((x[:, 0::2], self.branch_main(x[:, 1::2])), 1)


class _ShuffleNetV2(nn.Module):
    """ShuffleNetV2 0.5x without its classifier; returns the stride 8, 16 and 32 features."""

    def __init__(self) -> None:
        super().__init__()
        stem = _BACKBONE_CHANNELS[0]
        self.first_conv = nn.Sequential(_conv(3, stem, 3, 2), _bn(stem), nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin = stem
        stages = zip(("stage2", "stage3", "stage4"), _BACKBONE_REPEATS, _BACKBONE_CHANNELS[1:], strict=True)
        for name, repeats, cout in stages:
            blocks = [_ShuffleBlock(cin, cout, 2)] + [_ShuffleBlock(cout // 2, cout, 1) for _ in range(repeats - 1)]
            setattr(self, name, nn.Sequential(*blocks))
            cin = cout

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # the stages are set with setattr: mypy sees Module.__getattr__'s Tensor | Module
        p1 = self.stage2(self.maxpool(self.first_conv(x)))  # type: ignore[operator]
        p2 = self.stage3(p1)  # type: ignore[operator]
        return p1, p2, self.stage4(p2)  # type: ignore[operator]


class _Conv1x1(nn.Module):
    """Pointwise conv + BN + ReLU, wrapped like upstream's Conv1x1 (hence keys ``...conv1x1.conv1x1.0``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1x1 = nn.Sequential(_conv(cin, cout, 1), _bn(cout), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv1x1(x)


def _dw5x5(channels: int) -> list[nn.Module]:
    return [_conv(channels, channels, 5, depthwise=True), _bn(channels), nn.ReLU(inplace=True)]


class _SPP(nn.Module):
    """Upstream's SPP neck: three depthwise 5x5 stacks (receptive fields 5, 9, 13) fused back residually."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.Conv1x1 = _Conv1x1(cin, cout)
        self.S1 = nn.Sequential(*_dw5x5(cout))
        self.S2 = nn.Sequential(*_dw5x5(cout), *_dw5x5(cout))
        self.S3 = nn.Sequential(*_dw5x5(cout), *_dw5x5(cout), *_dw5x5(cout))
        self.output = nn.Sequential(_conv(cout * 3, cout, 1), _bn(cout))

    def forward(self, x: Tensor) -> Tensor:
        x = self.Conv1x1(x)
        y = torch.cat((self.S1(x), self.S2(x), self.S3(x)), dim=1)
        return F.relu(x + self.output(y))


class _Head(nn.Module):
    """One output branch: depthwise 5x5 + BN + ReLU, then pointwise to `cout` + BN (no activation)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv5x5 = nn.Sequential(*_dw5x5(cin), _conv(cin, cout, 1), _bn(cout))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv5x5(x)


class _DetectHead(nn.Module):
    def __init__(self, cin: int, num_classes: int) -> None:
        super().__init__()
        self.conv1x1 = _Conv1x1(cin, cin)
        self.obj_layers = _Head(cin, 1)
        self.reg_layers = _Head(cin, 4)
        self.cls_layers = _Head(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1x1(x)
        obj = torch.sigmoid(self.obj_layers(x))
        cls = torch.softmax(self.cls_layers(x), dim=1)
        return torch.cat((obj, self.reg_layers(x), cls), dim=1)


class FastestDet(nn.Module):
    """Backbone features at strides 8/16/32 resampled to stride 16, concatenated, SPP neck, one head."""

    def __init__(self, num_classes: int = 80, input_channels: str = "bgr") -> None:
        super().__init__()
        if input_channels not in ("rgb", "bgr"):
            raise ValueError(f"input_channels must be 'rgb' or 'bgr', got {input_channels!r}.")
        self.num_classes = num_classes
        self.flip_channels = input_channels == "rgb"  # the weights were trained on BGR (cv2.imread) input
        self.backbone = _ShuffleNetV2()
        self.SPP = _SPP(sum(_BACKBONE_CHANNELS[1:]), _BACKBONE_CHANNELS[2])
        self.detect_head = _DetectHead(_BACKBONE_CHANNELS[2], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if self.flip_channels:
            x = x.flip(1)
        p1, p2, p3 = self.backbone(x)
        p1 = F.avg_pool2d(p1, kernel_size=3, stride=2, padding=1)  # count_include_pad, as nn.AvgPool2d upstream
        p3 = F.interpolate(p3, scale_factor=2.0, mode="nearest")
        return self.detect_head(self.SPP(torch.cat((p1, p2, p3), dim=1)))


def _load_pretrained_backbone(model: FastestDet) -> None:
    """ImageNet ShuffleNetV2 through zoo's store: mirror or download, sha256 check, weights_only conversion."""
    from safetensors.torch import load_file

    from zoo._card import ConvertSpec, WeightsVariant
    from zoo._store import Store

    variant = WeightsVariant(
        tag="imagenet", uri=_BACKBONE_URI, sha256=_BACKBONE_SHA256, format="torch-pickle", convert=ConvertSpec()
    )
    path = Store().resolve(variant, model="fastestdet backbone (shufflenetv2)")
    model.backbone.load_state_dict(load_file(str(path)), strict=True)


def build_fastestdet(
    num_classes: int = 80, pretrained_backbone: bool = False, input_channels: str = "bgr"
) -> nn.Module:
    """FastestDet for `num_classes` classes (80 = the COCO weights); only ``detect_head.cls_layers`` depends on it.

    Args:
        num_classes: number of object classes; the class head's last conv and BatchNorm have this many channels.
        pretrained_backbone: load upstream's ImageNet ShuffleNetV2 into ``backbone`` (what upstream trains
            from), fetched and verified through zoo's store (``ZOO_MIRROR`` and ``ZOO_OFFLINE`` apply).
        input_channels: the channel order the caller gives: "bgr" is upstream's (and the ONNX export's), "rgb"
            (zoo's cards, whose images are decoded to RGB) reverses the channels first.
    """
    if num_classes < 1:
        raise ValueError(f"FastestDet needs num_classes >= 1, got {num_classes}.")
    model = FastestDet(num_classes, input_channels)
    if pretrained_backbone:
        _load_pretrained_backbone(model)
    return model


def _split(raw: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    if raw.dim() != 4 or raw.shape[1] < 6:
        raise ValueError(f"Expected FastestDet output N x (5 + C) x H x W, got shape {tuple(raw.shape)}.")
    return raw[:, 0], raw[:, 1:5], raw[:, 5:]


def _grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    gy, gx = torch.meshgrid(
        torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype), indexing="ij"
    )
    return gx, gy


@torch.no_grad()
def decode_fastestdet(
    raw: Tensor, conf: float = 0.25, iou: float = 0.45, max_det: int = 100
) -> list[dict[str, Tensor]]:
    """Detections per image from the raw output, with upstream's scoring and NMS (utils/tool.py handle_preds).

    Every cell is one candidate: score = objectness ** 0.6 * (best class probability) ** 0.4, kept if
    ``score > conf``; boxes are decoded on the grid as described in the module docstring. NMS is **per class**
    (``torchvision.ops.batched_nms``), as upstream's handle_preds and its ncnn demo do; only
    example/onnx-runtime/runtime.py uses a class-agnostic NMS. Upstream's defaults: conf 0.25, iou 0.45
    (its demos show conf 0.65, its evaluator uses 0.001). Boxes are clipped to [0, 1] after NMS (upstream
    leaves them unclipped); ``max_det`` keeps the best-scored (upstream keeps all).

    Returns:
        One dict per image: ``boxes`` K x 4 (x1, y1, x2, y2) normalised to the network input, ``scores`` K,
        ``labels`` K int64 in [0, C), sorted by decreasing score.
    """
    from torchvision.ops import batched_nms

    obj, reg, cls = _split(raw.float())
    n, h, w = obj.shape
    cls_prob, labels = cls.max(dim=1)
    scores = obj.pow(0.6) * cls_prob.pow(0.4)
    gx, gy = _grid(h, w, raw.device, torch.float32)
    cx = (torch.tanh(reg[:, 0]) + gx) / w
    cy = (torch.tanh(reg[:, 1]) + gy) / h
    bw, bh = torch.sigmoid(reg[:, 2]), torch.sigmoid(reg[:, 3])
    boxes = torch.stack((cx - 0.5 * bw, cy - 0.5 * bh, cx + 0.5 * bw, cy + 0.5 * bh), dim=-1)
    out = []
    for i in range(n):
        s, b, c = scores[i].reshape(-1), boxes[i].reshape(-1, 4), labels[i].reshape(-1)
        keep = torch.nonzero(s > conf).squeeze(1)
        keep = keep[batched_nms(b[keep], s[keep], c[keep], iou)][:max_det]
        out.append({"boxes": b[keep].clamp(0.0, 1.0), "scores": s[keep], "labels": c[keep].long()})
    return out


def _siou(pred: Tensor, gt: Tensor, eps: float = 1e-7) -> Tensor:
    """IoU minus SIoU's distance and shape costs (Gevorgyan, 2022), upstream's bbox_iou; boxes are cx, cy, w, h.

    Two guards upstream lacks, so a prediction centred exactly on its target cannot give NaN: the centre
    distance is clamped away from 0 and sin(alpha) to at most 1.
    """
    b1_x1, b1_x2 = pred[:, 0] - pred[:, 2] / 2, pred[:, 0] + pred[:, 2] / 2
    b1_y1, b1_y2 = pred[:, 1] - pred[:, 3] / 2, pred[:, 1] + pred[:, 3] / 2
    b2_x1, b2_x2 = gt[:, 0] - gt[:, 2] / 2, gt[:, 0] + gt[:, 2] / 2
    b2_y1, b2_y2 = gt[:, 1] - gt[:, 3] / 2, gt[:, 1] + gt[:, 3] / 2
    inter = (torch.min(b1_x2, b2_x2) - torch.max(b1_x1, b2_x1)).clamp(0) * (
        torch.min(b1_y2, b2_y2) - torch.max(b1_y1, b2_y1)
    ).clamp(0)
    w1, h1 = b1_x2 - b1_x1, b1_y2 - b1_y1 + eps
    w2, h2 = b2_x2 - b2_x1, b2_y2 - b2_y1 + eps
    iou = inter / (w1 * h1 + w2 * h2 - inter + eps)
    cw = torch.max(b1_x2, b2_x2) - torch.min(b1_x1, b2_x1)  # enclosing box
    ch = torch.max(b1_y2, b2_y2) - torch.min(b1_y1, b2_y1)
    s_cw = (b2_x1 + b2_x2 - b1_x1 - b1_x2) * 0.5
    s_ch = (b2_y1 + b2_y2 - b1_y1 - b1_y2) * 0.5
    sigma = (s_cw**2 + s_ch**2).clamp_min(eps).sqrt()
    sin_1, sin_2 = (s_cw.abs() / sigma).clamp(max=1.0), (s_ch.abs() / sigma).clamp(max=1.0)
    sin_alpha = torch.where(sin_1 > math.sqrt(2) / 2, sin_2, sin_1)
    angle_cost = torch.cos(torch.arcsin(sin_alpha) * 2 - math.pi / 2)
    gamma = angle_cost - 2
    distance_cost = 2 - torch.exp(gamma * (s_cw / cw) ** 2) - torch.exp(gamma * (s_ch / ch) ** 2)
    omega_w, omega_h = (w1 - w2).abs() / torch.max(w1, w2), (h1 - h2).abs() / torch.max(h1, h2)
    shape_cost = (1 - torch.exp(-omega_w)) ** 4 + (1 - torch.exp(-omega_h)) ** 4
    return iou - 0.5 * (distance_cost + shape_cost)


def _grid_targets(
    targets: list[dict[str, Tensor]], h: int, w: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """Targets as rows (image, class, cx, cy, w, h) in grid units, like upstream's collated labels."""
    rows = []
    for i, target in enumerate(targets):
        boxes = target["boxes"].to(device=device, dtype=torch.float32).reshape(-1, 4)
        labels = target["labels"].to(device=device).reshape(-1)
        centre, size = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]
        scale = torch.tensor([w, h], device=device, dtype=torch.float32)
        image = torch.full_like(labels, i)
        rows.append((image, labels.long(), torch.cat((centre * scale, size * scale), dim=1)))
    if not rows:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty, torch.zeros(0, 4, device=device)
    # `labels` is reused: the loop's Tensor, here a tuple of them
    images, labels, boxes = zip(*rows, strict=True)  # type: ignore[assignment]
    return torch.cat(images), torch.cat(labels), torch.cat(boxes)  # type: ignore[arg-type]


def fastestdet_loss(raw: Tensor, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Upstream's training loss (module/loss.py), vectorised over the batch.

    Assignment: every target is a candidate in the cell holding its centre and in the cells to the right,
    below and below-right (the cell's 4 corners as anchor points), kept only where both cell indices are in
    [1, 21] (upstream's bounds test, which also drops column 0 and row 0; kept as trained). Each candidate
    predicts the whole target box (centre = cell + tanh offset, size = sigmoid x grid size) and is scored by
    SIoU; only candidates above the batch's mean SIoU stay positive (dynamic assignment).

    Parts (weights as upstream: 8 * iou + 16 * obj + cls):

    * ``iou``: mean (1 - SIoU) over the positives;
    * ``cls``: NLL of the softmax probabilities at the positives;
    * ``obj``: smooth-L1 between objectness and an IoU-aware target (the positive's SIoU, zero elsewhere;
      the gradient flows into the target too, as upstream), weighted 0.25 * H * W / (positives in that image)
      at positives and 0.75 elsewhere, averaged over every cell.

    Args:
        raw: the model's output, N x (5 + C) x H x W.
        targets: per image ``boxes`` (K x 4, x1 y1 x2 y2 normalised to [0, 1]) and ``labels`` (K, int64).
    """
    pobj, preg, pcls = _split(raw)
    n, h, w = pobj.shape
    image, label, gt = _grid_targets(targets, h, w, raw.device)
    zero = raw.sum() * 0.0  # keeps the graph (and DDP) intact when a batch has no positive
    tobj = torch.zeros_like(pobj)
    factor = torch.full_like(pobj, 0.75)
    iou_loss = cls_loss = zero
    if len(image):
        quadrant = torch.tensor([[0, 0], [1, 0], [0, 1], [1, 1]], device=raw.device)
        gij = gt[None, :, :2].long() + quadrant[:, None, :]  # 4 x K x 2 (column, row)
        kept = torch.where(gij < h, gij, 0).min(dim=-1).values > 0
        gi, gj = gij[kept].unbind(-1)
        b, cls_t, gbox = image.expand(4, -1)[kept], label.expand(4, -1)[kept], gt.expand(4, -1, -1)[kept]
        reg = preg[b, :, gj, gi]
        pbox = torch.stack(
            (
                torch.tanh(reg[:, 0]) + gi,
                torch.tanh(reg[:, 1]) + gj,
                torch.sigmoid(reg[:, 2]) * w,
                torch.sigmoid(reg[:, 3]) * h,
            ),
            dim=1,
        )
        iou = _siou(pbox, gbox)
        positive = iou > iou.mean()
        if positive.any():  # upstream would average an empty set (NaN) when every candidate ties
            b, gi, gj, iou = b[positive], gi[positive], gj[positive], iou[positive]
            iou_loss = (1.0 - iou).mean()
            prob = pcls[b, :, gj, gi]
            cls_loss = F.nll_loss(torch.log(prob.clamp_min(torch.finfo(prob.dtype).tiny)), cls_t[positive])
            tobj = tobj.index_put((b, gj, gi), iou.to(tobj.dtype))
            count = torch.bincount(b, minlength=n).to(factor.dtype)
            factor = factor.index_put((b, gj, gi), 0.25 * h * w / count[b])
    obj_loss = (F.smooth_l1_loss(pobj, tobj, reduction="none") * factor).mean()
    loss = 8.0 * iou_loss + 16.0 * obj_loss + cls_loss
    return {"loss": loss, "iou": iou_loss, "obj": obj_loss, "cls": cls_loss}
