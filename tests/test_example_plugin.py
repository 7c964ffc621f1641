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

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """pip builds the example's wheel (hatchling) and installs it into a fresh target directory."""
    target = tmp_path_factory.mktemp("example") / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(EXAMPLE)], check=True)
    assert (target / "zoo_tinynet" / "weights" / "tinynet-stripes.safetensors").is_file()
    assert list(target.glob("zoo_tinynet-0.1.0.dist-info/entry_points.txt"))
    return target


def run(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(site), **env})


def test_installed_plugin_shows_in_list_and_plugins(site):
    listed = run(site, "-m", "zoo", "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("tinynet-stripes"))
    assert row.split()[-1] == "tinynet" and "1.5K" in row and "3x16x16" in row
    assert "resnet56-cifar" in listed.stdout
    records = {r["name"]: r for r in json.loads(run(site, "-m", "zoo", "plugins", "--json").stdout)}
    tinynet = records["tinynet"]
    assert (tinynet["distribution"], tinynet["version"], tinynet["builtin"], tinynet["error"]) == (
        "zoo-tinynet", "0.1.0", False, None)
    assert tinynet["models"] == ["tinynet-stripes"] and records["classifier"]["error"] is None


LOAD_AND_CLASSIFY = f"""
import sys, torch, zoo
sys.path.insert(0, {str(EXAMPLE)!r})
from train_weights import stripes
model = zoo.load(sys.argv[1], device="cpu")
assert not model.training
images, labels = stripes(200, seed=123)
x = (images.float() / 255 - 0.5) / 0.25
accuracy = (model(x).argmax(1) == labels).float().mean().item()
print(type(model).__name__, zoo.card(sys.argv[1]).qualified_name, accuracy)
"""


@pytest.mark.parametrize("name", ["tinynet-stripes", "tinynet/tinynet-stripes", "tinynet-stripes.v1"])
def test_zoo_load_gives_the_trained_model(site, name):
    result = run(site, "-c", LOAD_AND_CLASSIFY, name)
    assert result.returncode == 0, result.stderr
    kind, qualified, accuracy = result.stdout.split()
    assert (kind, qualified) == ("TinyNet", "tinynet/tinynet-stripes")
    assert float(accuracy) >= 0.97  # fresh images the weights never saw


def test_predict_on_an_image_file(site, tmp_path):
    code = (f"import sys; sys.path.insert(0, {str(EXAMPLE)!r}); from train_weights import stripes; "
            "from PIL import Image; imgs, labels = stripes(2, seed=7); "
            f"[Image.fromarray(imgs[i].permute(1, 2, 0).numpy()).save(f'{tmp_path}/s{{i}}.png') for i in range(2)]; "
            "print(' '.join(['horizontal', 'vertical'][int(v)] for v in labels))")
    truth = run(site, "-c", code).stdout.split()
    result = run(site, "-m", "zoo", "predict", "tinynet-stripes", str(tmp_path / "s0.png"), str(tmp_path / "s1.png"),
                 "--json", "--topk", "1")
    assert result.returncode == 0, result.stderr
    assert [r["predictions"][0]["label"] for r in json.loads(result.stdout)] == truth


def test_disabling_the_plugin_hides_its_model(site):
    result = run(site, "-m", "zoo", "list", ZOO_DISABLE_PLUGINS="tinynet")
    assert result.returncode == 0 and "tinynet-stripes" not in result.stdout and "resnet56-cifar" in result.stdout
