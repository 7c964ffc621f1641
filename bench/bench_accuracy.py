"""Top-1 of the converted akamaster CIFAR ResNets through zoo, against a plain reference loop, in one run.

Data: the first N (default 300) JPEGs of each class of the CIFAR-10 *train* split in ../shared (sorted file
names; 3,000 images) — the official test split is not available here, and these JPEGs (quality 75, 4:2:0)
cost the lossless-trained weights about 10 points against their published test accuracy.
zoo: ``zoo.load`` (weights fetched from the ../shared mirror, sha256-checked, converted to safetensors) +
``zoo.transforms`` (the card's preprocessing). Reference, no zoo at all: PIL -> float /255 -> normalise
with mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225) -> the architecture built by hand with the
upstream pickle's state dict (read with ``torch.load(weights_only=True)``, 'module.' stripped).
Exits 1 if the two disagree by more than 0.3 points.

Run: .venv/bin/python bench/bench_accuracy.py [--per-class 300] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import AKAMASTER, CIFAR_ZIP, require  # noqa: E402

FILES = {20: "resnet20-12fca82f.th", 32: "resnet32-d509ac18.th", 44: "resnet44-014dd654.th",
         56: "resnet56-4bfd9763.th"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    require(AKAMASTER)
    require(CIFAR_ZIP)
    os.environ.update(ZOO_HOME=tempfile.mkdtemp(prefix="zoo-bench-acc-"), ZOO_MIRROR=str(AKAMASTER),
                      ZOO_NO_PROGRESS="1")
    import numpy as np
    import torch
    from PIL import Image

    import zoo
    from zoo_classifier.models import build_cifar_resnet

    labels = zoo.card("resnet20-cifar").labels
    images, targets = [], []
    with zipfile.ZipFile(CIFAR_ZIP) as zf:
        by_class: dict[str, list[str]] = {}
        for name in sorted(n for n in zf.namelist() if n.endswith(".jpg")):
            by_class.setdefault(name.split("/")[-2], []).append(name)
        for index, label in enumerate(labels):
            for name in by_class[label][: args.per_class]:
                images.append(Image.open(io.BytesIO(zf.read(name))).convert("RGB"))
                targets.append(index)
    y = torch.tensor(targets)
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
    reference_x = torch.from_numpy(np.stack([(np.asarray(im, dtype=np.float32) / 255 - mean) / std
                                             for im in images])).permute(0, 3, 1, 2).contiguous()
    results = {}
    for depth, file_name in FILES.items():
        name = f"resnet{depth}-cifar"
        model = zoo.load(name, device="cpu")
        preprocess = zoo.transforms(name)
        x = torch.stack([preprocess(im) for im in images])
        reference = build_cifar_resnet(depth=depth)
        state = torch.load(AKAMASTER / file_name, map_location="cpu", weights_only=True)["state_dict"]
        reference.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=False)
        reference.eval()
        with torch.inference_mode():
            zoo_top1 = 100.0 * (torch.cat([model(c).argmax(1) for c in x.split(500)]) == y).float().mean().item()
            ref_top1 = 100.0 * (torch.cat([reference(c).argmax(1) for c in reference_x.split(500)]) == y
                                ).float().mean().item()
        published = zoo.card(name).variant().metrics[0].value
        results[name] = {"zoo_top1": round(zoo_top1, 2), "reference_top1": round(ref_top1, 2),
                         "difference": round(zoo_top1 - ref_top1, 2), "published_test_top1": published}
    if args.json:
        print(json.dumps({"images": len(images), "split": f"cifar10 train JPEG, first {args.per_class}/class",
                          "models": results}, indent=2))
    else:
        print(f"top-1 on {len(images)} CIFAR-10 train JPEGs (first {args.per_class} per class)")
        print(f"{'model':<16}{'zoo':>8}{'reference':>11}{'diff':>7}{'published test*':>17}")
        for name, r in results.items():
            print(f"{name:<16}{r['zoo_top1']:>8.2f}{r['reference_top1']:>11.2f}{r['difference']:>7.2f}"
                  f"{r['published_test_top1']:>17.2f}")
        print("* the authors' figure on the lossless official test split, for orientation only")
    if any(abs(r["difference"]) > 0.3 for r in results.values()):
        sys.exit("zoo and the reference loop disagree by more than 0.3 points")


if __name__ == "__main__":
    main()
