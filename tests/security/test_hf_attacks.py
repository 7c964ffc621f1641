"""A hostile hub, CDN or Hugging Face cache against hf:// weights (zoo/_hf.py): redirects to local files and
ftp, endless bodies, sizes no disk holds, redirect loops, a token that must not leave the hub, links planted in
the Hugging Face cache. Real servers on 127.0.0.1; the hub's side of each answer is written by hand.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from safetensors.torch import save

import zoo
from tests.security.test_download_limits import send
from tests.test_hf_weights import REPO, hf_cache_entry, linear, publish, register
from zoo.cli import cli
from zoo.errors import WeightsError


def _hostile_hub(raw_server, monkeypatch, tmp_path, data: bytes, head_headers, cdn=None):
    """A raw server as the hub: HEAD answers with `head_headers(port)`; GET (the CDN) runs `cdn`."""

    def handler(conn, n, headers):
        if headers[""].startswith("HEAD"):
            send(conn, "302 Found", {**head_headers(server.port), "Content-Length": "0", "Connection": "close"})
        elif cdn is not None:
            cdn(conn, server)
        else:
            send(conn, "404 Not Found", {"Content-Length": "0", "Connection": "close"})

    server = raw_server(handler)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.port}")
    register(tmp_path, monkeypatch, f"hf://{REPO}/model.safetensors")
    return server


def _lfs(data: bytes, location: str, size: int | None = None) -> dict[str, str]:
    return {
        "Location": location,
        "X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"',
        "X-Linked-Size": str(len(data) if size is None else size),
        "X-Repo-Commit": "0" * 40,
    }


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/model.safetensors"])
def test_a_hub_redirect_off_http_is_refused(tmp_path, monkeypatch, raw_server, zoo_home, location):
    data = save(linear())
    _hostile_hub(raw_server, monkeypatch, tmp_path, data, lambda port: _lfs(data, location))
    result = CliRunner().invoke(cli, ["fetch", "tiny-hub"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "zoo downloads over http(s) only" in result.output
    assert not list(zoo_home.rglob("*.partial")) and not list(zoo_home.rglob("*.safetensors"))


def test_an_endless_cdn_body_stops_at_the_size_the_hub_announced(tmp_path, monkeypatch, raw_server, zoo_home):
    data = save(linear())

    def endless(conn, server):
        send(conn, "200 OK", {"Connection": "close"})
        sent = 0
        try:
            while sent < 32 << 20:
                conn.sendall(b"\0" * 65536)
                sent += 65536
        except OSError:
            pass
        server.sent.append(sent)

    server = _hostile_hub(
        raw_server, monkeypatch, tmp_path, data, lambda port: _lfs(data, f"http://localhost:{port}/cdn"), endless
    )
    monkeypatch.setenv("ZOO_DOWNLOAD_RETRIES", "0")
    with pytest.raises(WeightsError, match=f"sent more than the {len(data)} bytes"):
        zoo.fetch("tiny-hub")
    time.sleep(0.2)
    assert server.sent and server.sent[0] < 32 << 20
    assert not list(zoo_home.rglob("*.partial"))


def test_a_size_no_disk_holds_is_refused_before_a_byte_is_written(tmp_path, monkeypatch, raw_server, zoo_home):
    data = save(linear())

    def cdn(conn, server):
        send(conn, "200 OK", {"Connection": "close"}, data)

    _hostile_hub(
        raw_server, monkeypatch, tmp_path, data, lambda port: _lfs(data, f"http://localhost:{port}/cdn", 1 << 50), cdn
    )
    with pytest.raises(WeightsError, match="free"):
        zoo.fetch("tiny-hub")
    assert not list(zoo_home.rglob("*.partial"))  # refused on the announced size, before writing


def test_a_redirect_loop_within_the_hub_ends_in_one_line(tmp_path, monkeypatch, raw_server, zoo_home):
    data = save(linear())
    server = _hostile_hub(
        raw_server, monkeypatch, tmp_path, data, lambda port: {"Location": f"http://127.0.0.1:{port}/again"}
    )
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["fetch", "tiny-hub"])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and time.monotonic() - started < 30
    assert "publishes no sha256" in result.output
    assert len(server.requests) <= 5  # a bounded number of hops


def test_the_token_is_sent_to_the_hub_only_never_to_the_cdn(tmp_path, monkeypatch, hub, zoo_home):
    state, data = publish(hub, tmp_path, monkeypatch, gated=True)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    zoo.fetch("tiny-hub")
    assert hub.authorized == [f"/{REPO}/resolve/main/model.safetensors"]
    assert hub.cdn_gets() == [f"/cdn/{hashlib.sha256(data).hexdigest()}"]


def test_a_snapshot_link_leading_out_of_the_hf_cache_is_not_used(tmp_path, monkeypatch, hub, zoo_home):
    _, data = publish(hub, tmp_path, monkeypatch)
    cache = Path(os.environ["HF_HUB_CACHE"])
    hf_cache_entry(cache, data)
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(data)  # the right bytes, but outside the cache's blobs: its name vouches for nothing
    snapshot = next(cache.rglob("snapshots/*/model.safetensors"))
    snapshot.unlink()
    snapshot.symlink_to(outside)
    for blob in cache.rglob("blobs/*"):
        blob.unlink()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="are in neither zoo's cache nor the Hugging Face cache"):
        zoo.fetch("tiny-hub")
    assert outside.read_bytes() == data  # read-only towards the user's files


def test_zoo_never_writes_into_the_hf_cache(tmp_path, monkeypatch, hub, zoo_home):
    state, data = publish(hub, tmp_path, monkeypatch)
    cache = Path(os.environ["HF_HUB_CACHE"])
    blob = hf_cache_entry(cache, data)
    before = {p: (p.lstat().st_mtime_ns, p.lstat().st_size) for p in cache.rglob("*")}
    zoo.load("tiny-hub", device="cpu")
    assert {p: (p.lstat().st_mtime_ns, p.lstat().st_size) for p in cache.rglob("*")} == before
    assert blob.read_bytes() == data
