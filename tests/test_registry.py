"""Cards, registry files and name resolution: the torch-free half of zoo."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import zoo
from zoo._card import parse_registry
from zoo._registry import Registry, builtin_registry_path, load_yaml, reset_registry
from zoo.errors import RegistryError, UnknownModelError

SHA = "a" * 64


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def user_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    path = write(tmp_path / "user.yaml", text)
    monkeypatch.setenv("ZOO_REGISTRY", str(path))
    reset_registry()
    return path


MINIMAL = f"""
schema: 1
models:
  tiny-net:
    task: classifier
    builder: torch.nn:Identity
    weights:
      v1: {{uri: tiny.safetensors, sha256: {SHA}}}
"""


def test_builtin_catalogue_lists_the_cifar_resnets_and_the_detectors():
    assert zoo.list_models(task="classifier") == [
        "inception-v3-fid",
        "resnet18-cifar",
        "resnet20-cifar",
        "resnet32-cifar",
        "resnet44-cifar",
        "resnet56-cifar",
    ]
    assert zoo.list_models(task="detector") == [
        "fasterrcnn-mobilenetv3-320-fpn-coco",
        "fasterrcnn-r50-fpn-v2-coco",
        "fastestdet-coco",
        "fastestdet-imagenet",
        "fastestdet-raccoon",
        "fcos-r50-fpn-coco",
        "retinanet-r50-fpn-v2-coco",
        "ssdlite320-mobilenetv3-coco",
    ]
    assert zoo.list_models(task="gan") == ["cgan-cifar", "dcgan-cifar"]
    assert zoo.list_models(task="vae") == ["vae-cifar"]


FEATURE_NETWORKS = {"inception-v3-fid"}  # used for its features (FID); its 1008 TF classes have no names here


def test_every_builtin_card_is_complete():
    """Schema walk over the catalogue (torchvision's test_extended_models idea)."""
    cards = parse_registry(load_yaml(builtin_registry_path()), file="registry.yaml")
    assert {card.task for card in cards} == {"classifier", "detector", "gan", "vae", "diffusion"}
    for card in cards:
        assert card.plugin == card.task  # built-in cards belong to the plugin named after their task
        assert card.license and card.source and card.params
        if card.task in ("classifier", "detector"):
            assert card.head
        if card.name not in FEATURE_NETWORKS and (
            card.task in ("classifier", "detector") or card.kwargs.get("num_classes")
        ):
            assert card.labels and len(card.labels) == card.kwargs["num_classes"]
        if card.task != "detector":
            assert card.preprocess and card.input_shape == (
                (3, 299, 299) if card.name in FEATURE_NETWORKS else (3, 32, 32)
            )
        for variant in card.weights.values():
            assert variant.tag == variant.tag.lower() and (variant.metrics or card.name in FEATURE_NETWORKS)
            # a full sha256 comes with the size; a publisher's prefix pin (torchvision) or the hub's own sha256
            # (hf://: the hub gives the size when asked) pins the file without the card knowing either
            assert variant.size if variant.sha256 else (variant.sha256_prefix or variant.hub_pinned)
            assert all(m.source in ("published", "measured") for m in variant.metrics)


def test_published_metrics_match_the_upstream_table():
    published = {"resnet20-cifar": 91.73, "resnet32-cifar": 92.63, "resnet44-cifar": 93.10, "resnet56-cifar": 93.39}
    for name, value in published.items():
        metric = zoo.card(name).variant().metrics[0]  # the headline `zoo list` shows
        assert (metric.value, metric.source, metric.split) == (value, "published", "test")
        assert "akamaster" in metric.reference
        (measured,) = [m for m in zoo.card(name).variant().metrics if m.source == "measured"]
        assert measured.command == f"zoo eval {name} --data cifar10-train-jpeg.zip"


def test_yaml_merge_keys_keep_per_model_fields():
    card = zoo.card("resnet44-cifar")
    assert card.kwargs == {"depth": 44, "num_classes": 10}
    assert card.variant().uri.endswith("resnet44-014dd654.th")
    assert card.builder == "zoo_classifier.models:build_cifar_resnet"


@pytest.mark.parametrize(
    "name, expected",
    [
        ("resnet56-cifar", ("resnet56-cifar", None)),
        ("resnet56-cifar.akamaster", ("resnet56-cifar", "akamaster")),
        ("classifier/resnet56-cifar", ("resnet56-cifar", None)),
        ("classifier/resnet56-cifar.akamaster", ("resnet56-cifar", "akamaster")),
    ],
)
def test_name_forms(name, expected):
    resolved = zoo._registry.get_registry().resolve(name)
    assert (resolved.card.name, resolved.tag) == expected


def test_unknown_name_suggests_and_says_how_to_list():
    with pytest.raises(UnknownModelError) as info:
        zoo.card("resnet56-cifr")
    message = str(info.value)
    assert message.startswith("Unknown model 'resnet56-cifr'. Did you mean 'resnet56-cifar'")
    assert "Run 'zoo list'" in message


def test_unknown_tag_lists_the_tags():
    with pytest.raises(UnknownModelError, match="no weights tag 'v9'. Its tags: akamaster"):
        zoo.card("resnet56-cifar.v9")


def test_unknown_model_error_is_a_key_error():
    with pytest.raises(KeyError):
        zoo.card("nope")


def test_user_registry_cards_are_reachable(tmp_path, monkeypatch):
    user_registry(tmp_path, monkeypatch, MINIMAL)
    card = zoo.card("tiny-net")
    assert card.plugin == "user" and card.qualified_name == "user/tiny-net"
    # a relative weights path is relative to the registry file, not the working directory
    assert card.variant().uri == str(tmp_path / "tiny.safetensors")


def test_home_registry_is_read(zoo_home):
    write(zoo_home / "registry.yaml", MINIMAL)
    reset_registry()
    assert "tiny-net" in zoo.list_models()


def test_short_name_claimed_twice_is_an_error_listing_both(tmp_path, monkeypatch):
    user_registry(tmp_path, monkeypatch, MINIMAL.replace("tiny-net", "resnet56-cifar"))
    with pytest.raises(UnknownModelError) as info:
        zoo.card("resnet56-cifar")
    assert "'classifier/resnet56-cifar' or 'user/resnet56-cifar'" in str(info.value)
    assert zoo.card("user/resnet56-cifar").builder == "torch.nn:Identity"
    assert zoo.card("classifier/resnet56-cifar").kwargs["depth"] == 56
    assert "classifier/resnet56-cifar" in zoo.list_models() and "user/resnet56-cifar" in zoo.list_models()


def test_list_filters(tmp_path, monkeypatch):
    user_registry(tmp_path, monkeypatch, "models:\n  bare-net: {task: classifier, builder: 'torch.nn:Identity'}\n")
    assert zoo.list_models("resnet5*") == ["resnet56-cifar"]
    assert zoo.list_models(task="classifier", pretrained=True) == [
        "inception-v3-fid",
        "resnet18-cifar",
        "resnet20-cifar",
        "resnet32-cifar",
        "resnet44-cifar",
        "resnet56-cifar",
    ]
    assert "bare-net" in zoo.list_models() and "bare-net" not in zoo.list_models(pretrained=True)
    assert zoo.list_models(task="nosuchtask") == []
    assert zoo.list_models(plugin="classifier")[0] == "inception-v3-fid"


# -- broken registry files: every error names file, entry and field -----------------------------------

BROKEN = [
    ("not: [valid", "invalid YAML"),
    ("[1, 2]", "expected a mapping with 'schema' and 'models'"),
    ("schema: 2\nmodels: {}", "field 'schema': this zoo reads schema 1"),
    ("models:\n  Bad Name: {task: x, builder: a:b}", "bad model name 'Bad Name'"),
    ("models:\n  m: {builder: a.b:c}", "entry 'm', field 'task': missing required field"),
    (
        "models:\n  m: {task: t, builder: 'not a builder'}",
        "entry 'm', field 'builder': expected 'package.module:callable'",
    ),
    ("models:\n  m: {task: t, builder: a:b, buildr: a:b}", "field 'buildr': unknown field. Did you mean 'builder'?"),
    ("models:\n  m: {task: t, builder: a:b, params: yes}", "field 'params': expected an integer, got bool"),
    (
        "models:\n  m: {task: t, builder: a:b, weights: {v1: {uri: x.safetensors, sha256: abc}}}",
        "field 'weights.v1.sha256': expected the full sha256",
    ),
    (
        "models:\n  m: {task: t, builder: a:b, weights: {V1: {uri: x, sha256: " + SHA + "}}}",
        "field 'weights.V1': weights tags are lower-case",
    ),
    (
        "models:\n  m: {task: t, builder: a:b, weights: {v1: {uri: 'ftp://h/x.th', sha256: " + SHA + "}}}",
        "unsupported scheme 'ftp'",
    ),
    (
        "models:\n  m: {task: t, builder: a:b, weights: {v1: {uri: 'https://h/a/../x', sha256: " + SHA + "}}}",
        "'..' path segments",
    ),
    (
        "models:\n  m: {task: t, builder: a:b, weights: {v1: {uri: 'pkg://p/../../etc/passwd', sha256: " + SHA + "}}}",
        "must stay inside the package",
    ),
    (
        "models:\n  m: {task: t, builder: a:b, default: v2, weights: {v1: {uri: x, sha256: " + SHA + "}}}",
        "field 'default': no weights tag 'v2'",
    ),
    (
        "models:\n  m: {task: t, builder: a:b, weights: {v1: {uri: x, sha256: " + SHA + ", metrics: "
        "[{name: top1, value: 99, dataset: d, split: test, source: published}]}}}",
        "a published metric needs a reference",
    ),
    (
        "models:\n  m: {task: t, builder: a:b, preprocess: {mean: [0, 0], std: [1]}}",
        "field 'preprocess.std': expected 2 numbers, got 1",
    ),
    ("models:\n  m: {task: t, builder: a:b}\n  m: {task: t, builder: a:b}", "duplicate key 'm'"),
    ("models:\n  m: !!python/object/apply:os.system ['echo pwned']", "invalid YAML"),
    ("models:\n  m: {task: t, builder: a:b, labels: &a [*a]}", "recursive"),
]


@pytest.mark.parametrize("text, message", BROKEN, ids=[m[:40] for _, m in BROKEN])
def test_broken_user_registry_names_file_entry_and_field(tmp_path, monkeypatch, text, message):
    path = user_registry(tmp_path, monkeypatch, "plugin_free: 1\n" if text is None else text)
    with pytest.raises(RegistryError) as info:
        zoo.list_models()
    assert message in str(info.value)
    assert str(info.value).startswith(str(path))


@pytest.mark.parametrize(
    "field, message",
    [
        ("labels", "entry 'm', field 'labels[0]': expected a string, got list of length 10"),
        ("kwargs", "field 'kwargs': more than 10000 values"),
    ],
)
def test_billion_laughs_is_rejected_without_expansion(tmp_path, monkeypatch, field, message):
    """Nine levels of 10x aliases: 10**9 strings if anything walked, copied or printed them."""
    levels = ["&a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    if field == "labels":
        body = "    labels:\n" + "".join(f"      - {level}\n" for level in levels)
    else:
        body = "    kwargs:\n" + "".join(f"      k{i}: {level}\n" for i, level in enumerate(levels))
    user_registry(tmp_path, monkeypatch, f"models:\n  m:\n    task: t\n    builder: a:b\n{body}")
    with pytest.raises(RegistryError) as info:
        zoo.list_models()
    assert message in str(info.value)


def test_missing_registry_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_REGISTRY", str(tmp_path / "nope.yaml"))
    reset_registry()
    with pytest.raises(RegistryError, match="nope.yaml: file not found"):
        zoo.list_models()


def test_same_qualified_name_twice_is_an_error(tmp_path, monkeypatch):
    a = write(tmp_path / "a.yaml", MINIMAL)
    b = write(tmp_path / "b.yaml", MINIMAL)
    monkeypatch.setenv("ZOO_REGISTRY", f"{a}:{b}")
    reset_registry()
    with pytest.raises(RegistryError, match="'user/tiny-net' is defined twice"):
        Registry.load()
