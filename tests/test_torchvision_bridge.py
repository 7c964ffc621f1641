"""The torchvision bridge (plugins/zoo_torchvision): `tv/<arch>[.<WEIGHTS>]` cards from torchvision's own Weights
enums (classifiers and detectors), an index cached per torchvision version, plain `zoo list` unchanged and
torch-free, and loading end to end.

No test touches the network: weights are randomly initialised torchvision models saved the way torchvision
publishes them (a plain state-dict pickle), served from 127.0.0.1 under a URL of the same shape
(`/models/<arch>-<sha256 prefix>.pth`); the index is built for a few architectures only (the whole index, 114
classifier and 9 detector weights, is the slow test).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re

import pytest
import torch
import torchvision.models as tvm
from click.testing import CliRunner

import zoo
import zoo._plugins
import zoo._registry
import zoo_torchvision
from tests.conftest import zoo_process
from tests.httpserver import Behaviour
from zoo._builder import build_model
from zoo._card import ModelCard
from zoo._store import Store
from zoo.cli import cli
from zoo.errors import UnknownModelError, WeightsError
from zoo_detector.torchvision_cards import CARDS
from zoo_detector.torchvision_models import coco_layout
from zoo_torchvision import _paths, index

FEW = ["mobilenet_v3_small", "resnet18", "densenet121"]


@pytest.fixture()
def tv(monkeypatch):
    """The installed plugins plus the bridge registered as plugin `tv`, its index limited to FEW classifiers (and
    no detectors: a test that wants some names them)."""
    monkeypatch.setattr(index, "model_names", lambda: list(FEW))
    monkeypatch.setattr(index, "detector_names", lambda: [])
    zoo._registry.reset_registry()
    plugins = zoo._plugins.Plugins()
    plugins.load_entry_points()  # the installed bridge (entry point `tv`) is among them
    if "tv" not in plugins.active():  # a checkout whose package was installed before the bridge existed
        plugins.register(zoo_torchvision, "tv")
    zoo._plugins.reset_plugins(plugins)
    return plugins


def torchvision_checkpoint(arch: str, seed: int = 0) -> tuple[dict[str, torch.Tensor], bytes]:
    """A random `arch` state dict and its bytes as torchvision publishes them (torch.save of the plain dict)."""
    torch.manual_seed(seed)
    state = getattr(tvm, arch)(weights=None).state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return state, buffer.getvalue()


# -- cards and the index ----------------------------------------------------------------------------------


def test_cards_come_from_torchvisions_weights_enums(tv, zoo_home, capsys):
    names = zoo.list_models("tv/*")
    err = capsys.readouterr().err
    assert "building the index of torchvision" in err and "indexed 3 torchvision weights" in err
    assert names == ["tv/densenet121.imagenet1k_v1", "tv/mobilenet_v3_small.imagenet1k_v1", "tv/resnet18.imagenet1k_v1"]
    weights = tvm.ResNet18_Weights.IMAGENET1K_V1
    card = zoo.card("tv/resnet18.IMAGENET1K_V1")  # torchvision's spelling of the tag
    assert card is zoo.card("tv/resnet18") is zoo.card("tv/resnet18.imagenet1k_v1")  # the DEFAULT member
    assert (card.plugin, card.task, card.head) == ("tv", "classifier", "fc")
    assert card.builder == "torchvision.models:resnet18"  # torchvision's own constructor
    assert card.kwargs == {"num_classes": 1000} and card.params == weights.meta["num_params"] == 11689512
    assert card.labels == tuple(weights.meta["categories"]) and card.input_shape == (3, 224, 224)
    pre = card.preprocess
    assert (pre.resize, pre.crop, pre.interpolation) == (256, 224, "bilinear")
    assert pre.mean == (0.485, 0.456, 0.406) and pre.std == (0.229, 0.224, 0.225)
    variant = card.variant()
    assert variant.uri == weights.url == "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert (variant.sha256, variant.sha256_prefix, variant.format) == (None, "f37072fd", "torch-pickle")
    top1 = variant.metrics[0]
    assert (top1.name, top1.value, top1.dataset, top1.source) == ("top1", 69.758, "imagenet1k", "published")
    assert top1.reference == weights.meta["recipe"]
    # the index is cached per torchvision version: a new process (a fresh registry) reads it, builds nothing
    path = _paths.index_path()
    assert path.parent == zoo_home / "index" and tvm.__name__ and path.is_file()
    zoo._registry.reset_registry()
    zoo._plugins.reset_plugins(tv)
    assert zoo.list_models("tv/resnet*") == ["tv/resnet18.imagenet1k_v1"]
    assert capsys.readouterr().err == ""


def test_per_weights_cards_differ_where_torchvision_differs(tv, monkeypatch):
    monkeypatch.setattr(index, "model_names", lambda: ["resnet50", "inception_v3"])
    v1, v2 = zoo.card("tv/resnet50.IMAGENET1K_V1"), zoo.card("tv/resnet50.IMAGENET1K_V2")
    assert zoo.card("tv/resnet50") is v2  # ResNet50_Weights.DEFAULT
    assert (v1.preprocess.resize, v2.preprocess.resize) == (256, 232)
    assert (v1.variant().metrics[0].value, v2.variant().metrics[0].value) == (76.13, 80.858)
    inception = zoo.card("tv/inception_v3")
    # the arguments torchvision's builder sets for these weights, recorded from the builder itself
    assert inception.kwargs == {"transform_input": True, "aux_logits": True, "init_weights": False, "num_classes": 1000}
    assert (inception.preprocess.resize, inception.preprocess.crop) == (342, 299)


def test_names_that_do_not_exist_say_what_does(tv):
    with pytest.raises(UnknownModelError, match=r"has no weights tag 'IMAGENET1K_V9'. Its tags: imagenet1k_v1"):
        zoo.card("tv/resnet18.IMAGENET1K_V9")
    with pytest.raises(UnknownModelError, match=r"Unknown model 'tv/resnet19'. Did you mean 'tv/resnet18'"):
        zoo.card("tv/resnet19")


def test_plain_listing_neither_shows_nor_builds_the_namespace(tv, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the index was built by a plain listing")

    monkeypatch.setattr(index, "write_index", refuse)
    names = zoo.list_models()
    assert names and not any(n.startswith("tv/") for n in names)
    assert zoo.list_models("resnet*") == [n for n in names if n.startswith("resnet")]
    assert not any(n.startswith("tv/") for n in zoo.list_models(task="classifier", sort="top1"))


def test_a_failing_index_is_a_failed_plugin_not_a_crash(tv, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no torchvision here")

    monkeypatch.setattr(index, "write_index", broken)
    assert zoo.list_models("tv/*") == []
    assert "plugin 'tv' raised while reading its model index: RuntimeError: no torchvision here" in caplog.text
    assert zoo.list_models("resnet56*") == ["resnet56-cifar"]


def test_densenet_cards_carry_torchvisions_key_renaming(tv):
    """torchvision renames densenet's old checkpoint keys in code; the card's conversion rule does the same."""
    card = zoo.card("tv/densenet121")
    ((pattern, repl),) = card.variant().convert.rename
    with torch.device("meta"):
        keys = [k for k in tvm.densenet121().state_dict() if not k.endswith("num_batches_tracked")]  # not in the file
    old = [re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k) for k in keys]  # 'norm.1.weight'...
    renamed = sum(a != b for a, b in zip(old, keys, strict=True))
    assert renamed == (6 + 12 + 24 + 16) * (2 * 4 + 2)  # per dense layer: 2 norms x 4 tensors, 2 convs
    assert [re.sub(pattern, repl, k) for k in old] == keys


# -- detectors ------------------------------------------------------------------------------------------

# two the detector task runs, two it cannot (masks, keypoints: skipped, with the reason)
DETECTORS = ["keypointrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn", "retinanet_resnet50_fpn", "ssd300_vgg16"]
BOXES_ONLY = (
    "besides boxes: zoo's detector task takes boxes only, and zoo_detector.torchvision_models does not build it"
)


def test_detection_weights_are_detector_cards_and_the_others_are_named_skipped(tv, monkeypatch, capsys):
    monkeypatch.setattr(index, "model_names", lambda: [])
    monkeypatch.setattr(index, "detector_names", lambda: list(DETECTORS))
    names = ["tv/retinanet_resnet50_fpn.coco_v1", "tv/ssd300_vgg16.coco_v1"]
    assert zoo.list_models("tv/*") == names == zoo.list_models(task="detector", plugin="tv")
    assert zoo.list_models("tv/*rcnn*") == []
    assert "indexed 2 torchvision weights, 3 skipped" in capsys.readouterr().err
    data = json.loads(_paths.index_path().read_text())
    assert data["format"] == _paths.INDEX_FORMAT == 2 and list(data["label_sets"]) == ["coco"]
    assert data["skipped"] == {
        "keypointrcnn_resnet50_fpn.COCO_LEGACY": f"predicts keypoints {BOXES_ONLY}",
        "keypointrcnn_resnet50_fpn.COCO_V1": f"predicts keypoints {BOXES_ONLY}",
        "maskrcnn_resnet50_fpn.COCO_V1": f"predicts instance masks {BOXES_ONLY}",
    }
    for arch, kind in [("retinanet_resnet50_fpn", "ZooRetinaNet"), ("ssd300_vgg16", "ZooSSD")]:
        weights = tvm.get_model_weights(arch).COCO_V1
        card = zoo.card(f"tv/{arch}.COCO_V1")  # torchvision's spelling of the tag
        assert card is zoo.card(f"tv/{arch}")  # the DEFAULT member
        assert (card.plugin, card.task, card.builder) == ("tv", "detector", "zoo_detector.torchvision_models:build")
        assert card.kwargs["arch"] == arch and card.kwargs["num_classes"] == 80
        assert card.labels == coco_layout(weights.meta["categories"])[1] and card.params == weights.meta["num_params"]
        variant = card.variant()
        assert variant.uri == weights.url and variant.sha256 is None and variant.format == "torch-pickle"
        assert weights.url.endswith(f"-{variant.sha256_prefix}.pth") and len(variant.sha256_prefix) == 8
        (box_map,) = variant.metrics
        assert (box_map.name, box_map.dataset, box_map.split, box_map.source) == ("map", "coco", "val2017", "published")
        assert box_map.value == weights.meta["_metrics"]["COCO-val2017"]["box_map"]
        assert box_map.reference == weights.meta["recipe"]
        with torch.device("meta"):  # zoo's own build path, without memory or weights
            model = build_model(card, None, device="meta")
        assert type(model).__name__ == kind and sum(p.numel() for p in model.parameters()) == card.params
        model.get_submodule(card.head)
    # torchvision's first RetinaNet weights need FrozenBatchNorm2d's old eps of 0, as its builder sets it
    with torch.device("meta"):
        retinanet = build_model(zoo.card("tv/retinanet_resnet50_fpn"), None, device="meta")
    eps = {m.eps for m in retinanet.modules() if type(m).__name__ == "FrozenBatchNorm2d"}
    assert eps == {0.0}


def test_a_tv_detector_card_is_the_built_in_card_under_another_name(tv, monkeypatch):
    """One generator (zoo_detector.torchvision_cards.detector_card) for registry.yaml and the index."""
    monkeypatch.setattr(index, "model_names", lambda: [])
    monkeypatch.setattr(index, "detector_names", lambda: sorted(CARDS.values()))
    assert zoo.list_models("tv/*rcnn*") == [
        "tv/fasterrcnn_mobilenet_v3_large_320_fpn.coco_v1",
        "tv/fasterrcnn_resnet50_fpn_v2.coco_v1",
    ]
    same = {f.name for f in dataclasses.fields(ModelCard)} - {"name", "plugin", "origin", "weights", "default_tag"}
    for name, arch in CARDS.items():
        ours, builtin = zoo.card(f"tv/{arch}.COCO_V1"), zoo.card(name)
        assert (ours.name, ours.plugin, builtin.plugin) == (arch, "tv", "detector")
        assert {k: getattr(ours, k) for k in same} == {k: getattr(builtin, k) for k in same}, name
        assert (ours.default_tag, builtin.default_tag) == ("coco_v1", "coco-v1")
        assert dataclasses.replace(ours.variant(), tag="coco-v1") == builtin.variant(), name


def test_cli_lists_and_describes_tv_detectors(tv, monkeypatch):
    monkeypatch.setattr(index, "model_names", lambda: ["resnet18"])
    monkeypatch.setattr(index, "detector_names", lambda: ["fasterrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn"])
    runner = CliRunner()
    listed = runner.invoke(cli, ["list", "tv/*rcnn*"], catch_exceptions=False)
    assert listed.exit_code == 0, listed.output
    rows = [line.split() for line in listed.output.splitlines() if line.startswith("tv/")]
    assert [row[:2] for row in rows] == [["tv/fasterrcnn_resnet50_fpn_v2.coco_v1", "detector"]]
    assert "val2017 map 46.70*" in listed.output  # torchvision's published box mAP
    detectors = runner.invoke(cli, ["list", "--plugin", "tv", "--task", "detector"], catch_exceptions=False)
    assert [line.split()[0] for line in detectors.output.splitlines() if line.startswith("tv/")] == [rows[0][0]]
    info = runner.invoke(cli, ["info", "tv/fasterrcnn_resnet50_fpn_v2.COCO_V1", "--json"], catch_exceptions=False)
    assert info.exit_code == 0, info.output
    card = json.loads(info.output)
    url = tvm.get_model_weights("fasterrcnn_resnet50_fpn_v2").COCO_V1.url
    assert (card["qualified_name"], card["task"]) == ("tv/fasterrcnn_resnet50_fpn_v2", "detector")
    assert card["weights"]["coco_v1"]["uri"] == url


# -- loading end to end -----------------------------------------------------------------------------------


def test_load_downloads_verifies_the_prefix_converts_and_matches_torchvision(tv, server, monkeypatch, zoo_home):
    state, data = torchvision_checkpoint("resnet18")
    full = hashlib.sha256(data).hexdigest()
    file_name = f"resnet18-{full[:8]}.pth"  # the shape of torchvision's own names
    server.files[file_name] = Behaviour(data)
    url = f"http://127.0.0.1:{server.port}/models/{file_name}"
    monkeypatch.setattr(tvm.ResNet18_Weights.IMAGENET1K_V1.value, "url", url)  # as if torchvision published it

    model = zoo.load("tv/resnet18.IMAGENET1K_V1", device="cpu")
    assert type(model) is tvm.ResNet and not model.training
    assert [path for path, _ in server.requests] == [f"/models/{file_name}"]
    pin = Store().read_pin(zoo.card("tv/resnet18").variant(), model="resnet18")
    assert pin.sha256 == full and pin.size == len(data)
    reference = tvm.resnet18(weights=None).eval()
    reference.load_state_dict(state)
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
    # cached: no second request; an override re-shapes only the head
    features = zoo.load("tv/resnet18", device="cpu", num_classes=5)
    assert features.fc.out_features == 5 and len(server.requests) == 1
    torch.testing.assert_close(features.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])


def test_the_publishers_prefix_is_enforced(tv, tmp_path, monkeypatch, caplog):
    """A stand-in under the real file name (resnet18-f37072fd.pth) is not torchvision's file: refused."""
    _, data = torchvision_checkpoint("resnet18")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "resnet18-f37072fd.pth").write_bytes(data)
    monkeypatch.setenv("ZOO_MIRROR", str(mirror))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(WeightsError, match="ZOO_OFFLINE=1 forbids downloading"):
        zoo.load("tv/resnet18.IMAGENET1K_V1", device="cpu")
    assert "does not start with the publisher's prefix f37072fd" in caplog.text


# -- the command line: a new process, the plugin found through its installed entry point -----------------


def test_cli_lists_the_namespace_from_the_cached_index_without_torch(tv, tmp_path, zoo_home):
    zoo.list_models("tv/*")  # builds the (small) index in this ZOO_HOME
    plain = zoo_process(["list"], zoo_home)
    assert plain.returncode == 0, plain.stderr
    assert "tv/" not in plain.stdout and "resnet56-cifar" in plain.stdout
    listed = zoo_process(["list", "tv/*"], zoo_home)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split()[0] for line in listed.stdout.splitlines() if line.startswith("tv/")]
    assert rows == ["tv/densenet121.imagenet1k_v1", "tv/mobilenet_v3_small.imagenet1k_v1", "tv/resnet18.imagenet1k_v1"]
    assert "69.76*" in listed.stdout and "building" not in listed.stderr
    info = zoo_process(["info", "tv/resnet18.IMAGENET1K_V1", "--json"], zoo_home)
    assert info.returncode == 0, info.stderr
    card = json.loads(info.stdout)
    assert card["qualified_name"] == "tv/resnet18" and card["weights"]["imagenet1k_v1"]["pin"]["prefix"] == "f37072fd"
    for done in (plain, listed, info):
        imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "import time:" in line}
        assert not {m for m in imported if m.split(".")[0] in ("torch", "torchvision")}, done.args


# -- the whole index ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_torchvision_weight_is_indexed_and_rebuilds(monkeypatch):
    from torchvision.models import detection

    data = index.build_index()
    masks_or_keypoints = {
        f"{arch}.{w.name}"
        for arch in ("keypointrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2")
        for w in tvm.get_model_weights(arch)
    }
    assert data["skipped"].pop("vgg16.IMAGENET1K_FEATURES") == (
        "no categories (feature-extractor weights without a classifier)"
    )
    assert set(data["skipped"]) == masks_or_keypoints and all(BOXES_ONLY in why for why in data["skipped"].values())
    classifiers = {
        f"{arch}.{w.name.lower()}"
        for arch in tvm.list_models(module=tvm)
        for w in tvm.get_model_weights(arch)
        if w.meta.get("categories")
    }
    detectors = {
        f"{arch}.{w.name.lower()}"
        for arch in tvm.list_models(module=detection)
        for w in tvm.get_model_weights(arch)
        if f"{arch}.{w.name}" not in masks_or_keypoints
    }
    assert set(data["models"]) == classifiers | detectors and (len(classifiers), len(detectors)) == (114, 9)
    cards = _paths.expand(data, "<test>")
    registry = zoo._registry.get_registry()
    registry.namespaces["tv"] = lambda: cards  # every stored card goes through zoo's card parser
    selected = registry.select("tv/*")
    assert len(selected) == 123 and all(card.head and card.labels for card in selected)
    assert {registry.display_name(card) for card in selected} == {f"tv/{key}" for key in classifiers | detectors}
    assert {card.task for card in selected if card.kwargs.get("arch")} == {"detector"}
