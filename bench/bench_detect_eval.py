"""`zoo eval` of a detector on coco128 against an evaluation loop written the way torchvision's
references/detection do it, in one run.

zoo: ``zoo.runtime.evaluate("fastestdet-coco", coco128.zip, conf=0.001, iou=0.45, max_det=100)``, what
``zoo eval fastestdet-coco --data coco128.zip`` runs: it reads the zip itself (annotations, then every image
decoded and resized in the main process), folds BatchNorm, channels_last, batches of 64 (its fp32 default),
faster-coco-eval through pycocotools' recipe. Timed from the call to the returned metrics.

Anchor (references/detection: engine.py ``evaluate``, coco_utils.py ``convert_to_coco_api``, coco_eval.py
``CocoEvaluator``; compact, bbox only): a map-style Dataset over the coco128 files extracted from the zip to a
temporary directory *before any timing* (torchvision's reference reads files): PIL ``open().convert("RGB")``,
YOLO labels to xyxy pixels clipped to the image and degenerate boxes dropped (as ConvertCocoPolysToMask does),
per-image transform ``PILToTensor -> Resize((352, 352), bilinear, antialias=False) -> ConvertImageDtype(float)``
(the card's geometry: stretched, no antialiasing, as the weights were trained with cv2.INTER_LINEAR; the
references' ToDtype(scale=True) is ``convert_image_dtype``, ``/ 255``); ``DataLoader(batch_size=64,
num_workers=2, collate_fn=tuple(zip(*batch)))``; under ``torch.inference_mode``: the ground truth built by
``convert_to_coco_api`` (which reads every sample, images included, once before the loop: timed, and shown
apart), then per batch the same model object (``zoo.load("fastestdet-coco")``, no folding, contiguous), the same
decoding (``zoo_detector.fastestdet.decode_fastestdet``, conf 0.001, iou 0.45, max_det 100, boxes scaled to
original pixels) and ``CocoEvaluator.update`` (pycocotools ``loadRes`` + ``COCOeval.evaluate`` on the batch's
images), then merge, ``accumulate``, ``summarize``. Not copied: engine.evaluate's ``torch.set_num_threads(1)``
(a workaround for Mask R-CNN's mask pasting); both sides run with ``--threads``.

Passes: the anchor's first pass, zoo's first pass (cold: zoo has no decode cache for detection data, so cold vs
warm is the OS page cache, the allocator and first-call costs), then ``--repeat`` warm passes of each, taking
turns; min and median. torch, torchvision, PIL, pycocotools and faster-coco-eval are imported before any pass.
zoo's evaluate raises glibc's mmap/trim thresholds process-wide on its first call (zoo.runtime.device.tune_malloc);
it is set before the first pass so that every pass of both sides runs under it.

Both must report the same mAP: the 12 COCO stats of both (zoo's captured from faster-coco-eval) and zoo's
rounded mAP / mAP50 against the anchor's, printed as "identical" or the difference; exit 1 if mAP or mAP50
differ as zoo reports them (2 decimals). Runs in a temporary ZOO_HOME, deleted at the end.

Run: .venv/bin/python bench/bench_detect_eval.py [--repeat 3] [--threads N] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, median, require, timed  # noqa: E402

COCO128 = SHARED / "datasets" / "coco128.zip"
MODEL = "fastestdet-coco"
SIZE = (352, 352)
THRESHOLDS = {"conf": 0.001, "iou": 0.45, "max_det": 100}
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def pct(value: float) -> float:
    """A COCO stat as zoo reports it (DetectorEvaluator.compute): percent, 2 decimals, -1 (no data) as 0."""
    return round(100.0 * max(value, 0.0), 2)


@contextlib.contextmanager
def recorded_stats(sink: list[list[float]]):  # noqa: ANN201
    """Record the raw stats of every faster-coco-eval COCOeval_faster that summarizes (zoo's evaluator imports the
    class at call time, so swapping the module attribute reaches it)."""
    import faster_coco_eval

    base = faster_coco_eval.COCOeval_faster

    class Recording(base):  # type: ignore[misc, valid-type]
        def summarize(self, *args: Any, **kwargs: Any) -> Any:
            out = super().summarize(*args, **kwargs)
            sink.append([float(v) for v in self.stats])
            return out

    faster_coco_eval.COCOeval_faster = Recording
    try:
        yield sink
    finally:
        faster_coco_eval.COCOeval_faster = base


def compare_stats(zoo_stats: list[float], ref_stats: list[float]) -> str:
    """'identical', 'identical up to float rounding' (summation order: under 1e-12) or the largest difference."""
    diffs = [abs(a - b) for a, b in zip(zoo_stats, ref_stats, strict=True)]
    if max(diffs) == 0.0:
        return "identical"
    worst = max(range(len(diffs)), key=diffs.__getitem__)
    where = f"{STAT_NAMES[worst]}: {zoo_stats[worst]!r} vs {ref_stats[worst]!r}"
    if max(diffs) < 1e-12:
        return f"identical up to float rounding (max |diff| {max(diffs):.2g}, {where})"
    return f"DIFFER: max |diff| {max(diffs):.3g} ({where})"


# -- the anchor: torchvision's references/detection, compact ---------------------------------------------


class Coco128:
    """coco128's files as torchvision's CocoDetection + ConvertCocoPolysToMask hand a sample over (boxes only),
    from YOLO labels: (image after `transform`, target with xyxy boxes in original pixels)."""

    def __init__(self, root: Path, transform: Any) -> None:
        self.images = sorted((root / "images").rglob("*.jpg"))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: int) -> tuple[Any, dict[str, Any]]:
        import torch
        from PIL import Image

        path = self.images[idx]
        image = Image.open(path).convert("RGB")
        width, height = image.size
        label = path.parents[2] / "labels" / path.parent.name / f"{path.stem}.txt"
        lines = label.read_text().splitlines() if label.exists() else []
        rows = [[float(v) for v in line.split()] for line in lines if line.strip()]
        boxes = torch.as_tensor(
            [
                ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
                for _, cx, cy, w, h in rows
            ],
            dtype=torch.float32,
        )
        boxes = boxes.reshape(-1, 4)
        boxes[:, 0::2].clamp_(min=0, max=width)
        boxes[:, 1::2].clamp_(min=0, max=height)
        keep = (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 2] > boxes[:, 0])
        boxes = boxes[keep]
        target = {
            "image_id": torch.tensor([idx + 1]),
            "boxes": boxes,
            "labels": torch.tensor([int(r[0]) for r in rows], dtype=torch.int64)[keep],
            "area": (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
            "iscrowd": torch.zeros(len(boxes), dtype=torch.int64),
            "orig_size": torch.tensor([height, width]),
        }
        return self.transform(image), target


def collate_fn(batch: list) -> tuple:  # references/detection/utils.py
    return tuple(zip(*batch, strict=True))


def convert_to_coco_api(ds: Coco128) -> Any:
    """coco_utils.convert_to_coco_api, boxes only: every sample is read (image too) to collect the targets."""
    from pycocotools.coco import COCO

    coco_ds = COCO()
    ann_id = 1  # annotation ids start at 1 (torchvision #1530)
    dataset: dict[str, list] = {"images": [], "categories": [], "annotations": []}
    categories = set()
    for img_idx in range(len(ds)):
        _img, targets = ds[img_idx]
        image_id = targets["image_id"].item()
        height, width = targets["orig_size"].tolist()  # the reference reads img.shape: here that is 352x352
        dataset["images"].append({"id": image_id, "height": height, "width": width})
        bboxes = targets["boxes"].clone()
        bboxes[:, 2:] -= bboxes[:, :2]
        for box, label, area, crowd in zip(
            bboxes.tolist(),
            targets["labels"].tolist(),
            targets["area"].tolist(),
            targets["iscrowd"].tolist(),
            strict=True,
        ):
            dataset["annotations"].append(
                {"image_id": image_id, "bbox": box, "category_id": label, "area": area, "iscrowd": crowd, "id": ann_id}
            )
            categories.add(label)
            ann_id += 1
    dataset["categories"] = [{"id": i} for i in sorted(categories)]
    coco_ds.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco_ds.createIndex()
    return coco_ds


class CocoEvaluator:
    """coco_eval.CocoEvaluator, bbox only, one process: per batch ``loadRes`` + ``evaluate`` on its images; at the
    end merge (np.unique over image ids), ``accumulate``, ``summarize``."""

    def __init__(self, coco_gt: Any) -> None:
        from pycocotools.cocoeval import COCOeval

        self.coco_gt = copy.deepcopy(coco_gt)
        self.coco_eval = COCOeval(self.coco_gt, iouType="bbox")
        self.img_ids: list[int] = []
        self.eval_imgs: list[Any] = []

    def update(self, predictions: dict[int, dict[str, Any]]) -> None:
        import numpy as np
        import torch
        from pycocotools.coco import COCO

        img_ids = list(np.unique(list(predictions.keys())))
        self.img_ids.extend(img_ids)
        results = []
        for original_id, prediction in predictions.items():
            xmin, ymin, xmax, ymax = prediction["boxes"].unbind(1)  # convert_to_xywh
            boxes = torch.stack((xmin, ymin, xmax - xmin, ymax - ymin), dim=1).tolist()
            scores, labels = prediction["scores"].tolist(), prediction["labels"].tolist()
            results.extend(
                {"image_id": original_id, "category_id": labels[k], "bbox": box, "score": scores[k]}
                for k, box in enumerate(boxes)
            )
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = COCO.loadRes(self.coco_gt, results) if results else COCO()
            self.coco_eval.cocoDt = coco_dt
            self.coco_eval.params.imgIds = list(img_ids)
            self.coco_eval.evaluate()
        params = self.coco_eval.params
        self.eval_imgs.append(np.asarray(self.coco_eval.evalImgs).reshape(-1, len(params.areaRng), len(params.imgIds)))

    def synchronize_between_processes(self) -> None:
        import numpy as np

        eval_imgs = np.concatenate(self.eval_imgs, 2)
        img_ids, idx = np.unique(np.array(self.img_ids), return_index=True)  # merge(): unique, sorted
        self.coco_eval.evalImgs = list(eval_imgs[..., idx].flatten())
        self.coco_eval.params.imgIds = list(img_ids)
        self.coco_eval._paramsEval = copy.deepcopy(self.coco_eval.params)

    def summarize(self) -> list[float]:
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco_eval.accumulate()
            self.coco_eval.summarize()
        return [float(v) for v in self.coco_eval.stats]


def anchor_evaluate(model: Any, data_loader: Any) -> tuple[list[float], float]:
    """engine.evaluate: the COCO stats, and the seconds spent building the ground truth before the loop."""
    import time

    import torch

    from zoo_detector.fastestdet import decode_fastestdet

    device = next(model.parameters()).device
    cpu_device = torch.device("cpu")
    with torch.inference_mode():
        model.eval()
        start = time.perf_counter()
        coco = convert_to_coco_api(data_loader.dataset)
        gt_seconds = time.perf_counter() - start
        coco_evaluator = CocoEvaluator(coco)
        for images, targets in data_loader:
            images = torch.stack([img.to(device) for img in images])  # FastestDet takes a batch, not a list
            outputs = decode_fastestdet(model(images).float(), **THRESHOLDS)
            for output, target in zip(outputs, targets, strict=True):
                height, width = target["orig_size"].tolist()
                output["boxes"] = output["boxes"].float() * torch.tensor([width, height, width, height], device=device)
            outputs = [{k: v.to(cpu_device) for k, v in t.items()} for t in outputs]
            coco_evaluator.update({t["image_id"].item(): o for t, o in zip(targets, outputs, strict=True)})
        coco_evaluator.synchronize_between_processes()
        return coco_evaluator.summarize(), gt_seconds


def extract(zip_path: Path, dest: Path) -> Path:
    """The archive's files under `dest`; returns the folder holding images/ and labels/."""
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(dest)
    (root,) = {p.parents[2] for p in dest.rglob("*.jpg") if p.parent.parent.name == "images"}
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="warm passes of each side after the cold one")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--batch-size", type=int, default=64, help="both sides (zoo's fp32 default: 64)")
    parser.add_argument("--workers", type=int, default=2, help="the anchor's DataLoader workers")
    args = parser.parse_args()
    require(COCO128)
    work = Path(tempfile.mkdtemp(prefix="zoo-bench-detect-"))
    os.environ["ZOO_HOME"] = str(work / "home")
    os.environ["ZOO_NO_PROGRESS"] = "1"
    os.environ["ZOO_OFFLINE"] = "1"
    try:
        run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> None:
    import faster_coco_eval  # noqa: F401 - imported before any pass (see the docstring)
    import pycocotools.cocoeval  # noqa: F401
    import torch
    import torchvision.ops  # noqa: F401
    from torch.utils.data import DataLoader
    from torchvision import transforms as T
    from torchvision.transforms import v2

    import zoo
    from zoo.runtime.device import tune_malloc
    from zoo.runtime.evaluate import evaluate

    if args.threads:
        torch.set_num_threads(args.threads)
    tune_malloc()
    root = extract(COCO128, work / "extracted")
    model = zoo.load(MODEL)
    transform = v2.Compose([v2.PILToTensor(), v2.Resize(SIZE, antialias=False), T.ConvertImageDtype(torch.float)])
    dataset = Coco128(root, transform)
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate_fn)
    n = len(dataset)
    zoo_stats: list[list[float]] = []

    def anchor_pass() -> tuple[list[float], float]:
        return anchor_evaluate(model, loader)

    def zoo_pass() -> Any:
        with recorded_stats(zoo_stats):
            return evaluate(MODEL, COCO128, model=model, batch_size=args.batch_size, show_progress=False, **THRESHOLDS)

    anchor_cold, (anchor_stats, gt_cold) = timed(anchor_pass)
    zoo_cold, result = timed(zoo_pass)
    anchor_warm, zoo_warm, gt_warm = [], [], []
    for _ in range(args.repeat):
        seconds, (stats, gt_seconds) = timed(anchor_pass)
        anchor_warm += seconds
        gt_warm.append(gt_seconds)
        assert stats == anchor_stats
        zoo_warm += timed(zoo_pass)[0]
    assert result.images == n and all(s == zoo_stats[0] for s in zoo_stats)

    print(
        f"{MODEL} on coco128 ({n} images, {result.metrics['boxes']} boxes), batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads, anchor DataLoader with {args.workers} workers; "
        f"cold = first pass, warm = {args.repeat} more passes each, taking turns"
    )
    print(
        f"{'pipeline':<44}{'cold s':>8}{'img/s':>7}{'warm min s':>12}{'median s':>10}{'img/s':>7}{'mAP':>7}{'mAP50':>7}"
    )
    rows = [
        ("anchor: torchvision references loop", anchor_cold[0], anchor_warm, anchor_stats),
        ("zoo eval (zoo.runtime.evaluate)", zoo_cold[0], zoo_warm, zoo_stats[0]),
    ]
    for name, cold, warm, stats in rows:
        best = min(warm) if warm else cold
        print(
            f"{name:<44}{cold:>8.2f}{n / cold:>7.1f}{best:>12.2f}{median(warm) if warm else cold:>10.2f}"
            f"{n / best:>7.1f}{pct(stats[0]):>7.2f}{pct(stats[1]):>7.2f}"
        )
    print(
        f"zoo / anchor, images/s: cold {anchor_cold[0] / zoo_cold[0]:.2f}x"
        + (
            f", warm (min) {min(anchor_warm) / min(zoo_warm):.2f}x, warm (median) "
            f"{median(anchor_warm) / median(zoo_warm):.2f}x"
            if args.repeat
            else ""
        )
    )
    gts = gt_warm or [gt_cold]
    print(
        f"the anchor's ground-truth pass (convert_to_coco_api reads every image once more): cold {gt_cold:.2f} s, "
        f"warm median {median(gts):.2f} s; zoo / anchor without it, warm (median): "
        f"{(median(anchor_warm or anchor_cold) - median(gts)) / median(zoo_warm or zoo_cold):.2f}x"
    )
    reported = {k: result.metrics[k] for k in ("map", "map50")}
    anchor_reported = {"map": pct(anchor_stats[0]), "map50": pct(anchor_stats[1])}
    same = reported == anchor_reported
    print(
        f"mAP / mAP50 as zoo reports them: zoo {reported['map']:.2f} / {reported['map50']:.2f}, anchor "
        f"{anchor_reported['map']:.2f} / {anchor_reported['map50']:.2f}: "
        + (
            "identical"
            if same
            else f"differ by {reported['map'] - anchor_reported['map']:+.2f} / "
            f"{reported['map50'] - anchor_reported['map50']:+.2f}"
        )
    )
    print(
        f"all 12 COCO stats at full precision (faster-coco-eval in zoo vs pycocotools): "
        f"{compare_stats(zoo_stats[0], anchor_stats)}"
    )
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
