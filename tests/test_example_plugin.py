"""The example third-party plugin, really built and installed, seen through its entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "zoo-tinynet"
TRAIN_WEIGHTS = EXAMPLE / "train_weights.py"

pytestmark = pytest.mark.slow


def _tree(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """pip builds the example's wheel (hatchling) and installs it into a fresh target directory."""
    target = tmp_path_factory.mktemp("example") / "site"
    before = _tree(EXAMPLE)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        check=True,
    )
    assert _tree(EXAMPLE) == before, "building the example left files in the source tree"
    assert (target / "zoo_tinynet" / "registry.yaml").is_file()
    assert (target / "zoo_tinynet" / "weights" / "tinynet-stripes.safetensors").is_file()
    (entry_points,) = target.glob("zoo_tinynet-0.1.0.dist-info/entry_points.txt")
    assert "[zoo.plugins]\ntinynet = zoo_tinynet" in entry_points.read_text()
    return target


def run(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`python *args` with the installed example on the path, from a directory outside the repository.

    os.environ carries the empty ZOO_HOME of the autouse `zoo_home` fixture; no bytecode is written, so
    nothing is left next to train_weights.py when the child imports it.
    """
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=site.parent,
        env={**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1", **env},
    )


def test_installed_plugin_shows_in_list_and_plugins(site):
    listed = run(site, "-m", "zoo", "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("tinynet-stripes"))
    assert row.split()[-1] == "tinynet" and "1.5K" in row and "3x16x16" in row
    assert "resnet56-cifar" in listed.stdout
    result = run(site, "-m", "zoo", "plugins", "--json")
    assert result.returncode == 0, result.stderr
    records = {r["name"]: r for r in json.loads(result.stdout)}
    tinynet = records["tinynet"]
    assert (tinynet["distribution"], tinynet["version"], tinynet["builtin"], tinynet["error"]) == (
        "zoo-tinynet",
        "0.1.0",
        False,
        None,
    )
    assert tinynet["models"] == ["tinynet-stripes"]
    assert records["classifier"]["builtin"] is True and records["classifier"]["error"] is None


# Runs in a child process: the generator is imported from train_weights.py by path, without putting the
# example's source tree on sys.path, so the model code and the weights can only come from the install.
LOAD_AND_CLASSIFY = f"""
import importlib.util, json, sys
import torch
import zoo

spec = importlib.util.spec_from_file_location("train_weights", {str(TRAIN_WEIGHTS)!r})
train_weights = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_weights)

name = sys.argv[1]
model = zoo.load(name, device="cpu")
card = zoo.card(name)
images, labels = train_weights.stripes(200, seed=123)  # fresh: the weights saw seeds 1 (train) and 2 (val)
with torch.no_grad():
    predicted = model(zoo.transforms(name)(images)).argmax(1)
first = {{label: int((labels == i).nonzero()[0]) for i, label in enumerate(card.labels)}}
print(json.dumps({{
    "class": type(model).__name__,
    "training": model.training,
    "qualified": card.qualified_name,
    "files": [sys.modules["zoo_tinynet.models"].__file__, str(zoo.fetch(name))],
    "one_of_each": {{label: card.labels[int(predicted[i])] for label, i in first.items()}},
    "accuracy": (predicted == labels).float().mean().item(),
}}))
"""


@pytest.mark.parametrize("name", ["tinynet-stripes", "tinynet/tinynet-stripes", "tinynet-stripes.v1"])
def test_zoo_load_gives_the_trained_model(site, name):
    result = run(site, "-c", LOAD_AND_CLASSIFY, name)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["class"], out["training"], out["qualified"]) == ("TinyNet", False, "tinynet/tinynet-stripes")
    for file in out["files"]:  # the builder and the pkg:// weights come from the installed package
        assert Path(file).resolve().is_relative_to(site.resolve()), file
    assert out["one_of_each"] == {"horizontal": "horizontal", "vertical": "vertical"}
    assert out["accuracy"] >= 0.97  # 200 fresh images the weights never saw


def test_predict_on_image_files(site, tmp_path):
    code = (
        f"import importlib.util; spec = importlib.util.spec_from_file_location('tw', {str(TRAIN_WEIGHTS)!r}); "
        "tw = importlib.util.module_from_spec(spec); spec.loader.exec_module(tw); "
        "from PIL import Image; imgs, labels = tw.stripes(4, seed=7); "
        f"[Image.fromarray(imgs[i].permute(1, 2, 0).numpy()).save(f'{tmp_path}/s{{i}}.png') for i in range(4)]; "
        "print(' '.join(tw.LABELS[int(v)] for v in labels))"
    )
    made = run(site, "-c", code)
    assert made.returncode == 0, made.stderr
    truth = made.stdout.split()
    assert sorted(set(truth)) == ["horizontal", "vertical"]
    images = [str(tmp_path / f"s{i}.png") for i in range(4)]
    result = run(site, "-m", "zoo", "predict", "tinynet-stripes", *images, "--json", "--topk", "1")
    assert result.returncode == 0, result.stderr
    assert [r["predictions"][0]["label"] for r in json.loads(result.stdout)] == truth


def test_disabling_the_plugin_hides_its_model(site):
    result = run(site, "-m", "zoo", "list", ZOO_DISABLE_PLUGINS="tinynet")
    assert result.returncode == 0, result.stderr
    assert "tinynet-stripes" not in result.stdout and "resnet56-cifar" in result.stdout
