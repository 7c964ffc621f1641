"""Shared fixtures of the security suite (#20)."""

from __future__ import annotations

import contextlib as _contextlib
import os as _os
import socket as _socket
import subprocess as _subprocess
import threading as _threading
from collections.abc import Callable as _Callable
from dataclasses import dataclass as _dataclass
from dataclasses import field as _field
from pathlib import Path as _Path

import pytest as _pytest

# -- the weights store and downloads under attack (#20): real servers, real links, real small filesystems --------


@_dataclass
class RawServer:
    """A TCP server on 127.0.0.1 whose handler writes whatever bytes it likes: lying lengths, endless bodies,
    trickles, redirects, broken status lines. `requests` holds each request's first line and headers."""

    handler: _Callable[[_socket.socket, int, dict[str, str]], None]
    port: int = 0
    requests: list[dict[str, str]] = _field(default_factory=list)
    sent: list[int] = _field(default_factory=list)  # bytes each handler managed to write (handlers append)
    _sock: _socket.socket | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/files/{name}"

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            _threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: _socket.socket) -> None:
        with _contextlib.suppress(OSError), conn:
            raw = b""
            while b"\r\n\r\n" not in raw:
                data = conn.recv(65536)
                if not data:
                    return
                raw += data
            lines = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            headers = {"": lines[0]}
            headers.update({k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])})
            self.requests.append(headers)
            self.handler(conn, len(self.requests), headers)


@_pytest.fixture()
def raw_server():
    """Start RawServer(handler) on 127.0.0.1; every server is shut when the test ends."""
    started = []

    def start(handler):  # noqa: ANN001, ANN202
        server = RawServer(handler)
        server._sock = _socket.create_server(("127.0.0.1", 0))
        server.port = server._sock.getsockname()[1]
        _threading.Thread(target=server.serve, daemon=True).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server._sock.close()


def _can_mount() -> bool:
    return hasattr(_os, "geteuid") and _os.geteuid() == 0 and _subprocess.run(
        ["sh", "-c", "command -v mount"], capture_output=True).returncode == 0


@_pytest.fixture()
def small_fs(tmp_path):
    """small_fs(bytes, readonly=False) -> a directory on a real filesystem of that size (a tmpfs; needs root).

    Not root: skipped (the ulimit -f tests cover full disks there)."""
    mounted = []

    def make(size: int, *, readonly: bool = False) -> _Path:
        if not _can_mount():
            _pytest.skip("needs root to mount a tmpfs")
        path = tmp_path / f"fs{len(mounted)}"
        path.mkdir()
        opts = f"size={size}" + (",ro" if readonly else "")
        done = _subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True)
        if done.returncode != 0:
            _pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(path)
        return path

    yield make
    for path in mounted:
        _subprocess.run(["umount", "-l", str(path)], capture_output=True)


@_pytest.fixture(autouse=True)
def _no_inherited_download_deadline(monkeypatch):
    """ZOO_DOWNLOAD_DEADLINE is newer than tests/conftest.py's list of cleared settings."""
    monkeypatch.delenv("ZOO_DOWNLOAD_DEADLINE", raising=False)
