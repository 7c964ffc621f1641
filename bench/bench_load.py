"""`zoo.load` of cached weights against building the model normally and loading the same safetensors file.

For resnet56-cifar (0.85M parameters; akamaster weights converted from ../shared's mirror) and a
ResNet-50-size model (25.6M parameters: torchvision's resnet50 registered through a temporary user
registry, with randomly initialised weights saved once to a temporary safetensors file — benchmark data,
never shipped). Anchor: ``builder(); model.load_state_dict(safetensors.torch.load_file(path)); model.eval()``.
Floors: ``safetensors.torch.load_file(path)`` alone (it memory-maps) and reading the file's bytes. zoo is
timed with each build strategy (noinit, the default; meta; eager). In-process, after warm-up, torch already
imported; then whole cold processes for resnet56-cifar.

Run: .venv/bin/python bench/bench_load.py [--repeat 15]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import AKAMASTER, require  # noqa: E402


def best(function, repeat: int) -> tuple[float, float]:  # noqa: ANN001
    function()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    require(AKAMASTER)
    work = Path(tempfile.mkdtemp(prefix="zoo-bench-load-"))
    os.environ.update(ZOO_HOME=str(work / "home"), ZOO_MIRROR=str(AKAMASTER), ZOO_NO_PROGRESS="1")
    import torch
    import torchvision
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    r50_path = work / "resnet50-bench.safetensors"
    r50 = torchvision.models.resnet50()
    save_file(r50.state_dict(), str(r50_path))
    sha = hashlib.sha256(r50_path.read_bytes()).hexdigest()
    params = sum(p.numel() for p in r50.parameters())
    (work / "registry.yaml").write_text(
        "models:\n  resnet50-bench:\n    task: classifier\n    builder: torchvision.models:resnet50\n"
        f"    kwargs: {{num_classes: 1000}}\n    params: {params}\n    weights:\n"
        f"      random: {{uri: {r50_path}, sha256: {sha}, size: {r50_path.stat().st_size}}}\n")
    os.environ["ZOO_REGISTRY"] = str(work / "registry.yaml")
    import zoo
    from zoo._builder import build_model, import_builder

    print(f"{'model':<16}{'variant':<44}{'min ms':>8}{'median ms':>11}{'x anchor':>10}")
    for name in ("resnet56-cifar", "resnet50-bench"):
        path = zoo.fetch(name)
        card = zoo.card(name)
        builder = import_builder(card.builder, model=name)

        def anchor() -> None:
            model = builder(**card.kwargs)
            model.load_state_dict(load_file(str(path)))
            model.eval()

        rows = [("anchor: build + load_state_dict(load_file)", best(anchor, args.repeat))]
        for strategy in ("noinit", "meta", "eager"):
            os.environ["ZOO_BUILD_STRATEGY"] = strategy
            rows.append((f"zoo.load (strategy {strategy})", best(lambda: zoo.load(name, device="cpu"), args.repeat)))
        os.environ.pop("ZOO_BUILD_STRATEGY")
        rows.append(("zoo build_model only (no registry lookup)",
                     best(lambda: build_model(card, path, device="cpu"), args.repeat)))
        rows.append(("floor: safetensors load_file alone", best(lambda: load_file(str(path)), args.repeat)))
        rows.append(("floor: read the file's bytes", best(lambda: Path(path).read_bytes(), args.repeat)))
        size = Path(path).stat().st_size / 2**20
        anchor_median = rows[0][1][1]
        for variant, (lo, med) in rows:
            print(f"{name:<16}{variant:<44}{1e3 * lo:>8.1f}{1e3 * med:>11.1f}{med / anchor_median:>10.2f}")
        print(f"{'':<16}({size:.1f} MiB file, {card.params:,} parameters)")

    print("\ncold processes, resnet56-cifar (python start + imports + load), 3 runs each:")
    zoo_code = "import zoo; zoo.load('resnet56-cifar', device='cpu')"
    anchor_code = ("import torch; from safetensors.torch import load_file; "
                   "from zoo_classifier.models import build_cifar_resnet; m = build_cifar_resnet(depth=56); "
                   f"m.load_state_dict(load_file({str(zoo.fetch('resnet56-cifar'))!r})); m.eval()")
    for label, code in (("zoo.load", zoo_code), ("anchor", anchor_code)):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))
            times.append(time.perf_counter() - start)
        print(f"  {label:<10} min {min(times):.2f} s, median {statistics.median(times):.2f} s")


if __name__ == "__main__":
    main()
