"""The task contract, end to end: a toy third-party task, a toy generative one (conditional and not), zoo's
classifier and its detector each go through run_cycle (cycle.py); a task name two plugins register, and a verb a
task does not support, are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pluggy
import pytest
from PIL import Image

import zoo
from tests.conftest import register_resnet20_card
from tests.contract.cycle import run_cycle, zoo_cli
from tests.contract.toy_task import (
    GENERATOR,
    GENERATOR_TASK,
    MODEL,
    TASK,
    FractionBrightnessTask,
    ToyPlugin,
    generator_cards,
    installed,
    toy_cards,
)
from tests.test_finetune import make_top_bottom
from zoo._plugins import Plugins, reset_plugins
from zoo._registry import reset_registry
from zoo.errors import ZooError
from zoo.runtime.tasks import _registered, reset_tasks

EVAL_ONLY = "tests.contract.toy_task:EvalOnlyBrightnessTask"
UNCONDITIONAL = "tests.contract.toy_task:UnconditionalToyGeneratorTask"


def make_brightness_folder(root: Path, n: int = 24, size: int = 24, seed: int = 0) -> Path:
    """`n` noisy grey-ish PNGs from black to white: the toy task's data (each image labels itself)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for i in range(n):
        level = 255 * i / (n - 1)
        tint = rng.integers(-30, 31, 3)
        array = level + tint + rng.integers(-40, 41, (size, size, 3))
        Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).save(root / f"{i:03d}.png")
    return root


def make_yolo_rectangles(root: Path, n: int = 12, size: int = 96, seed: int = 0) -> Path:
    """A YOLO-format detection set: `n` noisy images with 1-2 filled rectangles each, red 'person' and blue 'car'
    (two COCO class names: zoo matches a detector's classes by name)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "data.yaml").write_text("names: [person, car]\n")
    colours = [(220, 40, 40), (40, 60, 220)]
    for i in range(n):
        array = rng.integers(90, 150, (size, size, 3)).astype(np.uint8)
        lines = []
        for _ in range(int(rng.integers(1, 3))):
            cls = int(rng.integers(0, 2))
            w, h = (int(v) for v in rng.integers(20, 50, 2))
            x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            array[y : y + h, x : x + w] = colours[cls]
            lines.append(f"{cls} {(x + w / 2) / size:.6f} {(y + h / 2) / size:.6f} {w / size:.6f} {h / size:.6f}")
        Image.fromarray(array).save(root / "images" / f"{i:03d}.png")
        (root / "labels" / f"{i:03d}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_toy_task(tmp_path):
    """A third-party-shaped task: a regression, lower is better, its own data format and records."""
    data = make_brightness_folder(tmp_path / "data")
    with installed(("toy", ToyPlugin(toy_cards(tmp_path)))):
        report = run_cycle(
            MODEL, data, [data / "000.png", data / "023.png"], tmp_path / "work", finetune_options={"val_split": 0.25}
        )  # 18 + 6 images, the task's batch of 8: 3 steps
    print(report)


def test_a_task_with_two_named_optimizers(tmp_path):
    """A GAN-shaped training step: two parameter groups, each its own optimizer and schedule, stepped in turn by
    the task; the checkpoint keeps both, so a stopped run resumes to the same weights (the cycle checks it)."""
    import torch

    data = make_brightness_folder(tmp_path / "data")
    plugin = ToyPlugin(toy_cards(tmp_path), TASK, "tests.contract.toy_task:TwoOptimizerBrightnessTask")
    with installed(("toy", plugin)):
        run_cycle(MODEL, data, [data / "000.png"], tmp_path / "work", finetune_options={"val_split": 0.25})
        state = torch.load(next((tmp_path / "work").rglob("checkpoint.pt")), weights_only=True)
    assert set(state["optimizers"]) == set(state["schedulers"]) == {"body", "head"}
    assert all(s["state"] for s in state["optimizers"].values())  # both were stepped


def test_a_generative_task(tmp_path):
    """A sampling-only, class-conditional task: zoo sample end to end; predict, eval and finetune refused."""
    data = make_brightness_folder(tmp_path / "data", n=4)
    plugin = ToyPlugin(generator_cards(tmp_path), GENERATOR_TASK, "tests.contract.toy_task:ToyGeneratorTask")
    with installed(("toy-gan", plugin)):
        report = run_cycle(GENERATOR, data, [data / "000.png"], tmp_path / "work")
    assert report.verbs == ("sample",) and report.new_model is None
    print(report)


def test_an_unconditional_generative_task(tmp_path):
    data = make_brightness_folder(tmp_path / "data", n=4)
    plugin = ToyPlugin(
        generator_cards(tmp_path, "toy-gan-free", "toy-gan-free", conditional=False), "toy-gan-free", UNCONDITIONAL
    )
    with installed(("toy-gan-free", plugin)):
        report = run_cycle("toy-gan-free", data, [data / "000.png"], tmp_path / "work")
    assert report.verbs == ("sample",)
    print(report)


def test_eval_only_toy_task_refuses_the_other_verbs(tmp_path):
    data = make_brightness_folder(tmp_path / "data", n=8)
    plugin = ToyPlugin(toy_cards(tmp_path, "brightness-eval-tiny", "brightness-eval"), "brightness-eval", EVAL_ONLY)
    with installed(("toy-eval", plugin)):
        report = run_cycle("brightness-eval-tiny", data, [data / "000.png"], tmp_path / "work")
    assert report.verbs == ("eval",) and report.new_model is None
    print(report)


def test_classifier(tmp_path, monkeypatch):
    data = make_top_bottom(tmp_path / "data", per_class=10)
    model = register_resnet20_card(tmp_path, monkeypatch, "contract-resnet", ["bottom", "top"])
    report = run_cycle(
        model,
        data,
        [data / "top" / "000.png", data / "bottom" / "001.png"],
        tmp_path / "work",
        finetune_options={"batch_size": 8, "val_split": 0.2},
    )  # 16 + 4 images: 2 batches
    print(report)
    assert zoo.card(report.new_model).labels == ("bottom", "top")  # the card's own labels: the same head


def test_detector(tmp_path, monkeypatch):
    """fastestdet-coco's shipped weights (offline) on two COCO classes; fine-tuning re-makes its class head for 2."""
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    data = make_yolo_rectangles(tmp_path / "data")
    report = run_cycle(
        "fastestdet-coco",
        data,
        [data / "images" / "000.png", data / "images" / "001.png"],
        tmp_path / "work",
        finetune_options={"batch_size": 4, "val_split": 0.25},
    )  # 9 + 3: 3 batches
    print(report)
    tuned = zoo.card(report.new_model)
    assert tuned.labels == ("person", "car") and tuned.kwargs["num_classes"] == 2, (tuned.labels, tuned.kwargs)


def test_a_task_two_plugins_register_is_an_error_naming_both(tmp_path):
    plugins = Plugins(pluggy.PluginManager("zoo"))
    plugins.load_entry_points()
    plugins.register(ToyPlugin(toy_cards(tmp_path)), "toy")
    plugins.register(ToyPlugin({"models": {}}, TASK, EVAL_ONLY), "toy-fork")
    reset_registry()
    reset_tasks()
    reset_plugins(plugins)
    try:
        with pytest.raises(ZooError) as raised:
            _registered()
        message = str(raised.value)
        assert f"task {TASK!r} is registered by plugins" in message, message
        assert "'toy' (tests.contract.toy_task:BrightnessTask)" in message and f"'toy-fork' ({EVAL_ONLY})" in message
        result = zoo_cli("eval", MODEL, "--data", tmp_path, "--device", "cpu")  # the CLI: the same, in one line
        assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
        assert "'toy-fork'" in result.output and "Traceback" not in result.output, result.output
    finally:
        reset_registry()
        reset_tasks()


def test_predict_on_an_eval_only_task_is_one_line_naming_eval(tmp_path):
    image = make_brightness_folder(tmp_path / "data", n=2) / "000.png"
    plugin = ToyPlugin(toy_cards(tmp_path, "brightness-eval-tiny", "brightness-eval"), "brightness-eval", EVAL_ONLY)
    with installed(("toy-eval", plugin)):
        result = zoo_cli("predict", "brightness-eval-tiny", image, "--device", "cpu")
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        "Error: Model 'brightness-eval-tiny' is a brightness-eval: 'zoo predict' does not apply to it (it supports "
        "'zoo eval')."
    ], result.output


def test_finetune_cli_takes_a_batch_size(tmp_path):
    """`zoo finetune --batch-size 6` must run (here: 18 training
    images, 3 steps) instead of failing with a TypeError and a traceback."""
    data = make_brightness_folder(tmp_path / "data")
    with installed(("toy", ToyPlugin(toy_cards(tmp_path)))):
        result = zoo_cli(
            "finetune",
            MODEL,
            "--data",
            data,
            "--out",
            tmp_path / "bs-net",
            "--epochs",
            "1",
            "--batch-size",
            "6",
            "--val-split",
            "0.25",
            "--device",
            "cpu",
        )
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert '"batch_size": 6' in zoo.card("bs-net").variant().notes


def test_a_fine_tuned_figure_on_a_small_scale_reproduces(tmp_path):
    """The card's measured figure, measured again on the same images with the same weights, must reproduce within
    the task's tolerance, whatever the scale of its headline (here: brightness as a fraction, tolerance 0.0005)."""
    from zoo.runtime.finetune import FinetuneConfig, finetune

    data = make_brightness_folder(tmp_path / "data")
    plugin = ToyPlugin(toy_cards(tmp_path), TASK, "tests.contract.toy_task:FractionBrightnessTask")
    with installed(("toy", plugin)):
        result = finetune(
            MODEL,
            data,
            tmp_path / "fraction-net",
            config=FinetuneConfig(epochs=1, val_split=0.25),
            device="cpu",
            show_progress=False,
        )
        figure = zoo.card("fraction-net").variant().metrics[0]
        again = zoo_cli("eval", "fraction-net", "--data", data, "--val-split", "0.25", "--compare", "--device", "cpu")
    assert 0 < result.best_value < 1, result.history
    assert abs(figure.value - result.best_value) <= FractionBrightnessTask.tolerance, (figure.value, result.best_value)
    assert again.exit_code == 0 and "reproduces the card's measured mae" in again.output, again.output
