"""zoo sample / zoo.sample (#17): every bad input is one line naming what is wrong and writes nothing; what a
good run writes and how the images depend on the seed are checked by the contract suite (tests/contract)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

import zoo
from tests.contract.toy_task import COLOURS, GENERATOR, GENERATOR_TASK, ToyPlugin, generator_cards, installed
from zoo.errors import ZooError
from zoo.runtime.sample import MICRO_BATCH, class_seed, sample_seed

FREE = "toy-gan-free"  # the unconditional toy


@pytest.fixture(autouse=True)
def generators(tmp_path: Path, zoo_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Both toy generators installed (conditional over red/green/blue, and unconditional); one thread."""
    monkeypatch.setenv("ZOO_NO_PROGRESS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    weights = tmp_path / "weights"
    weights.mkdir()
    conditional = ToyPlugin(generator_cards(weights), GENERATOR_TASK, "tests.contract.toy_task:ToyGeneratorTask")
    free = ToyPlugin(
        generator_cards(weights, FREE, FREE, conditional=False),
        FREE,
        "tests.contract.toy_task:UnconditionalToyGeneratorTask",
    )
    with installed(("toy-gan", conditional), ("toy-gan-free", free)):
        yield
    torch.set_num_threads(threads)


def zoo_cli(*args: object) -> Result:
    from zoo.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(*args: object) -> str:
    """``zoo ARGS...`` fails with exit 1 and one line, no traceback; returns the line."""
    result = zoo_cli(*args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (result.exit_code, result.output)
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert lines[0].startswith("Error: "), lines[0]
    return lines[0].removeprefix("Error: ")


def files_in(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


# -- bad input: one line, nothing written ---------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, -3])
def test_fewer_than_one_sample_is_refused(tmp_path, n):
    out = tmp_path / "out"
    out.mkdir()
    line = one_line_error("sample", GENERATOR, "-n", n, "-o", out / "grid.png", "--out-dir", out / "each")
    assert line == f"The number of samples must be at least 1, not {n} (-n).", line
    assert files_in(out) == []
    with pytest.raises(ZooError, match="at least 1"):
        zoo.sample(GENERATOR, n)


def test_a_class_for_an_unconditional_model_is_refused(tmp_path):
    line = one_line_error("sample", FREE, "-n", 2, "--class", "red", "-o", tmp_path / "grid.png")
    assert line == "'toy-gan-free' is unconditional: it takes no --class.", line
    assert files_in(tmp_path) == ["weights", "weights/toy-gan-free.safetensors", "weights/toy-gan-tiny.safetensors"]
    with pytest.raises(ZooError, match="'toy-gan-free' is unconditional"):
        zoo.sample(FREE, 2, labels=0)


def test_an_unknown_class_names_the_model_and_its_classes(tmp_path):
    line = one_line_error("sample", GENERATOR, "-n", 2, "--class", "gren", "-o", tmp_path / "grid.png")
    assert line == (
        "Unknown class 'gren' for model 'toy-gan-tiny'; its classes: red, green, blue. Did you mean 'green'?"
    ), line
    assert not (tmp_path / "grid.png").exists()
    line = one_line_error("sample", GENERATOR, "-n", 2, "--class", 3, "-o", tmp_path / "grid.png")
    assert line == (
        "Class index 3 is out of range for model 'toy-gan-tiny': it has 3 classes (0-2: red, green, blue)."
    ), line
    with pytest.raises(ZooError, match="Unknown class 'dgo' for model 'toy-gan-tiny'; its classes: red, green"):
        zoo.sample(GENERATOR, 2, labels=["red", "dgo"])
    with pytest.raises(ZooError, match="A class is a name or an index, not bool"):
        zoo.sample(GENERATOR, 1, labels=True)


def test_classes_for_some_of_the_samples_are_refused(tmp_path):
    line = one_line_error("sample", GENERATOR, "-n", 3, "--class", "red", "--class", "blue", "-o", tmp_path / "g.png")
    assert line == "2 classes for 3 samples: give one class (for every sample) or one per sample.", line


def test_no_output_is_refused_before_sampling():
    line = one_line_error("sample", GENERATOR, "-n", 4)
    assert line == (
        "Say where to write the samples: zoo sample toy-gan-tiny -o GRID.png (one grid image) and/or "
        "--out-dir DIR (one PNG per sample)."
    ), line


def test_an_output_in_a_missing_folder_is_refused(tmp_path):
    missing = tmp_path / "no" / "such"
    line = one_line_error("sample", GENERATOR, "-n", 2, "-o", missing / "grid.png")
    assert line == f"Cannot write {missing / 'grid.png'}: its folder {missing} does not exist.", line
    line = one_line_error("sample", GENERATOR, "-n", 2, "--out-dir", missing / "each")
    assert line == f"Cannot write {missing / 'each'}: its folder {missing} does not exist.", line
    assert not (tmp_path / "no").exists()


def test_an_output_in_a_read_only_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "each").mkdir()
    locked.chmod(0o555)
    (locked / "each").chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: a read-only folder is still writable")
        line = one_line_error("sample", GENERATOR, "-n", 2, "-o", locked / "grid.png")
        assert line == f"Cannot write {locked / 'grid.png'}: its folder {locked} is not writable.", line
        line = one_line_error("sample", GENERATOR, "-n", 2, "--out-dir", locked / "each")
        assert line == f"Cannot write into {locked / 'each'}: the folder {locked / 'each'} is not writable.", line
        line = one_line_error("sample", GENERATOR, "-n", 2, "--out-dir", locked / "new")
        assert line == f"Cannot write {locked / 'new'}: its folder {locked} is not writable.", line
        assert files_in(locked) == ["each"]
    finally:
        (locked / "each").chmod(0o755)
        locked.chmod(0o755)


def test_a_folder_the_process_may_not_write_is_refused(tmp_path, monkeypatch):
    """The same check where chmod cannot make a folder read-only (as root): what os.access answers decides."""
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: real(path, mode) and Path(path) != tmp_path)
    line = one_line_error("sample", GENERATOR, "-n", 2, "-o", tmp_path / "grid.png")
    assert line == f"Cannot write {tmp_path / 'grid.png'}: its folder {tmp_path} is not writable.", line
    assert not (tmp_path / "grid.png").exists()


def test_a_failed_write_is_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch):
    """An OS error while writing (a full disk, a folder made read-only meanwhile): one line naming the file; the
    temporary file is removed and the target never appears."""
    real = Path.write_bytes

    def write_bytes(self: Path, data: bytes) -> int:
        if self.name.endswith(".partial") and "000001" in self.name:
            real(self, data[:10])
            raise OSError(28, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    line = one_line_error("sample", GENERATOR, "-n", 3, "--out-dir", tmp_path / "each")
    assert line == f"Cannot write {tmp_path / 'each' / '000001.png'}: No space left on device.", line
    assert files_in(tmp_path / "each") == ["000000.png"]  # no manifest: the run did not finish


def test_outputs_of_the_wrong_kind_are_refused(tmp_path):
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "a-file").write_text("x")
    line = one_line_error("sample", GENERATOR, "-n", 2, "-o", tmp_path / "a-folder")
    assert "it is a folder" in line, line
    line = one_line_error("sample", GENERATOR, "-n", 2, "--out-dir", tmp_path / "a-file")
    assert line == f"Cannot write into {tmp_path / 'a-file'}: it is a file, not a folder.", line


def test_a_bad_batch_size_and_task_option_are_one_line(tmp_path):
    line = one_line_error("sample", GENERATOR, "-n", 2, "--batch-size", 0, "-o", tmp_path / "g.png")
    assert line == "The batch size must be at least 1, not 0.", line
    line = one_line_error("sample", GENERATOR, "-n", 2, "--truncation", 2, "-o", tmp_path / "g.png")
    assert "--truncation" in line, line
    line = one_line_error("sample", GENERATOR, "-n", 2, "--topk", 2, "-o", tmp_path / "g.png")
    assert line.startswith("No such option '--topk' for toy-gan models (theirs: --truncation"), line
    assert not (tmp_path / "g.png").exists()


def test_a_classifier_does_not_sample(tmp_path):
    line = one_line_error("sample", "resnet20-cifar", "-n", 2, "-o", tmp_path / "g.png")
    assert line == (
        "Model 'resnet20-cifar' is a classifier: 'zoo sample' does not apply to it (it supports "
        "'zoo predict', 'zoo eval', 'zoo finetune')."
    ), line
    with pytest.raises(ZooError, match="'zoo sample' does not apply"):
        zoo.sample("resnet20-cifar", 2)
    assert not (tmp_path / "g.png").exists()


# -- what a good run gives --------------------------------------------------------------------------------------


def test_the_printed_line_and_the_files(tmp_path):
    result = zoo_cli(
        "sample",
        GENERATOR,
        "-n",
        3,
        "--seed",
        7,
        "-o",
        tmp_path / "grid.png",
        "--out-dir",
        tmp_path / "each",
        "--precision",
        "fp32",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    assert re.fullmatch(
        rf"wrote {re.escape(str(tmp_path / 'grid.png'))} and "
        rf"{re.escape(str(tmp_path / 'each' / '000000.png'))}\.\.000002\.png "
        r"\(3 samples of toy-gan-tiny, seed 7, fp32, \d+ img/s\)\n",
        result.output,
    ), result.output
    assert files_in(tmp_path / "each") == ["000000.png", "000001.png", "000002.png", "manifest.json"]
    manifest = json.loads((tmp_path / "grid.png.json").read_text())
    assert manifest["outputs"] == [str(tmp_path / "grid.png"), str(tmp_path / "each")]
    assert manifest["options"] == {"truncation": 1.0} and manifest["precision"] == "fp32"


def test_classes_by_name_index_or_drawn():
    """One class for all, one per sample (names or indices, the same images), or drawn per sample from the seed:
    sample i's class depends on (seed, i) alone."""
    by_name = zoo.sample(GENERATOR, 3, seed=1, labels=["red", "green", "blue"], precision="fp32")
    by_index = zoo.sample(GENERATOR, 3, seed=1, labels=[0, 1, 2], precision="fp32")
    assert torch.equal(by_name, by_index)
    assert torch.equal(zoo.sample(GENERATOR, 3, seed=1, labels="green", precision="fp32")[1], by_name[1])
    drawn = [
        COLOURS[int(torch.randint(3, (1,), generator=torch.Generator().manual_seed(class_seed(1, i))))]
        for i in range(3)
    ]
    assert torch.equal(
        zoo.sample(GENERATOR, 3, seed=1, precision="fp32"),
        zoo.sample(GENERATOR, 3, seed=1, labels=drawn, precision="fp32"),
    )
    assert len({class_seed(1, i) for i in range(3)} | {sample_seed(1, i) for i in range(3)}) == 6


def test_more_samples_than_a_micro_batch():
    """n across micro-batch boundaries (and a padded last one): each sample as in a run of its own micro-batch."""
    micro = MICRO_BATCH["cpu"]
    many = zoo.sample(FREE, micro + 3, seed=5, batch_size=micro // 2, precision="fp32")
    assert many.shape == (micro + 3, 3, 16, 16)
    assert torch.equal(many[:3], zoo.sample(FREE, 3, seed=5, precision="fp32"))
    assert not torch.equal(many[micro : micro + 3], many[:3])


def test_a_card_without_weights_samples_a_seeded_random_init(tmp_path):
    """The manifest says weights: null and the line says so; the random initialisation is seeded from --seed, so
    the same command still draws the same images, and the caller's random state is left as it was."""
    cards = generator_cards(tmp_path, "toy-gan-untrained", "toy-gan-untrained")
    del cards["models"]["toy-gan-untrained"]["weights"]
    plugin = ToyPlugin(cards, "toy-gan-untrained", "tests.contract.toy_task:ToyGeneratorTask")
    with installed(("toy-gan-untrained", plugin)):
        result = zoo_cli("sample", "toy-gan-untrained", "-n", 2, "-o", tmp_path / "grid.png", "--precision", "fp32")
        assert result.exit_code == 0, result.output
        assert "(2 samples of toy-gan-untrained, seed 0, fp32, no weights: random init, " in result.output
        assert json.loads((tmp_path / "grid.png.json").read_text())["weights"] is None
        torch.manual_seed(123)
        state = torch.get_rng_state()
        a = zoo.sample("toy-gan-untrained", 2, seed=4, labels="red", precision="fp32")
        assert torch.equal(torch.get_rng_state(), state)
        b = zoo.sample("toy-gan-untrained", 2, seed=4, labels="red", precision="fp32")
        c = zoo.sample("toy-gan-untrained", 2, seed=5, labels="red", precision="fp32")
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_the_sampling_module_and_command_import_no_torch():
    """`zoo list` and `zoo --help` build the sample command: defining it must not import torch."""
    import subprocess
    import sys

    code = (
        "import sys, zoo, zoo.runtime.sample, zoo.cli; zoo.cli.cli.commands['sample']; "
        "print(sorted(m for m in ('torch', 'torchvision', 'numpy') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr
