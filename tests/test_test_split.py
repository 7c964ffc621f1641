"""--test-split: a held-out part nothing selects on, beside the validation part a run selects on (#21)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import zoo
import zoo.runtime.finetune as ft
from tests.conftest import register_resnet20_card
from zoo.cli import cli
from zoo.errors import ZooError
from zoo.runtime.finetune import FinetuneConfig, finetune
from zoo.runtime.splits import (
    check_fractions,
    random_split,
    random_test_split,
    seed_for_test_split,
    stratified_split,
    stratified_test_split,
)
from zoo.runtime.tasks import check_test_split, supports_test_split

# 3 classes of 10 in turn, then a fourth of 7: uneven classes, interleaved in the reading order
TARGETS = torch.tensor([i % 3 for i in range(30)] + [3] * 7)


def make_images(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    """An ImageFolder of 32x32 PNGs: 'top' images bright in the top half, the others in the bottom half."""
    rng = np.random.default_rng(seed)
    for label, count in counts.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            array = rng.integers(0, 80, (32, 32, 3), dtype=np.uint8)
            array[slice(0, 16) if label == "top" else slice(16, 32)] += 150
            Image.fromarray(array).save(root / label / f"{i:03d}.png")
    return root


@pytest.fixture()
def source_card(tmp_path, monkeypatch) -> str:
    """A 10-class CIFAR ResNet-20 card with seeded random weights, to fine-tune from."""
    return register_resnet20_card(tmp_path, monkeypatch, "src-resnet", list("abcdefghij"))


# -- the splits -----------------------------------------------------------------------------------------


def test_validation_images_are_the_ones_cards_were_measured_on():
    """The validation indices, pinned from the code that measured the shipped cards, do not move when a test
    split is added (stratified and random, two seeds)."""
    pinned = {0: [2, 3, 10, 12, 14, 28, 33], 5: [3, 7, 12, 13, 17, 23, 33]}
    pinned_random = {0: [4, 19, 21, 23, 28, 30, 32], 5: [0, 4, 8, 10, 12, 27, 31]}
    for seed in (0, 5):
        assert stratified_split(TARGETS, 0.2, seed)[1].tolist() == pinned[seed]
        assert stratified_test_split(TARGETS, 0.2, 0.2, seed)[1].tolist() == pinned[seed]
        assert random_split(37, 0.2, seed)[1].tolist() == pinned_random[seed]
        assert random_test_split(37, 0.2, 0.2, seed)[1].tolist() == pinned_random[seed]


def test_train_val_test_are_disjoint_and_cover_the_data():
    for parts in (stratified_test_split(TARGETS, 0.2, 0.3, 1), random_test_split(37, 0.2, 0.3, 1)):
        sets = [set(p.tolist()) for p in parts]
        assert sum(map(len, sets)) == 37 and set().union(*sets) == set(range(37))
        assert all(p.tolist() == sorted(p.tolist()) for p in parts)


def test_per_class_counts_on_cifar_sized_data():
    """--val-split 0.1 --test-split 0.1 on 50,000 images of 10 classes: 5,000 each, 500 per class."""
    targets = torch.arange(50_000) % 10
    train, val, test = stratified_test_split(targets, 0.1, 0.1, 0)
    assert (len(train), len(val), len(test)) == (40_000, 5_000, 5_000)
    assert torch.bincount(targets[val]).tolist() == [500] * 10
    assert torch.bincount(targets[test]).tolist() == [500] * 10
    # uneven classes: round(class size x fraction) each, from the class's own size
    _, _, test = stratified_test_split(TARGETS, 0.2, 0.3, 0)
    assert torch.bincount(TARGETS[test]).tolist() == [3, 3, 3, 2]


def test_the_test_split_is_deterministic_and_follows_the_seed():
    first = stratified_test_split(TARGETS, 0.2, 0.2, 3)[2]
    assert torch.equal(first, stratified_test_split(TARGETS, 0.2, 0.2, 3)[2])
    assert not torch.equal(first, stratified_test_split(TARGETS, 0.2, 0.2, 4)[2])
    assert seed_for_test_split(0) == seed_for_test_split(0) != seed_for_test_split(1)
    assert seed_for_test_split(0) not in (0, 1) and 0 <= seed_for_test_split(0) < 2**63


def test_a_run_without_validation_still_gets_a_test_split():
    train, val, test = stratified_test_split(TARGETS, 0.0, 0.2, 0)
    assert len(val) == 0 and torch.bincount(TARGETS[test]).tolist() == [2, 2, 2, 1] and len(train) == 30


@pytest.mark.parametrize(
    ("val", "test", "message"),
    [
        (0.1, 0.0, "--test-split 0.0: give a fraction between 0 and 1"),
        (0.1, 1.0, "--test-split 1.0: give a fraction between 0 and 1"),
        (0.1, -0.2, "--test-split -0.2: give a fraction between 0 and 1"),
        (None, 0.1, "--test-split needs the run's --val-split too"),
        (0.5, 0.5, "--val-split 0.5 and --test-split 0.5 hold out 1 of the data and leave no training images"),
        (1.2, 0.1, "--val-split 1.2: give a fraction from 0 up to (not including) 1"),
    ],
)
def test_bad_fractions_are_one_line(val, test, message):
    with pytest.raises(ZooError, match="^" + message.replace("(", r"\(").replace(")", r"\)")) as info:
        check_fractions(val, test)
    assert "\n" not in str(info.value)


def test_too_few_images_in_a_class_names_the_class():
    targets = torch.tensor([0] * 10 + [1] * 2)
    with pytest.raises(ZooError, match=r"^Class 'rare' has 2 images: too few for --val-split 0.1 --test-split 0.1"):
        stratified_test_split(targets, 0.1, 0.1, 0, ("common", "rare"))
    with pytest.raises(ZooError, match=r"^2 images are too few for --val-split 0.3 --test-split 0.3"):
        random_test_split(2, 0.3, 0.3, 0)


def test_a_task_without_test_splits_refuses_them():
    class OldTask:  # a task written before --test-split: it could not keep test images out of training
        def eval_data(self, source, *, split, val_split, seed, cache, skip_bad): ...

    class NewTask:
        def eval_data(self, source, *, split, val_split, seed, cache, skip_bad, test_split=None): ...

    card = SimpleNamespace(name="old-gan", task="gan")
    assert not supports_test_split(OldTask()) and supports_test_split(NewTask())
    with pytest.raises(ZooError, match="^Model 'old-gan' is a gan: its task does not support --test-split yet"):
        check_test_split(OldTask(), card)


# -- the detector's plumbing ----------------------------------------------------------------------------------


def _detection_dataset(splits: list[str | None]):
    from zoo_detector.annotations import DetectionDataset, DetectionSample

    samples = [
        DetectionSample(f"{i:03d}.jpg", 64, 64, [(1.0, 1.0, 9.0, 9.0)], [0], split) for i, split in enumerate(splits)
    ]
    return DetectionDataset(Path("boxes"), "coco", ("thing",), samples)


def test_detection_test_split_keeps_validation_and_never_overlaps():
    from zoo_detector.task import training_split

    dataset = _detection_dataset([None] * 40)
    _, (train, val, test), _ = training_split(dataset, 0.1, 0, 0.2)
    _, (train_before, val_before, none), _ = training_split(dataset, 0.1, 0)
    assert val == val_before and none == [] and len(test) == 8 and len(train) == 28
    assert not set(train) & set(test) and set(train) | set(test) == set(train_before)
    # a dataset with its own 'val' split: the test part comes out of its training images
    own = _detection_dataset(["train"] * 30 + ["val"] * 10)
    _, (train, val, test), _ = training_split(own, 0.1, 0, 0.2)
    assert val == list(range(30, 40)) and len(test) == 6 and not set(train) & set(test)
    # one with its own 'test' split already: use that one
    with pytest.raises(ZooError, match="has its own 'test' split: measure on it with 'zoo eval --split test'"):
        training_split(_detection_dataset(["train"] * 30 + ["test"] * 10), 0.1, 0, 0.2)


# -- fine-tuning and evaluation ------------------------------------------------------------------------------


def test_classifier_train_data_keeps_the_test_images_out(tmp_path, source_card):
    data = make_images(tmp_path / "data", {"bottom": 20, "top": 20})
    task = zoo.runtime.tasks.get_task(zoo.card(source_card))
    parts = task.train_data(data, config=FinetuneConfig(val_split=0.2, test_split=0.2, augment="crop-flip"))
    train, val, test = (set(p.tolist()) for p in (parts.train_idx, parts.val_idx, parts.test_idx))
    assert (len(train), len(val), len(test)) == (24, 8, 8) and not (train & val or train & test or val & test)
    without = task.train_data(data, config=FinetuneConfig(val_split=0.2, augment="crop-flip"))
    assert without.val_idx.tolist() == parts.val_idx.tolist() and len(without.test_idx) == 0
    assert len(parts.test_data()) == 8 and without.test_data() is None


def test_finetune_measures_the_chosen_weights_once_and_the_card_carries_both(tmp_path, source_card, monkeypatch):
    data = make_images(tmp_path / "data", {"bottom": 20, "top": 20})
    measured: list[int] = []
    validate = ft._validate

    def counting(model, task, images, *args, **kwargs):  # which held-out part each measurement reads
        measured.append(len(images))
        return validate(model, task, images, *args, **kwargs)

    monkeypatch.setattr(ft, "_validate", counting)
    config = FinetuneConfig(epochs=2, batch_size=8, augment="crop-flip", val_split=0.25, test_split=0.2)
    result = finetune(source_card, data, tmp_path / "split-net", config=config, device="cpu", show_progress=False)
    # one validation per epoch on the 10 validation images, then the test images (8) once, after training
    assert measured == [10, 10, 8]
    assert all(set(row) & {"test_top1"} == set() for row in result.history)
    assert 0.0 <= result.test_value <= 100.0
    test, val = zoo.card("split-net").variant().metrics
    assert (test.split, test.selected_on, test.value) == ("test", False, round(result.test_value, 4))
    assert (val.split, val.selected_on, val.value) == ("val", True, round(result.best_value, 4))
    assert test.note.startswith("8 images held out (stratified by class) by --test-split 0.2 (seed 0)")
    assert "--val-split 0.25 --test-split 0.2 --seed 0 --compare" in test.note
    assert val.note.startswith("10 images held out (stratified by class) by --val-split 0.25 (seed 0)")
    assert '"test_split": 0.2' in zoo.card("split-net").variant().notes  # the recipe
    info = CliRunner().invoke(cli, ["info", "split-net"])
    assert " test [never selected on] (measured: " in info.output
    assert " val [selected on] (measured: " in info.output
    # zoo eval re-measures the test figure on exactly those images, and compares with the card's test figure
    run = CliRunner().invoke(
        cli,
        ["eval", "split-net", "--data", str(data), "--val-split", "0.25", "--test-split", "0.2"]
        + ["--precision", "fp32", "--compare"],
    )
    assert run.exit_code == 0, run.output
    assert "(test split 0.2 held out after validation split 0.25, seed 0)" in run.output
    assert "(8 images," in run.output
    assert f"reproduces the card's measured top1 {test.value:g} ({data} test)" in run.output


def test_a_run_without_validation_measures_its_last_epoch_on_the_test_split(tmp_path, source_card):
    """--val-split 0 --test-split: no epoch is chosen, so the last one is measured and the card has the test figure
    only; a best.safetensors an earlier run left in OUT is not taken for the result."""
    import shutil

    from safetensors.torch import load_file

    data = make_images(tmp_path / "data", {"bottom": 10, "top": 10})
    out = tmp_path / "no-val"
    out.mkdir()
    shutil.copy(tmp_path / "src-resnet.safetensors", out / "best.safetensors")  # 10 classes: not this run's
    config = FinetuneConfig(epochs=1, batch_size=8, augment="crop-flip", val_split=0.0, test_split=0.2)
    result = finetune(source_card, data, out, config=config, device="cpu", show_progress=False)
    assert load_file(str(out / "no-val.safetensors"))["linear.weight"].shape[0] == 2
    (test,) = zoo.card("no-val").variant().metrics
    assert (test.split, test.selected_on, test.value) == ("test", False, round(result.test_value, 4))
    assert "the last epoch's weights (epoch 1; no validation split), measured once after training" in test.note
    args = ["eval", "no-val", "--data", str(data), "--val-split", "0", "--test-split", "0.2", "--precision", "fp32"]
    run = CliRunner().invoke(cli, [*args, "--compare"])
    assert run.exit_code == 0 and "(4 images," in run.output and "reproduces the card's" in run.output, run.output


def test_eval_test_split_measures_only_the_test_images(tmp_path, monkeypatch):
    name = register_resnet20_card(tmp_path, monkeypatch, "two-class", ["bottom", "top"])
    data = make_images(tmp_path / "data", {"bottom": 20, "top": 20})
    record = zoo.evaluate(name, data, val_split=0.1, test_split=0.3, seed=2)
    assert record["images"] == 12 and record["settings"]["test_split"] == 0.3
    assert zoo.evaluate(name, data, val_split=0.1, seed=2)["images"] == 4  # the validation part, unchanged


def _one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1
    return result.output


def test_cli_refuses_bad_test_splits_in_one_line(tmp_path, source_card):
    data = make_images(tmp_path / "data", {"bottom": 6, "top": 2})
    finetune_args = ["finetune", source_card, "--data", str(data), "--out", str(tmp_path / "x"), "--epochs", "1"]
    runner = CliRunner()
    for extra, message in (
        (["--test-split", "0"], "--test-split 0.0: give a fraction between 0 and 1"),
        (["--test-split", "1"], "--test-split 1.0: give a fraction between 0 and 1"),
        (["--val-split", "0.6", "--test-split", "0.4"], "--val-split 0.6 and --test-split 0.4 hold out 1 of"),
        (["--val-split", "0.2", "--test-split", "0.2"], "Class 'top' has 2 images: too few for --val-split 0.2"),
    ):
        assert message in _one_line_error(runner.invoke(cli, finetune_args + extra))
    eval_args = ["eval", source_card, "--data", str(data)]
    assert "--val-split 0 selects no images" in _one_line_error(runner.invoke(cli, [*eval_args, "--val-split", "0"]))
    assert "--test-split needs the run's --val-split too" in _one_line_error(
        runner.invoke(cli, [*eval_args, "--test-split", "0.2"])
    )
    assert "--split test and --test-split pick different images" in _one_line_error(
        runner.invoke(cli, [*eval_args, "--split", "test", "--val-split", "0.1", "--test-split", "0.2"])
    )


def test_compare_on_a_test_split_never_falls_back_to_the_validation_figure(tmp_path, monkeypatch):
    from zoo.cli import _card_metric

    name = register_resnet20_card(tmp_path, monkeypatch, "val-only", ["bottom", "top"])
    registry = tmp_path / "val-only.yaml"
    metric = "{name: top1, value: 93.0, dataset: d, split: val, source: measured, command: x, selected_on: true}"
    text = registry.read_text()  # its last line is the weights variant, a flow mapping: add the metric to it
    registry.write_text(text.removesuffix("}\n") + f", metrics: [{metric}]}}\n")
    zoo._registry.reset_registry()
    assert zoo.card(name).variant().metrics[0].selected_on is True
    assert _card_metric(name, "top1", "test").value == 93.0  # --split test: as before, any measured figure
    assert _card_metric(name, "top1", "test", only_split=True) is None  # --test-split: only a test figure
    data = make_images(tmp_path / "data", {"bottom": 10, "top": 10})
    args = ["eval", name, "--data", str(data), "--val-split", "0.1", "--test-split", "0.1", "--compare"]
    out = _one_line_error(CliRunner().invoke(cli, args))
    assert out.startswith("Error: Model 'val-only' has no top1 figure measured on a test split on its card")


@pytest.mark.slow
def test_torchrun_measures_the_test_split_once_on_every_rank(tmp_path, source_card):
    """Under DDP each rank measures its share of the test images with rank 0's chosen weights (no hang at the
    barrier), and the card's test figure is what one process measures on the same images."""
    import json
    import os
    import subprocess
    import sys

    data = make_images(tmp_path / "data", {"bottom": 20, "top": 20})
    out = tmp_path / "ddp-split"
    torchrun = Path(sys.executable).with_name("torchrun")
    args = ["--nproc_per_node=2", "--master_port=29533", "-m", "zoo", "finetune", source_card, "--data", str(data)]
    args += ["--out", str(out), "--epochs", "2", "--batch-size", "8", "--val-split", "0.25", "--test-split", "0.2"]
    proc = subprocess.run(
        [str(torchrun), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("test top1") == 1  # rank 0 reports
    zoo._registry.reset_registry()
    test, _val = zoo.card("ddp-split").variant().metrics
    again = zoo.evaluate("ddp-split", data, val_split=0.25, test_split=0.2, seed=0, precision="fp32", fuse=False)
    assert again["images"] == 8 and again["metrics"]["top1"] == pytest.approx(test.value, abs=0.01)
    assert len(json.loads((out / "metrics.json").read_text())) == 2
