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


# -- 8. what a fine-tuning run leaves behind -------------------------------------------------------------------
def two_class_folder(root: Path, per_class: int = 10, classes: tuple[str, ...] = ("bottom", "top")) -> Path:
    from tests.test_finetune import make_top_bottom

    return make_top_bottom(root, per_class=per_class, classes=classes)


@pytest.fixture()
def source_card(tmp_path, monkeypatch, zoo_home) -> str:
    """A 10-class CIFAR ResNet-20 card (labels a..j) with seeded random weights, to fine-tune from."""
    from tests.conftest import register_resnet20_card

    return register_resnet20_card(tmp_path, monkeypatch, "src-resnet", list("abcdefghij"))


def test_a_run_without_validation_still_writes_its_card(tmp_path, source_card):
    """--val-split 0 printed "load it with zoo.load(...)" and wrote no card."""
    from zoo.runtime.finetune import FinetuneConfig, finetune

    data = two_class_folder(tmp_path / "data")
    config = FinetuneConfig(epochs=1, batch_size=8, val_split=0.0)
    finetune(source_card, data, tmp_path / "no-val", config=config, device="cpu", show_progress=False)
    card = zoo.card("no-val")
    assert card.plugin == "user" and card.labels == ("bottom", "top") and card.variant().metrics == ()
    model = zoo.load("no-val", device="cpu")
    assert card.params == sum(p.numel() for p in model.parameters()) > 0  # `zoo list` showed "-"


def test_a_finetuned_card_in_zoo_home_moves_with_it(tmp_path, source_card, zoo_home, monkeypatch):
    """Weights under $ZOO_HOME are named relative to its registry, as zoo register names them: moving the whole
    folder keeps the card loading (an absolute path broke it)."""
    from zoo.runtime.finetune import FinetuneConfig, finetune

    data = two_class_folder(tmp_path / "data")
    config = FinetuneConfig(epochs=1, batch_size=8, val_split=0.0)
    finetune(source_card, data, zoo_home / "runs" / "mine", config=config, device="cpu", show_progress=False)
    assert "uri: runs/mine/mine.safetensors" in (zoo_home / "registry.yaml").read_text()
    moved = zoo_home.with_name(zoo_home.name + "-moved")
    zoo_home.rename(moved)
    monkeypatch.setenv("ZOO_HOME", str(moved))
    reset_registry()
    assert zoo.card("mine").variant().uri == str(moved / "runs" / "mine" / "mine.safetensors")
    zoo.load("mine", device="cpu")


@pytest.mark.parametrize(
    ("classes", "rows"),
    [(("c", "a"), [2, 0]), (tuple("jihgfedcba"), list(range(9, -1, -1))), (("a", "new"), None)],
    ids=["a-subset", "all-reordered", "a-new-class"],
)
def test_a_head_over_the_models_own_labels_is_kept(tmp_path, source_card, classes, rows):
    """Data whose classes are labels of the model starts from those rows of its head, not from a fresh one."""
    from safetensors.torch import load_file

    from zoo.runtime.finetune import FinetuneConfig, finetune

    data = two_class_folder(tmp_path / "data", per_class=3, classes=classes)
    config = FinetuneConfig(epochs=0, val_split=0.0)  # no step: the weights are where training starts
    result = finetune(source_card, data, tmp_path / "kept", config=config, device="cpu", show_progress=False)
    source, started = load_file(str(zoo.fetch(source_card))), load_file(str(result.weights))
    data_order = sorted(classes)  # an ImageFolder's classes are its sorted folder names
    assert zoo.card("kept").labels == tuple(data_order)
    for key in ("linear.weight", "linear.bias"):
        assert started[key].shape[0] == len(classes)
        if rows is None:
            assert not any(torch_equal_any(started[key][i], source[key]) for i in range(len(classes)))
        else:
            expected = [rows[list(classes).index(c)] for c in data_order]
            assert (started[key] == source[key][expected]).all(), key
    assert (started["conv1.weight"] == source["conv1.weight"]).all()  # the backbone loads either way


def torch_equal_any(row, matrix) -> bool:
    return bool((matrix == row).all(dim=-1).any()) if matrix.ndim > 1 else bool((matrix == row).any())


@pytest.mark.parametrize(("images", "expected"), [(36, 16), (97, 16), (200, 16), (640, 64), (1280, 128), (50_000, 128)])
def test_the_default_batch_is_sized_for_small_data(images, expected):
    """108 images at the classifiers' 128 were one optimizer step per epoch."""
    from zoo.runtime.train.recipe import fit_batch_size

    assert fit_batch_size(128, images) == expected
    assert fit_batch_size(8, images) == 8  # never above the task's own


def test_a_run_too_short_to_learn_is_warned_about_and_a_given_batch_is_kept(tmp_path, source_card, caplog):
    from zoo.runtime.finetune import FinetuneConfig, finetune

    data = two_class_folder(tmp_path / "data")  # 20 images, 18 trained on
    with caplog.at_level(logging.WARNING, logger="zoo"):
        finetune(source_card, data, tmp_path / "short", config=FinetuneConfig(epochs=2), device="cpu")
    assert [r.getMessage() for r in caplog.records] == [
        "warning: this run makes only 4 optimizer steps (18 training images in batches of 16, 2 epochs): likely "
        "too few to learn; pass --epochs 15 (or more)."
    ]
    assert '"batch_size": 16' in zoo.card("short").variant().notes  # the card records the size used
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="zoo"):
        finetune(source_card, data, tmp_path / "given", config=FinetuneConfig(epochs=10, batch_size=1), device="cpu")
    assert not caplog.records and '"batch_size": 1' in zoo.card("given").variant().notes


# -- 9. files zoo writes are readable as a plain open() would leave them ----------------------------------------
@pytest.fixture()
def umask_022():
    old = __import__("os").umask(0o022)
    yield
    __import__("os").umask(old)


def test_fine_tuned_weights_and_decoded_datasets_follow_the_umask(tmp_path, source_card, zoo_home, umask_022):
    """safetensors and tempfile create files 0600: a shared $ZOO_HOME's other users could not read them."""
    from zoo.runtime.finetune import FinetuneConfig, finetune

    data = two_class_folder(tmp_path / "data")
    finetune(source_card, data, tmp_path / "modes", config=FinetuneConfig(epochs=1), device="cpu")
    files = [tmp_path / "modes" / "best.safetensors", tmp_path / "modes" / "modes.safetensors"]
    files += list((zoo_home / "datasets").glob("*.u8"))
    assert len(files) == 3
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == {f.name: "0o644" for f in files}


# -- 10. zoo predict DIR, and --skip-bad where it is offered --------------------------------------------------
def test_predict_takes_a_directory(tmp_path, source_card):
    data = two_class_folder(tmp_path / "data", per_class=2)
    (data / "notes.txt").write_text("not an image")
    result = invoke("predict", source_card, str(data), "--device", "cpu", "--topk", "1")
    assert result.exit_code == 0, result.output
    assert [line.split(":")[0] for line in result.output.splitlines()] == [
        str(data / label / f"{i:03d}.png") for label in ("bottom", "top") for i in range(2)
    ]
    (tmp_path / "empty").mkdir()
    empty = invoke("predict", source_card, str(tmp_path / "empty"))
    assert empty.exit_code == 1 and empty.output.startswith(f"Error: {tmp_path / 'empty'} is a directory with no ")


def test_a_skipped_image_is_not_told_to_pass_skip_bad(tmp_path, source_card):
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    failed = invoke("predict", source_card, str(bad), "--device", "cpu")
    assert failed.output.splitlines() == [
        f"Error: Cannot read image {bad}: not a decodable image (cannot identify image file). Remove it, or pass "
        "--skip-bad to skip unreadable files."
    ]
    skipped = invoke("predict", source_card, str(bad), str(CHELSEA), "--skip-bad", "--device", "cpu")
    assert skipped.exit_code == 0
    assert skipped.output.splitlines()[0] == (
        f"{bad}: SKIPPED (Cannot read image {bad}: not a decodable image (cannot identify image file).)"
    )


def test_finetune_skips_bad_images_when_asked(tmp_path, source_card):
    """The hint said "pass --skip-bad", which zoo finetune did not have."""
    data = two_class_folder(tmp_path / "data")
    (data / "top" / "broken.png").write_text("nope")
    base = ["finetune", source_card, "--data", str(data), "--epochs", "1", "--device", "cpu"]
    failed = invoke(*base, "--out", str(tmp_path / "a"))
    assert failed.exit_code == 1 and failed.output.endswith("Remove it, or pass --skip-bad to skip unreadable files.\n")
    done = invoke(*base, "--out", str(tmp_path / "b"), "--skip-bad")
    assert done.exit_code == 0, done.output
    assert f"skipped 1 unreadable images: {data / 'top' / 'broken.png'}" in done.output.splitlines()
    (metric,) = zoo.card("b").variant().metrics
    assert metric.note.endswith("--val-split 0.1 --seed 0 --skip-bad --compare")  # the same split again


def test_a_task_that_cannot_skip_refuses_skip_bad(tmp_path, zoo_home):
    from zoo.runtime.finetune import FinetuneConfig, finetune

    with pytest.raises(ZooError, match=r"^--skip-bad: the vae task reads every training image; remove the unread"):
        finetune("vae-cifar", tmp_path, tmp_path / "v", config=FinetuneConfig(skip_bad=True), device="cpu")


def test_cached_weights_follow_the_umask(zoo_home, monkeypatch, umask_022):
    """The store's own files (a converted checkpoint here) were created 0600 once; pip's and huggingface_hub's
    are readable by others unless the umask says otherwise."""
    from tests.conftest import require_shared

    monkeypatch.setenv("ZOO_MIRROR", str(require_shared("weights", "akamaster-resnet-cifar")))
    path = zoo.fetch("resnet20-cifar")
    assert path.is_relative_to(zoo_home) and oct(path.stat().st_mode & 0o777) == "0o644"
