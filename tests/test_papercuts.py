"""Papercuts a new user hits first (#19): each one a single clear line, or behaviour that matches the CLI's."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import zoo
from tests.test_cli import TORCH_FREE
from zoo._registry import get_registry, reset_registry
from zoo.cli import cli
from zoo.errors import RegistryError, UnknownModelError, ZooError

REPO = Path(__file__).resolve().parents[1]
CHELSEA = REPO / "examples" / "images" / "chelsea.png"


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def one_class_folder(root: Path, label: str = "cat", n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    (root / label).mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / label / f"{i}.png")
    return root


# -- 1. --device that this machine does not have ---------------------------------------------------------------
@pytest.fixture()
def cpu_only(monkeypatch):
    """This machine as a CPU-only one, whatever it really has; and no downloads."""
    import zoo.runtime.device

    monkeypatch.setattr(zoo.runtime.device, "available_devices", lambda: ["cpu"])
    monkeypatch.setenv("ZOO_OFFLINE", "1")


@pytest.mark.parametrize("device", ["cuda", "mps", "cpuu", "cuda:1"])
@pytest.mark.parametrize("command", ["predict", "eval", "sample", "finetune"])
def test_an_unavailable_device_is_one_line_naming_the_devices_here(cpu_only, tmp_path, command, device):
    args = {
        "predict": ["predict", "resnet56-cifar", str(CHELSEA)],
        "eval": ["eval", "resnet56-cifar", "--data", str(tmp_path)],
        "sample": ["sample", "dcgan-cifar", "-n", "1", "-o", str(tmp_path / "grid.png")],
        "finetune": ["finetune", "resnet20-cifar", "--data", str(tmp_path), "--out", str(tmp_path / "net")],
    }[command]
    result = invoke(*args, "--device", device)
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: Device {device!r} {'is not a device' if device == 'cpuu' else 'is not available here'} (this "
        "machine has: cpu). Use --device cpu or leave it out."
    ]


def test_load_checks_the_device_before_fetching_weights(cpu_only):
    with pytest.raises(ZooError, match=r"^Device 'cuda' is not available here \(this machine has: cpu\)"):
        zoo.load("resnet56-cifar", device="cuda")  # offline and not cached: the device is checked first


def test_the_gpus_a_machine_has_are_named(monkeypatch):
    import torch

    import zoo.runtime.device
    from zoo.runtime.device import available_devices, check_device

    assert available_devices()[0] == "cpu"  # the real machine's, then a machine with two GPUs
    monkeypatch.setattr(zoo.runtime.device, "available_devices", lambda: ["cpu", "cuda:0", "cuda:1"])
    for fine in (None, "auto", "cpu", "cuda", "cuda:1", torch.device("cuda", 0)):
        check_device(fine)
    with pytest.raises(
        ZooError,
        match=re.escape(
            "Device 'cuda:2' is not available here (this machine has: cpu, "
            "cuda:0, cuda:1). Use --device cpu (or another of those)"
        ),
    ):
        check_device("cuda:2")


# -- 2. a typo in the user's own registry --------------------------------------------------------------------------
TYPO = "models:\n  my-net:\n    task: classifier\n    buildr: zoo_classifier.models:build_cifar_resnet\n"
GOOD_AND_TYPO = (
    "models:\n  good-net: {task: classifier, builder: 'zoo_classifier.models:build_cifar_resnet'}\n"
    "  my-net: {task: classifier, buildr: 'zoo_classifier.models:build_cifar_resnet'}\n"
)


@pytest.mark.parametrize("text", [TYPO, GOOD_AND_TYPO, "models:\n  my-net: [\n"])
def test_a_broken_home_registry_is_a_warning_and_its_cards_are_skipped(zoo_home, caplog, text):
    (zoo_home / "registry.yaml").write_text(text)
    reset_registry()
    with caplog.at_level(logging.WARNING, logger="zoo"):
        names = zoo.list_models()
    assert "resnet56-cifar" in names and "good-net" not in names and "my-net" not in names  # all or none
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert f"your registry is broken, its models are skipped: {zoo_home / 'registry.yaml'}" in warning
    assert "buildr" in warning or "invalid YAML" in warning
    with pytest.raises(UnknownModelError, match="Your registry was skipped: .*registry.yaml"):
        zoo.card("my-net")


def test_other_commands_work_with_a_broken_home_registry(zoo_home):
    (zoo_home / "registry.yaml").write_text(TYPO)
    reset_registry()
    result = invoke("info", "resnet56-cifar")
    assert result.exit_code == 0 and "resnet56-cifar" in result.output


def test_a_broken_registry_named_in_zoo_registry_stays_an_error(tmp_path, monkeypatch):
    (tmp_path / "mine.yaml").write_text(TYPO)
    monkeypatch.setenv("ZOO_REGISTRY", str(tmp_path / "mine.yaml"))
    reset_registry()
    with pytest.raises(RegistryError, match="mine.yaml, entry 'my-net', field 'buildr': unknown field"):
        get_registry()


# -- 3. zoo.transforms on PIL images of any mode --------------------------------------------------------------------
def _images() -> dict[str, tuple[Image.Image, str]]:
    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 256, (40, 48, 4), dtype=np.uint8), "RGBA")
    rgb = rgba.convert("RGB")
    palette_alpha = rgb.convert("P")
    palette_alpha.info["transparency"] = 3
    return {
        "RGBA": (rgba, "PNG"),
        "CMYK": (rgb.convert("CMYK"), "TIFF"),
        "P": (rgb.convert("P"), "PNG"),
        "P+transparency": (palette_alpha, "PNG"),
        "L": (rgb.convert("L"), "PNG"),
        "LA": (rgba.convert("LA"), "PNG"),
        "I;16": (Image.fromarray(rng.integers(0, 65536, (40, 48), dtype=np.uint16)), "PNG"),
        "1": (rgb.convert("1"), "PNG"),
    }


@pytest.mark.parametrize("mode", list(_images()))
def test_transforms_read_a_pil_image_of_any_mode_as_the_cli_reads_its_file(mode):
    """zoo.transforms(name)(PIL image) == what `zoo predict` feeds the model for the same image saved to a file."""
    from zoo.runtime.images import decode_image

    image, fmt = _images()[mode]
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    data = buffer.getvalue()
    opened = Image.open(io.BytesIO(data))
    assert opened.mode == image.mode  # the file keeps the mode under test
    transform = zoo.transforms("resnet56-cifar")
    from_pil = transform(opened)
    from_file = transform(decode_image(data, name=mode))  # the CLI's path: the file's bytes, decoded
    assert from_pil.shape == (3, 32, 32)
    assert (from_pil - from_file).abs().max().item() == 0.0


# -- 4. zoo finetune into a finished run ------------------------------------------------------------------------
def test_finetune_refuses_to_overwrite_a_finished_run(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    out = tmp_path / "my-net"
    out.mkdir()
    (out / "my-net.safetensors").write_bytes(b"a finished run")
    data = one_class_folder(tmp_path / "data")  # refused after the check: proof that the check let it through
    base = ["finetune", "resnet20-cifar", "--data", str(data), "--out", str(out), "--device", "cpu"]
    refused = invoke(*base)
    assert refused.exit_code == 1
    assert refused.output.splitlines() == [
        f"Error: {out} already holds a finished run (my-net.safetensors); pass --overwrite to replace it, or choose "
        "another --out."
    ]
    assert (out / "my-net.safetensors").read_bytes() == b"a finished run"
    overwrite = invoke(*base, "--overwrite")
    assert overwrite.exit_code == 1 and "needs at least two classes" in overwrite.output
    resume = invoke(*base, "--resume")
    assert resume.exit_code == 1 and "needs at least two classes" in resume.output


# -- 5. did you mean ------------------------------------------------------------------------------------------
def _suggested(name: str) -> list[str]:
    with pytest.raises(UnknownModelError) as info:
        zoo.card(name)
    match = re.search(r"Did you mean (.*)\?", str(info.value))
    return re.findall(r"'([^']+)'", match.group(1)) if match else []


@pytest.mark.parametrize("name", ["ResNet56-CIFAR", "RESNET56-cifar"])
def test_a_wrong_case_name_is_suggested_first(name):
    assert _suggested(name)[0] == "resnet56-cifar"


def test_a_wrong_case_qualified_name_is_suggested_qualified():
    assert _suggested("Classifier/ResNet56-CIFAR")[0] == "classifier/resnet56-cifar"


@pytest.mark.parametrize("name", ["vae-cifr", "vaecifar", "vae/vae-cifr", "gan/dcgan-cifr", "resnet56-cifr"])
def test_each_model_is_suggested_once(name):
    suggested = _suggested(name)
    cards = [zoo.card(s).qualified_name for s in suggested]
    assert suggested and len(cards) == len(set(cards)), suggested


# -- 6. zoo list --help names the installed tasks -------------------------------------------------------------------
def test_list_help_names_the_registered_tasks():
    from zoo.runtime.tasks import _registered

    result = invoke("list", "--help")
    assert result.exit_code == 0
    help_text = " ".join(result.output.split())
    assert f"Only models of this task ({', '.join(sorted(_registered()))})." in help_text
    assert {"classifier", "detector", "diffusion", "gan", "vae"} <= set(_registered())


def test_list_help_imports_no_torch():
    result = subprocess.run(
        [sys.executable, "-c", TORCH_FREE.format(args=["list", "--help"])], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "classifier" in result.stdout and result.stdout.strip().splitlines()[-1] == "HEAVY []"


# -- 7. a one-class dataset for a classifier --------------------------------------------------------------------
def test_a_one_class_dataset_is_refused_up_front(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    data = one_class_folder(tmp_path / "data")
    result = invoke(
        "finetune",
        "resnet20-cifar",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "one"),
        "--device",
        "cpu",
        "--epochs",
        "1",
    )
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: {data}: only class 'cat'; a classifier needs at least two classes to learn (an ImageFolder has one "
        "subfolder of images per class)."
    ]
