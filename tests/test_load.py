"""zoo.load: strategies, strict keys, dtype, device, head overrides, and the classifier builders."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import zoo
from zoo._builder import build_model, pick_device
from zoo._registry import reset_registry
from zoo.errors import WeightsError, ZooError
from zoo_classifier.models import build_cifar_resnet


def register_resnet(
    tmp_path: Path,
    monkeypatch,
    state: dict[str, torch.Tensor],
    *,
    depth: int = 20,
    dtype: str = "float32",
    params: int | None = None,
) -> Path:
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    data = path.read_bytes()
    (tmp_path / "registry.yaml").write_text(
        textwrap.dedent(f"""\
        models:
          my-resnet:
            task: classifier
            builder: zoo_classifier.models:build_cifar_resnet
            kwargs: {{depth: {depth}, num_classes: 10}}
            head: linear
            params: {params or "null"}
            input: {{shape: [3, 32, 32]}}
            preprocess: {{mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}}
            weights:
              v1: {{uri: w.safetensors, sha256: {hashlib.sha256(data).hexdigest()}, dtype: {dtype}}}
        """)
    )
    monkeypatch.setenv("ZOO_REGISTRY", str(tmp_path / "registry.yaml"))
    reset_registry()
    return path


def trained_like_state(depth: int = 20, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = build_cifar_resnet(depth=depth)
    with torch.no_grad():  # non-trivial BN statistics so that eval mode matters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("strategy", ["noinit", "meta", "eager"])
def test_both_strategies_give_the_same_model(tmp_path, monkeypatch, strategy):
    state = trained_like_state()
    path = register_resnet(tmp_path, monkeypatch, state)
    card = zoo.card("my-resnet")
    model = build_model(card, path, device="cpu", strategy=strategy)
    assert not model.training
    for key, value in model.state_dict().items():
        assert value.device.type == "cpu"
        torch.testing.assert_close(value, state[key])
    x = torch.randn(2, 3, 32, 32)
    reference = build_cifar_resnet(depth=20)
    reference.load_state_dict(state)
    torch.testing.assert_close(model(x), reference.eval()(x))


def test_missing_num_batches_tracked_is_tolerated(tmp_path, monkeypatch):
    """Published checkpoints (akamaster's) omit BatchNorm's step counter."""
    state = {k: v for k, v in trained_like_state().items() if not k.endswith("num_batches_tracked")}
    register_resnet(tmp_path, monkeypatch, state)
    for strategy in ("noinit", "meta", "eager"):
        monkeypatch.setenv("ZOO_BUILD_STRATEGY", strategy)
        model = zoo.load("my-resnet", device="cpu")
        assert all(not b.is_meta for b in model.buffers())
        assert all(int(b) == 0 for name, b in model.named_buffers() if name.endswith("num_batches_tracked"))


def test_key_mismatch_reads_as_a_diff(tmp_path, monkeypatch):
    state = trained_like_state()
    state["extra.weight"] = torch.zeros(1)
    del state["layer1.0.conv1.weight"]
    state["linear.weight"] = torch.zeros(5, 64)
    register_resnet(tmp_path, monkeypatch, state)
    with pytest.raises(WeightsError) as info:
        zoo.load("my-resnet", device="cpu")
    message = str(info.value)
    assert "1 missing from the file: layer1.0.conv1.weight" in message
    assert "1 in the file but not in the model: extra.weight" in message
    assert "1 shape differs (model vs file): linear.weight: (10, 64) vs (5, 64)" in message


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_integer_or_bool_weights_for_float_tensors_are_one_clear_error(tmp_path, monkeypatch, dtype):
    state = trained_like_state()
    state["linear.weight"] = torch.ones(10, 64, dtype=dtype)
    register_resnet(tmp_path, monkeypatch, state)
    with pytest.raises(WeightsError, match=rf"linear.weight \({dtype} for a floating tensor\)"):
        zoo.load("my-resnet", device="cpu")


def test_skipping_init_leaves_torch_init_intact(tmp_path, monkeypatch):
    register_resnet(tmp_path, monkeypatch, trained_like_state())
    zoo.load("my-resnet", device="cpu")
    torch.manual_seed(0)
    a = torch.nn.Linear(8, 8).weight.clone()
    torch.manual_seed(0)
    b = torch.nn.init.kaiming_uniform_(torch.empty(8, 8), a=5**0.5)
    torch.testing.assert_close(a, b)
    assert a.abs().sum() > 0


def test_unknown_strategy(tmp_path, monkeypatch):
    register_resnet(tmp_path, monkeypatch, trained_like_state())
    monkeypatch.setenv("ZOO_BUILD_STRATEGY", "magic")
    with pytest.raises(ZooError, match="Unknown build strategy 'magic'"):
        zoo.load("my-resnet", device="cpu")


def test_fp16_file_loads_as_float32_unless_asked(tmp_path, monkeypatch):
    state = {k: v.half() if v.is_floating_point() else v for k, v in trained_like_state().items()}
    register_resnet(tmp_path, monkeypatch, state, dtype="float16")
    model = zoo.load("my-resnet", device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    half = zoo.load("my-resnet", device="cpu", dtype="float16")
    assert {p.dtype for p in half.parameters()} == {torch.float16}
    with pytest.raises(ZooError, match="Unknown dtype 'float17'"):
        zoo.load("my-resnet", device="cpu", dtype="float17")


@pytest.mark.parametrize("strategy", ["noinit", "meta", "eager"])
def test_num_classes_override_keeps_backbone_and_reinitialises_the_head(tmp_path, monkeypatch, strategy):
    state = trained_like_state()
    path = register_resnet(tmp_path, monkeypatch, state)
    card = zoo.card("my-resnet")
    model = build_model(card, path, device="cpu", overrides={"num_classes": 3}, strategy=strategy)
    assert model.linear.weight.shape == (3, 64) and not model.linear.weight.is_meta
    assert torch.isfinite(model.linear.weight).all() and model.linear.weight.abs().sum() > 0
    torch.testing.assert_close(model.conv1.weight, state["conv1.weight"])
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_pretrained_false_builds_random_init_without_weights():
    model = zoo.load("resnet18-cifar", pretrained=False, device="cpu")
    assert type(model).__name__ == "CifarResNet18" and not model.training
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_model_without_weights_says_how_to_build_it(tmp_path, monkeypatch):
    (tmp_path / "registry.yaml").write_text(
        "models:\n  bare-net:\n    task: classifier\n    builder: zoo_classifier.models:build_resnet18_cifar\n"
    )
    monkeypatch.setenv("ZOO_REGISTRY", str(tmp_path / "registry.yaml"))
    reset_registry()
    expected = r"has no pretrained weights; use zoo.load\('bare-net', pretrained=False\)"
    with pytest.raises(WeightsError, match=expected):
        zoo.load("bare-net")


def test_auto_device_is_cpu_here_and_explicit_devices_are_honoured():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device(None).type in (expected, "mps")
    assert pick_device("cpu") == torch.device("cpu")


def test_card_params_match_the_built_models():
    """The `params` column of `zoo list` comes from the card; it must be the truth."""
    for name in zoo.list_models():
        card = zoo.card(name)
        if card.params > 5_000_000 and card.task == "detector":
            continue  # the big torchvision detectors: tests/test_torchvision_detectors.py checks their counts
        # a builder that fetches part of its weights itself (fastestdet-imagenet's backbone) is built bare here
        extra = {"pretrained_backbone": False} if card.kwargs.get("pretrained_backbone") else {}
        model = zoo.load(name, pretrained=False, device="cpu", **extra)
        assert card.params == sum(p.numel() for p in model.parameters()), name
        if card.task == "classifier":  # a feature network (inception-v3-fid) may leave its classes unnamed
            classes = len(card.labels) or card.kwargs["num_classes"]
            assert model(torch.zeros(2, *card.input_shape)).shape == (2, classes), name


def test_transforms_follow_the_card():
    from PIL import Image

    preprocess = zoo.transforms("resnet56-cifar")
    image = Image.new("RGB", (32, 32), (255, 0, 128))
    x = preprocess(image)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    expected = (torch.tensor([1.0, 0.0, 128 / 255]) - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor(
        [0.229, 0.224, 0.225]
    )
    torch.testing.assert_close(x[:, 0, 0], expected)
    gray = preprocess(Image.new("L", (64, 48), 100))  # grayscale and other sizes become 3x32x32
    assert gray.shape == (3, 32, 32)
