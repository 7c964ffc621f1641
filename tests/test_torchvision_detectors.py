"""torchvision's COCO detectors as cards: generated from torchvision's metadata, labels 0..79, prefix-pinned weights.

No real weights are downloaded: the end-to-end test serves a randomly initialised SSDlite checkpoint from
127.0.0.1 under the real file name, with a card copy pinned by that file's own sha256 prefix.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from unittest import mock

import pytest
import torch
import yaml
from torchvision.models import detection
from torchvision.models._api import WeightsEnum

import zoo
from tests.conftest import REPO
from tests.httpserver import Behaviour
from zoo._builder import import_builder
from zoo._registry import reset_registry
from zoo._store import Store
from zoo.errors import WeightsError
from zoo_detector import torchvision_cards
from zoo_detector.torchvision_models import ARCHS, build, coco_layout

CARDS = torchvision_cards.CARDS


def weights_of(arch: str):
    return getattr(detection, ARCHS[arch].weights).COCO_V1


# -- the generated block ----------------------------------------------------------------------------


def test_generated_block_is_in_sync_with_the_installed_torchvision(capsys):
    assert torchvision_cards.main(["--check"]) == 0, capsys.readouterr().err


def test_check_fails_on_a_stale_block_and_the_generator_touches_only_the_block(tmp_path, capsys):
    text = (REPO / "registry.yaml").read_text()
    stale = tmp_path / "registry.yaml"
    stale.write_text(text.replace("value: 46.7", "value: 47.0"))
    assert torchvision_cards.main(["--check", "--registry", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().err
    before, _, _ = text.partition(torchvision_cards.BEGIN)
    assert torchvision_cards.main(["--registry", str(stale)]) == 0
    assert stale.read_text() == text and stale.read_text().startswith(before)
    # Without the markers the block is appended at the end of `models:`, the rest kept byte for byte.
    bare = tmp_path / "bare.yaml"
    bare.write_text(before.rstrip() + "\n")
    assert torchvision_cards.main(["--registry", str(bare)]) == 0
    assert bare.read_text().startswith(before.rstrip() + "\n\n" + torchvision_cards.BEGIN)
    assert bare.read_text().rstrip().endswith(torchvision_cards.END.strip())


def test_listing_the_cards_imports_no_torchvision():
    code = (
        "import sys, zoo; zoo.list_models(task='detector'); zoo.card('ssdlite320-mobilenetv3-coco'); "
        "bad = [m for m in ('torch', 'torchvision', 'zoo_detector.torchvision_models') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", list(CARDS))
def test_every_generated_card_matches_torchvision(name):
    arch = CARDS[name]
    weights = weights_of(arch)
    card = zoo.card(name)
    assert (card.task, card.plugin, card.builder) == ("detector", "detector", "zoo_detector.torchvision_models:build")
    assert import_builder(card.builder, model=name) is build
    assert card.kwargs["arch"] == arch and card.kwargs["num_classes"] == 80
    assert card.labels == coco_layout(weights.meta["categories"])[1] and len(card.labels) == 80
    assert card.params == weights.meta["num_params"]
    variant = card.variant()
    assert variant.uri == weights.url and variant.sha256 is None and variant.format == "torch-pickle"
    assert variant.convert.key is None and not variant.convert.rename  # a plain state dict
    file_name = weights.url.rsplit("/", 1)[-1]
    assert file_name.endswith(f"-{variant.sha256_prefix}.pth") and len(variant.sha256_prefix) >= 8
    (box_map,) = [m for m in variant.metrics if m.name == "map"]
    assert box_map.source == "published" and box_map.reference == weights.meta["recipe"]
    assert box_map.value == weights.meta["_metrics"]["COCO-val2017"]["box_map"]
    assert (box_map.dataset, box_map.split) == ("coco", "val2017")
    with torch.device("meta"):
        model = build(**card.kwargs)
    assert sum(p.numel() for p in model.parameters()) == card.params  # what torchvision publishes
    model.get_submodule(card.head)  # the head named on the card exists
    if "min_size" in card.kwargs:
        assert model.transform.min_size == (card.kwargs["min_size"],)
        assert model.transform.max_size == card.kwargs["max_size"]


# -- the builder ------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", list(ARCHS))
def test_builder_has_torchvisions_pretrained_layout(arch):
    """Module types (FrozenBatchNorm2d), frozen parameters and state-dict keys as torchvision's own builder makes
    them for its COCO weights (its weights download replaced by our state dict: meta tensors, no network)."""
    with torch.device("meta"):
        ours = build(arch=arch)
        state = ours.state_dict()
        with mock.patch.object(WeightsEnum, "get_state_dict", lambda self, *a, **k: state):
            theirs = getattr(detection, arch)(weights=weights_of(arch))
    assert [(n, type(m).__name__, getattr(m, "eps", None)) for n, m in ours.named_modules()][1:] == [
        (n, type(m).__name__, getattr(m, "eps", None)) for n, m in theirs.named_modules()
    ][1:]  # eps: torchvision's first COCO weights need FrozenBatchNorm2d's old eps of 0
    assert [(n, p.requires_grad) for n, p in ours.named_parameters()] == [
        (n, p.requires_grad) for n, p in theirs.named_parameters()
    ]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert sum(p.numel() for p in ours.parameters()) == weights_of(arch).meta["num_params"]


def test_coco_layout_maps_91_slots_to_80_labels():
    slots, names = coco_layout()
    assert len(slots) == 80 and slots[:12] == (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13) and slots[-1] == 90
    assert names[0] == "person" and names[11] == "stop sign" and names[-1] == "toothbrush"
    model = build(arch="ssdlite320_mobilenet_v3_large", pretrained_layout=False)
    boxes = torch.arange(20.0).reshape(5, 4)
    out = model._from_slots(
        {"boxes": boxes, "scores": torch.linspace(1, 0.5, 5), "labels": torch.tensor([1, 12, 0, 90, 13])}
    )  # person, N/A, background, ...
    assert out["labels"].tolist() == [0, 79, 11]  # the N/A id and the background are no class: dropped
    torch.testing.assert_close(out["boxes"], boxes[[0, 3, 4]])
    assert model._to_slots(torch.tensor([0, 11, 79])).tolist() == [1, 13, 90]


def test_eval_outputs_are_torchvisions_with_zoo_labels():
    """Same weights in torchvision's own model and ours: the same detections, labels renumbered 0..79."""
    torch.manual_seed(0)
    few = {"score_thresh": 0.05, "topk_candidates": 50}  # keeps torchvision's per-class NMS cheap on random weights
    ours = build(arch="ssdlite320_mobilenet_v3_large", **few).eval()
    with torch.no_grad():  # make slot 12 ("N/A") and slot 1 (person) score high everywhere
        for conv in (block[1] for block in ours.head.classification_head.module_list):
            conv.bias.view(-1, 91)[:, [1, 12]] += 6.0
    theirs = detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=91, **few).eval()
    theirs.load_state_dict(ours.state_dict())
    image = [torch.rand(3, 240, 320)]
    with torch.no_grad():
        (mine,), (ref,) = ours(image), theirs(image)
    slots, _ = coco_layout()
    real = torch.isin(ref["labels"], torch.tensor(slots))
    assert (mine["labels"] == 0).any() and (ref["labels"] == 12).any()  # N/A scored, and dropped
    torch.testing.assert_close(mine["boxes"], ref["boxes"][real])
    assert [slots[i] for i in mine["labels"].tolist()] == ref["labels"][real].tolist()


def test_a_new_head_has_k_plus_background_slots_and_trains_on_zoo_labels():
    model = build(arch="ssdlite320_mobilenet_v3_large", num_classes=3).train()
    assert model.zoo_slots == (1, 2, 3) and model.zoo_num_slots == 4
    target = {
        "boxes": torch.tensor([[10.0, 10.0, 100.0, 120.0], [50.0, 60.0, 200.0, 220.0]]),
        "labels": torch.tensor([0, 2]),
    }
    losses = model([torch.rand(3, 320, 320)] * 2, [target] * 2)  # two images: BatchNorm needs a batch
    assert set(losses) == {"bbox_regression", "classification"} and all(torch.isfinite(v) for v in losses.values())
    with pytest.raises(ValueError, match=r"zoo labels 0..2 \(this model has 3 classes\); got 0..3"):
        model([torch.rand(3, 320, 320)] * 2, [target, {**target, "labels": torch.tensor([0, 3])}])


# -- end to end: a prefix-pinned checkpoint served on 127.0.0.1 --------------------------------------


def test_load_verifies_the_prefix_converts_records_and_detects(tmp_path, monkeypatch, server, zoo_home, caplog):
    name = "ssdlite320-mobilenetv3-coco"
    real_card = zoo.card(name)
    file_name = real_card.variant().uri.rsplit("/", 1)[-1]  # ssdlite320_mobilenet_v3_large_coco-a79551df.pth
    torch.manual_seed(0)
    state = build(**real_card.kwargs).state_dict()
    checkpoint = tmp_path / file_name
    torch.save(state, checkpoint)
    data = checkpoint.read_bytes()
    full = hashlib.sha256(data).hexdigest()

    # The real card's prefix is enforced: our stand-in under the real file name is not torchvision's file.
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / file_name).write_bytes(data)
    monkeypatch.setenv("ZOO_MIRROR", str(mirror))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(WeightsError, match="ZOO_OFFLINE=1 forbids downloading"):
        zoo.fetch(name)
    assert f"does not start with the publisher's prefix {real_card.variant().sha256_prefix}" in caplog.text
    monkeypatch.delenv("ZOO_MIRROR")
    monkeypatch.delenv("ZOO_OFFLINE")

    # A copy of the card, served locally and pinned by the stand-in's own prefix.
    raw = yaml.safe_load((REPO / "registry.yaml").read_text())["models"][name]
    variant = raw["weights"]["coco-v1"]
    server.files[file_name] = Behaviour(data)
    variant.update(uri=server.url(file_name), sha256_prefix=full[:8])
    raw.pop("plugin")
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump({"models": {"local-ssdlite": raw}}, sort_keys=False))
    monkeypatch.setenv("ZOO_REGISTRY", str(tmp_path / "registry.yaml"))
    reset_registry()
    model = zoo.load("local-ssdlite", device="cpu")
    assert type(model).__name__ == "ZooSSD" and not model.training
    pin = Store().read_pin(zoo.card("local-ssdlite").variant(), model="local-ssdlite")
    assert pin.sha256 == full and pin.size == len(data)
    assert (zoo_home / "weights" / f"{full}.safetensors").is_file()
    for key, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, state[key].to(tensor.dtype), msg=key)
    with torch.no_grad():
        (detections,) = model([torch.rand(3, 200, 300)])
    labels = detections["labels"]
    assert len(labels) > 0 and int(labels.min()) >= 0 and int(labels.max()) <= 79
    assert detections["boxes"].shape == (len(labels), 4)
