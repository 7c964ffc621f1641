"""The project's own wheel, built and installed into a fresh target: catalogue, plugins and load work from it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import zoo

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(REPO),
        ],
        check=True,
    )
    (path,) = out.glob("visionzoo-*.whl")
    return path


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    # the weights files the cards pin inside their plugins
    shipped = [zoo.card(n).variant().uri.removeprefix("pkg://") for n in ("resnet18-cifar", "cgan-cifar", "vae-cifar")]
    for expected in (
        "zoo/__init__.py",
        "zoo/registry.yaml",
        "zoo/runtime/evaluate.py",
        "zoo/py.typed",
        "zoo_classifier/__init__.py",
        "zoo_classifier/models.py",
        "zoo_classifier/task.py",
        "zoo_gan/task.py",
        "zoo_vae/task.py",
        "zoo_diffusion/task.py",
        "zoo_diffusion/samplers.py",
        *shipped,
    ):
        assert expected in names, expected
    assert not any(n.startswith(("tests/", "plugins/", "bench/")) for n in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[zoo.plugins]\nclassifier = zoo_classifier" in text and "zoo = zoo.cli:main" in text
    assert "gan = zoo_gan" in text and "vae = zoo_vae" in text and "diffusion = zoo_diffusion" in text


def test_installed_wheel_lists_and_loads(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)], check=True
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import zoo, zoo_classifier, zoo._registry as r; "
            "print(zoo.__file__); print(zoo_classifier.__file__); print(r.builtin_registry_path())",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=True,
    )
    for line in where.stdout.splitlines():
        assert line.startswith(str(site)), line  # the wheel, not the source tree
    listed = subprocess.run(
        [sys.executable, "-m", "zoo", "list"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert listed.returncode == 0 and "resnet56-cifar" in listed.stdout, listed.stderr
    # the shipped weights come from the installed package (pkg://), verified, with no network
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import zoo, zoo._store as s; m = zoo.load('resnet18-cifar', "
            "device='cpu'); print(type(m).__name__, m.training); "
            "print(s.Store().resolve(zoo.card('resnet18-cifar').variant(), model='resnet18-cifar'))",
        ],
        capture_output=True,
        text=True,
        env={**env, "ZOO_OFFLINE": "1", "ZOO_HOME": str(tmp_path / "home")},
        cwd=tmp_path,
    )
    assert loaded.returncode == 0, loaded.stderr
    kind, weights = loaded.stdout.splitlines()
    assert kind.split() == ["CifarResNet18", "False"], loaded.stderr
    assert weights.startswith(str(site / "zoo_classifier" / "weights")), weights
