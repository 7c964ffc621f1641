"""The generative cards' own weights (cgan-cifar, dcgan-cifar, vae-cifar, ddpm-cifar), shipped inside their
plugins: the cards pin the files, they sample offline, the same seed gives the same PNG bytes, and the
class-conditional models' samples are of the classes asked for (as a third-party classifier sees them)."""

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


#: the generative cards whose weights ship inside their plugins, and the headline each card lists first
SHIPPED = {
    "cgan-cifar": ("zoo_gan", "fid[resnet56-cifar]"),
    "dcgan-cifar": ("zoo_gan", "fid[resnet56-cifar]"),
    "vae-cifar": ("zoo_vae", "bits_per_dim"),
    "ddpm-cifar": ("zoo_diffusion", "fid[resnet56-cifar]"),
}


def shipped_file(name: str) -> Path:
    package = SHIPPED[name][0]
    variant = zoo.card(name).variant()
    assert variant is not None and variant.uri.startswith(f"pkg://{package}/")
    return REPO / "plugins" / package / variant.uri.removeprefix(f"pkg://{package}/")


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_card_pins_the_shipped_file(name):
    variant = zoo.card(name).variant()
    data = shipped_file(name).read_bytes()
    assert len(data) == variant.size and hashlib.sha256(data).hexdigest() == variant.sha256
    assert variant.format == "safetensors" and variant.dtype == "float16" and len(data) < 10 * 2**20
    with safe_open(str(shipped_file(name)), framework="pt") as f:
        keys = list(f.keys())
        dtypes = {f.get_slice(k).get_dtype() for k in keys}
    assert dtypes <= {"F16", "I64"}
    if SHIPPED[name][0] == "zoo_gan":  # zoo finetune continues from both halves
        assert any(k.startswith("generator.") for k in keys) and any(k.startswith("discriminator.") for k in keys)
    names = [m.name for m in variant.metrics]
    assert names and names[0] == SHIPPED[name][1]  # the headline first, in its feature space
    if names[0].startswith("fid[") and zoo.card(name).labels:
        assert "judge_accuracy" in names


@pytest.mark.parametrize(
    "name, options",
    [
        ("cgan-cifar", ["--class", "ship"]),
        ("dcgan-cifar", []),
        ("ddpm-cifar", ["--class", "ship", "--steps", "3"]),
    ],
)
def test_samples_offline_and_the_same_seed_gives_the_same_bytes(offline, tmp_path, name, options):
    runner = CliRunner()
    for run in ("a", "b"):
        result = runner.invoke(
            cli,
            ["sample", name, "-n", "8", "--seed", "3", "-o", str(tmp_path / f"{run}.png"), *options]
            + ["--batch-size", "3" if run == "a" else "8"],
        )
        assert result.exit_code == 0, result.output
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    manifest = json.loads((tmp_path / "a.png.json").read_text())
    assert manifest["weights"]["sha256"] == zoo.card(name).variant().sha256
    if "--class" in options:
        assert manifest["labels"] == ["ship"] * 8


def judge_accuracy(images: torch.Tensor, labels: list[int]) -> float:
    """The share of `images` that resnet56-cifar (third-party weights) labels with the class asked for."""
    judge = zoo.load("resnet56-cifar", device="cpu")
    pre = zoo.card("resnet56-cifar").preprocess
    task_mean, task_std = torch.tensor(pre.mean).view(1, 3, 1, 1), torch.tensor(pre.std).view(1, 3, 1, 1)
    pixels = (images * 255).round() / 255  # as the PNG holds them
    with torch.inference_mode():
        predicted = judge((pixels - task_mean) / task_std).argmax(1)
    return float((predicted == torch.tensor(labels)).float().mean())


def test_the_judge_sees_the_classes_asked_for(offline, monkeypatch):
    """200 balanced cgan samples labelled by resnet56-cifar: far above chance (10%)."""
    monkeypatch.setenv("ZOO_MIRROR", str(require_shared("weights", "akamaster-resnet-cifar")))
    labels = [i % 10 for i in range(200)]
    accuracy = judge_accuracy(zoo.sample("cgan-cifar", n=200, seed=0, labels=labels), labels)
    assert accuracy > 0.2, accuracy


@pytest.mark.slow
def test_the_judge_sees_the_classes_the_diffusion_model_was_asked_for(offline, monkeypatch):
    """100 balanced ddpm-cifar samples (DPM-Solver++, 10 steps, guidance 2): far above chance (10%)."""
    monkeypatch.setenv("ZOO_MIRROR", str(require_shared("weights", "akamaster-resnet-cifar")))
    labels = [i % 10 for i in range(100)]
    images = zoo.sample("ddpm-cifar", n=100, seed=0, labels=labels, sampler="dpm++", steps=10, guidance=2.0)
    accuracy = judge_accuracy(images, labels)
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
