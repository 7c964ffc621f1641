"""FID + KID of 10,000 "generated" images with zoo.runtime.generative_metrics against torchmetrics, in one run.

Stand-ins: the "generated" set is the first 1,000 JPEGs of each class of ../shared's CIFAR-10 train split, the
real set the last 500 of each class (disjoint). Both pipelines get the same decoded uint8 tensors (decoding is
not timed) and the same feature network: resnet56-cifar's penultimate features (the input of its `linear`
head). zoo: `feature_extractor` once per set, `reference_features` for the real set (cold, then the cached
read), then `frechet_distance` and `kernel_inception_distance`. torchmetrics 1.9: `FrechetInceptionDistance`
and `KernelInceptionDistance` with `feature=` a wrapper module (what a torchmetrics user writes), each updated
with both sets, then computed; each metric runs the network itself. Both values must agree.

Run: OMP_NUM_THREADS=1 .venv/bin/python bench/bench_fid.py [--fake-per-class 1000] [--real-per-class 500] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import AKAMASTER, CIFAR_ZIP, require, scratch_dir  # noqa: E402

BATCH = 500


def decode_sets(fake_per_class: int, real_per_class: int):  # noqa: ANN201 - two uint8 tensors
    import torch

    from zoo.runtime.images import decode_image

    with zipfile.ZipFile(require(CIFAR_ZIP)) as zf:
        by_class: dict[str, list[str]] = {}
        for name in sorted(n for n in zf.namelist() if n.endswith(".jpg")):
            by_class.setdefault(name.split("/")[-2], []).append(name)
        if any(len(m) < fake_per_class + real_per_class for m in by_class.values()):
            sys.exit("not enough images per class for disjoint sets")
        fake = [decode_image(zf.read(n), name=n) for m in by_class.values() for n in m[:fake_per_class]]
        real = [decode_image(zf.read(n), name=n) for m in by_class.values() for n in m[-real_per_class:]]
    return torch.stack(fake), torch.stack(real)


def penultimate_module(model, mean, std):  # noqa: ANN001, ANN201 - torch objects
    """resnet56-cifar's head input as a torchmetrics feature module: uint8 images in, N x 64 float64 out."""
    import torch
    from torch import nn

    class Penultimate(nn.Module):
        num_features = 64

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
            self.captured: list[torch.Tensor] = []
            model.linear.register_forward_pre_hook(lambda _m, args: self.captured.append(args[0]))

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                self.model((images / 255.0 - self.mean) / self.std)
            return self.captured.pop().flatten(1).double()

    return Penultimate().eval()


def passthrough_module():  # noqa: ANN201 - a torch module
    """Features in, features out: times torchmetrics' metric arithmetic alone."""
    from torch import nn

    class Passthrough(nn.Identity):
        num_features = 64

    return Passthrough()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fake-per-class", type=int, default=1000)
    parser.add_argument("--real-per-class", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    require(AKAMASTER)
    work = scratch_dir("zoo-bench-fid-")
    os.environ["ZOO_HOME"] = str(work / "home")
    os.environ["ZOO_MIRROR"] = str(AKAMASTER)
    os.environ["ZOO_OFFLINE"] = "1"
    import warnings

    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    import zoo
    from zoo.runtime import generative_metrics as gm

    warnings.filterwarnings("ignore", message="Metric `Kernel Inception Distance` will save")
    fake, real = decode_sets(args.fake_per_class, args.real_per_class)
    name = "resnet56-cifar"

    def batches(images: torch.Tensor):  # noqa: ANN202 - a generator
        return (images[i : i + BATCH] for i in range(0, len(images), BATCH))

    size = min(1000, len(real), len(fake))  # zoo shrinks the subset itself; torchmetrics refuses a larger one

    # -- zoo ------------------------------------------------------------------------------------------
    feature = gm.feature_extractor(name, "cpu")
    t = {}
    start = time.perf_counter()
    real_features = gm.reference_features("cifar10-train-jpeg:last-500", feature, lambda: batches(real))
    t["zoo real features (cold: computed, cached)"] = time.perf_counter() - start
    start = time.perf_counter()
    fake_features = torch.cat([feature(b) for b in batches(fake)])
    t["zoo generated features"] = time.perf_counter() - start
    start = time.perf_counter()
    zoo_fid = gm.frechet_distance(real_features, fake_features)
    t["zoo FID"] = time.perf_counter() - start
    start = time.perf_counter()
    zoo_kid = gm.kernel_inception_distance(real_features, fake_features, seed=0)
    t[f"zoo KID (100 subsets of {size})"] = time.perf_counter() - start
    zoo_total = sum(t.values())
    start = time.perf_counter()
    warm = gm.reference_features("cifar10-train-jpeg:last-500", feature, lambda: batches(real))
    t["zoo real features (warm: cache read)"] = time.perf_counter() - start
    assert torch.equal(warm, real_features)
    start = time.perf_counter()
    precision, recall = gm.precision_recall(real_features, fake_features)
    t["zoo precision/recall (k=3)"] = time.perf_counter() - start

    # -- torchmetrics ---------------------------------------------------------------------------------
    pre = zoo.card(name).preprocess
    wrapper = penultimate_module(zoo.load(name, device="cpu"), pre.mean, pre.std)
    start = time.perf_counter()
    fid = FrechetInceptionDistance(feature=wrapper)
    for b in batches(real):
        fid.update(b, real=True)
    for b in batches(fake):
        fid.update(b, real=False)
    tm_fid = float(fid.compute())
    t["torchmetrics FID (features + metric)"] = time.perf_counter() - start
    start = time.perf_counter()
    kid = KernelInceptionDistance(feature=wrapper, subsets=100, subset_size=size)
    for b in batches(real):
        kid.update(b, real=True)
    for b in batches(fake):
        kid.update(b, real=False)
    torch.manual_seed(0)  # torchmetrics draws subsets from the global generator: the same draws as seed=0
    tm_kid = tuple(float(v) for v in kid.compute())
    t["torchmetrics KID (features + metric)"] = time.perf_counter() - start
    tm_total = t["torchmetrics FID (features + metric)"] + t["torchmetrics KID (features + metric)"]

    # the metric alone, on the features zoo computed (a pass-through "network"): the part that differs
    passthrough = passthrough_module()
    start = time.perf_counter()
    fid = FrechetInceptionDistance(feature=passthrough)
    fid.update(real_features, real=True)
    fid.update(fake_features, real=False)
    assert abs(float(fid.compute()) - tm_fid) <= 1e-9 * abs(tm_fid)  # the network's features are zoo's
    t["torchmetrics FID, metric only"] = time.perf_counter() - start
    start = time.perf_counter()
    kid = KernelInceptionDistance(feature=passthrough, subsets=100, subset_size=size)
    kid.update(real_features, real=True)
    kid.update(fake_features, real=False)
    torch.manual_seed(0)
    kid.compute()
    t["torchmetrics KID, metric only"] = time.perf_counter() - start

    report = {
        "features": name,
        "generated": len(fake),
        "real": len(real),
        "threads": torch.get_num_threads(),
        "seconds": {k: round(v, 3) for k, v in t.items()},
        "zoo_total_s": round(zoo_total, 2),
        "torchmetrics_total_s": round(tm_total, 2),
        "speedup": round(tm_total / zoo_total, 2),
        "fid": {"zoo": zoo_fid, "torchmetrics": tm_fid},
        "kid_mean": {"zoo": zoo_kid[0], "torchmetrics": tm_kid[0]},
        "kid_std": {"zoo": zoo_kid[1], "torchmetrics": tm_kid[1]},
        "precision_recall": [precision, recall],
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"FID + KID, {len(fake)} generated vs {len(real)} real CIFAR-10 JPEGs, {name} features, "
            f"{torch.get_num_threads()} threads"
        )
        for key, seconds in t.items():
            print(f"  {key:<44}{seconds:>8.2f} s")
        print(f"  zoo FID+KID total (features once)          {zoo_total:>8.2f} s")
        print(f"  torchmetrics FID+KID total                 {tm_total:>8.2f} s   ratio {tm_total / zoo_total:.2f}x")
        print(f"  FID  zoo {zoo_fid:.9g}  torchmetrics {tm_fid:.9g}")
        print(f"  KID  zoo {zoo_kid[0]:.9g} +- {zoo_kid[1]:.6g}  torchmetrics {tm_kid[0]:.9g} +- {tm_kid[1]:.6g}")
        print(f"  precision {precision:.4f}  recall {recall:.4f}")
    kid_scale = max(abs(tm_kid[0]), tm_kid[1])  # the KID mean of two samples of one distribution is near 0
    if abs(zoo_fid - tm_fid) > 1e-6 * abs(tm_fid) or abs(zoo_kid[0] - tm_kid[0]) > 1e-6 * kid_scale:
        sys.exit("zoo and torchmetrics disagree")


if __name__ == "__main__":
    main()
