"""One bare training step (forward, backward, SGD step on random tensors), fp32 against bf16 autocast.

Why: whether ``--bf16`` pays depends on the CPU (native AVX512-BF16/AMX or emulated), so the runtime leaves
it opt-in; this measures it on the machine at hand. Anchor: the same step in fp32, in the same run. The
model is built from its card without weights (``zoo.load(name, pretrained=False)``), channels_last, as
``zoo finetune`` trains it. ``--compile`` adds a row for the bf16 step with the model wrapped in
``torch.compile`` (inductor), the step ``zoo finetune --compile`` runs (bench_finetune.py times the loop).

Run: .venv/bin/python bench/bench_step.py [--model resnet18-cifar] [--batch-size 128] [--steps 5] [--compile]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, timed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18-cifar")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time bf16 with torch.compile (slow warm-up)")
    args = parser.parse_args()
    import torch

    import zoo

    shape = zoo.card(args.model).input_shape
    x = torch.randn(args.batch_size, *shape).contiguous(memory_format=torch.channels_last)
    seconds = {}
    warmup = {}
    variants = ["fp32", "bf16"] + (["bf16+compile"] if args.compile else [])
    for precision in variants:
        torch.manual_seed(0)
        model = zoo.load(args.model, pretrained=False, device="cpu").train().to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        with torch.no_grad():
            y = torch.randint(0, model(x[:2]).shape[1], (args.batch_size,))
        forward = torch.compile(model) if precision.endswith("compile") else model

        def step(forward=forward, optimizer=optimizer, precision=precision) -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision.startswith("bf16")):
                out = forward(x)
            torch.nn.functional.cross_entropy(out.float(), y).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        warmup[precision] = sum(timed(step, repeat=2)[0])  # oneDNN picks its kernels; inductor compiles
        seconds[precision] = median(timed(step, repeat=args.steps)[0])
    print(
        f"{args.model}, bare training step, batch {args.batch_size}, channels_last, {torch.get_num_threads()} threads"
    )
    for precision, s in seconds.items():
        print(
            f"{precision:<13}{args.batch_size / s:>9.1f} img/s{seconds['fp32'] / s:>8.2f} x fp32"
            f"   (warm-up, 2 steps: {warmup[precision]:.1f} s)"
        )


if __name__ == "__main__":
    main()
