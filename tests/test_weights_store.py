"""The weights store against a real HTTP server on 127.0.0.1: resume, hashes, mirrors, offline, locks."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import zoo
import zoo._download
from tests.httpserver import Behaviour
from zoo._registry import reset_registry
from zoo._store import Store
from zoo._uri import parse_uri
from zoo.errors import WeightsError


def tiny_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A real nn.Linear(64, 32)'s weights: a model zoo.load can build and compare."""
    g = torch.Generator().manual_seed(seed)
    return {"weight": torch.randn(32, 64, generator=g), "bias": torch.randn(32, generator=g)}


def safetensors_bytes(tmp_path: Path, state: dict[str, torch.Tensor]) -> bytes:
    path = tmp_path / "src.safetensors"
    save_file(state, str(path))
    return path.read_bytes()


def register(
    tmp_path: Path,
    monkeypatch,
    uri: str,
    data: bytes,
    *,
    fmt: str = "safetensors",
    convert: str = "",
    name: str = "tiny-linear",
    size: bool = True,
) -> None:
    """A user-registry card for nn.Linear(64, 32) whose weights live at `uri`."""
    sha = hashlib.sha256(data).hexdigest()
    size_line = f"\n        size: {len(data)}" if size else ""
    text = (
        textwrap.dedent(f"""\
        models:
          {name}:
            task: classifier
            builder: torch.nn:Linear
            kwargs: {{in_features: 64, out_features: 32}}
            weights:
              v1:
                uri: {uri}
                sha256: {sha}
                format: {fmt}""")
        + size_line
        + (f"\n        convert: {convert}" if convert else "")
        + "\n"
    )
    path = tmp_path / "registry.yaml"
    path.write_text(text)
    monkeypatch.setenv("ZOO_REGISTRY", str(path))
    reset_registry()


def cache_files(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file() and p.suffix != ".lock")


def assert_loaded(state: dict[str, torch.Tensor], name: str = "tiny-linear") -> None:
    model = zoo.load(name, device="cpu")
    assert not model.training
    torch.testing.assert_close(model.weight, state["weight"])
    torch.testing.assert_close(model.bias, state["bias"])


# -- downloads --------------------------------------------------------------------------------------


def test_download_verify_load(tmp_path, monkeypatch, server, zoo_home):
    state = tiny_state()
    data = safetensors_bytes(tmp_path, state)
    server.files["tiny.safetensors"] = Behaviour(data)
    register(tmp_path, monkeypatch, server.url("tiny.safetensors"), data)
    assert_loaded(state)
    sha = hashlib.sha256(data).hexdigest()
    assert (zoo_home / "weights" / f"{sha}.safetensors").read_bytes() == data
    assert not list(zoo_home.rglob("*.partial"))
    assert_loaded(state)  # second load: from the cache, no new request
    assert len(server.gets("tiny.safetensors")) == 1


def test_connection_dropped_mid_file_resumes_with_range(tmp_path, monkeypatch, server):
    state = tiny_state()
    data = safetensors_bytes(tmp_path, state)
    server.files["tiny.safetensors"] = Behaviour(data, drop_after=len(data) // 2, drops=1)
    register(tmp_path, monkeypatch, server.url("tiny.safetensors"), data)
    assert_loaded(state)
    assert server.gets("tiny.safetensors") == [None, f"bytes={len(data) // 2}-"]


def test_server_without_range_support_restarts_from_zero(tmp_path, monkeypatch, server):
    state = tiny_state()
    data = safetensors_bytes(tmp_path, state)
    server.files["tiny.safetensors"] = Behaviour(data, drop_after=1000, drops=1, ranges=False)
    register(tmp_path, monkeypatch, server.url("tiny.safetensors"), data)
    assert_loaded(state)
    ranges = server.gets("tiny.safetensors")
    assert ranges == [None, "bytes=1000-"]  # asked to resume, got the whole file (200) and used it


def test_interrupted_download_resumes_in_a_later_run(tmp_path, monkeypatch, server, zoo_home):
    state = tiny_state()
    data = safetensors_bytes(tmp_path, state)
    server.files["tiny.safetensors"] = Behaviour(data, drop_after=700, drops=1)
    register(tmp_path, monkeypatch, server.url("tiny.safetensors"), data)
    monkeypatch.setenv("ZOO_DOWNLOAD_RETRIES", "0")
    with pytest.raises(WeightsError, match="700 bytes kept in .*partial, run the command again to resume"):
        zoo.fetch("tiny-linear")
    assert not (zoo_home / "weights").exists() or not list((zoo_home / "weights").iterdir())
    assert_loaded(state)
    assert server.gets("tiny.safetensors") == [None, "bytes=700-"]


def test_truncated_body_without_length_fails_the_hash_and_leaves_nothing(tmp_path, monkeypatch, server, zoo_home):
    state = tiny_state()
    data = safetensors_bytes(tmp_path, state)
    # No Content-Length, connection closed early on every request: the client cannot tell it is short.
    server.files["tiny.safetensors"] = Behaviour(data, drop_after=500, drops=99, send_length=False)
    register(tmp_path, monkeypatch, server.url("tiny.safetensors"), data, size=False)
    with pytest.raises(WeightsError, match="is corrupt or not the expected file: sha256"):
        zoo.load("tiny-linear", device="cpu")
    assert cache_files(zoo_home) == []


def test_sha_mismatch_is_never_loaded(tmp_path, monkeypatch, server, zoo_home):
    good = safetensors_bytes(tmp_path, tiny_state(0))
    evil = safetensors_bytes(tmp_path, tiny_state(1))
    assert len(good) == len(evil)
    server.files["tiny.safetensors"] = Behaviour(evil)
    register(tmp_path, monkeypatch, server.url("tiny.safetensors"), good)
    with pytest.raises(WeightsError) as info:
        zoo.load("tiny-linear", device="cpu")
    message = str(info.value)
    assert hashlib.sha256(good).hexdigest() in message and hashlib.sha256(evil).hexdigest() in message
    assert "was not loaded" in message
    assert cache_files(zoo_home) == []


def test_http_error_is_one_clear_line(tmp_path, monkeypatch, server):
    data = safetensors_bytes(tmp_path, tiny_state())
    register(tmp_path, monkeypatch, server.url("missing.safetensors"), data)
    expected = r"Download of http://127\.0\.0\.1:\d+/files/missing.safetensors failed: HTTP 404"
    with pytest.raises(WeightsError, match=expected):
        zoo.fetch("tiny-linear")


# -- mirrors, offline, local files ------------------------------------------------------------------


def test_mirror_is_used_before_the_network(tmp_path, monkeypatch, server, zoo_home):
    state = tiny_state()
    data = safetensors_bytes(tmp_path, state)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "tiny.safetensors").write_bytes(data)
    register(tmp_path, monkeypatch, server.url("tiny.safetensors"), data)
    monkeypatch.setenv("ZOO_MIRROR", str(mirror))
    assert_loaded(state)
    assert server.requests == []


def test_bad_mirror_copy_is_skipped_for_the_network(tmp_path, monkeypatch, server, caplog):
    state = tiny_state()
    data = safetensors_bytes(tmp_path, state)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "tiny.safetensors").write_bytes(data[:-10])
    server.files["tiny.safetensors"] = Behaviour(data)
    register(tmp_path, monkeypatch, server.url("tiny.safetensors"), data)
    monkeypatch.setenv("ZOO_MIRROR", str(mirror))
    assert_loaded(state)
    assert "ignoring mirror copy" in caplog.text
    assert len(server.gets("tiny.safetensors")) == 1


@pytest.fixture()
def no_sockets(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"socket used while offline: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_offline_missing_file_names_file_url_and_fix(tmp_path, monkeypatch, no_sockets):
    data = safetensors_bytes(tmp_path, tiny_state())
    register(tmp_path, monkeypatch, "https://example.invalid/weights/tiny.safetensors", data)
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(WeightsError) as info:
        zoo.load("tiny-linear", device="cpu")
    message = str(info.value)
    for part in (
        "tiny.safetensors",
        "https://example.invalid/weights/tiny.safetensors",
        "ZOO_OFFLINE=1",
        "ZOO_MIRROR",
        "zoo fetch tiny-linear",
    ):
        assert part in message


def test_offline_uses_cache_and_mirror_without_sockets(tmp_path, monkeypatch, no_sockets):
    state = tiny_state()
    data = safetensors_bytes(tmp_path, state)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "tiny.safetensors").write_bytes(data)
    register(tmp_path, monkeypatch, "https://example.invalid/weights/tiny.safetensors", data)
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.setenv("ZOO_MIRROR", str(mirror))
    assert_loaded(state)
    monkeypatch.delenv("ZOO_MIRROR")
    assert_loaded(state)  # now from the cache


def test_local_path_weights_are_hashed_and_used_in_place(tmp_path, monkeypatch, zoo_home):
    state = tiny_state()
    data = safetensors_bytes(tmp_path, state)
    (tmp_path / "w.safetensors").write_bytes(data)
    register(tmp_path, monkeypatch, "w.safetensors", data)  # relative to the registry file
    assert_loaded(state)
    assert not (zoo_home / "weights").exists()
    (tmp_path / "w.safetensors").write_bytes(safetensors_bytes(tmp_path, tiny_state(1)))
    with pytest.raises(WeightsError, match="corrupt or not the expected file"):
        zoo.load("tiny-linear", device="cpu")


def test_pkg_uri_reads_inside_an_installed_package(tmp_path, monkeypatch):
    state = tiny_state()
    package = tmp_path / "site" / "tinyweights"
    (package / "w").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    data = safetensors_bytes(tmp_path, state)
    (package / "w" / "linear.safetensors").write_bytes(data)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    register(tmp_path, monkeypatch, "pkg://tinyweights/w/linear.safetensors", data)
    assert_loaded(state)


@pytest.mark.parametrize(
    "uri, problem",
    [
        ("https://host/a/%2e%2e/x.th", "'..' path segments"),
        ("https://host/a/..", "'..' path segments"),
        ("https://host/dir/", "not a plain file name"),
        ("https://host/.hidden", "not a plain file name"),
        ("pkg://pkg/../x.safetensors", "must stay inside the package"),
        ("pkg://pkg/a/%2E%2E/%2E%2E/x.safetensors", "must stay inside the package"),
        ("pkg:///x.safetensors", "needs a package name"),
        ("gopher://host/x", "unsupported scheme"),
    ],
)
def test_uri_path_traversal_is_refused(uri, problem):
    with pytest.raises(ValueError, match=problem):
        parse_uri(uri)


# -- corrupt cache ----------------------------------------------------------------------------------


def test_corrupted_cache_file_is_detected_removed_and_refetched(tmp_path, monkeypatch, server, zoo_home, caplog):
    state = tiny_state()
    data = safetensors_bytes(tmp_path, state)
    server.files["tiny.safetensors"] = Behaviour(data)
    register(tmp_path, monkeypatch, server.url("tiny.safetensors"), data)
    path = zoo.fetch("tiny-linear")
    with open(path, "r+b") as f:  # truncate: what a full disk or a killed copy leaves
        f.truncate(len(data) - 100)
    assert_loaded(state)
    assert "are corrupt" in caplog.text
    assert len(server.gets("tiny.safetensors")) == 2


# -- pickle conversion ------------------------------------------------------------------------------


def test_pickle_checkpoint_is_converted_with_provenance(tmp_path, monkeypatch, server, zoo_home):
    state = tiny_state()
    ckpt = tmp_path / "tiny-0123abcd.th"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "best_prec1": 91.0}, ckpt)
    data = ckpt.read_bytes()
    server.files[ckpt.name] = Behaviour(data)
    register(
        tmp_path,
        monkeypatch,
        server.url(ckpt.name),
        data,
        fmt="torch-pickle",
        convert="{key: state_dict, strip_prefix: module.}",
    )
    assert_loaded(state)
    (cached,) = (zoo_home / "weights").glob("*.safetensors")
    with safe_open(str(cached), framework="pt") as f:
        meta = json.loads(f.metadata()["zoo"])
    assert meta["source_sha256"] == hashlib.sha256(data).hexdigest()
    assert meta["source_uri"] == server.url(ckpt.name)
    assert meta["source_format"] == "torch-pickle" and "zoo_version" in meta
    assert not list((zoo_home / "downloads").glob("*"))  # the pickle is gone once converted
    assert Store().verify(Store().entries()[0]) is None


class Payload:
    """Unpickling this runs `touch <marker>`: exactly what weights_only=True must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_its_payload_never_runs(tmp_path, monkeypatch, server, zoo_home):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.th"
    ckpt.write_bytes(pickle.dumps({"state_dict": {"weight": Payload(marker)}}))
    data = ckpt.read_bytes()
    server.files["evil.th"] = Behaviour(data)
    register(tmp_path, monkeypatch, server.url("evil.th"), data, fmt="torch-pickle")
    with pytest.raises(WeightsError, match="Refused to load evil.th: it is not a plain tensor checkpoint"):
        zoo.load("tiny-linear", device="cpu")
    assert not marker.exists()
    assert not list((zoo_home / "weights").glob("*")) if (zoo_home / "weights").exists() else True
    # the control: the payload is real, plain pickle would have run it
    pickle.loads(data)
    assert marker.exists()


def test_torch_save_of_a_module_object_is_refused(tmp_path, monkeypatch, server):
    ckpt = tmp_path / "module.th"
    torch.save(torch.nn.Linear(64, 32), ckpt)  # a pickled class instance, not a state dict
    data = ckpt.read_bytes()
    server.files["module.th"] = Behaviour(data)
    register(tmp_path, monkeypatch, server.url("module.th"), data, fmt="torch-pickle")
    with pytest.raises(WeightsError, match="Refused to load module.th"):
        zoo.fetch("tiny-linear")


# -- concurrency ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_four_processes_loading_the_same_uncached_model_download_once(tmp_path, monkeypatch, server, zoo_home):
    state = {"weight": torch.randn(1024, 1024), "bias": torch.randn(1024)}  # 4 MiB: downloads overlap
    data = safetensors_bytes(tmp_path, state)
    server.files["big.safetensors"] = Behaviour(data, delay=0.01)
    sha = hashlib.sha256(data).hexdigest()
    (tmp_path / "registry.yaml").write_text(
        textwrap.dedent(f"""\
        models:
          big-linear:
            task: classifier
            builder: torch.nn:Linear
            kwargs: {{in_features: 1024, out_features: 1024}}
            weights:
              v1: {{uri: "{server.url("big.safetensors")}", sha256: {sha}, size: {len(data)}}}
        """)
    )
    code = "import zoo, torch; m = zoo.load('big-linear', device='cpu'); print(float(m.weight.double().sum()))"
    env = {**os.environ, "ZOO_REGISTRY": str(tmp_path / "registry.yaml"), "ZOO_HOME": str(zoo_home)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [err for _, err in outputs]
    expected = float(state["weight"].double().sum())
    assert all(abs(float(out) - expected) < 1e-6 for out, _ in outputs)
    assert len(server.gets("big.safetensors")) == 1
    assert cache_files(zoo_home) == [f"verified/{sha}.json", f"weights/{sha}.safetensors"]
    assert (zoo_home / "weights" / f"{sha}.safetensors").read_bytes() == data


def test_relative_file_uri_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="a file URI needs an absolute path: file:///abs/path"):
        parse_uri("file://tiny.safetensors")
    assert parse_uri("file:///abs/tiny.safetensors").location == "/abs/tiny.safetensors"


def test_no_network_error_does_not_claim_a_partial(tmp_path, monkeypatch):
    data = safetensors_bytes(tmp_path, tiny_state())
    register(tmp_path, monkeypatch, "http://127.0.0.1:9/tiny.safetensors", data)  # port 9: nothing listens
    monkeypatch.setenv("ZOO_DOWNLOAD_RETRIES", "0")
    with pytest.raises(WeightsError, match="failed after 1 attempt .*nothing was received; check the network"):
        zoo.fetch("tiny-linear")


def test_cache_verify_names_a_damaged_converted_file(tmp_path, monkeypatch, server, zoo_home):
    from click.testing import CliRunner

    from zoo.cli import cli

    ckpt = tmp_path / "tiny.th"
    torch.save({"state_dict": tiny_state()}, ckpt)
    server.files["tiny.th"] = Behaviour(ckpt.read_bytes())
    register(tmp_path, monkeypatch, server.url("tiny.th"), ckpt.read_bytes(), fmt="torch-pickle")
    path = zoo.fetch("tiny-linear")
    path.write_bytes(b"\x00" * 16)
    result = CliRunner().invoke(cli, ["cache", "verify"])
    assert result.exit_code == 1
    assert "CORRUPT: not a readable safetensors file" in result.output
    removed = CliRunner().invoke(cli, ["cache", "rm", "--corrupt"])
    assert str(path) in removed.output and not path.exists()
