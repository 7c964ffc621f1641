"""Names, tags, hashes and builders are matched whole: no trailing newline, whitespace or control character (#20)."""

from __future__ import annotations

import pytest

from zoo._card import parse_registry
from zoo.errors import RegistryError

SHA = "a" * 64


def card(**fields):
    return {"task": "t", "builder": "a:b", **fields}


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"resnet56-cifar\n": card()}, "bad model name"),
        ({"resnet56-cifar\r": card()}, "bad model name"),
        ({"m": card(weights={"v1\n": {"uri": "x", "sha256": SHA}})}, "weights tags"),
        ({"m": card(weights={"v1": {"uri": "x", "sha256": SHA + "\n"}})}, "expected the full sha256"),
        ({"m": card(weights={"v1": {"uri": "x", "sha256_prefix": "abcdef12\n"}})}, "expected the first 8 to 63"),
        ({"m": card(builder="os:system\n")}, "expected 'package.module:callable'"),
        ({"m": card(task="classifier\n")}, "field 'task'"),
        ({"m": card(task="class ifier")}, "field 'task'"),
        ({"m": card(task="\x1b[32mclassifier")}, "field 'task'"),
        ({"m": card(default="v1\n", weights={"v1": {"uri": "x", "sha256": SHA}})}, "field 'default'"),
    ],
)
def test_names_and_hashes_are_matched_whole(raw, message):
    with pytest.raises(RegistryError, match=message):
        parse_registry({"models": raw}, file="<test>", plugin="p")


def test_a_trailing_newline_does_not_make_a_second_row(tmp_path, monkeypatch):
    import zoo
    from zoo._registry import reset_registry

    path = tmp_path / "user.yaml"
    path.write_text('models:\n  "resnet56-cifar\\n": {task: classifier, builder: "torch.nn:Identity"}\n')
    monkeypatch.setenv("ZOO_REGISTRY", str(path))
    reset_registry()
    with pytest.raises(RegistryError, match="bad model name"):
        zoo.list_models()
