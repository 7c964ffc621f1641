"""The GAN plugin: architectures, the adversarial training step through the runtime (two named optimizers,
d_steps, resume), evaluation by sampling (FID/KID in a named feature space, judge accuracy, the real-vs-real
floor) and the one-line refusals. Self-contained: a tiny GAN card and a random-weights ResNet-20 as the feature
network and judge, on images the test draws."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import save_file

import zoo
import zoo._registry
from zoo.cli import cli
from zoo_gan.models import build_cgan, build_dcgan

CLASSES = ["dark", "bright"]


def make_two_class_folder(root: Path, per_class: int, size: int = 32, seed: int = 0) -> Path:
    """Noisy dark and bright 32x32 PNGs in two class folders (an ImageFolder)."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            level = 60 + 130 * c
            array = level + rng.integers(-50, 51, (size, size, 3))
            Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).save(root / name / f"{i:03d}.png")
    return root


def _file_card(directory: Path, name: str, module: torch.nn.Module) -> tuple[str, str]:
    torch.manual_seed(0)
    path = directory / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return path.name, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def tiny_gan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user registry with `tiny-cgan` (conditional), `tiny-dcgan` and `judge-net` (a random ResNet-20 over the
    same two classes: the feature network and the judge)."""
    from zoo_classifier.models import build_cifar_resnet

    torch.manual_seed(0)
    judge_file, judge_sha = _file_card(tmp_path, "judge-net", build_cifar_resnet(depth=20, num_classes=2))
    torch.manual_seed(1)
    cgan_file, cgan_sha = _file_card(tmp_path, "tiny-cgan", build_cgan(2, 16, 32, 8))
    dcgan_file, dcgan_sha = _file_card(tmp_path, "tiny-dcgan", build_dcgan(16, 32, 8))
    gan_common = (
        "    input: {shape: [3, 32, 32]}\n"
        "    preprocess: {resize: 32, crop: 32, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}\n"
    )
    registry = tmp_path / "registry.yaml"
    registry.write_text(
        "models:\n"
        "  judge-net:\n    task: classifier\n    builder: zoo_classifier.models:build_cifar_resnet\n"
        "    kwargs: {depth: 20, num_classes: 2}\n    head: linear\n    input: {shape: [3, 32, 32]}\n"
        "    preprocess: {resize: 32, crop: 32, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}\n"
        f"    labels: [{', '.join(CLASSES)}]\n"
        f"    weights:\n      v1: {{uri: {judge_file}, sha256: {judge_sha}}}\n"
        "  tiny-cgan:\n    task: gan\n    builder: zoo_gan.models:build_cgan\n"
        "    kwargs: {num_classes: 2, z_dim: 16, g_width: 32, d_width: 8}\n"
        + gan_common
        + f"    labels: [{', '.join(CLASSES)}]\n"
        "    task_config: {features: judge-net, judge: judge-net, samples: 160, val_samples: 140}\n"
        f"    weights:\n      v1: {{uri: {cgan_file}, sha256: {cgan_sha}}}\n"
        "  tiny-dcgan:\n    task: gan\n    builder: zoo_gan.models:build_dcgan\n"
        "    kwargs: {z_dim: 16, g_width: 32, d_width: 8}\n"
        + gan_common
        + "    task_config: {loss: nonsaturating, features: judge-net, samples: 160, val_samples: 140}\n"
        f"    weights:\n      v1: {{uri: {dcgan_file}, sha256: {dcgan_sha}}}\n"
    )
    monkeypatch.setenv("ZOO_REGISTRY", str(registry))
    zoo._registry.reset_registry()
    return tmp_path


def test_architectures_reach_32_pixels_in_range():
    torch.manual_seed(0)
    for gan, labels in ((build_dcgan(), None), (build_cgan(10), torch.arange(4) % 10)):
        gan.eval()
        images = gan(torch.randn(4, gan.z_dim), labels)
        assert images.shape == (4, 3, 32, 32) and images.abs().max() <= 1.0
        assert gan.discriminator(images, labels).shape == (4,)


def test_the_class_changes_a_conditional_sample():
    torch.manual_seed(0)
    gan = build_cgan(10).eval()
    for norm in gan.generator.norms:  # initialised class-blind (scale 1, shift 0): as if trained
        torch.nn.init.normal_(norm.shift.weight, std=0.5)
    z = torch.randn(1, gan.z_dim).repeat(2, 1)
    with torch.no_grad():
        a, b = gan(z, torch.tensor([3, 5]))
    assert (a - b).abs().mean() > 1e-3


def test_eval_reports_fid_in_its_feature_space_with_judge_and_floor(tiny_gan: Path):
    data = make_two_class_folder(tiny_gan / "data", 160)
    record = zoo.evaluate("tiny-cgan", data, val_split=0.5, seed=0, samples=160, precision="fp32")
    metrics = record["metrics"]
    assert list(metrics)[0] == "fid[judge-net]" and record["headline"]["metric"] == "fid[judge-net]"
    assert metrics["fid[judge-net]"] > 0 and metrics["samples"] == 160 and metrics["feature_dim"] == 64
    assert 0 <= metrics["judge_accuracy"] <= 100 and metrics["judge"] == "judge-net"
    assert metrics["reference"]["images"] == 160 and "held out" in metrics["reference"]["set"]
    floor = metrics["floor"]
    assert floor["images"] == 160 and "outside the reference set" in floor["set"]
    assert floor["fid[judge-net]"] < metrics["fid[judge-net]"]  # real images beat an untrained generator
    again = zoo.evaluate("tiny-cgan", data, val_split=0.5, seed=0, samples=160, precision="fp32")
    assert again["metrics"]["fid[judge-net]"] == metrics["fid[judge-net]"]  # same seeds, same samples


def test_truncated_latents_stay_in_bounds_and_follow_each_sample_s_seed():
    from zoo.runtime.sample import Noise

    a = Noise([7, 8, 9]).truncated_randn(0.5, 64)
    assert a.shape == (3, 64) and a.abs().max() <= 0.5 and a.std() > 0.2  # bounded, not collapsed to 0
    assert torch.equal(Noise([8]).truncated_randn(0.5, 64)[0], a[1])  # row i from sample i's generator alone


def test_truncation_samples_eval_and_refusals(tiny_gan: Path, tmp_path: Path):
    """``--truncation`` (BigGAN's trick) changes the latents, is recorded in the manifest and the eval record,
    gives the same images whatever the batch size, and a bound that is not positive is one line, exit 1."""
    plain = zoo.sample("tiny-cgan", 6, seed=3, labels="dark", precision="fp32")
    cut = zoo.sample("tiny-cgan", 6, seed=3, labels="dark", precision="fp32", truncation=0.5)
    assert not torch.equal(plain, cut)
    assert torch.equal(
        cut, zoo.sample("tiny-cgan", 6, seed=3, labels="dark", precision="fp32", truncation=0.5, batch_size=4)
    )
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(cli, ["sample", "tiny-dcgan", "-n", "4", "--truncation", "1.5", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(Path(f"{out}.json").read_text())["options"] == {"truncation": 1.5}
    data = make_two_class_folder(tiny_gan / "data", 160)
    record = zoo.evaluate("tiny-cgan", data, val_split=0.5, seed=0, samples=160, precision="fp32", truncation=0.5)
    assert record["metrics"]["sampling"] == {"truncation": 0.5}
    for value in ("0", "-2"):
        bad = CliRunner().invoke(cli, ["sample", "tiny-cgan", "-n", "2", "--truncation", value, "-o", str(out)])
        assert bad.exit_code == 1 and "Traceback" not in bad.output
        assert f"--truncation {value}: give a positive bound" in bad.output, bad.output


def test_too_few_samples_for_the_feature_space_is_one_line(tiny_gan: Path):
    data = make_two_class_folder(tiny_gan / "data", 160)
    result = CliRunner().invoke(
        cli, ["eval", "tiny-dcgan", "--data", str(data), "--val-split", "0.5", "--samples", "50"]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "64-dimensional" in result.output and "--samples 128" in result.output, result.output


@pytest.mark.parametrize("verb", ["predict"])
def test_a_gan_does_not_predict(tiny_gan: Path, verb: str):
    result = CliRunner().invoke(cli, [verb, "tiny-cgan", "examples/images/horse.png"])
    assert result.exit_code == 1
    assert "'zoo predict' does not apply" in result.output and "'zoo sample'" in result.output


def test_training_steps_both_optimizers_and_resumes_exactly(tiny_gan: Path):
    """Two epochs straight vs stopped after one and resumed: the same weights (the loop's generator draws the
    latents, the checkpoint holds G's and D's optimizers). d_steps 2: G steps on every other batch."""
    from zoo.runtime.finetune import FinetuneConfig, finetune

    data = make_two_class_folder(tiny_gan / "data", 160)
    config = FinetuneConfig(epochs=2, batch_size=32, val_split=0.5, seed=0)
    straight = finetune("tiny-cgan", data, tiny_gan / "straight", config=config, register=False, show_progress=False)
    assert len(straight.history) == 2 and "val_fid[judge-net]" in straight.history[0]
    assert "train_g_loss" in straight.history[0]
    one = finetune(
        "tiny-cgan",
        data,
        tiny_gan / "resumed",
        config=FinetuneConfig(epochs=1, batch_size=32, val_split=0.5, seed=0),
        register=False,
        show_progress=False,
    )
    assert one.best_epoch == 1
    resumed = finetune(
        "tiny-cgan", data, tiny_gan / "resumed", config=config, resume=True, register=False, show_progress=False
    )
    assert [row["val_fid[judge-net]"] for row in resumed.history] == [
        row["val_fid[judge-net]"] for row in straight.history
    ]
    state = torch.load(tiny_gan / "straight" / "checkpoint.pt", weights_only=True)
    assert set(state["optimizers"]) == {"D", "G"} and all(o["state"] for o in state["optimizers"].values())
    last = torch.load(tiny_gan / "resumed" / "checkpoint.pt", weights_only=True)["model"]
    assert state["model"].keys() == last.keys()
    assert all(torch.equal(state["model"][k], last[k]) for k in last)


def test_d_steps_makes_the_generator_step_less_often(tiny_gan: Path, tmp_path: Path):
    from zoo.runtime.finetune import FinetuneConfig, finetune

    text = (
        (tiny_gan / "registry.yaml")
        .read_text()
        .replace("samples: 160, val_samples: 140}", "samples: 160, val_samples: 140, d_steps: 2}")
    )
    (tiny_gan / "registry.yaml").write_text(text)
    zoo._registry.reset_registry()
    data = make_two_class_folder(tiny_gan / "data", 160)
    finetune(
        "tiny-cgan",
        data,
        tiny_gan / "d2",
        config=FinetuneConfig(epochs=1, batch_size=32, val_split=0.5),
        register=False,
        show_progress=False,
    )
    state = torch.load(tiny_gan / "d2" / "checkpoint.pt", weights_only=True)
    steps = {name: max(int(s["step"]) for s in o["state"].values()) for name, o in state["optimizers"].items()}
    assert steps == {"D": 5, "G": 3}, steps  # 160 images, batches of 32: D steps on 5, G on batches 0, 2, 4


def test_finetune_writes_a_card_whose_figure_reproduces(tiny_gan: Path):
    from zoo.runtime.finetune import FinetuneConfig, finetune

    data = make_two_class_folder(tiny_gan / "data", 160)
    result = finetune(
        "tiny-cgan",
        data,
        tiny_gan / "my-gan",
        config=FinetuneConfig(epochs=1, batch_size=32, val_split=0.5),
        show_progress=False,
    )
    card = zoo.card("my-gan")
    metric = card.variant().metrics[0]
    assert metric.name == "fid[judge-net]" and metric.value == pytest.approx(result.best_value, abs=1e-3)
    assert "--val-split 0.5 --seed 0" in metric.note
    runner = CliRunner()
    out = runner.invoke(
        cli,
        [
            "eval",
            "my-gan",
            "--data",
            str(data),
            "--val-split",
            "0.5",
            "--samples",
            "140",
            "--compare",
            "--json",
            "--precision",
            "fp32",
        ],
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["compare"]["reproduces"]


def test_the_task_contract_cycle(tiny_gan: Path):
    """load -> sample -> eval -> finetune (stopped and resumed) -> reload, as for every task (tests/contract)."""
    from tests.contract.cycle import run_cycle

    data = make_two_class_folder(tiny_gan / "data", 160)
    report = run_cycle(
        "tiny-cgan", data, [], tiny_gan / "work", finetune_options={"val_split": 0.5, "batch_size": 32, "epochs": 2}
    )
    assert report.verbs == ("eval", "finetune", "sample") and report.new_model == "tiny-cgan-tuned"
    print(report)


def _torchrun(*args: str, port: int) -> subprocess.CompletedProcess:
    torchrun = Path(sys.executable).with_name("torchrun")
    return subprocess.run(
        [str(torchrun), "--nproc_per_node=2", f"--master_port={port}", "-m", "zoo", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "ZOO_OFFLINE": "1", "ZOO_NO_PROGRESS": "1"},
    )


@pytest.mark.slow
def test_torchrun_eval_gives_the_single_process_figures(tiny_gan: Path):
    """Sampling and features sharded over two ranks, gathered in order: the same figures as one process."""
    data = make_two_class_folder(tiny_gan / "data", 160)
    single = zoo.evaluate("tiny-cgan", data, val_split=0.5, samples=200, precision="fp32")["metrics"]
    proc = _torchrun(
        "eval",
        "tiny-cgan",
        "--data",
        str(data),
        "--val-split",
        "0.5",
        "--samples",
        "200",
        "--precision",
        "fp32",
        "--json",
        port=29541,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(proc.stdout)["metrics"]  # rank 0 alone prints
    for key in ("fid[judge-net]", "kid[judge-net]", "judge_accuracy", "precision", "recall"):
        assert metrics[key] == pytest.approx(single[key], rel=1e-6, abs=1e-6), key


@pytest.mark.slow
def test_torchrun_trains_a_gan_on_two_cpu_processes(tiny_gan: Path):
    """Two processes, each its shard; D's and G's gradients averaged at each step (the task calls its modules
    directly, so DDP's own hooks would not fire); rank 0 writes the card."""
    data = make_two_class_folder(tiny_gan / "data", 160)
    out = tiny_gan / "ddp-gan"
    proc = _torchrun(
        "finetune",
        "tiny-cgan",
        "--data",
        str(data),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--val-split",
        "0.5",
        port=29543,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("best epoch") == 1
    zoo._registry.reset_registry()
    assert zoo.card("ddp-gan").variant().metrics[0].name == "fid[judge-net]"


def test_too_small_a_reference_set_is_one_line(tiny_gan: Path):
    data = make_two_class_folder(tiny_gan / "data", 40)
    result = CliRunner().invoke(cli, ["eval", "tiny-dcgan", "--data", str(data), "--val-split", "0.5"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == [
        "Error: The reference set has 40 images (the 40 images held out by --val-split 0.5 --seed 0); FID in "
        "judge-net's 64-dimensional features needs at least 128: give more data or hold out a larger --val-split."
    ]
