"""Links planted in the cache never redirect a write outside ZOO_HOME, nor become a cache entry (#20).

Real symlinks, a real HTTP server on 127.0.0.1, the real store: each test fails on the store before #20.
"""

from __future__ import annotations

import hashlib
import os

import pytest
import torch

import zoo
from tests.httpserver import Behaviour
from tests.test_weights_store import assert_loaded, register, safetensors_bytes, tiny_state
from zoo.errors import WeightsError

torch.set_num_threads(1)

PRECIOUS = b"a file outside the cache that zoo must never touch\n"


@pytest.mark.parametrize("ranges", [True, False], ids=["append-via-range", "overwrite-via-200"])
def test_link_at_the_download_partial_is_not_written_through(tmp_path, monkeypatch, server, zoo_home, ranges):
    """A link at downloads/<sha>-<name>.partial: before #20 the download appended to (Range) or overwrote (200)
    the file it points to, and the cache entry became a link to it."""
    state = tiny_state()
    data = safetensors_bytes(tmp_path, state)
    server.files["tiny.safetensors"] = Behaviour(data, ranges=ranges)
    register(tmp_path, monkeypatch, server.url("tiny.safetensors"), data)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(PRECIOUS)
    sha = hashlib.sha256(data).hexdigest()
    (zoo_home / "downloads").mkdir()
    (zoo_home / "downloads" / f"{sha}-tiny.safetensors.partial").symlink_to(victim)
    assert_loaded(state)
    assert victim.read_bytes() == PRECIOUS
    cached = zoo_home / "weights" / f"{sha}.safetensors"
    assert not cached.is_symlink() and cached.read_bytes() == data


def test_link_in_place_of_a_cached_file_is_replaced_by_a_real_one(tmp_path, monkeypatch, server, zoo_home):
    """A link at weights/<sha>.safetensors to a file with the right bytes: the store refetches a file it owns
    (before #20 it verified the link's target and kept using the link, which its owner can change at will)."""
    state = tiny_state()
    data = safetensors_bytes(tmp_path, state)
    server.files["tiny.safetensors"] = Behaviour(data)
    register(tmp_path, monkeypatch, server.url("tiny.safetensors"), data)
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    (zoo_home / "weights").mkdir()
    cached = zoo_home / "weights" / f"{sha}.safetensors"
    cached.symlink_to(outside)
    assert_loaded(state)
    assert not cached.is_symlink() and cached.read_bytes() == data
    assert outside.read_bytes() == data and len(server.gets("tiny.safetensors")) == 1


def test_link_at_the_conversion_partial_is_not_written_through(tmp_path, monkeypatch, server, zoo_home):
    """The conversion writes weights/<sha>.safetensors.<pid>.partial; the pid is guessable, so a link planted
    there must not redirect the converted bytes. A guard, not a hole before #20: safetensors' save_file wrote a
    temporary file and renamed it over the link; zoo now opens the file itself with O_NOFOLLOW."""
    state = tiny_state()
    ckpt = tmp_path / "tiny.th"
    torch.save({"state_dict": state}, ckpt)
    data = ckpt.read_bytes()
    server.files["tiny.th"] = Behaviour(data)
    register(tmp_path, monkeypatch, server.url("tiny.th"), data, fmt="torch-pickle")
    victim = tmp_path / "victim.txt"
    victim.write_bytes(PRECIOUS)
    sha = hashlib.sha256(data).hexdigest()
    (zoo_home / "weights").mkdir()
    (zoo_home / "weights" / f"{sha}.safetensors.{os.getpid()}.partial").symlink_to(victim)
    assert_loaded(state)
    assert victim.read_bytes() == PRECIOUS
    assert not (zoo_home / "weights" / f"{sha}.safetensors").is_symlink()


def test_cache_directory_that_is_a_link_is_refused(tmp_path, monkeypatch, server, zoo_home):
    """weights/ itself a link to another directory: nothing is written there, and the error says why."""
    data = safetensors_bytes(tmp_path, tiny_state())
    server.files["tiny.safetensors"] = Behaviour(data)
    register(tmp_path, monkeypatch, server.url("tiny.safetensors"), data)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (zoo_home / "weights").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(WeightsError, match=r"weights is a symbolic link; .* nothing is written outside"):
        zoo.fetch("tiny-linear")
    assert list(elsewhere.iterdir()) == []


def test_link_at_the_records_temporary_file_is_not_written_through(tmp_path, monkeypatch, server, zoo_home):
    """verified/<sha>.json is written through verified/<sha>.json.<pid>.partial (a guessable name): before #20 a
    link planted there was followed and its target overwritten with the record."""
    state = tiny_state()
    data = safetensors_bytes(tmp_path, state)
    server.files["tiny.safetensors"] = Behaviour(data)
    register(tmp_path, monkeypatch, server.url("tiny.safetensors"), data)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(PRECIOUS)
    sha = hashlib.sha256(data).hexdigest()
    (zoo_home / "verified").mkdir()
    (zoo_home / "verified" / f"{sha}.json.{os.getpid()}.partial").symlink_to(victim)
    assert_loaded(state)
    assert victim.read_bytes() == PRECIOUS
    assert not (zoo_home / "verified" / f"{sha}.json").is_symlink()
