"""Races the soak (bench/soak/soak.py) found between processes sharing one ZOO_HOME (#20): a converted file seen
without its record, two `zoo cache rm` taking the same file, a partial removed under an install. Real
subprocesses do the other process's part, at the moment the soak caught it."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

import zoo
import zoo._store
from tests.httpserver import Behaviour
from tests.test_weights_store import assert_loaded, register, safetensors_bytes, tiny_state
from zoo._store import Store
from zoo.cli import cli
from zoo.errors import WeightsError

torch.set_num_threads(1)


def child_env(tmp_path, zoo_home, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "ZOO_HOME": str(zoo_home),
        "ZOO_REGISTRY": str(tmp_path / "registry.yaml"),
        "OMP_NUM_THREADS": "1",
        **extra,
    }


def test_a_load_in_another_process_never_finds_a_converted_file_without_its_record(
    tmp_path, monkeypatch, server, zoo_home
):
    """The moment a converted file is renamed into `weights/`, another process's `zoo.fetch` (whose first,
    unlocked check needs the record, since a converted file is not named by its own sha256) must take it as
    verified. Before: the record came after the rename, so that process called the fresh file corrupt, deleted
    it, and then waited for the lock this process holds."""
    state = tiny_state()
    ckpt = tmp_path / "tiny.th"
    torch.save({"state_dict": state}, ckpt)
    server.files["tiny.th"] = Behaviour(ckpt.read_bytes())
    register(tmp_path, monkeypatch, server.url("tiny.th"), ckpt.read_bytes(), fmt="torch-pickle")
    replace, seen = os.replace, []

    def replace_then_let_another_process_load(src, dst):  # noqa: ANN001, ANN202
        replace(src, dst)
        if str(src).endswith(".partial") and str(dst).endswith(".safetensors") and not seen:
            seen.append(
                subprocess.run(
                    [sys.executable, "-c", "import zoo; print(zoo.fetch('tiny-linear'))"],
                    env=child_env(tmp_path, zoo_home, ZOO_LOCK_TIMEOUT="3"),
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
            )

    monkeypatch.setattr(zoo._store.os, "replace", replace_then_let_another_process_load)
    path = zoo.fetch("tiny-linear")
    monkeypatch.setattr(zoo._store.os, "replace", replace)
    (other,) = seen
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip() == str(path) and "corrupt" not in other.stderr
    assert path.is_file()
    assert_loaded(state)
    assert len(server.gets("tiny.th")) == 1  # converted once, never deleted and fetched again


def test_two_cache_rm_of_the_same_model_at_once_are_not_a_traceback(tmp_path, monkeypatch, server, zoo_home):
    """`zoo cache rm NAME` in two processes: one finds a file, the other removes it before the first unlinks it."""
    data = safetensors_bytes(tmp_path, tiny_state())
    server.files["tiny.safetensors"] = Behaviour(data)
    register(tmp_path, monkeypatch, server.url("tiny.safetensors"), data)
    zoo.fetch("tiny-linear")
    is_regular, raced = zoo._store._is_regular, []

    def check_then_let_another_rm_run(path):  # noqa: ANN001, ANN202
        found = is_regular(path)
        if found and not raced:
            raced.append(
                subprocess.run(
                    [sys.executable, "-m", "zoo", "cache", "rm", "tiny-linear"],
                    env=child_env(tmp_path, zoo_home),
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
            )
        return found

    monkeypatch.setattr(zoo._store, "_is_regular", check_then_let_another_rm_run)
    result = CliRunner().invoke(cli, ["cache", "rm", "tiny-linear"])
    assert raced and raced[0].returncode == 0, raced[0].stderr
    assert result.exit_code == 0, (result.output, result.exception)
    assert not list((zoo_home / "weights").iterdir()) and not list((zoo_home / "verified").iterdir())


def test_an_install_whose_file_another_process_removed_does_not_blame_the_file(tmp_path):
    """A download partial that a concurrent `zoo cache rm` deleted is not "a damaged file the card pins"."""
    gone = tmp_path / "downloads" / f"{hashlib.sha256(b'x').hexdigest()}-tiny.safetensors.partial"
    with pytest.raises(WeightsError, match=r"was removed by another process .* Run the command again\.$") as caught:
        Store(tmp_path)._check_header(gone, model="tiny-linear")
    assert "\n" not in str(caught.value) and "matches the card's sha256" not in str(caught.value)
