"""cgan-cifar's and vae-cifar's own weights, shipped inside their plugins: the cards pin the files, they sample
offline, the same seed gives the same PNG bytes, and the GAN's samples are of the classes asked for (as a
third-party classifier sees them)."""

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


@pytest.fixture()
def offline(monkeypatch):
    monkeypatch.setenv("ZOO_OFFLINE", "1")  # shipped weights need no network and no mirror


def shipped_file() -> Path:
    variant = zoo.card("cgan-cifar").variant()
    assert variant is not None and variant.uri.startswith("pkg://zoo_gan/")
    return REPO / "plugins" / "zoo_gan" / variant.uri.removeprefix("pkg://zoo_gan/")


def test_the_card_pins_the_shipped_file():
    variant = zoo.card("cgan-cifar").variant()
    data = shipped_file().read_bytes()
    assert len(data) == variant.size and hashlib.sha256(data).hexdigest() == variant.sha256
    assert variant.format == "safetensors" and variant.dtype == "float16" and len(data) < 10 * 2**20
    with safe_open(str(shipped_file()), framework="pt") as f:
        keys = list(f.keys())
        dtypes = {f.get_slice(k).get_dtype() for k in keys}
    assert dtypes <= {"F16", "I64"}
    assert any(k.startswith("generator.") for k in keys) and any(k.startswith("discriminator.") for k in keys)
    names = [m.name for m in variant.metrics]
    assert names[0] == "fid[resnet56-cifar]" and "judge_accuracy" in names  # headline first, in its space


def test_samples_offline_and_the_same_seed_gives_the_same_bytes(offline, tmp_path):
    runner = CliRunner()
    for name in ("a", "b"):
        result = runner.invoke(
            cli,
            [
                "sample",
                "cgan-cifar",
                "-n",
                "8",
                "--seed",
                "3",
                "--class",
                "ship",
                "-o",
                str(tmp_path / f"{name}.png"),
                "--batch-size",
                "3" if name == "a" else "8",
            ],
        )
        assert result.exit_code == 0, result.output
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    manifest = json.loads((tmp_path / "a.png.json").read_text())
    assert manifest["weights"]["sha256"] == zoo.card("cgan-cifar").variant().sha256
    assert manifest["labels"] == ["ship"] * 8


def test_the_judge_sees_the_classes_asked_for(offline, monkeypatch):
    """200 balanced samples labelled by resnet56-cifar (third-party weights): far above chance (10%)."""
    monkeypatch.setenv("ZOO_MIRROR", str(require_shared("weights", "akamaster-resnet-cifar")))
    labels = [i % 10 for i in range(200)]
    images = zoo.sample("cgan-cifar", n=200, seed=0, labels=labels)
    judge = zoo.load("resnet56-cifar", device="cpu")
    pre = zoo.card("resnet56-cifar").preprocess
    task_mean, task_std = torch.tensor(pre.mean).view(1, 3, 1, 1), torch.tensor(pre.std).view(1, 3, 1, 1)
    pixels = (images * 255).round() / 255  # as the PNG holds them
    with torch.inference_mode():
        predicted = judge((pixels - task_mean) / task_std).argmax(1)
    accuracy = float((predicted == torch.tensor(labels)).float().mean())
    assert accuracy > 0.2, accuracy


def test_vae_card_pins_its_shipped_file_and_samples_offline(offline):
    variant = zoo.card("vae-cifar").variant()
    assert variant is not None and variant.uri.startswith("pkg://zoo_vae/")
    data = (REPO / "plugins" / "zoo_vae" / variant.uri.removeprefix("pkg://zoo_vae/")).read_bytes()
    assert len(data) == variant.size and hashlib.sha256(data).hexdigest() == variant.sha256
    assert variant.dtype == "float16" and variant.metrics[0].name == "bits_per_dim"
    images = zoo.sample("vae-cifar", n=4, seed=0)
    assert images.shape == (4, 3, 32, 32) and 0 <= float(images.min()) and float(images.max()) <= 1
    assert float(images.std()) > 0.02  # decoded images, not a constant
