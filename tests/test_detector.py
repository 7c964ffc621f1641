"""The detector task end to end: offline prediction with the shipped FastestDet weights, COCO mAP identical to
pycocotools, bad input as one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import zoo
import zoo._registry
from tests.conftest import REPO, require_shared
from zoo.cli import cli

IMAGES = REPO / "examples" / "images"


def run(*args: str):  # noqa: ANN201
    return CliRunner().invoke(cli, list(args))


def test_predict_offline_finds_the_cat_and_draws_the_boxes(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    result = run(
        "predict", "fastestdet-coco", str(IMAGES / "chelsea.png"), "-o", str(tmp_path), "--json", "--conf", "0.5"
    )
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)
    assert (record["width"], record["height"]) == (451, 300)
    best = record["detections"][0]
    assert best["label"] == "cat" and best["index"] == 15 and best["score"] >= 0.5
    x1, y1, x2, y2 = best["box"]
    assert (
        0 <= x1 < x2 <= 451 and 0 <= y1 < y2 <= 300 and best["bbox"] == [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)]
    )
    assert all(d["score"] >= 0.5 for d in record["detections"])
    drawn = Image.open(tmp_path / "chelsea.png")
    assert drawn.size == (451, 300)
    original = Image.open(IMAGES / "chelsea.png").convert("RGB")
    assert drawn.convert("RGB").tobytes() != original.tobytes()  # boxes were drawn
    assert json.loads((tmp_path / "predictions.json").read_text()) == [record | {"files": record["files"]}]
    assert not list(tmp_path.glob("*.partial"))


def test_thresholds_shape_the_detections():
    from zoo.runtime.predict import predict

    (loose,) = predict("fastestdet-coco", [IMAGES / "chelsea.png"], conf=0.05, device="cpu")
    (strict,) = predict("fastestdet-coco", [IMAGES / "chelsea.png"], conf=0.5, device="cpu")
    (capped,) = predict("fastestdet-coco", [IMAGES / "chelsea.png"], conf=0.05, max_det=3, device="cpu")
    assert len(loose["detections"]) > len(strict["detections"]) >= 1
    assert [d["score"] for d in capped["detections"]] == [d["score"] for d in loose["detections"][:3]]


def test_rgb_card_input_equals_upstream_bgr():
    from zoo_detector.fastestdet import build_fastestdet

    torch.manual_seed(0)
    bgr = build_fastestdet(num_classes=3).eval()
    rgb = build_fastestdet(num_classes=3, input_channels="rgb").eval()
    rgb.load_state_dict(bgr.state_dict())
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(rgb(x), bgr(x.flip(1)))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("predict", "fastestdet-coco", "IMG", "--conf", "1.5"), "Invalid value for '--conf': 1.5 is not in the range"),
        (("predict", "fastestdet-coco", "IMG", "--topk", "3"), "No such option '--topk' for detector models"),
        (("predict", "resnet20-cifar", "IMG", "--conf", "0.3"), "No such option '--conf' for classifier models"),
        (("predict", "fastestdet-coco"), "Name at least one image"),
    ],
)
def test_bad_options_are_one_line(args, message):
    args = tuple(str(IMAGES / "chelsea.png") if a == "IMG" else a for a in args)
    result = run(*args)
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_eval_on_data_in_no_known_format_says_what_was_tried(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    result = run("eval", "fastestdet-coco", "--data", str(tmp_path))
    assert result.exit_code == 1 and "Traceback" not in result.output
    for kind in ("COCO", "VOC", "YOLO"):
        assert kind in result.output, result.output


def _coco_ground_truth_and_detections(seed: int = 0):
    """A small synthetic ground truth and noisy detections (with misses, false positives and background images)."""
    generator = torch.Generator().manual_seed(seed)
    targets, detections = [], []
    for i in range(12):
        n = int(torch.randint(0, 5, (1,), generator=generator))
        xy = torch.rand(n, 2, generator=generator) * 200
        wh = 10 + torch.rand(n, 2, generator=generator) * 100
        boxes = torch.cat([xy, xy + wh], 1)
        labels = torch.randint(0, 3, (n,), generator=generator)
        targets.append({"boxes": boxes, "labels": labels})
        keep = torch.rand(n, generator=generator) > 0.2
        noisy = boxes[keep] + torch.randn(int(keep.sum()), 4, generator=generator) * 6
        extra = int(torch.randint(0, 3, (1,), generator=generator))
        fxy = torch.rand(extra, 2, generator=generator) * 200
        false = torch.cat([fxy, fxy + 20 + torch.rand(extra, 2, generator=generator) * 50], 1)
        detections.append(
            {
                "boxes": torch.cat([noisy, false]),
                "scores": torch.rand(len(noisy) + extra, generator=generator),
                "labels": torch.cat([labels[keep], torch.randint(0, 3, (extra,), generator=generator)]),
            }
        )
        if i == 5:  # an image without boxes whose detections are all false positives
            targets[-1] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    return targets, detections


def _pycocotools_stats(targets, detections) -> list[float]:
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from torchvision.ops import box_area, box_convert

    images, annotations, results = [], [], []
    for i, (t, d) in enumerate(zip(targets, detections, strict=True)):
        images.append({"id": i + 1, "width": 400, "height": 400})
        # xywh and areas computed in float32, as any evaluator holding float32 boxes does: a float64 conversion
        # moves a few IoUs across a threshold and mAP in the 4th digit
        for box, area, label in zip(
            box_convert(t["boxes"], "xyxy", "xywh").tolist(),
            box_area(t["boxes"]).tolist(),
            t["labels"].tolist(),
            strict=True,
        ):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": label,
                    "bbox": box,
                    "area": area,
                    "iscrowd": 0,
                }
            )
        for box, score, label in zip(
            box_convert(d["boxes"], "xyxy", "xywh").tolist(), d["scores"].tolist(), d["labels"].tolist(), strict=True
        ):
            results.append({"image_id": i + 1, "category_id": label, "score": score, "bbox": box})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": c, "name": str(c)} for c in range(3)],
        }
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return [float(v) for v in evaluation.stats]


def test_map_is_identical_to_pycocotools_on_the_same_detections():
    from zoo.runtime.tasks import Batch
    from zoo_detector.task import DetectorEvaluator

    targets, detections = _coco_ground_truth_and_detections()
    evaluator = DetectorEvaluator(("a", "b", "c"))
    for begin in range(0, len(targets), 5):  # in batches, as the runtime feeds it
        chunk = targets[begin : begin + 5]
        evaluator.update(
            detections[begin : begin + 5],
            Batch([torch.zeros(1)] * len(chunk), chunk, [{"width": 400, "height": 400}] * len(chunk)),
        )
    summary = evaluator.compute()
    stats = _pycocotools_stats(targets, detections)
    ours = [summary["map"], summary["map50"], summary["map75"], summary["ar100"]]
    reference = [round(100 * v, 2) for v in (stats[0], stats[1], stats[2], stats[8])]
    assert ours == reference and 0 < summary["map"] < 100
    assert summary["images"] == 12 and summary["boxes"] == sum(len(t["labels"]) for t in targets)


@pytest.mark.slow
def test_eval_on_coco128_matches_pycocotools_and_writes_a_report(tmp_path):
    data = require_shared("datasets", "coco128.zip")
    from zoo.runtime.evaluate import evaluate

    result = evaluate("fastestdet-coco", data, device="cpu", show_progress=False)
    m = result.metrics
    assert result.images == 128 and m["boxes"] == 929 and len(m["per_class"]) >= 71
    assert 0 < m["map"] < m["map50"] <= 100
    out = run(
        "eval",
        "fastestdet-coco",
        "--data",
        str(data),
        "--report",
        str(tmp_path / "rep"),
        "--json",
        "--compare",
        "--precision",
        "fp32",
    )
    record = json.loads(out.stdout)
    assert out.exit_code == 0, out.output
    assert record["metrics"]["map"] == m["map"] and record["headline"] == {"metric": "map", "higher_is_better": True}
    assert record["compare"]["card_source"] == "measured" and record["compare"]["reproduces"], record["compare"]
    assert record["settings"]["precision"] == "fp32"
    assert {p.name for p in Path(tmp_path / "rep").iterdir()} == {
        "metrics.json",
        "per_class_ap.png",
        "per_class_ap.json",
        "pr_curve.png",
    }
    curve = record["metrics"]["pr_curve"]
    assert len(curve["recall"]) == len(curve["iou50"]) == 101 and curve["iou50"][0] >= curve["iou75"][0]


def test_shipped_raccoon_detector_reproduces_its_test_figure(monkeypatch):
    """fastestdet-raccoon's card figure is on the author's 40 test images, which training never saw."""
    data = require_shared("datasets", "raccoon.zip")
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    result = run("eval", "fastestdet-raccoon", "--data", str(data), "--split", "test", "--compare", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["images"] == 40 and record["metrics"]["boxes"] == 44
    assert record["compare"]["card_split"] == "test" and record["compare"]["reproduces"], record["compare"]
    assert record["metrics"]["map50"] >= 85.0  # the goal, on images nobody selected on


def test_eval_of_a_detector_on_data_with_other_classes_points_to_finetune():
    data = require_shared("datasets", "raccoon.zip")
    result = run("eval", "fastestdet-coco", "--data", str(data))
    assert result.exit_code == 1 and "zoo finetune fastestdet-coco --data" in result.output, result.output


@pytest.mark.slow
def test_torchrun_fine_tunes_a_detector_on_two_cpu_processes(tmp_path, zoo_home):
    """DDP with gloo for a detector: each rank its shard of the images, rank 0 writes the card."""
    from tests.contract.test_contract import make_yolo_rectangles

    data = make_yolo_rectangles(tmp_path / "rects", n=16)
    out = tmp_path / "ddp-det"
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node=2",
            "--master_port=29533",
            "-m",
            "zoo",
            "finetune",
            "fastestdet-coco",
            "--data",
            str(data),
            "--out",
            str(out),
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--val-split",
            "0.25",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "ZOO_OFFLINE": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("best epoch") == 1  # rank 0 reports
    history = json.loads((out / "metrics.json").read_text())
    assert len(history) == 2 and all(0 <= row["val_map"] <= 100 for row in history)
    zoo._registry.reset_registry()
    assert zoo.card("ddp-det").labels == ("person", "car") and zoo.card("ddp-det").kwargs["num_classes"] == 2


@pytest.mark.slow
def test_torchrun_eval_gives_the_single_process_figures(tmp_path):
    """Each rank measures every other batch; the evaluator gathers the detections: the same mAP as one process."""
    from tests.contract.test_contract import make_yolo_rectangles
    from zoo.runtime.evaluate import evaluate

    data = make_yolo_rectangles(tmp_path / "rects", n=12)
    single = evaluate("fastestdet-coco", data, device="cpu", batch_size=2, precision="fp32", show_progress=False)
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node=2",
            "--master_port=29535",
            "-m",
            "zoo",
            "eval",
            "fastestdet-coco",
            "--data",
            str(data),
            "--batch-size",
            "2",
            "--precision",
            "fp32",
            "--json",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "ZOO_OFFLINE": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(proc.stdout)  # rank 0 alone prints
    assert record["images"] == single.images == 12
    assert record["metrics"]["boxes"] == single.metrics["boxes"]
    assert {k: record["metrics"][k] for k in ("map", "map50", "ar100")} == {
        k: single.metrics[k] for k in ("map", "map50", "ar100")
    }


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("{confidence: 0.3}", "task_config.confidence': unknown field for a detector (did you mean 'conf'?)"),
        ("{conf: 1.5}", "task_config.conf': must lie in [0.0, 1.0], got 1.5"),
        ("{max_det: 'ten'}", "task_config.max_det': expected int, got str"),
    ],
)
def test_the_detector_checks_its_card_fields(tmp_path, monkeypatch, config, message):
    """task_config is the task's: the core parser lets it through, the detector task refuses what it does not
    know, as one line naming the card and the field."""
    registry = tmp_path / "cards.yaml"
    registry.write_text(
        "models:\n  odd-det:\n    task: detector\n"
        "    builder: zoo_detector.fastestdet:build_fastestdet\n"
        "    kwargs: {num_classes: 80, input_channels: rgb}\n    input: {shape: [3, 352, 352]}\n"
        f"    labels: [a, b]\n    task_config: {config}\n"
    )
    monkeypatch.setenv("ZOO_REGISTRY", str(registry))
    zoo._registry.reset_registry()
    assert run("info", "odd-det").exit_code == 0  # listing and info never run task code
    result = run("predict", "odd-det", str(IMAGES / "chelsea.png"))
    assert result.exit_code == 1 and message in result.output and "odd-det" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_public_api_predicts_and_evaluates_a_detector(tmp_path):
    """`zoo.predict(name, 'img.jpg')` and `zoo.evaluate` as the issue's Python one-liner uses them."""
    from tests.contract.test_contract import make_yolo_rectangles

    (record,) = zoo.predict("fastestdet-coco", str(IMAGES / "chelsea.png"), conf=0.5, device="cpu")
    assert record["detections"][0]["label"] == "cat"
    result = zoo.evaluate("fastestdet-coco", make_yolo_rectangles(tmp_path / "r", n=4), device="cpu")
    assert result["headline"]["metric"] == "map" and result["images"] == 4
    assert result["settings"]["precision"] in ("fp32", "bf16")
