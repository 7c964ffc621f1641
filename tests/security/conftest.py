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
    return (
        hasattr(_os, "geteuid")
        and _os.geteuid() == 0
        and _subprocess.run(["sh", "-c", "command -v mount"], capture_output=True).returncode == 0
    )


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


# -- the suite's table (#20): attacks tried, held, broke, skipped; and writes outside ZOO_HOME ----------------

_HERE = _Path(__file__).resolve().parent
_suite: dict[str, object] = {}


def _ours(nodeid: str, rootpath: _Path) -> bool:
    return (rootpath / nodeid.split("::", 1)[0]).resolve().is_relative_to(_HERE)


@_pytest.fixture(scope="package", autouse=True)
def _fresh_tmpdir_and_home(tmp_path_factory):
    """The suite runs with TMPDIR and HOME pointing at fresh empty directories; what is left in them at the end
    was written outside ZOO_HOME (every test's ZOO_HOME is under pytest's basetemp, fixed before the switch)."""
    import shutil
    import tempfile

    tmp_path_factory.getbasetemp()  # pin pytest's own temporary root (and every ZOO_HOME) to the real TMPDIR
    root = _Path(tempfile.mkdtemp(prefix="zoo-security-outside-"))
    fresh = {"TMPDIR": root / "tmp", "HOME": root / "home"}
    saved = {var: _os.environ.get(var) for var in fresh}
    for var, path in fresh.items():
        path.mkdir()
        _os.environ[var] = str(path)
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    try:
        yield
    finally:
        _suite["outside"] = [
            (
                f"$TMPDIR/{p.relative_to(fresh['TMPDIR'])}"
                if p.is_relative_to(fresh["TMPDIR"])
                else f"$HOME/{p.relative_to(fresh['HOME'])}",
                p.lstat().st_size,
            )
            for p in sorted(root.rglob("*"))
            if not p.is_dir() or p.is_symlink()
        ]
        for var, value in saved.items():
            if value is None:
                _os.environ.pop(var, None)
            else:
                _os.environ[var] = value
        tempfile.tempdir = None
        shutil.rmtree(root, ignore_errors=True)


def pytest_collection_finish(session):  # noqa: ANN001, ANN201 - pytest's hook
    _suite["collected"] = sum(_ours(item.nodeid, session.config.rootpath) for item in session.items)


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ANN001, ANN201, ARG001 - pytest's hook
    """A short table at the end of any run that collected tests/security."""
    collected = int(_suite.get("collected", 0) or 0)
    if not collected:
        return
    outcome: dict[str, tuple[str, str]] = {}  # nodeid -> (held | broke | skipped | xfail, skip reason)
    rank = {"held": 0, "skipped": 1, "xfail": 1, "broke": 2}
    for key, reports in terminalreporter.stats.items():
        for rep in reports:
            nodeid = getattr(rep, "nodeid", None)
            if not nodeid or not _ours(nodeid, config.rootpath):
                continue
            if key == "passed" and getattr(rep, "when", "call") == "call":
                kind, reason = "held", ""
            elif key in ("failed", "error", "xpassed"):
                kind, reason = "broke", ""
            elif key in ("skipped", "xfailed"):
                longrepr = rep.longrepr
                reason = str(longrepr[2] if isinstance(longrepr, tuple) else getattr(rep, "wasxfail", longrepr))
                kind, reason = (
                    ("skipped", reason.removeprefix("Skipped: ")) if key == "skipped" else ("xfail", f"xfail: {reason}")
                )
            else:
                continue
            if nodeid not in outcome or rank[kind] > rank[outcome[nodeid][0]]:
                outcome[nodeid] = (kind, reason)
    counts = {kind: sum(1 for k, _ in outcome.values() if k == kind) for kind in rank}
    reasons: dict[str, int] = {}
    for kind, reason in outcome.values():
        if kind in ("skipped", "xfail"):
            reasons[reason] = reasons.get(reason, 0) + 1
    write = terminalreporter.write_line
    terminalreporter.write_sep("-", "security suite (#20): tests/security")
    write(f"attacks tried   {collected:4d}  (tests collected under tests/security)")
    write(f"held            {counts['held']:4d}  (passed)")
    write(f"broke           {counts['broke']:4d}  (failed or errored)")
    write(f"skipped         {counts['skipped'] + counts['xfail']:4d}")
    for reason, n in sorted(reasons.items(), key=lambda item: -item[1]):
        write(f"  {n:4d}  {reason}")
    not_run = collected - len(outcome)
    if not_run > 0:
        write(f"not run         {not_run:4d}  (deselected at run time, or the run stopped early)")
    outside = _suite.get("outside")
    if outside is None:
        write("written outside ZOO_HOME: not measured (the session fixture did not finish)")
    elif not outside:
        write(
            "written outside ZOO_HOME: nothing left in the suite's fresh TMPDIR and HOME (a file created and "
            "deleted again during the suite is not seen)"
        )
    else:
        total = sum(size for _, size in outside)
        shown = ", ".join(path for path, _ in outside[:5]) + (", ..." if len(outside) > 5 else "")
        write(
            f"written outside ZOO_HOME: {len(outside)} file(s), {total} bytes left in the suite's fresh TMPDIR/HOME: "
            f"{shown}"
        )
