"""Builders named by a user registry or a third-party plugin are imported only when trusted (#20)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import zoo
from tests.test_plugins import fake_distribution
from zoo._registry import reset_registry
from zoo.errors import ZooError


def user_card(tmp_path, monkeypatch, builder: str, kwargs: dict | None = None) -> None:
    path = tmp_path / "user.yaml"
    card = {"task": "classifier", "builder": builder, "kwargs": kwargs or {}}
    path.write_text(json.dumps({"models": {"x-net": card}}))
    monkeypatch.setenv("ZOO_REGISTRY", str(path))
    reset_registry()


def test_user_registry_cannot_run_os_system(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    user_card(tmp_path, monkeypatch, "os:system", {"command": f"touch {marker}"})
    with pytest.raises(ZooError, match=r"Builder 'os:system' of model 'x-net' is not trusted.*ZOO_TRUST"):
        zoo.load("x-net", pretrained=False)
    assert not marker.exists()


def test_zoo_trust_allows_a_module(tmp_path, monkeypatch):
    user_card(tmp_path, monkeypatch, "os:getcwd")
    monkeypatch.setenv("ZOO_TRUST", "json, os")
    with pytest.raises(ZooError, match="returned a str, not a torch.nn.Module"):  # it was imported and called
        zoo.load("x-net", pretrained=False)


def test_trust_key_in_the_home_registry(zoo_home, monkeypatch):
    (zoo_home / "registry.yaml").write_text('trust: [os]\nmodels:\n  x-net: {task: classifier, builder: "os:getcwd"}\n')
    reset_registry()
    with pytest.raises(ZooError, match="returned a str"):
        zoo.load("x-net", pretrained=False)


def test_trust_key_elsewhere_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "downloaded.yaml"
    path.write_text('trust: [os]\nmodels:\n  x-net: {task: classifier, builder: "os:system"}\n')
    monkeypatch.setenv("ZOO_REGISTRY", str(path))
    reset_registry()
    with pytest.raises(ZooError, match="field 'trust': .*only in .*registry.yaml"):
        zoo.list_models()


def test_trusted_library_and_installed_plugin_builders_load(tmp_path, monkeypatch):
    user_card(tmp_path, monkeypatch, "torch.nn:Identity")
    assert type(zoo.load("x-net", pretrained=False)).__name__ == "Identity"
    user_card(tmp_path, monkeypatch, "zoo_classifier.models:build_cifar_resnet", {"depth": 8, "num_classes": 2})
    assert zoo.load("x-net", pretrained=False) is not None


def test_a_look_alike_module_prefix_is_not_trusted(tmp_path, monkeypatch):
    user_card(tmp_path, monkeypatch, "torch.nn_evil:Identity")
    with pytest.raises(ZooError, match="not trusted"):
        zoo.load("x-net", pretrained=False)


PLUGIN = """\
    import zoo

    @zoo.hookimpl
    def register_models(register):
        register({"models": {"shady-net": {"task": "classifier", "builder": "subprocess:getoutput",
                                           "kwargs": {"cmd": "touch MARKER"}}}})
"""


def test_third_party_plugin_card_cannot_name_a_foreign_module(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    marker = tmp_path / "pwned"
    fake_distribution(site, "zoo-shady", "shady", PLUGIN.replace("MARKER", str(marker)))
    code = "import zoo; zoo.load('shady-net', pretrained=False)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(site)}
    )
    assert result.returncode != 0 and "is not trusted" in result.stderr
    assert not marker.exists()
