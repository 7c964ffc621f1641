"""`zoo.load` of cached weights against building the same model normally and loading the same file.

What, per model:

* anchor: ``model = builder(**kwargs); model.load_state_dict(safetensors.torch.load_file(path));
  model.eval()`` — the plain way, on the very file zoo loads;
* ``zoo.load(name, device="cpu")`` with each build strategy of zoo/_builder.py, forced through
  ``ZOO_BUILD_STRATEGY``: ``noinit`` (the default), ``meta`` and ``eager``;
* ``zoo._builder.build_model(card, path, strategy="noinit")`` alone (zoo.load minus the registry lookup
  and the cache check), to show what zoo.load adds around the build;
* floors: ``safetensors.torch.load_file(path)`` alone (memory-mapped, so it reads almost nothing) and
  reading the file's bytes (``Path.read_bytes``);
* "then read every tensor" for the anchor and the default zoo.load: the load followed by a sum over every
  tensor of the state dict. zoo's ``noinit``/``meta`` keep the file's memory-mapped tensors as the
  parameters, so part of the load cost moves to first use; this row puts it back.

Models: (a) resnet56-cifar, 0.85M parameters: akamaster weights fetched from ../shared's mirror and
converted to safetensors in a temporary ZOO_HOME; (b) resnet18-cifar-bench, 11.2M, the catalogue's CIFAR
ResNet-18 architecture (zoo_classifier.models:build_resnet18_cifar) and (c) resnet50-bench, 25.6M,
``torchvision.models:resnet50`` with ``num_classes: 1000``. (b) and (c) are registered through a temporary
user registry (ZOO_REGISTRY) whose weights are random-init state dicts saved as safetensors in the
temporary directory, uri a plain absolute path, with their real sha256, size and parameter count:
benchmark data only, deleted at the end, never committed.

How: in one process, torch already imported, every weights file fetched/hashed once first (a local-path
file is hashed on its first zoo.load and stamped under ZOO_HOME/verified). Each variant runs once as a
warm-up, then ``--repeat`` rounds (default 15) in which the variants take turns; ``time.perf_counter``;
min and median in ms, and the median's ratio to the anchor's and to ``load_file`` alone. Then whole cold
processes for resnet56-cifar, 3 runs each after a warm-up: ``python -c "import zoo; zoo.load(...)"`` vs
the anchor as a script that does not import zoo, with ``python -c "import torch"`` as the floor.

Run: .venv/bin/python bench/bench_load.py [--repeat 15] [--no-cold] [--no-mid]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AKAMASTER = REPO.parent / "shared" / "weights" / "akamaster-resnet-cifar"
STRATEGIES = ("noinit", "meta", "eager")
RANDOM_MODELS = {  # name: (builder, kwargs)
    "resnet18-cifar-bench": ("zoo_classifier.models:build_resnet18_cifar", {"num_classes": 10}),
    "resnet50-bench": ("torchvision.models:resnet50", {"num_classes": 1000}),
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_random_weights(work: Path, names: list[str]) -> Path:
    """Random-init safetensors for the RANDOM_MODELS in `names`, and a user registry naming them."""
    import torch
    from safetensors.torch import save_file

    from zoo._builder import import_builder

    lines = ["schema: 1", "models:"]
    for name in names:
        spec, kwargs = RANDOM_MODELS[name]
        torch.manual_seed(0)
        model = import_builder(spec, model=name)(**kwargs)
        path = work / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        params = sum(p.numel() for p in model.parameters())
        kw = ", ".join(f"{k}: {v}" for k, v in kwargs.items())
        lines += [
            f"  {name}:",
            "    task: classifier",
            f"    builder: {spec}",
            f"    kwargs: {{{kw}}}",
            f"    params: {params}",
            "    weights:",
            "      random:",
            f"        uri: {path}",
            f"        sha256: {sha256_of(path)}",
            f"        size: {path.stat().st_size}",
            "        format: safetensors",
            "        dtype: float32",
        ]
    registry = work / "registry.yaml"
    registry.write_text("\n".join(lines) + "\n")
    return registry


def measure(variants: dict[str, Callable[[], object]], repeat: int) -> dict[str, list[float]]:
    for function in variants.values():  # warm-up
        function()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeat):
        for name, function in variants.items():
            start = time.perf_counter()
            result = function()
            times[name].append(time.perf_counter() - start)
            del result
    return times


def read_all(model: object) -> float:
    import torch

    with torch.no_grad():
        return float(sum(t.float().sum() for t in model.state_dict().values()))  # type: ignore[attr-defined]


def bench_model(name: str, repeat: int) -> None:
    import torch
    from safetensors.torch import load_file

    import zoo
    from zoo._builder import build_model, import_builder

    path = zoo.fetch(name)  # converts / hashes once; later loads only stat the file
    card = zoo.card(name)
    builder = import_builder(card.builder, model=name)

    def anchor() -> torch.nn.Module:
        model = builder(**card.kwargs)
        model.load_state_dict(load_file(str(path)))
        return model.eval()

    def zoo_load(strategy: str) -> Callable[[], torch.nn.Module]:
        def run() -> torch.nn.Module:
            os.environ["ZOO_BUILD_STRATEGY"] = strategy
            try:
                return zoo.load(name, device="cpu")
            finally:
                del os.environ["ZOO_BUILD_STRATEGY"]

        return run

    # Sanity: every variant gives the file's tensors.
    reference = load_file(str(path))
    for label, make in (("anchor", anchor), *((s, zoo_load(s)) for s in STRATEGIES)):
        state = make().state_dict()
        assert all(torch.equal(state[k], v) for k, v in reference.items()), (name, label)

    variants: dict[str, Callable[[], object]] = {"anchor: build + load_state_dict(load_file) + eval": anchor}
    for strategy in STRATEGIES:
        default = " (default)" if strategy == "noinit" else ""
        variants[f"zoo.load, strategy {strategy}{default}"] = zoo_load(strategy)
    variants["build_model(strategy=noinit) only"] = lambda: build_model(card, path, device="cpu", strategy="noinit")
    variants["floor: load_file alone"] = lambda: load_file(str(path))
    variants["floor: read the file's bytes"] = lambda: Path(path).read_bytes()
    variants["anchor, then read every tensor"] = lambda: read_all(anchor())
    variants["zoo.load (noinit), then read every tensor"] = lambda: read_all(zoo.load(name, device="cpu"))
    times = measure(variants, repeat)

    anchor_median = statistics.median(times[next(iter(variants))])
    floor_median = statistics.median(times["floor: load_file alone"])
    size = Path(path).stat().st_size
    print(f"\n{name}: {card.params:,} parameters, {size / 2**20:.1f} MiB safetensors, {repeat} rounds after 1 warm-up")
    print(f"  {'variant':<50}{'min ms':>8}{'median ms':>11}{'x anchor':>10}{'x load_file':>13}")
    for label, values in times.items():
        med = statistics.median(values)
        print(
            f"  {label:<50}{1e3 * min(values):>8.1f}{1e3 * med:>11.1f}{med / anchor_median:>10.2f}"
            f"{med / floor_median:>13.1f}"
        )
    medians = {
        s: statistics.median(times[f"zoo.load, strategy {s}{' (default)' if s == 'noinit' else ''}"])
        for s in STRATEGIES
    }
    order = sorted(STRATEGIES, key=medians.get)
    print(
        f"  fastest strategy: {order[0]} ({1e3 * medians[order[0]]:.1f} ms), then "
        + ", ".join(f"{s} ({medians[s] / medians[order[0]]:.2f}x)" for s in order[1:])
    )


def cold_processes(runs: int) -> None:
    import zoo

    path = zoo.fetch("resnet56-cifar")
    package_dir = importlib.util.find_spec("zoo_classifier").submodule_search_locations[0]  # no import
    models_file = Path(package_dir) / "models.py"
    # The anchor imports the architecture's module by file, so it pays for neither zoo nor the plugin.
    anchor_code = (
        "import importlib.util, torch; from safetensors.torch import load_file; "
        f"spec = importlib.util.spec_from_file_location('cifar_models', {str(models_file)!r}); "
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod); "
        f"m = mod.build_cifar_resnet(depth=56); m.load_state_dict(load_file({str(path)!r})); m.eval()"
    )
    commands = {
        "floor: python -c 'import torch'": "import torch",
        "anchor script (no zoo)": anchor_code,
        "import zoo; zoo.load('resnet56-cifar')": "import zoo; zoo.load('resnet56-cifar', device='cpu')",
    }
    env = dict(os.environ)
    for code in commands.values():  # warm-up
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
    times: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(runs):
        for label, code in commands.items():
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, env=env)
            times[label].append(time.perf_counter() - start)
    anchor_median = statistics.median(times["anchor script (no zoo)"])
    print(f"\ncold processes, resnet56-cifar (interpreter start + imports + load), {runs} runs each after 1 warm-up")
    print(f"  {'command':<50}{'min s':>8}{'median s':>11}{'x anchor':>10}")
    for label, values in times.items():
        med = statistics.median(values)
        print(f"  {label:<50}{min(values):>8.2f}{med:>11.2f}{med / anchor_median:>10.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="timed rounds after 1 warm-up")
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-process comparison")
    parser.add_argument("--no-mid", action="store_true", help="skip the 11M-parameter middle model")
    args = parser.parse_args()
    if not AKAMASTER.is_dir():
        print(f"SKIPPED: needs {AKAMASTER} (the offline mirror of the akamaster weights in ../shared)")
        return 0
    work = Path(tempfile.mkdtemp(prefix="zoo-bench-load-"))
    for var in ("ZOO_BUILD_STRATEGY", "ZOO_LOAD_PLUGINS", "ZOO_DISABLE_PLUGINS"):
        os.environ.pop(var, None)
    os.environ.update(ZOO_HOME=str(work / "home"), ZOO_MIRROR=str(AKAMASTER), ZOO_OFFLINE="1", ZOO_NO_PROGRESS="1")
    try:
        import torch

        random_models = [n for n in RANDOM_MODELS if not (args.no_mid and n == "resnet18-cifar-bench")]
        os.environ["ZOO_REGISTRY"] = str(write_random_weights(work, random_models))
        from zoo._registry import reset_registry

        reset_registry()
        print(
            f"zoo.load vs build + load_state_dict, in-process (torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs)"
        )
        for name in ["resnet56-cifar", *random_models]:
            bench_model(name, args.repeat)
        if not args.no_cold:
            cold_processes(args.cold_runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
