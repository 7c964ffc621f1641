"""Ensembles, `zoo register` and the Python API's num_classes=0 / features_only (#19 parts 4 and 6).

Real weights (the akamaster CIFAR ResNet-20/32 from the offline mirror in ../shared) and real CIFAR-10 JPEGs; skipped
with the reason where ../shared is absent.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image

import zoo
import zoo._registry
from tests.conftest import register_resnet20_card, require_shared
from zoo.cli import cli

PAIR = ["resnet20-cifar", "resnet32-cifar"]
ENSEMBLE = "ensemble:resnet20-cifar+resnet32-cifar"


@pytest.fixture(autouse=True)
def mirror(monkeypatch: pytest.MonkeyPatch) -> Path:
    path = require_shared("weights", "akamaster-resnet-cifar")
    monkeypatch.setenv("ZOO_MIRROR", str(path))
    zoo._registry.reset_registry()
    return path


@pytest.fixture(scope="module")
def cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real ImageFolder: the last 10 JPEGs of each CIFAR-10 class (100 images)."""
    archive = require_shared("datasets", "cifar10-train-jpeg.zip")
    dest = tmp_path_factory.mktemp("cifar") / "data"
    with zipfile.ZipFile(archive) as zf:
        by_class: dict[str, list[str]] = {}
        for name in sorted(n for n in zf.namelist() if n.endswith(".jpg")):
            by_class.setdefault(name.split("/")[-2], []).append(name)
        for label, names in by_class.items():
            (dest / label).mkdir(parents=True)
            for name in names[-10:]:
                (dest / label / Path(name).name).write_bytes(zf.read(name))
    return dest


def _batch(cifar: Path, n: int = 8) -> torch.Tensor:
    """`n` real images, normalised as the cards say (the same for both members)."""
    transform = zoo.transforms("resnet20-cifar")
    files = sorted(cifar.rglob("*.jpg"))[:: max(1, 100 // n)][:n]
    return torch.stack([transform(Image.open(f).convert("RGB")) for f in files])


def test_ensemble_probabilities_are_the_mean_of_the_members(cifar: Path) -> None:
    x = _batch(cifar)
    model = zoo.ensemble(PAIR, device="cpu")
    with torch.inference_mode():
        probs = model(x).softmax(1)
        members = torch.stack([zoo.load(m, device="cpu")(x).softmax(1) for m in PAIR]).mean(0)
        by_name = zoo.load(ENSEMBLE, device="cpu")(x).softmax(1)
    torch.testing.assert_close(probs, members, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(by_name, members, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(members, zoo.load(PAIR[0], device="cpu")(x).softmax(1).detach(), atol=1e-3)
    card = zoo.card(ENSEMBLE)
    assert card.labels == zoo.card(PAIR[0]).labels and card.task == "classifier"
    # zoo.predict on the ensemble name: the records' probabilities are the members' mean
    image = sorted(cifar.rglob("*.jpg"))[0]
    record = zoo.predict(ENSEMBLE, image, device="cpu", precision="fp32", topk=1)[0]["predictions"][0]
    with torch.inference_mode():
        x1 = zoo.transforms("resnet20-cifar")(Image.open(image).convert("RGB"))[None]
        mean1 = torch.stack([zoo.load(m, device="cpu")(x1).softmax(1) for m in PAIR]).mean(0)[0]
    assert record["index"] == int(mean1.argmax())
    assert record["probability"] == pytest.approx(float(mean1.max()), abs=1e-3)


def test_eval_reports_each_member_and_the_ensemble(cifar: Path) -> None:
    record = zoo.evaluate(ENSEMBLE, cifar, device="cpu", precision="fp32")
    report = record["ensemble"]
    assert [r["model"] for r in report["members"]] == PAIR
    for row in report["members"]:  # each member's figure is what evaluating it alone gives
        alone = zoo.evaluate(row["model"], cifar, device="cpu", precision="fp32")["metrics"]["top1"]
        assert row["top1"] == alone
    best = max(r["top1"] for r in report["members"])
    assert report["ensemble"] == record["metrics"]["top1"]
    assert report["gain"] == pytest.approx(record["metrics"]["top1"] - best)
    assert record["images"] == 100
    result = CliRunner().invoke(cli, ["eval", ENSEMBLE, "--data", str(cifar), "--precision", "fp32", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert f"{ENSEMBLE} on {cifar}: top-1 {record['metrics']['top1']:.2f}%" in result.output
    assert (
        f"members' top1: resnet20-cifar {report['members'][0]['top1']:.2f}, resnet32-cifar "
        f"{report['members'][1]['top1']:.2f}; ensemble {report['ensemble']:.2f}, {report['gain']:+.2f} over the "
        "best member"
    ) in result.output


def test_mismatched_labels_are_refused_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = register_resnet20_card(tmp_path, monkeypatch, "two-class", ["cat", "dog"])
    monkeypatch.setenv("ZOO_MIRROR", str(require_shared("weights", "akamaster-resnet-cifar")))
    with pytest.raises(
        zoo.ZooError,
        match=r"Cannot ensemble 'resnet20-cifar' and 'two-class': their labels differ "
        r"\(10 vs 2 labels; 'two-class' lacks",
    ):
        zoo.load(f"ensemble:resnet20-cifar+{other}")
    result = CliRunner().invoke(cli, ["predict", f"ensemble:resnet20-cifar+{other}", "examples/images/chelsea.png"])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and "their labels differ" in result.output
    with pytest.raises(zoo.ZooError, match="Ensembles are for classifiers; 'fastestdet-coco' is a detector"):
        zoo.card("ensemble:resnet20-cifar+fastestdet-coco")
    with pytest.raises(zoo.ZooError, match="two members at least"):
        zoo.card("ensemble:resnet20-cifar")


def _weights_of(name: str, tmp_path: Path) -> Path:
    out = tmp_path / f"{name}.safetensors"
    shutil.copyfile(zoo.fetch(name), out)
    return out


def test_register_then_load_gives_the_source_models_outputs(
    cifar: Path, tmp_path: Path, zoo_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = _weights_of("resnet20-cifar", tmp_path)
    card = zoo.register("my-net", from_="resnet20-cifar", weights=weights)
    import hashlib

    assert card.plugin == "user" and card.builder == zoo.card("resnet20-cifar").builder
    variant = card.variant()
    assert variant.sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert variant.size == weights.stat().st_size and card.params == 269722
    x = _batch(cifar)
    with torch.inference_mode():
        torch.testing.assert_close(
            zoo.load("my-net", device="cpu")(x), zoo.load("resnet20-cifar", device="cpu")(x), atol=0, rtol=0
        )
    with pytest.raises(zoo.ZooError, match="already in your registry"):
        zoo.register("my-net", from_="resnet20-cifar", weights=weights)

    # --copy: the card names the copy relative to the registry, so ZOO_HOME can move and the card still loads
    result = CliRunner().invoke(
        cli,
        [
            "register",
            "my-copy",
            "--from",
            "resnet20-cifar",
            "--weights",
            str(weights),
            "--copy",
            "--description",
            "a copy",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "registered my-copy" in result.output
    entry = yaml.safe_load((zoo_home / "registry.yaml").read_text())["models"]["my-copy"]
    assert entry["weights"]["local"]["uri"] == "registered/my-copy.safetensors"
    moved = tmp_path / "moved-home"
    shutil.move(str(zoo_home), moved)
    monkeypatch.setenv("ZOO_HOME", str(moved))
    zoo._registry.reset_registry()
    with torch.inference_mode():
        torch.testing.assert_close(
            zoo.load("my-copy", device="cpu")(x), zoo.load("resnet20-cifar", device="cpu")(x), atol=0, rtol=0
        )
    assert zoo.card("my-copy").description == "a copy"


def test_register_refuses_weights_that_do_not_fit_and_writes_nothing(tmp_path: Path, zoo_home: Path) -> None:
    wrong = _weights_of("resnet32-cifar", tmp_path)
    with pytest.raises(
        zoo.ZooError,
        match=r"do not fit model 'my-net'.*in the file but not in the model: "
        r"layer1\.3.*No card written",
    ):
        zoo.register("my-net", from_="resnet20-cifar", weights=wrong)
    result = CliRunner().invoke(
        cli, ["register", "my-net", "--from", "resnet20-cifar", "--weights", str(wrong), "--copy"]
    )
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and result.output.strip().count("\n") == 0
    not_safetensors = tmp_path / "notes.safetensors"
    not_safetensors.write_text("not a tensor file")
    with pytest.raises(zoo.ZooError, match="is not a safetensors file"):
        zoo.register("my-net", from_="resnet20-cifar", weights=not_safetensors)
    # a head of another size than the source's labels: the message says to pass --labels
    from safetensors.torch import save_file

    two = tmp_path / "two.safetensors"
    save_file(zoo.load("resnet20-cifar", num_classes=2, device="cpu").state_dict(), str(two))
    with pytest.raises(zoo.ZooError, match=r"shape differs.*linear\.weight: \(10, 64\) vs \(2, 64\).*pass --labels"):
        zoo.register("my-net", from_="resnet20-cifar", weights=two)
    assert not (zoo_home / "registry.yaml").exists()
    assert not (zoo_home / "registered").exists() or not any((zoo_home / "registered").iterdir())
    assert "my-net" not in zoo.list_models()
    card = zoo.register("my-net", from_="resnet20-cifar", weights=two, labels=["cat", "dog"])  # with them, it fits
    assert card.labels == ("cat", "dog") and card.kwargs["num_classes"] == 2


def test_saved_ensemble_card_loads_and_evaluates(cifar: Path) -> None:
    model = zoo.ensemble(PAIR, save_as="my-ens", device="cpu")
    card = zoo.card("my-ens")
    assert card.plugin == "user" and card.kwargs == {"members": PAIR} and card.labels == zoo.card(PAIR[0]).labels
    x = _batch(cifar, 4)
    with torch.inference_mode():
        torch.testing.assert_close(zoo.load("my-ens", device="cpu")(x), model(x), atol=0, rtol=0)
    with pytest.raises(zoo.ZooError, match="takes no builder overrides"):
        zoo.load("my-ens", num_classes=0)


def test_num_classes_0_gives_pooled_features_and_features_only_the_stages(cifar: Path) -> None:
    x = _batch(cifar)
    full = zoo.load("resnet20-cifar", device="cpu")
    pooled = zoo.load("resnet20-cifar", num_classes=0, device="cpu")
    with torch.inference_mode():
        features = pooled(x)
        assert features.shape == (len(x), 64)
        torch.testing.assert_close(full.linear(features), full(x))  # the head on them gives the logits back
        maps = zoo.load("resnet20-cifar", features_only=True, device="cpu")(x)
    assert [tuple(m.shape[1:]) for m in maps] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    torch.testing.assert_close(maps[-1].mean((2, 3)), features)
    with pytest.raises(
        zoo.ZooError,
        match=r"'fastestdet-coco' does not support features_only=True.*the models "
        r"that do: .*resnet20-cifar",
    ):
        zoo.load("fastestdet-coco", features_only=True, pretrained=False)
