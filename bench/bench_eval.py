"""`zoo eval` throughput against the classic evaluation loop, on 10,000 CIFAR-10 JPEGs, in one run.

Anchor (the loop most tutorials and the seed document use): torchvision ``ImageFolder`` + ``ToTensor`` +
``Normalize`` + ``DataLoader(batch_size=128, num_workers=2)`` under ``torch.no_grad``, with the same model
object. zoo: ``zoo.runtime.evaluate`` (decode with torchvision's decoders, normalise whole batches,
channels_last, inference_mode, one stream of batches per core, in fp32 the fused oneDNN graph), cold (decode
cache empty), warm (decode cache hit), warm with one stream (``ZOO_CPU_STREAMS=1``: what the streams add), warm
with the eager model (``ZOO_CPU_GRAPH=0``: what the fused graph adds), and with ``--bf16``
also both under bf16 autocast (fast only on CPUs with native bf16: AVX512-BF16/AMX). Both read the same
ImageFolder directory of 10,000 JPEGs (the last 1,000 of each class of the CIFAR-10 *train* split in
../shared; the test split is not available). Top-1 of both must agree. The rows take turns for ``--rounds``
rounds (cold: a fresh, empty decode cache each round) and each reports its median.

Run: .venv/bin/python bench/bench_eval.py [--images-per-class 1000] [--model resnet56-cifar] [--bf16] [--rounds 3]
[--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import AKAMASTER, extract_cifar_subset, median, require, scratch_dir, timed  # noqa: E402


def classic_loop(model, root: Path, mean, std) -> tuple[float, float]:  # noqa: ANN001
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    dataset = datasets.ImageFolder(
        str(root), transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    )
    loader = DataLoader(dataset, batch_size=128, num_workers=2)
    correct = total = 0
    with torch.no_grad():
        for images, targets in loader:
            correct += int((model(images).argmax(1) == targets).sum())
            total += len(targets)
    return total, 100.0 * correct / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images-per-class", type=int, default=1000)
    parser.add_argument("--model", default="resnet56-cifar")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--bf16", action="store_true", help="also measure zoo eval with bf16 autocast, cold and warm")
    parser.add_argument("--rounds", type=int, default=3, help="rounds in which the rows take turns (medians)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    require(AKAMASTER)
    work = scratch_dir("zoo-bench-eval-")
    os.environ["ZOO_HOME"] = str(work / "home")
    os.environ["ZOO_MIRROR"] = str(AKAMASTER)
    os.environ["ZOO_NO_PROGRESS"] = "1"
    import torch

    import zoo
    from zoo.runtime.evaluate import evaluate

    root = extract_cifar_subset(work / "images", args.images_per_class)
    model = zoo.load(args.model, device="cpu")
    compare_streams = "ZOO_CPU_STREAMS" not in os.environ  # that row compares with the default count
    compare_graph = "ZOO_CPU_GRAPH" not in os.environ
    pre = zoo.card(args.model).preprocess
    n = 10 * args.images_per_class
    classic = "classic ImageFolder+DataLoader(2 workers)"
    times: dict[str, list[float]] = {}
    top1: dict[str, float] = {}

    def run(row: str, function: Callable[[], Any]) -> Any:
        seconds, result = timed(function)
        times.setdefault(row, []).append(seconds[0])
        return result

    def zoo_eval(bf16: bool = False, cache: bool = True) -> Any:
        return evaluate(
            args.model, root, model=model, batch_size=args.batch_size, bf16=bf16, cache=cache, show_progress=False
        )

    # the rows take turns, round after round, and each row reports its median: on a shared VM the same pass varies
    # by a third from one minute to the next, and a row timed only at one moment takes that moment's luck
    for round_ in range(args.rounds):
        total, top1[classic] = run(classic, lambda: classic_loop(model, root, pre.mean, pre.std))
        os.environ["ZOO_HOME"] = str(work / f"home-{round_}")  # an empty decode cache: the first use, decoding
        cold = run("zoo eval, cold (decodes)", zoo_eval)
        assert total == n == cold.images and not cold.decode_cached
        warm = run("zoo eval, warm (decode cache)", zoo_eval)
        assert warm.decode_cached
        if compare_streams:  # what the CPU streams (zoo.runtime.streams) add, in the same round
            os.environ["ZOO_CPU_STREAMS"] = "1"
            one = run("zoo eval, warm, one stream", zoo_eval)
            del os.environ["ZOO_CPU_STREAMS"]
            top1["zoo eval, warm, one stream"] = one.metrics["top1"]
        if compare_graph:  # what the fused graph (zoo.runtime.graph) adds, in the same round
            os.environ["ZOO_CPU_GRAPH"] = "0"
            eager = run("zoo eval, warm, eager (no graph)", zoo_eval)
            del os.environ["ZOO_CPU_GRAPH"]
            assert not eager.settings["graph"] and warm.settings["graph"]
            top1["zoo eval, warm, eager (no graph)"] = eager.metrics["top1"]
        top1["zoo eval, cold (decodes)"] = cold.metrics["top1"]
        top1["zoo eval, warm (decode cache)"] = warm.metrics["top1"]
        if args.bf16:
            cold16 = run("zoo eval, cold (decodes), bf16 autocast", lambda: zoo_eval(bf16=True, cache=False))
            warm16 = run("zoo eval, warm, bf16 autocast", lambda: zoo_eval(bf16=True))
            assert not cold16.decode_cached and warm16.decode_cached
            top1["zoo eval, cold (decodes), bf16 autocast"] = cold16.metrics["top1"]
            top1["zoo eval, warm, bf16 autocast"] = warm16.metrics["top1"]
    rows = {row: (median(seconds), top1[row]) for row, seconds in times.items()}
    anchor = rows["classic ImageFolder+DataLoader(2 workers)"][0]
    report = {
        "model": args.model,
        "images": n,
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "rows": {
            k: {
                "seconds": round(t, 2),
                "images_per_second": round(n / t),
                "top1": round(a, 2),
                "speedup_vs_classic": round(anchor / t, 2),
                "seconds_each_round": [round(x, 2) for x in times[k]],
            }
            for k, (t, a) in rows.items()
        },
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"{args.model} on {n} CIFAR-10 train JPEGs (last {args.images_per_class}/class), "
        f"{torch.get_num_threads()} threads"
    )
    print(f"{'pipeline (median of the rounds)':<46}{'s':>8}{'img/s':>9}{'top-1':>8}{'x classic':>11}  each round, s")
    for name, row in report["rows"].items():
        print(
            f"{name:<46}{row['seconds']:>8.2f}{row['images_per_second']:>9}{row['top1']:>8.2f}"
            f"{row['speedup_vs_classic']:>11.2f}  {' '.join(f'{x:.2f}' for x in row['seconds_each_round'])}"
        )
    if abs(top1["zoo eval, cold (decodes)"] - top1[classic]) > 0.1:
        sys.exit(f"top-1 differs: zoo {top1['zoo eval, cold (decodes)']} vs classic {top1[classic]:.2f}")


if __name__ == "__main__":
    main()
