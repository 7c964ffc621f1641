"""A hostile or broken HTTP server against the download code (#20): real servers on 127.0.0.1 that lie about
lengths, never stop, trickle, answer 5xx/429, redirect to ftp:// or send a broken status line.

Each test fails on the download code before #20 (which wrote any body to disk, had only a per-read timeout,
treated 5xx as final, followed ftp:// redirects and retried them, and let http.client's errors escape).
"""

from __future__ import annotations

import hashlib
import time
from email.utils import formatdate

import pytest
import torch
from click.testing import CliRunner

import zoo
from tests.test_weights_store import assert_loaded, register, safetensors_bytes, tiny_state
from zoo.cli import cli
from zoo.errors import WeightsError

torch.set_num_threads(1)


def send(conn, status: str, headers: dict[str, str], body: bytes = b"") -> None:
    head = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    conn.sendall(head.encode() + body)


@pytest.fixture()
def data(tmp_path):
    return safetensors_bytes(tmp_path, tiny_state())


def test_body_longer_than_the_card_size_is_cut_off(tmp_path, monkeypatch, raw_server, data, zoo_home):
    """No Content-Length and a body that goes on (32 MiB here): the download stops at the card's size."""

    def endless(conn, n, headers):
        send(conn, "200 OK", {"Connection": "close"})
        sent = 0
        try:
            while sent < 32 << 20:
                conn.sendall(b"\0" * 65536)
                sent += 65536
        finally:
            server.sent.append(sent)

    server = raw_server(endless)
    register(tmp_path, monkeypatch, server.url("tiny.safetensors"), data)
    monkeypatch.setenv("ZOO_DOWNLOAD_RETRIES", "0")
    with pytest.raises(WeightsError, match=f"sent more than the {len(data)} bytes the card gives"):
        zoo.fetch("tiny-linear")
    time.sleep(0.2)
    assert server.sent and server.sent[0] < 32 << 20  # the client hung up; it did not drain the body
    assert not list(zoo_home.rglob("*.partial"))


def test_content_length_above_the_card_size_is_refused_before_writing(
    tmp_path, monkeypatch, raw_server, data, zoo_home
):
    def liar(conn, n, headers):
        send(conn, "200 OK", {"Content-Length": str(10 << 20)}, b"\0" * (10 << 20))

    server = raw_server(liar)
    register(tmp_path, monkeypatch, server.url("tiny.safetensors"), data)
    with pytest.raises(WeightsError, match=f"announces {10 << 20} bytes, the card says the file has {len(data)}"):
        zoo.fetch("tiny-linear")
    assert len(server.requests) == 1  # refused, not retried
    assert not list(zoo_home.rglob("*.partial"))


def test_a_trickling_server_meets_the_overall_deadline(tmp_path, monkeypatch, raw_server, data):
    """One byte every 0.1 s never trips the per-read timeout; ZOO_DOWNLOAD_DEADLINE ends it (the server gives up
    after 5 s, so the pre-#20 code fails this test instead of hanging)."""

    def trickle(conn, n, headers):
        send(conn, "200 OK", {"Content-Length": str(len(data))})
        end = time.monotonic() + 5
        for byte in data:
            if time.monotonic() > end:
                return
            conn.sendall(bytes([byte]))
            time.sleep(0.1)

    server = raw_server(trickle)
    register(tmp_path, monkeypatch, server.url("tiny.safetensors"), data)
    monkeypatch.setenv("ZOO_DOWNLOAD_RETRIES", "0")
    monkeypatch.setenv("ZOO_DOWNLOAD_TIMEOUT", "5")
    monkeypatch.setenv("ZOO_DOWNLOAD_DEADLINE", "1")
    began = time.monotonic()
    with pytest.raises(WeightsError, match="took longer than ZOO_DOWNLOAD_DEADLINE=1 s; .* bytes kept in"):
        zoo.fetch("tiny-linear")
    assert time.monotonic() - began < 3


@pytest.mark.parametrize(
    "status, retry_after",
    [
        ("500 Internal Server Error", None),
        ("503 Service Unavailable", "1"),
        ("429 Too Many Requests", "http-date"),
    ],
)
def test_5xx_and_429_are_retried_honouring_retry_after(tmp_path, monkeypatch, raw_server, data, status, retry_after):
    times = []

    def busy_once(conn, n, headers):
        times.append(time.monotonic())
        if n == 1:
            extra = (
                {}
                if retry_after is None
                else {
                    "Retry-After": formatdate(time.time() + 2, usegmt=True)
                    if retry_after == "http-date"
                    else retry_after
                }
            )
            send(conn, status, {"Content-Length": "0", **extra})
        else:
            send(conn, "200 OK", {"Content-Length": str(len(data))}, data)

    server = raw_server(busy_once)
    register(tmp_path, monkeypatch, server.url("tiny.safetensors"), data)
    assert_loaded(tiny_state())
    assert len(server.requests) == 2
    if retry_after is not None:
        assert times[1] - times[0] >= 0.9  # waited as told, not the 0.2 s default backoff


def test_a_server_that_stays_down_is_one_line_after_the_retries(tmp_path, monkeypatch, raw_server, data):
    server = raw_server(lambda conn, n, headers: send(conn, "503 Service Unavailable", {"Content-Length": "0"}))
    register(tmp_path, monkeypatch, server.url("tiny.safetensors"), data)
    monkeypatch.setenv("ZOO_DOWNLOAD_RETRIES", "2")
    result = CliRunner().invoke(cli, ["fetch", "tiny-linear"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "failed after 3 attempts (HTTP 503 Service Unavailable)" in result.output
    assert len(server.requests) == 3


def test_redirects_are_followed_to_http_only(tmp_path, monkeypatch, raw_server, data):
    def redirector(conn, n, headers):
        if "/files/tiny.safetensors" in headers[""]:
            send(conn, "302 Found", {"Location": "ftp://127.0.0.1:1/tiny.safetensors", "Content-Length": "0"})
        else:
            send(conn, "200 OK", {"Content-Length": str(len(data))}, data)

    server = raw_server(redirector)
    register(tmp_path, monkeypatch, server.url("tiny.safetensors"), data)
    monkeypatch.setenv("ZOO_DOWNLOAD_RETRIES", "2")
    with pytest.raises(
        WeightsError,
        match=r"redirected it to 'ftp://127\.0\.0\.1:1/tiny\.safetensors'; zoo follows "
        r"redirects to http\(s\) only",
    ):
        zoo.fetch("tiny-linear")
    assert len(server.requests) == 1  # refused at once, not retried

    def http_redirect(conn, n, headers):
        if "/files/moved.safetensors" in headers[""]:
            send(conn, "301 Moved", {"Location": "/files/real.safetensors", "Content-Length": "0"})
        else:
            send(conn, "200 OK", {"Content-Length": str(len(data))}, data)

    moved = raw_server(http_redirect)
    register(tmp_path, monkeypatch, moved.url("moved.safetensors"), data)
    assert zoo.fetch("tiny-linear").name == f"{hashlib.sha256(data).hexdigest()}.safetensors"


def test_a_malformed_status_line_is_one_line(tmp_path, monkeypatch, raw_server, data):
    server = raw_server(lambda conn, n, headers: conn.sendall(b"HTTP/1.1 OK-ish\r\n\r\n"))
    register(tmp_path, monkeypatch, server.url("tiny.safetensors"), data)
    monkeypatch.setenv("ZOO_DOWNLOAD_RETRIES", "0")
    result = CliRunner().invoke(cli, ["fetch", "tiny-linear"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "failed after 1 attempt (malformed HTTP status line" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "header, low, high",
    [
        ("120", 120, 120),
        (" 0 ", 0, 0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0, 0),  # in the past: no wait
        ("soon", None, None),
        ("-5", None, None),
        ("", None, None),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(header, low, high):
    from zoo._download import _retry_after

    got = _retry_after(header)
    assert got == low if low is None else low <= got <= high
    assert 29 <= _retry_after(formatdate(time.time() + 30, usegmt=True)) <= 30
