"""`zoo explain` and `zoo.explain`: Grad-CAM whose heat lies on the object, overlays at the image's size, --class,
the layer from the card, from --layer or found automatically, refusals in one line with nothing written.

resnet18-cifar ships its weights; resnet20-cifar's come from ../shared's offline mirror of the akamaster weights
(skipped with the reason without it). The object test pastes a CIFAR-sized copy of an example picture into one
quadrant of a grey canvas, so where the heat should lie is known.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from click.testing import CliRunner

import zoo
from tests.conftest import REPO, require_shared
from zoo.cli import cli
from zoo.errors import ZooError
from zoo.runtime.explain import DIM, find_layer
from zoo.runtime.images import read_image

IMAGES = REPO / "examples" / "images"
CHELSEA, HORSE = IMAGES / "chelsea.png", IMAGES / "horse.png"
CLASS = {CHELSEA: "cat", HORSE: "horse"}


def run(*args: str):  # noqa: ANN201
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(autouse=True)
def one_thread():
    """Two threads on a shared 2-core machine spin against each other's load (as tests/test_export.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_png(path, image: torch.Tensor):  # noqa: ANN001, ANN201
    from torchvision.io import write_png as write

    write(image, str(path))
    return path


def pasted(directory, source, quadrant: int, size: int = 64):  # noqa: ANN001, ANN201
    """`source` shrunk to size/2 x size/2 on a grey size x size canvas, in quadrant 0-3 (row-major); the file and
    the object's box (top, left, bottom, right) in its pixels."""
    from torchvision.transforms.v2 import functional as F

    half = size // 2
    canvas = torch.full((3, size, size), 128, dtype=torch.uint8)
    top, left = (quadrant // 2) * half, (quadrant % 2) * half
    canvas[:, top : top + half, left : left + half] = F.resize(read_image(source), [half, half], antialias=True)
    return write_png(directory / f"{source.stem}-q{quadrant}.png", canvas), (top, left, top + half, left + half)


def share(heat: torch.Tensor, box: tuple[int, int, int, int]) -> float:
    top, left, bottom, right = box
    return float(heat[top:bottom, left:right].sum() / heat.sum())


# -- the heat lies on the object ------------------------------------------------------------------------------


def test_heat_lies_on_the_object(tmp_path):
    """A quarter of the canvas holds the object: the heat map puts most of its mass there, in every quadrant, for
    both pictures (no information would put 25% there). Measured: 91-99% (layer3, chosen automatically)."""
    files, boxes = [], []
    for source in (CHELSEA, HORSE):
        for quadrant in range(4):
            file, box = pasted(tmp_path, source, quadrant)
            files.append(file)
            boxes.append(box)
    targets = [CLASS[CHELSEA]] * 4 + [CLASS[HORSE]] * 4
    records = zoo.explain("resnet18-cifar", files, targets)
    for record, box in zip(records, boxes, strict=True):
        assert (record["layer"], record["layer_from"], record["map_size"]) == ("layer3", "auto", [8, 8])
        assert record["heatmap"].shape == (64, 64) and record["heatmap"].dtype == torch.float32
        assert 0.9 < float(record["heatmap"].max()) <= 1 and float(record["heatmap"].min()) >= 0
        assert share(record["heatmap"], box) > 0.6, (record["image"], share(record["heatmap"], box))
    assert [r["class"] for r in records] == targets


def test_heat_maps_back_through_the_crop(tmp_path):
    """A wide picture: the card's resize (shorter side 32) and center crop (32x32) show the model only the middle
    half; the heat map has the picture's size, is zero where the model saw nothing, and still finds the object in
    the seen part's top-left quadrant."""
    from torchvision.transforms.v2 import functional as F

    canvas = torch.full((3, 64, 128), 128, dtype=torch.uint8)  # seen: columns 32..95
    canvas[:, 0:32, 32:64] = F.resize(read_image(CHELSEA), [32, 32], antialias=True)
    file = write_png(tmp_path / "wide.png", canvas)
    record = zoo.explain("resnet18-cifar", file, "cat", out=tmp_path / "out")[0]
    heat = record["heatmap"]
    assert heat.shape == (64, 128) and record["size"] == [64, 128]
    assert float(heat[:, :31].abs().max()) == 0 and float(heat[:, 97:].abs().max()) == 0
    assert share(heat, (0, 32, 32, 64)) > 0.6
    overlay = read_image(record["file"])
    assert overlay.shape == (3, 64, 128)
    # outside the crop the picture is only dimmed; inside, the colour map is blended over it
    assert torch.allclose(overlay[:, :, :30].float(), canvas[:, :, :30].float() * DIM, atol=1)
    assert float((overlay[:, :, 34:94].float() - canvas[:, :, 34:94].float()).abs().mean()) > 20


@pytest.fixture()
def mirror(monkeypatch):
    path = require_shared("weights", "akamaster-resnet-cifar")
    monkeypatch.setenv("ZOO_MIRROR", str(path))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    return path


def test_heat_lies_on_the_object_resnet20(tmp_path, mirror):
    """The same with the third-party weights of another architecture (option-A shortcuts, 64 channels): its last
    stage is 8x8 and chosen automatically. Measured: 59-90% of the heat on the object."""
    files, boxes = zip(*(pasted(tmp_path, source, q) for source in (CHELSEA, HORSE) for q in range(4)), strict=True)
    records = zoo.explain("resnet20-cifar", list(files), ["cat"] * 4 + ["horse"] * 4)
    for record, box in zip(records, boxes, strict=True):
        assert record["layer"] == "layer3"
        assert share(record["heatmap"], box) > 0.5, (record["image"], share(record["heatmap"], box))


# -- the command ------------------------------------------------------------------------------------------------


def test_cli_writes_one_overlay_per_image(tmp_path):
    out = tmp_path / "cam"
    result = run("explain", "resnet18-cifar", str(CHELSEA), str(HORSE), "-o", str(out))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "Grad-CAM at layer3 (8x8 map, chosen automatically)"
    where = re.escape(str(out))
    assert re.fullmatch(rf"{re.escape(str(CHELSEA))}: cat \d+\.\d% \(top-1\)  -> {where}/chelsea-cat\.png", lines[1])
    assert re.fullmatch(rf"{re.escape(str(HORSE))}: horse \d+\.\d% \(top-1\)  -> .*/horse-horse\.png", lines[2])
    assert len(lines) == 3
    assert sorted(p.name for p in out.iterdir()) == ["chelsea-cat.png", "horse-horse.png"]  # no temporary left
    for source in (CHELSEA, HORSE):
        original = read_image(source)
        overlay = read_image(out / f"{source.stem}-{CLASS[source]}.png")
        assert overlay.shape == original.shape  # the original's size, not the model's 32x32
        assert float((overlay.float() - original.float()).abs().mean()) > 10


def test_class_changes_the_map(tmp_path):
    """--class explains a class that is not the top-1: its own probability and a different map; a name and its
    index are the same class."""
    top, horse, seven = (zoo.explain("resnet18-cifar", CHELSEA, target)[0] for target in (None, "horse", 7))
    assert top["class"] == "cat" and top["top1"]["label"] == "cat"
    assert horse["class"] == "horse" and horse["index"] == 7 and horse["probability"] < 0.1
    assert horse["top1"] == top["top1"]
    assert torch.equal(horse["heatmap"], seven["heatmap"])
    a, b = top["heatmap"].flatten(), horse["heatmap"].flatten()
    assert float(torch.corrcoef(torch.stack([a, b]))[0, 1]) < 0.9
    assert float((a - b).abs().max()) > 0.3

    result = run("explain", "resnet18-cifar", str(CHELSEA), "--class", "horse", "-o", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert re.search(
        r"chelsea\.png: horse \d+\.\d% \(top-1: cat \d+\.\d%\)  -> .*/chelsea-horse\.png$",
        result.output.splitlines()[1],
    ), result.output


def test_json_records(tmp_path):
    result = run("explain", "resnet18-cifar", str(CHELSEA), "--layer", "layer4", "--json", "-o", str(tmp_path))
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.output)
    assert "heatmap" not in record
    assert record["layer"] == "layer4" and record["layer_from"] == "argument" and record["map_size"] == [4, 4]
    assert record["size"] == [300, 451] and record["method"] == "gradcam"
    assert record["file"] == str(tmp_path / "chelsea-cat.png") and (tmp_path / "chelsea-cat.png").is_file()


# -- the layer -------------------------------------------------------------------------------------------------


def card_with(directory, monkeypatch, task_config: str) -> str:  # noqa: ANN001
    """A user card for resnet18-cifar's shipped weights with the given task_config (YAML flow mapping)."""
    import zoo._registry

    original = zoo.card("resnet18-cifar")
    variant = original.weights[original.default_tag]
    registry = directory / "mine.yaml"
    registry.write_text(
        "models:\n  my-r18:\n    task: classifier\n    builder: zoo_classifier.models:build_resnet18_cifar\n"
        "    kwargs: {num_classes: 10}\n    input: {shape: [3, 32, 32]}\n"
        "    preprocess: {resize: 32, crop: 32, mean: [0.4914, 0.4822, 0.4465], std: [0.2023, 0.1994, 0.2010]}\n"
        f"    labels: [{', '.join(original.labels)}]\n    task_config: {task_config}\n"
        f"    weights:\n      v1: {{uri: '{variant.uri}', sha256: {variant.sha256}, dtype: float16}}\n"
    )
    monkeypatch.setenv("ZOO_REGISTRY", str(registry))
    zoo._registry.reset_registry()
    return "my-r18"


def test_the_card_declares_the_layer(tmp_path, monkeypatch):
    name = card_with(tmp_path, monkeypatch, "{explain_layer: layer4}")
    record = zoo.explain(name, CHELSEA)[0]
    assert (record["layer"], record["layer_from"], record["map_size"]) == ("layer4", "card", [4, 4])
    assert zoo.explain(name, CHELSEA, layer="layer2")[0]["layer_from"] == "argument"  # --layer wins


def test_a_bad_card_layer_is_one_line(tmp_path, monkeypatch):
    name = card_with(tmp_path, monkeypatch, "{explain_layer: layer5}")
    with pytest.raises(
        ZooError,
        match=r"^Card 'my-r18': task_config.explain_layer 'layer5' is not a module of the "
        r"model \(did you mean 'layer4'\?\); layers to explain include: conv1, layer1, "
        r"layer2, layer3, layer4\.$",
    ):
        zoo.explain(name, CHELSEA)
    name = card_with(tmp_path, monkeypatch, "{explain_layr: layer3}")
    with pytest.raises(ZooError, match=r"task_config.explain_layr.*did you mean 'explain_layer'"):
        zoo.explain(name, CHELSEA)


def test_find_layer():
    """The last convolutional block, preferring maps of at least 7x7: an ImageNet ResNet at 224 keeps its last
    stage (7x7), the CIFAR networks step back from 4x4 to their 8x8 stage; no feature map is one line."""
    from torchvision.models import resnet18

    from zoo_classifier.models import build_cifar_resnet, build_resnet18_cifar

    x32 = torch.zeros(1, 3, 32, 32)
    assert find_layer(build_resnet18_cifar().eval(), x32) == "layer3"  # layer4 is 4x4
    assert find_layer(build_cifar_resnet(depth=20).eval(), x32) == "layer3"  # the last stage, 8x8
    assert find_layer(resnet18().eval(), torch.zeros(1, 3, 224, 224)) == "layer4"
    assert find_layer(resnet18().eval(), torch.zeros(1, 3, 64, 64)) == "layer2"  # 8x8; layer3 4x4, layer4 2x2
    nn = torch.nn
    small = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    assert find_layer(small.eval(), torch.zeros(1, 3, 6, 6)) == "2"  # nothing reaches 7x7: the last one
    with pytest.raises(ZooError, match="Found no convolutional layer"):
        find_layer(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10)), x32)


# -- refusals: one line, exit 1, nothing written ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("fastestdet-coco", str(CHELSEA)),
            "Error: Model 'fastestdet-coco' is a detector: 'zoo explain' does not apply "
            "to it (it supports 'zoo predict', 'zoo eval', 'zoo finetune').",
        ),
        (
            ("cgan-cifar", str(CHELSEA)),
            "Error: Model 'cgan-cifar' is a gan: 'zoo explain' does not apply to it (it "
            "supports 'zoo eval', 'zoo finetune', 'zoo sample').",
        ),
        (("resnet18-cifar", "no-such.png"), "Error: Cannot read image no-such.png: No such file or directory."),
        (
            ("resnet18-cifar", str(CHELSEA), "--layer", "layer9"),
            "Error: --layer 'layer9' is not a module of the model (did you mean 'layer4'?); layers to explain include: "
            "conv1, layer1, layer2, layer3, layer4.",
        ),
        (
            ("resnet18-cifar", str(CHELSEA), "--layer", "linear"),
            "Error: --layer 'linear' returns N x 10, not a feature map (N x C x H x W); Grad-CAM needs a convolutional "
            "layer: conv1, layer1, layer2, layer3, layer4.",
        ),
        (
            ("resnet18-cifar", str(CHELSEA), "--class", "dgo"),
            "Error: Unknown class 'dgo' for model 'resnet18-cifar'; its classes: airplane, automobile, bird, cat, "
            "deer, dog, frog, horse, ship, truck. Did you mean 'dog'?",
        ),
        (
            ("resnet18-cifar", str(CHELSEA), "--class", "10"),
            "Error: Class index 10 is out of range for model 'resnet18-cifar': it has 10 classes",
        ),
        (
            ("resnet18-cifar", str(CHELSEA), "--method", "gradcm"),
            "Error: Unknown explanation method 'gradcm' (did you mean 'gradcam'?); use gradcam.",
        ),
        (("no-such-model", str(CHELSEA)), "Error: Unknown model 'no-such-model'."),
    ],
)
def test_bad_input_is_one_line(tmp_path, args, message):
    result = run("explain", *args, "-o", str(tmp_path / "cam"))
    assert result.exit_code == 1, result.output
    assert result.output.startswith(message) and result.output.count("\n") == 1, result.output
    assert list(tmp_path.iterdir()) == []


def test_output_folder_must_be_writable(tmp_path):
    result = run("explain", "resnet18-cifar", str(CHELSEA), "-o", str(tmp_path / "missing" / "cam"))
    assert result.exit_code == 1
    missing = tmp_path / "missing"
    assert result.output == f"Error: Cannot write {missing}/cam: its folder {missing} does not exist.\n"
    (tmp_path / "file").write_text("x")
    result = run("explain", "resnet18-cifar", str(CHELSEA), "-o", str(tmp_path / "file"))
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "it is a file, not a folder" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_without_captum_is_one_line(tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "captum" else find_spec(name, *a))
    result = run("explain", "resnet18-cifar", str(CHELSEA), "-o", str(tmp_path / "cam"))
    assert result.exit_code == 1
    assert result.output == "Error: zoo explain needs the package captum (Grad-CAM); install it: pip install captum\n"
    assert list(tmp_path.iterdir()) == []
