"""ONNX Runtime against eager PyTorch on the networks `zoo export` writes, in one run, per model.

For each model (resnet56-cifar, fastestdet-coco): ``zoo.export(name, FILE, dynamic_batch=True)`` writes the ONNX
file (and checks it on examples/images, as the command does); then one batch of 64 fp32 inputs — the two example
images, preprocessed by the task's own ``predict_batch`` and ``prepare`` and repeated to 64 — is run through:

* eager PyTorch: the module ``zoo.load`` returns (eval mode, contiguous NCHW), under ``torch.inference_mode`` (the
  anchor);
* eager PyTorch as ``zoo eval`` runs it: BatchNorm folded into the convolutions (``fuse_for_inference``) and
  channels_last, for reference;
* ONNX Runtime: the exported file, CPUExecutionProvider, default graph optimisations (ORT_ENABLE_ALL),
  ``intra_op_num_threads`` = torch's thread count, inter-op 1.

Same inputs, same thread count (``--threads``, default torch's: OMP_NUM_THREADS), one warm-up batch each, then
``--repeat`` rounds in which the three take turns; min and median seconds per batch, images/s from the median, and
the ratio to eager. The max abs difference of ONNX Runtime from eager on the timed batch is printed too (and the
export's own check on the example images). The resnet56 weights come from ../shared's akamaster mirror
(ZOO_MIRROR, ZOO_OFFLINE=1); fastestdet-coco's ship in the package. Runs in a temporary ZOO_HOME, deleted at
the end.

Run: OMP_NUM_THREADS=1 .venv/bin/python bench/bench_export.py [--repeat 10] [--threads N] [--models a,b]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import AKAMASTER, REPO, median, require, timed  # noqa: E402

BATCH = 64
MODELS = ("resnet56-cifar", "fastestdet-coco")


def inputs(name: str):  # noqa: ANN201 - a float batch
    import torch

    import zoo
    from zoo.runtime.images import read_image
    from zoo.runtime.tasks import get_task

    task = get_task(zoo.card(name))
    files = sorted((REPO / "examples" / "images").glob("*.png"))
    x = task.prepare(task.predict_batch([read_image(f) for f in files], [str(f) for f in files]).images).float()
    return x.repeat((BATCH + len(x) - 1) // len(x), 1, 1, 1)[:BATCH].contiguous(), torch


def bench_model(name: str, directory: Path, threads: int, repeat: int) -> dict:
    import onnxruntime as ort

    import zoo
    from zoo.runtime.device import fuse_for_inference

    x, torch = inputs(name)
    record = zoo.export(name, directory / f"{name}.onnx", dynamic_batch=True)
    model = zoo.load(name, device="cpu").eval()
    folded = fuse_for_inference(model).to(memory_format=torch.channels_last)
    x_last = x.to(memory_format=torch.channels_last)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(record["path"], options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.numpy()}

    def eager():
        with torch.inference_mode():
            return model(x)

    def eager_folded():
        with torch.inference_mode():
            return folded(x_last)

    def onnxruntime():
        return session.run(None, feed)[0]

    variants = {
        "eager PyTorch (anchor)": eager,
        "eager, BN folded + channels_last (zoo eval's)": eager_folded,
        "ONNX Runtime": onnxruntime,
    }
    for function in variants.values():  # warm-up
        function()
    times: dict[str, list[float]] = {label: [] for label in variants}
    for _ in range(repeat):
        for label, function in variants.items():
            times[label] += timed(function)[0]
    difference = float((torch.from_numpy(onnxruntime()) - eager()).abs().max())
    return {
        "model": name,
        "times": times,
        "difference": difference,
        "check": record["check"]["max_abs_diff"],
        "opset": record["opset"],
    }


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="timed rounds (the variants take turns)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch and ORT intra-op threads")
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    home = Path(tempfile.mkdtemp(prefix="bench_export_"))
    os.environ.update(
        ZOO_HOME=str(home / "home"), ZOO_MIRROR=str(require(AKAMASTER)), ZOO_OFFLINE="1", ZOO_NO_PROGRESS="1"
    )
    import onnxruntime

    try:
        results = [bench_model(name, home, args.threads, args.repeat) for name in args.models.split(",")]
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} thread(s), batch "
        f"{BATCH}, fp32, {args.repeat} rounds after a warm-up\n"
    )
    print("| model | runtime | min s/batch | median s/batch | images/s | × eager |")
    print("| --- | --- | --- | --- | --- | --- |")
    for result in results:
        anchor = median(next(iter(result["times"].values())))
        for i, (label, times) in enumerate(result["times"].items()):
            model = result["model"] if i == 0 else ""
            print(
                f"| {model} | {label} | {min(times):.3f} | {median(times):.3f} | {BATCH / median(times):.0f} | "
                f"**{anchor / median(times):.2f}** |"
                if label == "ONNX Runtime"
                else f"| {model} | {label} | {min(times):.3f} | {median(times):.3f} | {BATCH / median(times):.0f} | "
                f"{anchor / median(times):.2f} |"
            )
    print()
    for result in results:
        print(
            f"{result['model']}: ONNX opset {result['opset']}; max abs difference from eager "
            f"{result['difference']:.2g} on the timed batch, {result['check']:.2g} in the export's own check"
        )


if __name__ == "__main__":
    main()
