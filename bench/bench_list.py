"""`zoo list` as a new process against the registries people compare it with, in one run.

Anchors: ``python -c "import timm; timm.list_models()"`` and ``python -c "import torchvision.models as m;
m.list_models()"``; floor: ``python -c pass``. Each command runs as a fresh process (what a user waits for),
once to warm the page cache and then --runs times; the table shows min and median wall time and the ratio
of zoo's median to timm's (goal: <= 0.05).

Run: .venv/bin/python bench/bench_list.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def wall(cmd: list[str], runs: int) -> list[float]:
    subprocess.run(cmd, capture_output=True, check=True)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    py = sys.executable
    script = str(Path(py).with_name("zoo"))
    commands = {
        "python -c pass (floor)": [py, "-c", "pass"],
        "zoo list (console script)": [script, "list"],
        "python -m zoo list": [py, "-m", "zoo", "list"],
        "torchvision.models.list_models()": [py, "-c", "import torchvision.models as m; m.list_models()"],
        "timm.list_models()": [py, "-c", "import timm; timm.list_models()"],
    }
    results = {name: wall(cmd, args.runs) for name, cmd in commands.items()}
    timm = statistics.median(results["timm.list_models()"])
    print(f"{'command':<36}{'min s':>8}{'median s':>10}{'x timm':>9}   ({args.runs} runs, {os.cpu_count()} CPUs)")
    for name, times in results.items():
        med = statistics.median(times)
        print(f"{name:<36}{min(times):>8.3f}{med:>10.3f}{med / timm:>9.3f}")
    imports = subprocess.run([py, "-X", "importtime", "-m", "zoo", "list"], capture_output=True, text=True).stderr
    heavy = [m for m in ("torch", "torchvision", "timm", "numpy", "safetensors")
             if f"| {m}\n" in imports or imports.rstrip().endswith(f"| {m}")]
    print(f"heavy modules imported by zoo list: {heavy or 'none'}")


if __name__ == "__main__":
    main()
