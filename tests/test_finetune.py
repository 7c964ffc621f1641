"""zoo finetune end to end on small generated data: the result is a card anyone can load by name."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

import zoo
import zoo.runtime.finetune as ft
from tests.conftest import register_resnet20_card
from zoo._registry import reset_registry
from zoo.cli import cli
from zoo.errors import ZooError
from zoo.runtime.finetune import FinetuneConfig, finetune

FAST = dict(epochs=3, batch_size=8, augment="crop-flip", val_split=0.2)


def make_top_bottom(root: Path, per_class: int = 30, seed: int = 0, classes=("bottom", "top")) -> Path:
    """Bright top half vs bright bottom half: learnable in a few steps, and flip-invariant."""
    rng = np.random.default_rng(seed)
    for label in classes:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            array = rng.integers(0, 80, (32, 32, 3), dtype=np.uint8)
            rows = slice(0, 16) if label == "top" else slice(16, 32)
            array[rows] += 150
            Image.fromarray(array).save(root / label / f"{i:03d}.png")
    return root


@pytest.fixture()
def source_card(tmp_path, monkeypatch) -> str:
    """A 10-class CIFAR ResNet-20 card with (random, test-only) weights, to fine-tune from."""
    return register_resnet20_card(tmp_path, monkeypatch, "src-resnet", list("abcdefghij"))


def test_finetune_writes_weights_reports_and_a_loadable_card(tmp_path, source_card, zoo_home):
    data = make_top_bottom(tmp_path / "data")
    out = tmp_path / "runs" / "top-bottom"
    result = finetune(source_card, data, out, config=FinetuneConfig(**FAST), device="cpu", show_progress=False)
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert result.best_val_top1 == 100.0
    for name in (
        "top-bottom.safetensors",
        "best.safetensors",
        "checkpoint.pt",
        "metrics.csv",
        "metrics.json",
        "curves.png",
    ):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.partial"))
    # the card: in the user registry, with the measured metric and the recipe
    card = zoo.card("top-bottom")
    assert card.plugin == "user" and card.labels == ("bottom", "top") and card.kwargs["num_classes"] == 2
    (metric,) = card.variant().metrics
    assert (metric.source, metric.value, metric.split) == ("measured", 100.0, "val")
    assert metric.note.startswith("12 images held out (stratified by class) by --val-split 0.2")
    assert '"epochs": 3' in card.variant().notes
    # anyone can load it by name, in a fresh process, and it predicts
    code = (
        "import zoo, torch; from zoo.runtime.predict import predict; import sys; "
        "r = predict('top-bottom', sys.argv[1:], topk=1, device='cpu'); "
        "print(' '.join(x['predictions'][0]['label'] for x in r))"
    )
    images = [str(data / "top" / "000.png"), str(data / "bottom" / "001.png")]
    proc = subprocess.run([sys.executable, "-c", code, *images], capture_output=True, text=True, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["top", "bottom"]


def test_freeze_backbone_trains_only_the_new_head(tmp_path, source_card):
    data = make_top_bottom(tmp_path / "data")
    finetune(
        source_card,
        data,
        tmp_path / "frozen",
        config=FinetuneConfig(**{**FAST, "freeze": "backbone"}),
        device="cpu",
        show_progress=False,
    )
    source = load_file(str(tmp_path / "src-resnet.safetensors"))
    tuned = load_file(str(tmp_path / "frozen" / "frozen.safetensors"))
    assert tuned["linear.weight"].shape == (2, 64)
    for key in ("conv1.weight", "layer3.2.conv2.weight", "layer2.0.bn1.weight"):
        torch.testing.assert_close(tuned[key], source[key])
    # frozen BatchNorm layers still track statistics in train mode, as torch does; weights stay put


def test_interrupted_run_resumes_where_it_stopped(tmp_path, source_card, monkeypatch, zoo_home):
    data = make_top_bottom(tmp_path / "data")
    out = tmp_path / "resumed"
    real_validate = ft._validate
    calls = []

    def interrupt_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(ft, "_validate", interrupt_in_epoch_2)
    result = finetune(source_card, data, out, config=FinetuneConfig(**FAST), device="cpu", show_progress=False)
    assert result.interrupted and (out / "checkpoint.pt").is_file()
    assert not (out / "resumed.safetensors").exists() and "resumed" not in zoo.list_models()
    assert not list(out.glob("*.partial"))
    monkeypatch.setattr(ft, "_validate", real_validate)
    resumed = finetune(
        source_card, data, out, config=FinetuneConfig(**FAST), resume=True, device="cpu", show_progress=False
    )
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3] and not resumed.interrupted
    assert zoo.card("resumed").labels == ("bottom", "top")


class _StopAtBatch(ft.StopRequest):
    """Asks to stop when the loop checks for the `at`-th time (the loop checks after every batch)."""

    def __init__(self, at: int):
        super().__init__()
        self.checks, self.at = 0, at

    @property
    def requested(self) -> bool:
        self.checks += 1
        return self.checks == self.at

    @requested.setter
    def requested(self, value: bool) -> None:
        pass


def test_a_run_stopped_mid_epoch_resumes_to_the_same_weights(tmp_path, source_card, monkeypatch):
    """Stop in the middle of epoch 2, resume: the weights equal those of a run that never stopped."""
    data = make_top_bottom(tmp_path / "data")
    config = FinetuneConfig(**{**FAST, "epochs": 2, "batch_size": 16})  # 48 training images: 3 batches per epoch
    straight = finetune(
        source_card, data, tmp_path / "straight", config=config, device="cpu", show_progress=False, register=False
    )
    real_stop_request = ft.StopRequest
    monkeypatch.setattr(ft, "StopRequest", lambda: _StopAtBatch(at=4))  # checks: 2 batches, epoch 1 end, 1st batch of 2
    stopped = finetune(
        source_card, data, tmp_path / "stopped", config=config, device="cpu", show_progress=False, register=False
    )
    assert stopped.interrupted and [row["epoch"] for row in stopped.history] == [1]
    saved = torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=True)
    assert json.loads(saved["position"])["epoch"] == 1 and json.loads(saved["position"])["step"] == 1
    monkeypatch.setattr(ft, "StopRequest", real_stop_request)
    resumed = finetune(
        source_card,
        data,
        tmp_path / "stopped",
        config=config,
        resume=True,
        device="cpu",
        show_progress=False,
        register=False,
    )
    assert not resumed.interrupted and [row["epoch"] for row in resumed.history] == [1, 2]
    a, b = load_file(str(straight.weights)), load_file(str(resumed.weights))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    # the resumed epoch's row counts all of its images, the ones before the stop included
    assert resumed.history[1]["train_loss"] == pytest.approx(straight.history[1]["train_loss"], rel=1e-4)


def test_sigterm_stops_at_a_batch_and_resume_finishes(tmp_path, source_card):
    """A real signal to a real `zoo finetune`: it writes a checkpoint, says how to resume, and resume completes."""
    data = make_top_bottom(tmp_path / "data", per_class=60)
    out = tmp_path / "sig-net"
    args = [
        sys.executable,
        "-m",
        "zoo",
        "finetune",
        source_card,
        "--data",
        str(data),
        "--out",
        str(out),
        "--epochs",
        "3",
        "--batch-size",
        "4",
        "--checkpoint-minutes",
        "0.0001",
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint = out / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    assert "Stopping after this batch" in stderr and "Run the same command with --resume" in stderr
    assert "Error" not in stderr
    assert not list(out.glob("*.partial")) and not (out / "sig-net.safetensors").exists()
    position = json.loads(torch.load(checkpoint, weights_only=True)["position"])
    assert position["epoch"] < 3
    done = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(json.loads((out / "metrics.json").read_text())) == 3 and (out / "sig-net.safetensors").is_file()


@pytest.mark.parametrize(
    "options",
    [
        {"balance": "sampler"},
        {"balance": "loss"},
        {"optimizer": "adamw"},
        {"schedule": "cosine", "accumulate": 2},
        {"augment": "crop-flip-erase"},
        {"augment": "crop-flip-trivial-erase"},
    ],
)
def test_recipe_options_run_and_learn(tmp_path, source_card, options):
    data = make_top_bottom(tmp_path / "data")
    # imbalanced on purpose: 30 "top" vs 10 "bottom"
    for path in sorted((data / "bottom").glob("*.png"))[10:]:
        path.unlink()
    config = FinetuneConfig(**{**FAST, "epochs": 8, "batch_size": 8, **options})
    result = finetune(source_card, data, tmp_path / "opt", config=config, device="cpu", show_progress=False)
    assert result.best_val_top1 >= 75.0, result.history


@pytest.mark.slow
def test_compiled_training_learns_and_saves_plain_weights(tmp_path, source_card, zoo_home):
    data = make_top_bottom(tmp_path / "data")
    # 48 training images in batches of 10: the short last batch takes the second (static) compile
    config = FinetuneConfig(**{**FAST, "batch_size": 10, "compile": True})
    result = finetune(source_card, data, tmp_path / "compiled-net", config=config, device="cpu", show_progress=False)
    assert result.best_val_top1 >= 75.0, result.history
    state = load_file(result.weights)
    assert not [key for key in state if "_orig_mod" in key]  # the plain module's keys, loadable anywhere
    assert set(state) == set(zoo.load(source_card).state_dict())
    assert '"compile": true' in zoo.card("compiled-net").variant().notes
    assert zoo.load("compiled-net")(torch.zeros(1, 3, 32, 32)).shape == (1, 2)


def test_ema_saves_the_average_and_resumes_it(tmp_path, source_card, monkeypatch, zoo_home):
    """--ema: the saved weights are the moving average (not the last step's), validated as such, and a run
    stopped mid-epoch resumes to the same average (the checkpoint carries it)."""
    data = make_top_bottom(tmp_path / "data")
    config = FinetuneConfig(**FAST)
    plain = finetune(
        source_card, data, tmp_path / "plain", config=config, device="cpu", show_progress=False, register=False
    )
    averaged = dataclasses.replace(config, ema=0.5)
    straight = finetune(source_card, data, tmp_path / "ema-net", config=averaged, device="cpu", show_progress=False)
    assert straight.best_val_top1 >= 75.0, straight.history
    a, b = load_file(str(plain.weights)), load_file(str(straight.weights))
    assert set(a) == set(b) and not torch.allclose(a["linear.weight"], b["linear.weight"])  # same run, averaged weights
    assert '"ema": 0.5' in zoo.card("ema-net").variant().notes
    real_stop_request = ft.StopRequest
    monkeypatch.setattr(ft, "StopRequest", lambda: _StopAtBatch(at=4))
    stopped = finetune(
        source_card, data, tmp_path / "stopped", config=averaged, device="cpu", show_progress=False, register=False
    )
    assert stopped.interrupted
    monkeypatch.setattr(ft, "StopRequest", real_stop_request)
    with pytest.raises(ZooError, match="with --ema"):
        finetune(
            source_card,
            data,
            tmp_path / "stopped",
            config=config,
            resume=True,
            device="cpu",
            show_progress=False,
            register=False,
        )  # the other way round: an --ema checkpoint, resumed without
    resumed = finetune(
        source_card,
        data,
        tmp_path / "stopped",
        config=averaged,
        resume=True,
        device="cpu",
        show_progress=False,
        register=False,
    )
    c = load_file(str(resumed.weights))
    for key in b:
        torch.testing.assert_close(b[key], c[key], rtol=1e-5, atol=1e-6)
    with pytest.raises(ZooError, match="--ema 1.5"):
        finetune(
            source_card,
            data,
            tmp_path / "bad",
            config=dataclasses.replace(config, ema=1.5),
            device="cpu",
            show_progress=False,
        )


def test_cli_finetune_and_refusals(tmp_path, source_card):
    data = make_top_bottom(tmp_path / "data")
    result = CliRunner().invoke(
        cli,
        [
            "finetune",
            source_card,
            "--data",
            str(data),
            "--out",
            str(tmp_path / "cli-net"),
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "best epoch" in result.output and "zoo.load('cli-net')" in result.output
    # the card's validation figure is re-measured by zoo eval on the same held-out images
    note = zoo.card("cli-net").variant().metrics[0].note
    assert note.endswith(f"zoo eval cli-net --data {data} --val-split 0.1 --seed 0 --compare")
    again = CliRunner().invoke(
        cli,
        [
            "eval",
            "cli-net",
            "--data",
            str(data),
            "--val-split",
            "0.1",
            "--compare",
            "--tolerance",
            "0",
            "--device",
            "cpu",
        ],
    )
    assert again.exit_code == 0, again.output
    assert "(6 images" in again.output and "reproduces the card's measured" in again.output
    taken = CliRunner().invoke(
        cli, ["finetune", source_card, "--data", str(data), "--out", str(tmp_path / "resnet56-cifar")]
    )
    assert taken.exit_code == 1 and "is taken by plugin 'classifier'" in taken.output
    nothing = CliRunner().invoke(
        cli, ["finetune", source_card, "--data", str(data), "--out", str(tmp_path / "fresh"), "--resume"]
    )
    assert nothing.exit_code == 1 and "Nothing to resume" in nothing.output


def test_metrics_files_agree(tmp_path, source_card):
    data = make_top_bottom(tmp_path / "data")
    finetune(source_card, data, tmp_path / "m", config=FinetuneConfig(**FAST), device="cpu", show_progress=False)
    rows = json.loads((tmp_path / "m" / "metrics.json").read_text())
    csv_lines = (tmp_path / "m" / "metrics.csv").read_text().splitlines()
    assert len(csv_lines) == len(rows) + 1 and csv_lines[0].split(",")[0] == "train_loss"


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path, source_card, zoo_home):
    """DDP with gloo: 2 ranks, each its shard; only rank 0 writes the weights and the card."""
    data = make_top_bottom(tmp_path / "data")
    out = tmp_path / "ddp-net"
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node=2",
            "--master_port=29531",
            "-m",
            "zoo",
            "finetune",
            source_card,
            "--data",
            str(data),
            "--out",
            str(out),
            "--epochs",
            "2",
            "--batch-size",
            "8",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("best epoch") == 1  # rank 0 reports
    reset_registry()
    card = zoo.card("ddp-net")
    assert card.labels == ("bottom", "top")
    history = json.loads((out / "metrics.json").read_text())
    assert len(history) == 2 and all(row["val_top1"] >= 0 for row in history)


def test_bad_options_are_clear(tmp_path, source_card):
    data = make_top_bottom(tmp_path / "data")
    with pytest.raises(ZooError, match="Unknown --balance 'most'"):
        finetune(source_card, data, tmp_path / "x", config=FinetuneConfig(balance="most"), device="cpu")
