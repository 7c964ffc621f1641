"""Loading torchvision's ResNet-50 (IMAGENET1K_V2) from cache: zoo.load vs torchvision's own
``resnet50(weights=ResNet50_Weights.IMAGENET1K_V2)``, the ratio issue #19 asks for.

Offline here, the real 98 MB file cannot be fetched, so both sides load one synthetic state dict (the
architecture's shapes, random values: loading cost does not depend on the values), saved as the pickle
torchvision publishes and put where each library's cache expects it:

* torchvision: ``$TORCH_HOME/hub/checkpoints/resnet50-11ad3fa6.pth``; torch.hub checks the hash prefix only when
  it downloads, so a cached file is loaded as it is (``torch.load(weights_only=True)`` of the pickle, every run);
* zoo: a user card identical to ``tv/resnet50.IMAGENET1K_V2`` (same builder ``torchvision.models:resnet50``, same
  kwargs) whose weights are that pickle by a ``file://`` URI with its full sha256, fetched once, so the pickle is
  converted to safetensors in a temporary ZOO_HOME exactly as the tv card's first fetch converts the real file.
  After that first fetch both cards take the same path (a stat of the cached file, then the no-init build);
  the ``tv/`` card's one extra cost, reading the namespace index, is measured on its own row.

In-process rows: torch already imported, 1 warm-up, then ``--repeat`` rounds in which the variants take turns,
min and median. Cold rows: a new Python process per run (``--cold`` runs each), the whole command.

Run: .venv/bin/python bench/bench_tv_load.py [--repeat 7] [--cold 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CARD = "tv-resnet50-bench"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def prepare(work: Path) -> dict[str, str]:
    """The synthetic checkpoint in torch.hub's cache and a zoo user card for it; the environment for both."""
    import torch
    import torchvision

    torch.manual_seed(0)
    state = torchvision.models.resnet50().state_dict()
    torch_home = work / "torch"
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    pth = checkpoints / "resnet50-11ad3fa6.pth"  # the IMAGENET1K_V2 file name torchvision looks for
    torch.save(state, pth)
    registry = work / "registry.yaml"
    registry.write_text(
        "models:\n"
        f"  {CARD}:\n"
        "    task: classifier\n"
        "    builder: torchvision.models:resnet50\n"
        "    kwargs: {num_classes: 1000}\n"
        "    weights:\n"
        f"      v2: {{uri: 'file://{pth}', sha256: {_sha256(pth)}, format: torch-pickle}}\n"
    )
    return {
        "TORCH_HOME": str(torch_home),
        "ZOO_HOME": str(work / "zoo"),
        "ZOO_REGISTRY": str(registry),
        "ZOO_NO_PROGRESS": "1",
    }


def timed(function, repeat: int) -> list[float]:  # noqa: ANN001 - any callable
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def cold(code: str, env: dict[str, str], runs: int) -> list[float]:
    subprocess.run([sys.executable, "-c", code], env=env, check=True)  # warm-up (page cache, .pyc)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--cold", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = prepare(Path(tmp))
        os.environ.update(env)
        import torchvision

        import zoo
        import zoo._registry

        zoo._registry.reset_registry()
        zoo.fetch(CARD)  # the first fetch: hash check and conversion, once
        zoo.card("tv/resnet50.IMAGENET1K_V2")  # builds the tv index into this ZOO_HOME once (~1 min)
        weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V2

        def anchor() -> object:
            return torchvision.models.resnet50(weights=weights).eval()

        def zoo_load() -> object:
            return zoo.load(CARD, device="cpu")

        def tv_index() -> object:
            zoo._registry.reset_registry()
            return zoo.card("tv/resnet50.IMAGENET1K_V2")

        rows = {}
        for name, function in (("torchvision resnet50(weights=IMAGENET1K_V2)", anchor), ("zoo.load", zoo_load)):
            function()
            rows[name] = timed(function, args.repeat)
        rows["tv/ index read + card (fresh registry)"] = timed(tv_index, args.repeat)
        child_env = {**os.environ, **env}
        tv_code = "import torchvision as t; t.models.resnet50(weights=t.models.ResNet50_Weights.IMAGENET1K_V2)"
        cold_rows = {
            "python -c: torchvision resnet50(weights=...)": cold(tv_code, child_env, args.cold),
            f"python -c: zoo.load('{CARD}')": cold(f"import zoo; zoo.load('{CARD}')", child_env, args.cold),
            "python -c: zoo.card('tv/resnet50.IMAGENET1K_V2') (index read)": cold(
                "import zoo; zoo.card('tv/resnet50.IMAGENET1K_V2')", child_env, args.cold
            ),
            "python -c: import torch (floor)": cold("import torch", child_env, args.cold),
        }
    base = statistics.median(rows["torchvision resnet50(weights=IMAGENET1K_V2)"])
    print(f"in-process, {args.repeat} runs each (ms)")
    print(f"{'variant':<48}{'min':>9}{'median':>9}{'x torchvision':>15}")
    for name, times in rows.items():
        med = statistics.median(times)
        print(f"{name:<48}{min(times) * 1e3:>9.1f}{med * 1e3:>9.1f}{med / base:>15.3f}")
    base = statistics.median(cold_rows["python -c: torchvision resnet50(weights=...)"])
    print(f"\nnew process each, {args.cold} runs after a warm-up (s)")
    for name, times in cold_rows.items():
        med = statistics.median(times)
        print(f"{name:<72}{min(times):>7.2f}{med:>7.2f}{med / base:>7.2f}x")


if __name__ == "__main__":
    main()
