"""COCO box mAP alone, on the same detections: zoo's DetectorEvaluator (faster-coco-eval) against pycocotools.

zoo: ``DetectorEvaluator(labels)``, ``update(outputs, batch)`` for every batch, then ``compute()`` (tensors to
COCO dicts, faster-coco-eval's COCO + loadRes + COCOeval_faster evaluate/accumulate/summarize, per-class AP).
Anchor: the same steps with pycocotools (2.0.x, its C mask/IoU code and Python per-image matching): the same
tensors turned into the same dicts (the images, the ground truth with ids from 1 and every label as a category,
the detections as xywh), ``COCO()`` + ``createIndex``, ``loadRes``, ``COCOeval(..., "bbox")`` ``evaluate``,
``accumulate``, ``summarize`` (its printing sent to a buffer). Both timed from the tensors to the stats.

Detections: (a) FastestDet (``fastestdet-coco``) on coco128 at conf 0.001, iou 0.45, max_det 100, as ``zoo eval``
makes them (computed once, outside the timing): 128 images, 929 boxes, 12,711 detections; ``--repeat`` runs of
each, taking turns, min and median. (b) a seeded synthetic set, ``--images`` (3,000; COCO val2017's size is
``--images 5000``, ~2.5 min on a 2-core VM, mostly pycocotools) 640x480 images with 1-13 (mean 7) boxes of 80
classes, 100 detections per image (three jittered copies of each box, a fifth of them with another label, the rest
random boxes; uniform scores), where per-image Python costs show; one run of each.

Prints both times, zoo / pycocotools, and whether the 12 COCO stats are identical (zoo's captured from
faster-coco-eval) and whether zoo's reported mAP / mAP50 (percent, 2 decimals) equal pycocotools' rounded the same
way; exit 1 if not.

Run: .venv/bin/python bench/bench_map.py [--repeat 5] [--images 3000] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, require, timed  # noqa: E402
from bench_detect_eval import COCO128, MODEL, THRESHOLDS, compare_stats, pct, recorded_stats  # noqa: E402

Pairs = list[tuple[list[dict[str, Any]], Any]]  # (detections per image, zoo Batch) per batch


def zoo_map(pairs: Pairs, labels: tuple[str, ...], sink: list[list[float]]) -> dict[str, Any]:
    from zoo_detector.task import DetectorEvaluator

    evaluator = DetectorEvaluator(labels)
    with recorded_stats(sink):
        for outputs, batch in pairs:
            evaluator.update(outputs, batch)
        return evaluator.compute()


def pycocotools_map(pairs: Pairs, labels: tuple[str, ...]) -> list[float]:
    import torch
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(boxes: torch.Tensor) -> list[list[float]]:
        xmin, ymin, xmax, ymax = boxes.float().unbind(1)
        return torch.stack((xmin, ymin, xmax - xmin, ymax - ymin), dim=1).tolist()

    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for outputs, batch in pairs:
        for det, target, meta in zip(outputs, batch.targets, batch.meta, strict=True):
            image_id = len(images) + 1
            images.append({"id": image_id, "width": meta["width"], "height": meta["height"]})
            boxes = target["boxes"].float()
            areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).tolist()
            for box, area, label in zip(xywh(boxes), areas, target["labels"].tolist(), strict=True):
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": label,
                        "bbox": box,
                        "area": area,
                        "iscrowd": 0,
                    }
                )
            results += [
                {"image_id": image_id, "category_id": label, "bbox": box, "score": score}
                for box, score, label in zip(
                    xywh(det["boxes"]), det["scores"].float().tolist(), det["labels"].tolist(), strict=True
                )
            ]
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO()
        ground_truth.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": i, "name": name} for i, name in enumerate(labels)],
        }
        ground_truth.createIndex()
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return [float(v) for v in evaluation.stats]


def fastestdet_pairs() -> tuple[Pairs, tuple[str, ...]]:
    """FastestDet's detections on coco128 with their batches, as zoo.runtime.evaluate makes them."""
    import torch

    import zoo
    from zoo.runtime.evaluate import forward
    from zoo.runtime.tasks import task_for

    card = zoo.card(MODEL)
    task = task_for(card, "eval")
    model = zoo.load(MODEL).eval()
    device = next(model.parameters()).device
    data = task.eval_data(COCO128)
    with torch.inference_mode():
        pairs = [(forward(task, model, batch, device, False, **THRESHOLDS), batch) for batch in data.batches(64)]
    return [([{k: v.cpu() for k, v in d.items()} for d in outputs], batch) for outputs, batch in pairs], card.labels


def synthetic_pairs(images: int, seed: int, classes: int = 80, batch_size: int = 64) -> Pairs:
    """Seeded ground truth and detections (see the module docstring) in zoo Batches of `batch_size` images."""
    import torch

    from zoo.runtime.tasks import Batch

    g = torch.Generator().manual_seed(seed)
    width, height, per_image = 640, 480, 100
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    pairs: Pairs = []
    for begin in range(0, images, batch_size):
        outputs, targets, meta = [], [], []
        for _ in range(min(batch_size, images - begin)):
            n = int(torch.randint(1, 14, (1,), generator=g))
            xy = torch.rand(n, 2, generator=g) * 0.8
            wh = 0.02 + torch.rand(n, 2, generator=g) * (1 - xy).clamp(max=0.5)
            boxes = torch.cat((xy, (xy + wh).clamp(max=1.0)), 1) * scale
            labels = torch.randint(0, classes, (n,), generator=g)
            copies = boxes.repeat(3, 1)
            jitter = (torch.rand(copies.shape, generator=g) - 0.5) * 0.3 * (copies[:, 2:] - copies[:, :2]).repeat(1, 2)
            det_boxes = torch.cat((copies + jitter, _random_boxes(per_image - len(copies), g) * scale))
            det_boxes = torch.cat((det_boxes[:, :2], torch.maximum(det_boxes[:, 2:], det_boxes[:, :2] + 1)), 1)
            det_boxes = torch.minimum(det_boxes.clamp(min=0), scale)
            other = torch.rand(len(copies), generator=g) < 0.2
            det_labels = torch.cat(
                (
                    torch.where(other, torch.randint(0, classes, (len(copies),), generator=g), labels.repeat(3)),
                    torch.randint(0, classes, (per_image - len(copies),), generator=g),
                )
            )
            scores, order = torch.rand(per_image, generator=g).sort(descending=True)
            outputs.append({"boxes": det_boxes[order], "scores": scores, "labels": det_labels[order]})
            targets.append({"boxes": boxes, "labels": labels})
            meta.append({"image": f"synthetic-{begin + len(meta)}.jpg", "width": width, "height": height})
        pairs.append((outputs, Batch(torch.zeros(len(meta)), targets, meta)))
    return pairs


def _random_boxes(n: int, g: Any) -> Any:
    import torch

    xy = torch.rand(n, 2, generator=g) * 0.9
    wh = 0.01 + torch.rand(n, 2, generator=g) * (1 - xy) * 0.6
    return torch.cat((xy, xy + wh), 1)


def compare(name: str, pairs: Pairs, labels: tuple[str, ...], repeat: int) -> bool:
    zoo_stats: list[list[float]] = []
    zoo_times: list[float] = []
    ref_times: list[float] = []
    summary: dict[str, Any] = {}
    ref_stats: list[float] = []
    for _ in range(repeat):
        seconds, summary = timed(lambda: zoo_map(pairs, labels, zoo_stats))
        zoo_times += seconds
        seconds, ref_stats = timed(lambda: pycocotools_map(pairs, labels))
        ref_times += seconds
    assert all(s == zoo_stats[0] for s in zoo_stats)
    images = sum(len(batch.meta) for _, batch in pairs)
    boxes = sum(len(t["boxes"]) for _, batch in pairs for t in batch.targets)
    detections = sum(len(d["boxes"]) for outputs, _ in pairs for d in outputs)
    print(f"{name}: {images:,} images, {boxes:,} boxes, {detections:,} detections, {repeat} run(s) each")
    print(f"  {'':<44}{'min s':>8}{'median s':>10}{'mAP':>7}{'mAP50':>7}")
    print(
        f"  {'zoo DetectorEvaluator (faster-coco-eval)':<44}{min(zoo_times):>8.3f}{median(zoo_times):>10.3f}"
        f"{summary['map']:>7.2f}{summary['map50']:>7.2f}"
    )
    print(
        f"  {'pycocotools COCO + loadRes + COCOeval':<44}{min(ref_times):>8.3f}{median(ref_times):>10.3f}"
        f"{pct(ref_stats[0]):>7.2f}{pct(ref_stats[1]):>7.2f}"
    )
    print(
        f"  zoo / pycocotools (time): min {min(zoo_times) / min(ref_times):.3f}, median "
        f"{median(zoo_times) / median(ref_times):.3f} (pycocotools {median(ref_times) / median(zoo_times):.1f}x "
        "slower)"
    )
    same = (summary["map"], summary["map50"]) == (pct(ref_stats[0]), pct(ref_stats[1]))
    print(
        f"  mAP / mAP50 as zoo reports them: {'identical' if same else 'DIFFER'}; the 12 COCO stats: "
        f"{compare_stats(zoo_stats[0], ref_stats)}"
    )
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each on coco128's detections")
    parser.add_argument("--images", type=int, default=3000, help="images in the synthetic set (0: skip it)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    require(COCO128)
    work = Path(tempfile.mkdtemp(prefix="zoo-bench-map-"))
    os.environ["ZOO_HOME"] = str(work / "home")
    os.environ["ZOO_NO_PROGRESS"] = "1"
    os.environ["ZOO_OFFLINE"] = "1"
    try:
        import faster_coco_eval  # noqa: F401 - both libraries imported before any timing
        import pycocotools.cocoeval  # noqa: F401
        import torch

        pairs, labels = fastestdet_pairs()
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads; pycocotools {version('pycocotools')}, "
            f"faster-coco-eval {version('faster-coco-eval')}"
        )
        ok = compare(f"(a) {MODEL} on coco128, conf {THRESHOLDS['conf']}", pairs, labels, args.repeat)
        if args.images:
            synthetic = synthetic_pairs(args.images, args.seed)
            ok &= compare(f"(b) synthetic, seed {args.seed}", synthetic, labels, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
