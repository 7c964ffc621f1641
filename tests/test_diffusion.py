"""The diffusion plugin: the denoiser and its schedule, the three samplers (per-sample noise, byte-identical
reruns, batch-size independence), classifier-free guidance, the one-line refusals, training through the runtime
(EMA by default, class dropout, resume to the same weights), evaluation by sampling with a steps sweep, and the
task contract cycle. Self-contained: a tiny DDPM card and a random-weights ResNet-20 as the feature network and
judge, on images the test draws."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import zoo
import zoo._registry
from tests.test_gan import CLASSES, _file_card, make_two_class_folder
from zoo.cli import cli
from zoo.runtime.sample import Noise, sample_seed
from zoo_diffusion.models import build_ddpm
from zoo_diffusion.samplers import denoise, make_scheduler

TINY = {
    "num_classes": 2,
    "channels": [8, 16, 16],
    "layers_per_block": 1,
    "attention": [False, False, True],
    "norm_groups": 4,
    "head_dim": 8,
    "timesteps": 100,
}


def _tiny(**changes: object) -> torch.nn.Module:
    return build_ddpm(**{**TINY, **changes})


@pytest.fixture()
def tiny_ddpm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user registry with `tiny-ddpm` (class-conditional, 100 timesteps), `tiny-uddpm` (unconditional) and
    `judge-net` (a random ResNet-20 over the same two classes: the feature network and the judge)."""
    from zoo_classifier.models import build_cifar_resnet

    torch.manual_seed(0)
    judge_file, judge_sha = _file_card(tmp_path, "judge-net", build_cifar_resnet(depth=20, num_classes=2))
    torch.manual_seed(1)
    ddpm_file, ddpm_sha = _file_card(tmp_path, "tiny-ddpm", _tiny())
    torch.manual_seed(2)
    uddpm_file, uddpm_sha = _file_card(tmp_path, "tiny-uddpm", _tiny(num_classes=0))
    common = (
        "    task: diffusion\n    builder: zoo_diffusion.models:build_ddpm\n    input: {shape: [3, 32, 32]}\n"
        "    preprocess: {resize: 32, crop: 32, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}\n"
    )
    kwargs = (
        "channels: [8, 16, 16], layers_per_block: 1, attention: [false, false, true], norm_groups: 4, "
        "head_dim: 8, timesteps: 100"
    )
    registry = tmp_path / "registry.yaml"
    registry.write_text(
        "models:\n"
        "  judge-net:\n    task: classifier\n    builder: zoo_classifier.models:build_cifar_resnet\n"
        "    kwargs: {depth: 20, num_classes: 2}\n    head: linear\n    input: {shape: [3, 32, 32]}\n"
        "    preprocess: {resize: 32, crop: 32, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}\n"
        f"    labels: [{', '.join(CLASSES)}]\n"
        f"    weights:\n      v1: {{uri: {judge_file}, sha256: {judge_sha}}}\n"
        "  tiny-ddpm:\n" + common + f"    kwargs: {{num_classes: 2, {kwargs}}}\n"
        f"    labels: [{', '.join(CLASSES)}]\n"
        "    task_config: {steps: 4, guidance: 2.0, features: judge-net, judge: judge-net, samples: 160, "
        "val_samples: 140, val_steps: 2, val_every: 1}\n"
        f"    weights:\n      v1: {{uri: {ddpm_file}, sha256: {ddpm_sha}}}\n"
        "  tiny-uddpm:\n" + common + f"    kwargs: {{num_classes: 0, {kwargs}}}\n"
        "    task_config: {steps: 4, features: judge-net, samples: 160, val_samples: 140, val_steps: 2}\n"
        f"    weights:\n      v1: {{uri: {uddpm_file}, sha256: {uddpm_sha}}}\n"
    )
    monkeypatch.setenv("ZOO_REGISTRY", str(registry))
    zoo._registry.reset_registry()
    return tmp_path


# -- the model and its schedule -------------------------------------------------------------------------------


def test_denoiser_predicts_noise_shaped_output_and_derives_its_schedule():
    torch.manual_seed(0)
    model = _tiny().eval()
    x = torch.randn(3, 3, 32, 32)
    out = model(x, torch.tensor([0, 50, 99]), torch.tensor([0, 1, 2]))  # 2: the "no class" embedding
    assert out.shape == x.shape and model.null_class == 2 and model.sample_shape == (3, 32, 32)
    abar = model.alphas_cumprod
    assert len(abar) == 100 and abar[0] > 0.99 and bool((abar[1:] < abar[:-1]).all())
    assert not any(k.startswith("alphas") for k in model.state_dict())  # derived from the card, not weights
    cosine = _tiny(schedule="cosine")
    assert not torch.allclose(cosine.alphas_cumprod, abar)
    with pytest.raises(ValueError, match="schedule"):
        _tiny(schedule="quadratic")


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++"])
def test_each_sampler_reaches_the_data_range_and_reruns_byte_identically(sampler: str):
    torch.manual_seed(0)
    model = _tiny().eval()
    labels = torch.tensor([0, 1, 0, 1])
    with torch.inference_mode():
        a = denoise(model, Noise([sample_seed(0, i) for i in range(4)]), labels, sampler, 5, guidance=2.0)
        b = denoise(model, Noise([sample_seed(0, i) for i in range(4)]), labels, sampler, 5, guidance=2.0)
        c = denoise(model, Noise([sample_seed(1, i) for i in range(4)]), labels, sampler, 5, guidance=2.0)
    assert a.shape == (4, 3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    if sampler != "dpm++":  # DDPM and DDIM clip the predicted x_0 to the data range
        assert a.abs().max() <= 1.0 + 1e-5


def test_sampler_steps_follow_the_trailing_spacing():
    model = _tiny()
    ddim = make_scheduler(model, "ddim", 4)
    assert ddim.timesteps.tolist()[0] == 99 and len(ddim.timesteps) == 4  # starts where x_T is pure noise
    assert len(make_scheduler(model, "ddpm", 100).timesteps) == 100


def test_guidance_one_is_the_plain_conditional_model_and_zero_the_unconditional():
    from zoo_diffusion.samplers import guided

    torch.manual_seed(0)
    model = _tiny().eval()
    x, t, labels = torch.randn(2, 3, 32, 32), torch.tensor(50), torch.tensor([0, 1])
    with torch.inference_mode():
        assert torch.equal(guided(model, x, t, labels, 1.0), model(x, t, labels).float())
        assert torch.equal(guided(model, x, t, labels, 0.0), model(x, t, torch.tensor([2, 2])).float())
        both = model(torch.cat([x, x]), t, torch.tensor([0, 1, 2, 2])).float()
        expected = both[2:] + 3.0 * (both[:2] - both[2:])
        assert torch.allclose(guided(model, x, t, labels, 3.0), expected, atol=1e-5)


# -- zoo sample ------------------------------------------------------------------------------------------------


def test_sample_files_do_not_depend_on_the_batch_size(tiny_ddpm: Path):
    """Calls of a fixed 32 rows (the task's sample_batch): the same PNG bytes at --batch-size 1 and 64, and the
    manifest records the sampler options."""
    outs = []
    for batch in ("1", "64"):
        out = tiny_ddpm / f"b{batch}"
        result = CliRunner().invoke(
            cli,
            [
                "sample",
                "tiny-ddpm",
                "-n",
                "3",
                "--seed",
                "7",
                "--class",
                "bright",
                "--steps",
                "3",
                "--sampler",
                "ddim",
                "--guidance",
                "2",
                "--batch-size",
                batch,
                "--out-dir",
                str(out),
                "--precision",
                "fp32",
            ],
        )
        assert result.exit_code == 0, result.output
        outs.append([p.read_bytes() for p in sorted(out.glob("*.png"))])
    assert len(outs[0]) == 3 and outs[0] == outs[1]
    manifest = json.loads((tiny_ddpm / "b1" / "manifest.json").read_text())
    assert manifest["options"] == {"steps": 3, "sampler": "ddim", "guidance": 2.0, "eta": 0.0}  # as used
    assert manifest["labels"] == ["bright"] * 3


def test_cpu_streams_draw_the_same_samples_in_order(tiny_ddpm: Path, monkeypatch: pytest.MonkeyPatch):
    """Sampling calls spread over parallel single-threaded streams (a CPU's default, zoo.runtime.streams): the
    same images, in the same order, as one call after another; the caller's thread count comes back."""
    import threading

    from zoo_diffusion.task import DiffusionTask

    where: list[str] = []
    original = DiffusionTask.sample

    def recorded(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        where.append(threading.current_thread().name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DiffusionTask, "sample", recorded)
    threads = torch.get_num_threads()
    runs, names = {}, {}
    for streams in ("1", "3"):
        monkeypatch.setenv("ZOO_CPU_STREAMS", streams)
        where.clear()
        runs[streams] = zoo.sample("tiny-ddpm", n=70, seed=3, steps=2, sampler="ddim", precision="fp32")
        names[streams] = set(where)
        assert torch.get_num_threads() == threads and len(where) == 3  # 3 calls of 32 rows
    assert names["1"] == {threading.main_thread().name}
    assert names["3"] and all(name.startswith("zoo-stream") for name in names["3"])
    assert runs["1"].shape == (70, 3, 32, 32) and torch.equal(runs["1"], runs["3"])


def test_python_api_samples_with_steps_and_classes(tiny_ddpm: Path):
    images = zoo.sample("tiny-ddpm", n=2, seed=1, labels=["dark", "bright"], steps=2, precision="fp32")
    again = zoo.sample("tiny-ddpm", n=2, seed=1, labels=["dark", "bright"], steps=2, precision="fp32")
    assert images.shape == (2, 3, 32, 32) and torch.equal(images, again)
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "--steps 0: a sampler takes at least 1 step."),
        (
            ["--steps", "101", "--sampler", "ddpm"],
            "--steps 101: the model's schedule has 100 timesteps; ddpm can take at most 100 steps.",
        ),
        (["--sampler", "euler"], "Unknown sampler 'euler'; known: ddpm, ddim, dpm++."),
        (["--sampler", "dpm"], "Unknown sampler 'dpm'; known: ddpm, ddim, dpm++. Did you mean 'dpm++'?"),
        (["--eta", "1.5"], "--eta 1.5: DDIM's eta lies in [0, 1] (0: deterministic, 1: as stochastic as DDPM)."),
        (["--eta", "0.5", "--sampler", "dpm++"], "--eta applies to the ddim sampler, not dpm++."),
        (
            ["--class", "brite"],
            "Unknown class 'brite' for model 'tiny-ddpm'; its classes: dark, bright. Did you mean 'bright'?",
        ),
    ],
)
def test_bad_sampling_options_are_one_line_and_write_nothing(tiny_ddpm: Path, args: list[str], message: str):
    out = tiny_ddpm / "never.png"
    result = CliRunner().invoke(cli, ["sample", "tiny-ddpm", "-n", "2", "-o", str(out), *args])
    assert result.exit_code == 1 and result.output.strip() == f"Error: {message}", result.output
    assert not out.exists() and not list(tiny_ddpm.glob(".never*"))


def test_guidance_on_an_unconditional_model_is_refused(tiny_ddpm: Path):
    result = CliRunner().invoke(
        cli, ["sample", "tiny-uddpm", "-n", "2", "-o", str(tiny_ddpm / "x.png"), "--guidance", "2"]
    )
    assert result.exit_code == 1 and "--guidance applies to class-conditional models" in result.output
    ok = CliRunner().invoke(
        cli, ["sample", "tiny-uddpm", "-n", "2", "-o", str(tiny_ddpm / "u.png"), "--steps", "2", "--sampler", "ddpm"]
    )
    assert ok.exit_code == 0, ok.output
    assert Image.open(tiny_ddpm / "u.png").size == (2 * 34 + 2, 34 + 2 - 0)


# -- evaluation --------------------------------------------------------------------------------------------------


def test_eval_sweep_writes_a_table_and_a_figure(tiny_ddpm: Path):
    data = make_two_class_folder(tiny_ddpm / "data", 160)
    report = tiny_ddpm / "report"
    result = CliRunner().invoke(
        cli,
        [
            "eval",
            "tiny-ddpm",
            "--data",
            str(data),
            "--val-split",
            "0.5",
            "--samples",
            "140",
            "--steps",
            "2,4",
            "--precision",
            "fp32",
            "--report",
            str(report),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)["metrics"]
    assert list(metrics)[0] == "fid[judge-net]" and metrics["sampling"]["steps"] == 4  # the card's default
    assert [row["steps"] for row in metrics["sweep"]] == [2, 4]
    assert metrics["sweep"][1]["fid[judge-net]"] == metrics["fid[judge-net]"]
    assert 0 <= metrics["judge_accuracy"] <= 100 and metrics["sampling"]["guidance"] == 2.0
    rows = list(csv.DictReader(open(report / "sweep.csv")))
    assert [r["steps"] for r in rows] == ["2", "4"] and "judge_accuracy" in rows[0]
    assert Image.open(report / "sweep.png").size == (560, 400)


def test_eval_bad_steps_list_is_one_line(tiny_ddpm: Path):
    data = make_two_class_folder(tiny_ddpm / "data", 160)
    result = CliRunner().invoke(
        cli, ["eval", "tiny-ddpm", "--data", str(data), "--val-split", "0.5", "--steps", "10,x"]
    )
    assert result.exit_code == 1 and "comma-separated sweep" in result.output and "Traceback" not in result.output


# -- training ------------------------------------------------------------------------------------------------------


def test_training_uses_ema_by_default_and_resumes_to_the_same_weights(tiny_ddpm: Path):
    """Two epochs straight vs one, stopped, then resumed: the same EMA weights (every random draw of a batch —
    flips, timesteps, noise, dropped labels — comes from the loop's generator)."""
    from safetensors.torch import load_file

    data = make_two_class_folder(tiny_ddpm / "data", 130)
    common = {"data": data, "batch_size": 64, "val_split": 0.5, "pretrained": False}
    straight = zoo.finetune("tiny-ddpm", out=tiny_ddpm / "straight", epochs=2, **common)
    first = zoo.finetune("tiny-ddpm", out=tiny_ddpm / "resumed", epochs=1, **common)
    assert first.history[0]["epoch"] == 1
    resumed = zoo.finetune("tiny-ddpm", out=tiny_ddpm / "resumed", epochs=2, resume=True, **common)
    a = load_file(str(straight.weights))
    b = load_file(str(resumed.weights))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    row = straight.history[-1]
    assert "val_fid[judge-net]" in row and "val_judge_accuracy" in row  # validation samples and judges
    checkpoint = torch.load(tiny_ddpm / "straight" / "checkpoint.pt", weights_only=True)
    assert "ema" in checkpoint  # on by default for diffusion, with no --ema given
    notes = zoo.card("straight").variant().notes
    assert '"ema": 0.999' in notes
    assert '"channels_last": false' in notes  # the task's default: GroupNorm's backward is slow in channels_last


def test_memory_format_is_the_tasks_default_unless_the_user_chose():
    from zoo.runtime.tasks import get_task
    from zoo.runtime.train.recipe import FinetuneConfig, resolve

    diffusion, classifier = get_task(zoo.card("ddpm-cifar")), get_task(zoo.card("resnet20-cifar"))
    assert resolve(FinetuneConfig(), diffusion).channels_last is False
    assert resolve(FinetuneConfig(), classifier).channels_last is True
    assert resolve(FinetuneConfig(channels_last=True), diffusion).channels_last is True
    assert resolve(FinetuneConfig(channels_last=False), classifier).channels_last is False


@pytest.mark.slow
def test_the_task_contract_cycle(tiny_ddpm: Path):
    """load -> sample -> eval -> finetune (stopped and resumed) -> reload, as for every task (tests/contract)."""
    from tests.contract.cycle import run_cycle

    data = make_two_class_folder(tiny_ddpm / "data", 160)
    report = run_cycle(
        "tiny-ddpm", data, [], tiny_ddpm / "work", finetune_options={"val_split": 0.5, "batch_size": 32, "epochs": 2}
    )
    assert report.verbs == ("eval", "finetune", "sample") and report.new_model == "tiny-ddpm-tuned"


@pytest.mark.slow
def test_torchrun_trains_a_diffusion_model_on_two_cpu_processes(tiny_ddpm: Path):
    """Two processes under DDP (the task's forward goes through DDP's own, so its hooks average the gradients);
    validation samples are sharded and gathered; rank 0 writes the card."""
    from tests.test_gan import _torchrun

    data = make_two_class_folder(tiny_ddpm / "data", 130)
    out = tiny_ddpm / "ddp-ddpm"
    proc = _torchrun(
        "finetune",
        "tiny-ddpm",
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
        port=29547,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("best epoch") == 1
    zoo._registry.reset_registry()
    assert zoo.card("ddp-ddpm").variant().metrics[0].name == "fid[judge-net]"


@pytest.mark.slow
def test_training_learns_what_each_class_looks_like():
    """End to end through the task's own training step and the samplers: dark and bright images (two classes
    that differ in their overall brightness, the coarsest thing an image has) and 400 steps of a tiny UNet; the
    samples of each class must come out with that class's brightness. With epsilon-prediction and the linear
    schedule the same run drew every sample at mid-grey (the loss barely weighs an image's mean at high noise,
    where the class decides it): why ddpm-cifar trains with v-prediction and the cosine schedule."""
    import dataclasses

    from zoo.runtime.tasks import Batch
    from zoo_diffusion.task import DiffusionTask

    torch.manual_seed(0)
    kwargs = {
        **TINY,
        "channels": [16, 32, 32],
        "norm_groups": 8,
        "head_dim": 16,
        "schedule": "cosine",
        "prediction": "v",
    }
    card = dataclasses.replace(zoo.card("ddpm-cifar"), kwargs=kwargs, labels=tuple(CLASSES))
    task = DiffusionTask(card)
    model = build_ddpm(**kwargs)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    generator = torch.Generator().manual_seed(0)
    levels = torch.tensor([50.0, 200.0])  # dark, bright (uint8)
    for _ in range(400):
        labels = torch.randint(0, 2, (64,), generator=generator)
        blocks = 20 * torch.randn(64, 3, 4, 4, generator=generator)
        images = levels[labels].view(-1, 1, 1, 1) + blocks.repeat_interleave(8, 2).repeat_interleave(8, 3)
        batch = Batch(images.clamp(0, 255).to(torch.uint8), labels, extras=task.train_extras(64, generator))
        loss = task.training_step(model, task.prepare(batch.images), batch, None)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.inference_mode():
        for label, level in enumerate(levels.tolist()):
            for sampler, steps in (("ddim", 25), ("dpm++", 10)):
                x = task.to_unit(denoise(model, Noise(list(range(8))), torch.full((8,), label), sampler, steps))
                means = x.mean(dim=(1, 2, 3)) * 255
                assert bool(((means - level).abs() < 15).all()), (sampler, label, means.tolist())
