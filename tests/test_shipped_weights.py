"""resnet18-cifar's own weights, shipped inside the classifier plugin: they load offline from pkg://, are what
the card pins, recognise the project's example pictures, and the card's validation top-1 reproduces."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open

import zoo
from tests.conftest import REPO, require_shared
from zoo.cli import cli

IMAGES = REPO / "examples" / "images"


@pytest.fixture()
def offline(monkeypatch):
    monkeypatch.setenv("ZOO_OFFLINE", "1")  # shipped weights need no network and no mirror


def shipped_file() -> Path:
    variant = zoo.card("resnet18-cifar").variant()
    assert variant.uri.startswith("pkg://zoo_classifier/")
    return REPO / "plugins" / "zoo_classifier" / variant.uri.removeprefix("pkg://zoo_classifier/")


def test_the_card_pins_the_shipped_file():
    variant = zoo.card("resnet18-cifar").variant()
    data = shipped_file().read_bytes()
    assert len(data) == variant.size and hashlib.sha256(data).hexdigest() == variant.sha256
    assert variant.format == "safetensors" and variant.dtype == "float16"
    with safe_open(str(shipped_file()), framework="pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes == {"F16", "I64"}  # float tensors halved; BatchNorm's batch counters stay integers


def test_loads_offline_without_touching_the_cache(offline, zoo_home):
    model = zoo.load("resnet18-cifar", device="cpu")
    assert type(model).__name__ == "CifarResNet18" and not model.training
    assert model.conv1.weight.dtype == torch.float32  # fp16 on disk, the default dtype in memory
    assert not (zoo_home / "weights").exists() or not any((zoo_home / "weights").iterdir())
    measured = [m for m in zoo.card("resnet18-cifar").variant().metrics if m.source == "measured"]
    assert measured and measured[0].split == "val" and measured[0].value > 50  # trained: chance is 10%


def test_predicts_the_example_pictures(offline):
    result = CliRunner().invoke(
        cli,
        ["predict", "resnet18-cifar", str(IMAGES / "chelsea.png"), str(IMAGES / "horse.png"), "--topk", "3", "--json"],
    )
    assert result.exit_code == 0, result.output
    cat, horse = json.loads(result.output)
    assert cat["predictions"][0]["label"] == "cat", cat
    assert horse["predictions"][0]["label"] == "horse", horse
    assert len(cat["predictions"]) == 3 and cat["predictions"][0]["probability"] > 0.5


@pytest.mark.slow
def test_validation_top1_on_the_card_reproduces(offline):
    """The card's figure, measured again with the command the card gives, on the same held-out images.

    The default tolerance (0.3 points) allows for another CPU's kernels flipping a borderline image or two."""
    data = require_shared("datasets", "cifar10-train-jpeg.zip")
    result = CliRunner().invoke(
        cli, ["eval", "resnet18-cifar", "--data", str(data), "--val-split", "0.1", "--seed", "0", "--compare", "--json"]
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["images"] == 5000 and record["compare"]["reproduces"], record["compare"]
    assert record["compare"]["card_split"] == "val" and record["compare"]["card_source"] == "measured"
