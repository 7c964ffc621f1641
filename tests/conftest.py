"""Shared fixtures: every test gets its own empty ZOO_HOME and a registry rebuilt from scratch."""

from __future__ import annotations

from pathlib import Path

import pytest

import zoo._registry

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ZOO_ENV = ("ZOO_HOME", "ZOO_MIRROR", "ZOO_OFFLINE", "ZOO_REGISTRY", "ZOO_LOAD_PLUGINS",
           "ZOO_DISABLE_PLUGINS", "ZOO_BUILD_STRATEGY", "ZOO_NO_PROGRESS", "ZOO_DOWNLOAD_RETRIES",
           "ZOO_DOWNLOAD_TIMEOUT", "ZOO_LOCK_TIMEOUT")


@pytest.fixture(autouse=True)
def zoo_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache root per test, no inherited ZOO_* settings, and a fresh registry."""
    for var in ZOO_ENV:
        monkeypatch.delenv(var, raising=False)
    home = tmp_path_factory.mktemp("zoo_home")
    monkeypatch.setenv("ZOO_HOME", str(home))
    zoo._registry.reset_registry()
    yield home
    zoo._registry.reset_registry()


def require_shared(*parts: str) -> Path:
    """Path under ../shared, or skip the test with the reason (fresh machines do not have it)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (../shared is only present on the project's CI and dev machines)")
    return path

