"""Shared fixtures: every test gets its own empty ZOO_HOME and a registry rebuilt from scratch."""

from __future__ import annotations

from pathlib import Path

import pytest

import zoo._registry

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ZOO_ENV = (
    "ZOO_HOME",
    "ZOO_MIRROR",
    "ZOO_OFFLINE",
    "ZOO_REGISTRY",
    "ZOO_LOAD_PLUGINS",
    "ZOO_DISABLE_PLUGINS",
    "ZOO_BUILD_STRATEGY",
    "ZOO_NO_PROGRESS",
    "ZOO_DOWNLOAD_RETRIES",
    "ZOO_DOWNLOAD_TIMEOUT",
    "ZOO_LOCK_TIMEOUT",
)
# the Hugging Face settings zoo honours for hf:// weights: none leaks in from the machine running the tests
HF_ENV = ("HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_TOKEN", "HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")


@pytest.fixture(autouse=True)
def zoo_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache root per test, no inherited ZOO_* settings, and a fresh registry."""
    for var in ZOO_ENV + HF_ENV:
        monkeypatch.delenv(var, raising=False)
    home = tmp_path_factory.mktemp("zoo_home")
    monkeypatch.setenv("ZOO_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home.parent / f"{home.name}-hf-cache"))  # never the user's own
    zoo._registry.reset_registry()
    yield home
    zoo._registry.reset_registry()


@pytest.fixture()
def server():  # noqa: ANN201 - yields the server's state
    """A real HTTP server on 127.0.0.1 for one test, serving what the test puts in its state (tests/httpserver.py)."""
    from tests.httpserver import FileServer, start

    state = FileServer()
    httpd = start(state)
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def hub(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201 - yields the hub's state
    """A real HTTP server on 127.0.0.1 answering like the Hugging Face hub (tests/hubserver.py), set as
    HF_ENDPOINT; HF_HUB_CACHE is the test's own empty directory."""
    from tests.hubserver import Hub, start

    state = Hub()
    httpd = start(state)
    monkeypatch.setenv("HF_ENDPOINT", state.endpoint)
    yield state
    httpd.shutdown()
    httpd.server_close()


def zoo_process(args: list[str], zoo_home: Path):  # noqa: ANN201 - subprocess.CompletedProcess
    """`python -X importtime -m zoo ARGS` in a new process with this ZOO_HOME: what a user's command imports
    (stderr holds the import-time lines) and prints, the installed plugins' entry points included."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "ZOO_HOME": str(zoo_home), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "zoo", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=REPO,
    )


def require_shared(*parts: str) -> Path:
    """Path under ../shared, or skip the test with the reason (fresh machines do not have it)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (../shared is only present on the project's CI and dev machines)")
    return path


def register_resnet20_card(directory: Path, monkeypatch: pytest.MonkeyPatch, name: str, labels: list[str]) -> str:
    """A user-registry card for a CIFAR ResNet-20 with `labels`, whose weights are a seeded random init
    saved next to it (test-only data). Returns the card's name."""
    import hashlib

    import torch
    from safetensors.torch import save_file

    from zoo_classifier.models import build_cifar_resnet

    torch.manual_seed(0)
    weights = directory / f"{name}.safetensors"
    save_file(build_cifar_resnet(depth=20, num_classes=len(labels)).state_dict(), str(weights))
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    registry = directory / f"{name}.yaml"
    registry.write_text(
        f"models:\n  {name}:\n    task: classifier\n    builder: zoo_classifier.models:build_cifar_resnet\n"
        f"    kwargs: {{depth: 20, num_classes: {len(labels)}}}\n    head: linear\n"
        "    input: {shape: [3, 32, 32]}\n"
        "    preprocess: {resize: 32, crop: 32, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}\n"
        f"    labels: [{', '.join(labels)}]\n"
        f"    weights:\n      v1: {{uri: {weights.name}, sha256: {sha}}}\n"
    )
    monkeypatch.setenv("ZOO_REGISTRY", str(registry))
    zoo._registry.reset_registry()
    return name
