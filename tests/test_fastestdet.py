"""FastestDet port: exact against the upstream ONNX export, decoding against a plain re-implementation of
upstream's demo loop, the class head, and the training loss.

The comparisons need ../shared/weights/fastestdet (the upstream checkpoint, ONNX graph and demo image) and
onnxruntime; they skip with the reason elsewhere.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO, require_shared
from zoo_detector.convert_fastestdet import OUTPUT_NAME, SOURCE_NAME, convert
from zoo_detector.fastestdet import _BACKBONE_SHA256, build_fastestdet, decode_fastestdet, fastestdet_loss

SHIPPED = REPO / "plugins" / "zoo_detector" / "weights" / OUTPUT_NAME
SHIPPED_SHA256 = "905ec485a6c6cce89ea0a077032ae8882adf9552602eaa5758b7bdc7493fe0fa"  # weights/README.md
SHIPPED_SIZE = 549_440
SIZE = 352


def load(path: Path, num_classes: int = 80) -> torch.nn.Module:
    from safetensors.torch import load_file

    model = build_fastestdet(num_classes)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    model.load_state_dict(state, strict=True)
    return model.eval()


def upstream_input(path: Path) -> torch.Tensor:
    """Upstream's preprocessing: decoded BGR (cv2.imread), stretched to 352x352 bilinearly (cv2.INTER_LINEAR,
    as train/test/eval; runtime.py uses INTER_AREA), rounded back to uint8, / 255; no mean or std."""
    from PIL import Image

    rgb = np.asarray(Image.open(path).convert("RGB"))
    bgr = torch.from_numpy(rgb[:, :, ::-1].copy()).permute(2, 0, 1)[None].float()
    resized = torch.nn.functional.interpolate(bgr, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return resized.round().clamp(0, 255) / 255.0


@pytest.fixture(autouse=True)
def one_thread():
    """Two threads on a shared 2-core machine spin against each other's load: 20x slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def upstream() -> Path:
    return require_shared("weights", "fastestdet")


@pytest.fixture(scope="module")
def onnx_run(upstream):
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    # The graph as exported: onnxruntime's layout rewrites and fusions reorder float32 sums (3.1e-5 -> 4.7e-5
    # here, 9.6e-5 with two torch threads); each side stays within 9e-5 of a float64 run of the port.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(upstream / "FastestDet.onnx"), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:  # the export has a fixed batch of 1
        return torch.cat([torch.from_numpy(session.run(None, {name: xi[None].numpy()})[0]) for xi in x])

    return run


@pytest.fixture(scope="module")
def inputs(upstream) -> torch.Tensor:
    noise = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    return torch.cat((upstream_input(upstream / "upstream-demo-3.jpg"), noise))


@pytest.fixture(scope="module")
def fp32_model(upstream, tmp_path_factory) -> torch.nn.Module:
    path = tmp_path_factory.mktemp("fastestdet") / "fastestdet-coco.safetensors"
    convert(upstream / SOURCE_NAME, path, float16=False)
    return load(path)


@pytest.mark.shared
def test_converted_fp32_weights_reproduce_onnx(fp32_model, onnx_run, inputs):
    reference = onnx_run(inputs)
    with torch.no_grad():
        ours = fp32_model(inputs)
    assert ours.shape == reference.shape == (2, 85, 22, 22)
    diff = (ours - reference).abs().max().item()
    print(f"fp32 port vs upstream ONNX: max abs diff {diff:.3g}")
    assert diff < 1e-4
    assert ((ours[:, 0] >= 0) & (ours[:, 0] <= 1)).all()  # sigmoid objectness
    torch.testing.assert_close(ours[:, 5:].sum(1), torch.ones(2, 22, 22))  # softmax over classes


def test_shipped_file_is_the_recorded_one():
    from safetensors import safe_open

    from zoo._hashing import sha256_file

    assert SHIPPED.stat().st_size == SHIPPED_SIZE and sha256_file(SHIPPED) == SHIPPED_SHA256
    with safe_open(str(SHIPPED), framework="pt") as f:
        assert set(f.keys()) == set(build_fastestdet().state_dict())


@pytest.mark.shared
def test_shipped_fp16_weights(onnx_run, fp32_model, inputs):
    """fp16 rounding moves the unbounded box logits most (far from any object); detections barely move."""
    reference = onnx_run(inputs)
    with torch.no_grad():
        ours = load(SHIPPED)(inputs)
        exact = fp32_model(inputs)
    diff = (ours - reference).abs()
    prob = torch.cat((diff[:, :1], diff[:, 5:]), 1).max().item()
    geometry = (
        torch.cat(
            (
                torch.tanh(ours[:, 1:3]) - torch.tanh(reference[:, 1:3]),
                torch.sigmoid(ours[:, 3:5]) - torch.sigmoid(reference[:, 3:5]),
            ),
            1,
        )
        .abs()
        .max()
        .item()
    )
    print(
        f"shipped fp16 weights (run in fp32) vs upstream ONNX: max abs diff {diff.max().item():.3g} "
        f"(box logits), {prob:.3g} (objectness and class probabilities), {geometry:.3g} (decoded box offsets "
        "and sizes)"
    )
    assert diff.max() < 0.3 and prob < 2e-2 and geometry < 3e-2
    half, full = decode_fastestdet(ours[:1], conf=0.25)[0], decode_fastestdet(exact[:1], conf=0.25)[0]
    assert half["labels"].tolist() == full["labels"].tolist()
    torch.testing.assert_close(half["boxes"], full["boxes"], atol=1e-3, rtol=0)
    torch.testing.assert_close(half["scores"], full["scores"], atol=5e-3, rtol=0)


def reference_decode(fmap: np.ndarray, thresh: float, nms_thresh: float = 0.45) -> list[list[float]]:
    """example/onnx-runtime/runtime.py's loop in normalised coordinates, then greedy NMS within each class
    (upstream's handle_preds and ncnn demo; runtime.py alone ignores the class)."""
    _, height, width = fmap.shape
    cells = fmap.astype(np.float64).transpose(1, 2, 0)
    found = []
    for h in range(height):
        for w in range(width):
            data = cells[h][w]
            score = data[0] ** 0.6 * data[5:].max() ** 0.4
            if score > thresh:
                cx, cy = (w + math.tanh(data[1])) / width, (h + math.tanh(data[2])) / height
                bw, bh = 1 / (1 + math.exp(-data[3])), 1 / (1 + math.exp(-data[4]))
                found.append([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2, score, int(np.argmax(data[5:]))])

    def iou(a: list[float], b: list[float]) -> float:
        inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    kept: list[list[float]] = []
    for box in sorted(found, key=lambda b: -b[4]):
        if all(k[5] != box[5] or iou(k, box) <= nms_thresh for k in kept):
            kept.append(box)
    return kept


@pytest.mark.shared
@pytest.mark.parametrize("conf", [0.65, 0.25])  # upstream's demo threshold and handle_preds' default
def test_decode_matches_upstream_loop(onnx_run, inputs, conf):
    raw = onnx_run(inputs[:1])
    detections = decode_fastestdet(raw, conf=conf)[0]
    expected = reference_decode(raw[0].numpy(), conf)
    print(f"conf {conf}: " + ", ".join(f"{int(b[5])}:{b[4]:.2f}" for b in expected))
    assert len(expected) >= 1 and len(detections["scores"]) == len(expected)
    want = torch.tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(detections["boxes"].double(), want[:, :4].clamp(0, 1), atol=1e-4, rtol=0)
    torch.testing.assert_close(detections["scores"].double(), want[:, 4], atol=1e-4, rtol=0)
    assert detections["labels"].dtype == torch.int64 and detections["labels"].tolist() == want[:, 5].long().tolist()
    boxes = detections["boxes"]
    assert (boxes[:, 2:] > boxes[:, :2]).all() and (boxes >= 0).all() and (boxes <= 1).all()


@pytest.mark.shared
def test_demo_image_detections(fp32_model, inputs, upstream):
    """Upstream's demo threshold finds a few confident, sensible objects in its demo picture."""
    names = (upstream / "coco.names").read_text().split("\n")
    with torch.no_grad():
        detections = decode_fastestdet(fp32_model(inputs[:1]), conf=0.65)[0]
    found = [names[i] for i in detections["labels"].tolist()]
    scores = detections["scores"].tolist()
    print("upstream-demo-3.jpg:", ", ".join(f"{n} {s:.2f}" for n, s in zip(found, scores, strict=True)))
    assert 1 <= len(found) <= 20 and (detections["scores"] > 0.65).all()


def test_num_classes_changes_only_the_class_head():
    full, one = build_fastestdet().state_dict(), build_fastestdet(num_classes=1).state_dict()
    assert full.keys() == one.keys()
    changed = {k for k in full if full[k].shape != one[k].shape}
    assert changed and all(k.startswith("detect_head.cls_layers.") for k in changed)
    assert one["detect_head.cls_layers.conv5x5.3.weight"].shape == (1, 96, 1, 1)
    with torch.no_grad():
        assert build_fastestdet(num_classes=1).eval()(torch.rand(1, 3, 64, 64)).shape == (1, 6, 4, 4)


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_fastestdet(num_classes=3)  # any multiple of 32 works: 64 x 64 gives a 4 x 4 grid


def test_loss_is_finite_and_decreases():
    model = small_model().train()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(10))
    boxes = torch.tensor([[0.1, 0.2, 0.5, 0.7], [0.55, 0.05, 0.95, 0.45]])
    targets = [
        {"boxes": boxes, "labels": torch.tensor([0, 2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]  # an image without boxes
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for _ in range(20):
        parts = fastestdet_loss(model(images), targets)
        assert all(torch.isfinite(v) for v in parts.values())
        optimizer.zero_grad()
        parts["loss"].backward()
        optimizer.step()
        history.append(parts["loss"].item())
    print("loss:", " ".join(f"{v:.3f}" for v in history))
    assert sum(history[-5:]) < 0.8 * sum(history[:5])  # 0.36-0.63 over five seeds; BatchNorm in train mode


def test_loss_without_boxes_is_safe():
    model = small_model().train()
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    parts = fastestdet_loss(model(torch.rand(1, 3, 64, 64)), empty)
    assert parts["iou"] == 0 and parts["cls"] == 0 and torch.isfinite(parts["loss"])
    parts["loss"].backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # a single box in the corner cell leaves one candidate, which ties with the mean: no positive, no NaN
    corner = [{"boxes": torch.tensor([[0.0, 0.0, 0.1, 0.1]]), "labels": torch.tensor([1])}]
    assert torch.isfinite(fastestdet_loss(model(torch.rand(1, 3, 64, 64)), corner)["loss"])


def test_backbone_card_starts_from_the_imagenet_shufflenet(monkeypatch, tmp_path):
    """fastestdet-imagenet: the builder fetches upstream's ImageNet backbone through the store (sha256 checked,
    weights_only conversion), the rest is fresh; zoo finetune can start from it."""
    import zoo

    mirror = require_shared("weights", "fastestdet", "shufflenetv2.pth").parent
    monkeypatch.setenv("ZOO_MIRROR", str(mirror))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    model = zoo.load("fastestdet-imagenet", pretrained=False, device="cpu")
    source = mirror / "shufflenetv2.pth"
    assert hashlib.sha256(source.read_bytes()).hexdigest() == _BACKBONE_SHA256  # the hash before any unpickling
    reference = torch.load(source, map_location="cpu", weights_only=True)
    backbone = model.backbone.state_dict()
    assert set(reference) <= set(backbone) and all(
        torch.equal(backbone[k], v.float() if v.is_floating_point() else v) for k, v in reference.items()
    )
