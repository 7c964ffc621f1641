"""The timm bridge (plugins/zoo_timm): `timm/<arch>[.<tag>]` cards from timm's own pretrained configs, an index
cached per timm version, plain `zoo list` unchanged and torch-free, and loading end to end from the hub.

No test touches the network: the weights are a randomly initialised timm model saved as safetensors and served by
a local server that answers like the Hugging Face hub (tests/hubserver.py); the index is built for a few tags only
(the whole of timm is the slow test).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save

import zoo
import zoo._plugins
import zoo._registry
import zoo_timm
from tests.conftest import zoo_process
from zoo._card import parse_registry
from zoo._store import Store
from zoo.errors import UnknownModelError, ZooError
from zoo_timm import _paths, index

FEW = [
    "resnet18.a1_in1k",
    "resnet18.tv_in1k",
    "resnet50.a1_in1k",
    "resnet50.tv2_in1k",
    "convnext_tiny.fb_in22k_ft_in1k",
    "test_resnet.r160_in1k",
    "vit_small_patch14_dinov2.lvd142m",  # num_classes=0: a backbone, skipped
    "legacy_seresnet18.in1k",  # a URL, not on the hub: skipped
    "cspnext_s.rsb_a1_in1k",  # a third party's hub repo: skipped
    "flexivit_small.300ep_in1k",  # custom_load (an npz at its URL), yet a plain model.safetensors on the hub
]
TINY = "test_resnet.r160_in1k"  # the smallest timm classifier with a pretrained tag: 470k parameters
TINY_REPO = f"timm/{TINY}"


@pytest.fixture()
def tm(monkeypatch):
    """The installed plugins plus the bridge registered as plugin `timm`, its index limited to FEW tags."""
    monkeypatch.setattr(index, "model_names", lambda: list(FEW))
    zoo._registry.reset_registry()
    plugins = zoo._plugins.Plugins()
    plugins.load_entry_points()  # the installed bridge (entry point `timm`) is among them
    if "timm" not in plugins.active():  # a checkout whose package was installed before the bridge existed
        plugins.register(zoo_timm, "timm")
    zoo._plugins.reset_plugins(plugins)
    return plugins


def tiny_checkpoint(seed: int = 0) -> tuple[dict[str, torch.Tensor], bytes]:
    """A random state dict of timm's TINY model and its bytes as timm's hub repos hold them (model.safetensors)."""
    torch.manual_seed(seed)
    state = {k: v.contiguous() for k, v in timm.create_model(TINY).state_dict().items()}
    return state, save(state)


def hf_cache_entry(root: Path, repo: str, data: bytes, commit: str) -> None:
    """Lay out model.safetensors the way huggingface_hub caches it: blob named by its sha256, a snapshot link."""
    folder = root / f"models--{repo.replace('/', '--')}"
    blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit / "model.safetensors"
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(os.path.relpath(blob, snapshot.parent))


# -- cards and the index ----------------------------------------------------------------------------------


def test_cards_come_from_timms_pretrained_configs(tm, zoo_home, capsys):
    names = zoo.list_models("timm/*")
    err = capsys.readouterr().err
    assert "building the index of timm" in err and "indexed 7 timm pretrained tags, 3 skipped" in err
    assert names == [f"timm/{n}" for n in sorted(FEW[:6] + FEW[-1:])]
    card = zoo.card("timm/resnet50.a1_in1k")
    assert card is zoo.card("timm/resnet50")  # timm's default tag
    assert (card.plugin, card.task, card.head, card.license) == ("timm", "classifier", "fc", "apache-2.0")
    assert card.builder == "zoo_timm.models:create_model"  # timm.create_model, timm's own constructor
    assert card.kwargs == {"model_name": "resnet50.a1_in1k", "num_classes": 1000}
    assert card.input_shape == (3, 224, 224) and card.params is None  # counted lazily, see below
    pre = card.preprocess
    assert (pre.resize, pre.crop, pre.interpolation) == (235, 224, "bicubic")  # crop_pct 0.95: floor(224 / 0.95)
    assert pre.mean == (0.485, 0.456, 0.406) and pre.std == (0.229, 0.224, 0.225)
    assert len(card.labels) == 1000 and card.labels[0] == "tench, Tinca tinca"  # timm's ImageNetInfo
    assert card.citation == "https://arxiv.org/abs/2110.00476"
    variant = card.variant()
    assert variant.uri == "hf://timm/resnet50.a1_in1k/model.safetensors" and variant.format == "safetensors"
    assert (variant.sha256, variant.sha256_prefix) == (None, None)  # the hub's published sha256 pins it
    assert variant.metrics == ()  # timm's wheel has no results table: no invented numbers
    convnext = zoo.card("timm/convnext_tiny.fb_in22k_ft_in1k")
    assert (
        convnext.head == "head.fc" and convnext.source == "https://huggingface.co/timm/convnext_tiny.fb_in22k_ft_in1k"
    )
    assert (convnext.preprocess.resize, convnext.preprocess.crop) == (256, 224)  # crop_pct 0.875
    assert convnext.variant().uri == "hf://timm/convnext_tiny.fb_in22k_ft_in1k/model.safetensors"
    assert zoo.card("timm/resnet50.tv2_in1k").input_shape == (3, 176, 176)  # each tag its own preprocessing
    assert zoo.card("timm/flexivit_small").variant().uri == "hf://timm/flexivit_small.300ep_in1k/model.safetensors"
    skipped = json.loads(_paths.index_path().read_text())["skipped"]
    assert skipped == {
        "vit_small_patch14_dinov2.lvd142m": "no classifier (num_classes=0): a feature backbone",
        "legacy_seresnet18.in1k": "weights not on the Hugging Face hub (timm downloads "
        + timm.models.get_pretrained_cfg("legacy_seresnet18.in1k").url
        + ")",
        "cspnext_s.rsb_a1_in1k": "weights in a third party's hub repo (munehiro-k/cspnext_s.rsb_a1_in1k), not one "
        "of timm's own",
    }
    # cached per timm version: a fresh registry reads it and builds nothing
    assert _paths.index_path().parent == zoo_home / "index"
    zoo._registry.reset_registry()
    zoo._plugins.reset_plugins(tm)
    assert zoo.list_models("timm/resnet1*") == ["timm/resnet18.a1_in1k", "timm/resnet18.tv_in1k"]
    assert capsys.readouterr().err == ""


def test_names_that_do_not_exist_say_what_does(tm):
    with pytest.raises(UnknownModelError, match=r"Unknown model 'timm/resnt50'. Did you mean 'timm/resnet50'"):
        zoo.card("timm/resnt50")
    with pytest.raises(UnknownModelError, match=r"has no weights tag 'a9_in1k'. Its tags: a1_in1k, tv2_in1k"):
        zoo.card("timm/resnet50.a9_in1k")
    with pytest.raises(UnknownModelError, match=r"Unknown model 'timm/vit_small_patch14_dinov2'"):
        zoo.card("timm/vit_small_patch14_dinov2")  # skipped tags have no card


def test_plain_listing_neither_shows_nor_builds_the_namespace(tm, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the index was built by a plain listing")

    monkeypatch.setattr(index, "write_index", refuse)
    names = zoo.list_models()
    assert names and not any(n.startswith("timm/") for n in names)
    assert not any(n.startswith("timm/") for n in zoo.list_models("resnet*"))


# -- loading end to end -----------------------------------------------------------------------------------


def test_load_fetches_from_the_hub_verifies_and_is_timms_model(tm, hub, zoo_home):
    state, data = tiny_checkpoint()
    hub.add(TINY_REPO, "model.safetensors", data)
    model = zoo.load("timm/test_resnet", device="cpu")
    assert [m for m, _ in hub.requests] == ["HEAD", "GET"]  # the published sha256, then the bytes
    assert type(model).__name__ == "ResNet" and not model.training
    assert model.pretrained_cfg["tag"] == "r160_in1k"  # timm's own model, with its pretrained config
    pin = Store().read_pin(zoo.card("timm/test_resnet").variant(), model=TINY.partition(".")[0])
    assert pin.sha256 == hashlib.sha256(data).hexdigest() and pin.size == len(data)
    reference = timm.create_model(TINY).eval()
    reference.load_state_dict(state)
    x = torch.rand(2, 3, 160, 160)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
        # num_classes=0: every weight loads, then timm's reset_classifier(0): pooled features, from zoo's cache
        features = zoo.load(f"timm/{TINY}", device="cpu", num_classes=0)(x)
    assert features.shape == (2, reference.num_features) and len(hub.requests) == 2
    torch.testing.assert_close(features, reference.forward_head(reference.forward_features(x), pre_logits=True))
    # the model zoo built recorded its parameter count for listings
    zoo._registry.reset_registry()
    zoo._plugins.reset_plugins(tm)
    assert zoo.card("timm/test_resnet").params == sum(p.numel() for p in reference.parameters())
    assert zoo.list_models("timm/*", max_params="1M") == [f"timm/{TINY}"]


def test_features_only_is_timms_own_feature_network_with_the_verified_weights(tm, hub, zoo_home, tmp_path):
    state, data = tiny_checkpoint(seed=2)
    hub.add(TINY_REPO, "model.safetensors", data)
    maps = zoo.load(f"timm/{TINY}", device="cpu", features_only=True)
    # the reference: timm's own features_only model, loading the same file the timm way
    (tmp_path / "model.safetensors").write_bytes(data)
    reference = timm.create_model(
        TINY, pretrained=True, features_only=True, pretrained_cfg_overlay={"file": str(tmp_path / "model.safetensors")}
    ).eval()
    assert type(maps) is type(reference) and not maps.training
    assert maps.feature_info.channels() == reference.feature_info.channels()
    x = torch.rand(2, 3, 160, 160)
    with torch.no_grad():
        got, want = maps(x), reference(x)
    assert len(got) == len(want) == len(reference.feature_info)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("arch", ["test_vit", "test_convnext"])
def test_feature_networks_of_other_families_take_every_tensor_from_the_model(arch, tmp_path):
    """ViTs get timm's FeatureGetterNet (the model under `model.`), ConvNeXts a FeatureListNet with flattened
    stages: each takes the loaded model's own tensors, none left on the meta device it was laid out on, and
    computes what timm's own features_only model computes from the same weights."""
    from safetensors.torch import save_file

    from zoo_timm.models import features_only

    torch.manual_seed(0)
    model = timm.create_model(arch).eval()
    maps = features_only(model, arch)
    owned = {t.data_ptr() for t in [*model.parameters(), *model.buffers()]}
    assert all(t.device.type == "cpu" and t.data_ptr() in owned for t in [*maps.parameters(), *maps.buffers()])
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "model.safetensors")
    reference = timm.create_model(
        arch, pretrained=True, features_only=True, pretrained_cfg_overlay={"file": str(tmp_path / "model.safetensors")}
    ).eval()
    assert type(maps) is type(reference)
    x = torch.rand(1, 3, 160, 160)
    with torch.no_grad():
        got, want = maps(x), reference(x)
    assert len(got) == len(want) > 1
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_an_architecture_timm_has_no_feature_network_for_is_one_line(monkeypatch):
    from zoo_timm.models import features_only

    model = timm.create_model(TINY.partition(".")[0])

    def refuse(name, **kwargs):  # noqa: ANN001, ANN003, ANN202 - what timm raises for such an architecture
        raise RuntimeError(f"features_only not implemented for {name}")

    monkeypatch.setattr(timm, "create_model", refuse)
    with pytest.raises(ZooError, match=r"timm has no feature network for test_resnet \(RuntimeError: features_only"):
        features_only(model, "test_resnet")


def test_offline_the_hugging_face_cache_is_used_without_a_request(tm, hub, monkeypatch):
    state, data = tiny_checkpoint(seed=1)
    hf_cache_entry(Path(os.environ["HF_HUB_CACHE"]), TINY_REPO, data, commit="c0ffee" + "0" * 34)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = zoo.load(f"timm/{TINY}", device="cpu")
    assert hub.requests == []
    torch.testing.assert_close(model.fc.weight, state["fc.weight"], rtol=0, atol=0)


# -- the command line: a new process, the plugin found through its installed entry point -----------------


def test_cli_lists_the_namespace_from_the_cached_index_without_timm_or_torch(tm, tmp_path, zoo_home):
    zoo.list_models("timm/*")  # builds the (small) index in this ZOO_HOME
    plain = zoo_process(["list"], zoo_home)
    assert plain.returncode == 0, plain.stderr
    assert "timm/" not in plain.stdout and "resnet56-cifar" in plain.stdout
    listed = zoo_process(["list", "timm/resnet1*"], zoo_home)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines() if line.startswith("timm/")]
    assert [r[0] for r in rows] == ["timm/resnet18.a1_in1k", "timm/resnet18.tv_in1k"]
    assert rows[0][1:4] == ["classifier", "-", "3x224x224"] and "building" not in listed.stderr
    info = zoo_process(["info", "timm/convnext_tiny.fb_in22k_ft_in1k", "--json"], zoo_home)
    assert info.returncode == 0, info.stderr
    card = json.loads(info.stdout)
    assert card["qualified_name"] == "timm/convnext_tiny" and card["license"] == "apache-2.0"
    assert card["weights"]["fb_in22k_ft_in1k"]["uri"] == "hf://timm/convnext_tiny.fb_in22k_ft_in1k/model.safetensors"
    assert card["preprocess"]["resize"] == 256 and card["preprocess"]["interpolation"] == "bicubic"
    for done in (plain, listed, info):
        imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "import time:" in line}
        assert not {m for m in imported if m.split(".")[0] in ("torch", "timm")}, done.args


# -- the whole index ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_timm_pretrained_tag_is_indexed_or_skipped_with_a_reason():
    data = index.build_index()
    assert set(data["models"]) | set(data["skipped"]) == set(timm.list_pretrained())
    assert len(data["models"]) > 1300 and all(data["skipped"].values())
    assert all(
        card["weights"][n.partition(".")[2]]["uri"].startswith("hf://timm/") for n, card in data["models"].items()
    )
    namespace = _paths.with_params(data, {}, "<test>")
    for key, raw in namespace["models"].items():  # every card is one the registry accepts
        arch = key.partition(".")[0]
        (card,) = parse_registry({"models": {arch: raw}}, file="<test>", plugin="timm")
        assert len(card.labels) == raw["kwargs"]["num_classes"], key
