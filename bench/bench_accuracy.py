"""Top-1 of the akamaster CIFAR ResNet-20/32/44/56 through zoo, against a reference loop without zoo, in one run.

What: accuracy through the public API — ``zoo.load(name, device="cpu")`` (weights taken from ../shared's
offline mirror, sha256-checked and converted to safetensors in a temporary ZOO_HOME) and
``zoo.transforms(name)`` (the card's preprocessing) — and, as the anchor, a plain loop that uses no zoo
code path: PIL -> numpy float32 / 255 -> normalise with mean (0.485, 0.456, 0.406), std
(0.229, 0.224, 0.225) -> NCHW -> ``zoo_classifier.models.build_cifar_resnet(depth=...)`` with the state dict
read from the mirror's upstream file by ``torch.load(path, map_location="cpu", weights_only=True)
["state_dict"]``, 'module.' stripped (keys checked: only BatchNorm's num_batches_tracked may be missing).

Data: the first ``--per-class`` (default 300) JPEGs of each class of ../shared's CIFAR-10 *train* split
(``train/<class>/<nnnn>.jpg``, sorted file names; class folders in alphabetical order are the label
order), read straight from the zip with zipfile + PIL, decoded once and shared by both paths. These
JPEGs are quality 75 with 4:2:0 chroma subsampling, which costs the lossless-trained weights several
points against their published test accuracy (expected here: resnet20 ~85.9%, resnet56 ~89.8%). The
official test split is not available, and these are images the weights were trained on: a consistency
check between zoo and the reference, not a held-out accuracy.

How: batches of 128 in channels_last under ``torch.inference_mode`` (both paths alike); the zoo
preprocessing is applied once per distinct card ``preprocess`` (all four cards share one). Prints both
top-1 figures per model, their difference, how many individual predictions agree and the largest
difference between the two preprocessed inputs. Exit status 1 if zoo and the reference
differ by more than 0.3 points for any model; 0 with a "SKIPPED" line if ../shared is absent.

Run: .venv/bin/python bench/bench_accuracy.py [--per-class 300] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CIFAR_ZIP = SHARED / "datasets" / "cifar10-train-jpeg.zip"
MIRROR = SHARED / "weights" / "akamaster-resnet-cifar"
UPSTREAM_FILES = {
    20: "resnet20-12fca82f.th",
    32: "resnet32-d509ac18.th",
    44: "resnet44-014dd654.th",
    56: "resnet56-4bfd9763.th",
}
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
TOLERANCE = 0.3  # points of top-1
BATCH = 128  # with channels_last: the fastest of 64..1000 for these models on a 2-core CPU


def read_images(per_class: int) -> tuple[list, list[int], list[str]]:
    """The first `per_class` images of each class folder (sorted names), decoded to RGB PIL images."""
    from PIL import Image

    with zipfile.ZipFile(CIFAR_ZIP) as zf:
        by_class: dict[str, list[str]] = {}
        for name in zf.namelist():
            parts = name.split("/")
            if len(parts) == 3 and parts[0] == "train" and parts[2].endswith(".jpg"):
                by_class.setdefault(parts[1], []).append(name)
        classes = sorted(by_class)
        images, targets = [], []
        for index, label in enumerate(classes):
            members = sorted(by_class[label])[:per_class]
            if len(members) < per_class:
                sys.exit(f"class {label!r} has only {len(members)} images, --per-class asks for {per_class}")
            for name in members:
                with Image.open(io.BytesIO(zf.read(name))) as im:
                    images.append(im.convert("RGB"))
                targets.append(index)
    return images, targets, classes


def predict(model, x):  # noqa: ANN001, ANN201
    """Argmax per image; both paths run the same way (channels_last: ~1.3-1.5x faster on this CPU)."""
    import torch

    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        return torch.cat([model(chunk).argmax(1) for chunk in x.split(BATCH)])


def reference_model(depth: int):  # noqa: ANN201
    import torch

    from zoo_classifier.models import build_cifar_resnet

    model = build_cifar_resnet(depth=depth)
    checkpoint = torch.load(MIRROR / UPSTREAM_FILES[depth], map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in checkpoint["state_dict"].items()}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        sys.exit(f"reference resnet{depth}: missing {missing}, unexpected {result.unexpected_keys}")
    return model.eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=300, help="first N images of each class (default 300)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = parser.parse_args()
    missing = [str(p) for p in (CIFAR_ZIP, *(MIRROR / f for f in UPSTREAM_FILES.values())) if not p.is_file()]
    if missing:
        print(f"SKIPPED: bench_accuracy needs ../shared ({SHARED}); missing: {', '.join(missing)}")
        return 0
    home = tempfile.mkdtemp(prefix="zoo-bench-accuracy-")
    for var in ("ZOO_REGISTRY", "ZOO_BUILD_STRATEGY", "ZOO_LOAD_PLUGINS", "ZOO_DISABLE_PLUGINS"):
        os.environ.pop(var, None)
    os.environ.update(ZOO_HOME=home, ZOO_MIRROR=str(MIRROR), ZOO_OFFLINE="1", ZOO_NO_PROGRESS="1")
    try:
        return run(args)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    import zoo

    start = time.perf_counter()
    images, targets, classes = read_images(args.per_class)
    y = torch.tensor(targets)
    decode_s = time.perf_counter() - start

    # The reference preprocessing, once for all models (no zoo code involved).
    start = time.perf_counter()
    mean, std = np.array(MEAN, dtype=np.float32), np.array(STD, dtype=np.float32)
    batch = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in images])
    reference_x = torch.from_numpy((batch - mean) / std).permute(0, 3, 1, 2).contiguous()
    reference_pre_s = time.perf_counter() - start

    results: dict[str, dict] = {}
    zoo_inputs: dict = {}
    timing = {
        "decode_s": decode_s,
        "reference_preprocess_s": reference_pre_s,
        "zoo_preprocess_s": 0.0,
        "zoo_load_s": 0.0,
        "zoo_inference_s": 0.0,
        "reference_inference_s": 0.0,
    }
    for depth in UPSTREAM_FILES:
        name = f"resnet{depth}-cifar"
        card = zoo.card(name)
        if list(card.labels) != classes:
            sys.exit(f"{name}: card labels {card.labels} differ from the zip's class folders {classes}")
        start = time.perf_counter()
        model = zoo.load(name, device="cpu")
        timing["zoo_load_s"] += time.perf_counter() - start
        start = time.perf_counter()
        if card.preprocess not in zoo_inputs:  # the four cards share one preprocessing: apply it once
            preprocess = zoo.transforms(name)
            zoo_inputs[card.preprocess] = torch.stack([preprocess(im) for im in images])
        x = zoo_inputs[card.preprocess]
        timing["zoo_preprocess_s"] += time.perf_counter() - start
        start = time.perf_counter()
        zoo_pred = predict(model, x)
        timing["zoo_inference_s"] += time.perf_counter() - start

        reference = reference_model(depth)
        start = time.perf_counter()
        ref_pred = predict(reference, reference_x)
        timing["reference_inference_s"] += time.perf_counter() - start

        zoo_top1 = 100.0 * (zoo_pred == y).double().mean().item()
        ref_top1 = 100.0 * (ref_pred == y).double().mean().item()
        variant = card.variant()
        published = next((m.value for m in variant.metrics if m.source == "published"), None) if variant else None
        results[name] = {
            "zoo_top1": round(zoo_top1, 2),
            "reference_top1": round(ref_top1, 2),
            "difference": round(zoo_top1 - ref_top1, 2),
            "same_predictions": int((zoo_pred == ref_pred).sum()),
            "max_input_difference": float((x - reference_x).abs().max()),
            "published_test_top1": published,
        }

    failed = [n for n, r in results.items() if abs(r["zoo_top1"] - r["reference_top1"]) > TOLERANCE]
    n = len(images)
    if args.json:
        print(
            json.dumps(
                {
                    "data": f"{CIFAR_ZIP.name}: CIFAR-10 train split as JPEG, "
                    f"first {args.per_class} per class (sorted names)",
                    "images": n,
                    "tolerance_points": TOLERANCE,
                    "models": results,
                    "timing_s": {k: round(v, 3) for k, v in timing.items()},
                    "ok": not failed,
                },
                indent=2,
            )
        )
    else:
        print(
            f"top-1 on {n:,} CIFAR-10 train JPEGs (first {args.per_class} per class, sorted names), "
            f"zoo vs reference loop (tolerance {TOLERANCE} points)"
        )
        print(
            f"{'model':<16}{'zoo %':>8}{'reference %':>13}{'diff':>7}{'same preds':>13}{'input max|d|':>14}"
            f"{'published test %*':>19}"
        )
        for name, r in results.items():
            published = f"{r['published_test_top1']:.2f}" if r["published_test_top1"] is not None else "-"
            print(
                f"{name:<16}{r['zoo_top1']:>8.2f}{r['reference_top1']:>13.2f}{r['difference']:>+7.2f}"
                f"{r['same_predictions']:>8}/{n:<4}{r['max_input_difference']:>14.1e}{published:>19}"
            )
        print("* the authors' figure on the lossless official test split, for orientation only")
        print(
            f"time: decode {timing['decode_s']:.2f} s; preprocess zoo {timing['zoo_preprocess_s']:.2f} s, "
            f"reference {timing['reference_preprocess_s']:.2f} s; zoo.load x4 {timing['zoo_load_s']:.2f} s "
            f"(incl. fetch+convert); inference zoo {timing['zoo_inference_s']:.2f} s, "
            f"reference {timing['reference_inference_s']:.2f} s"
        )
    if failed:
        print(
            f"FAILED: zoo and the reference loop disagree by more than {TOLERANCE} points: {', '.join(failed)}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
