"""Resumable HTTP(S) download into a `.partial` file.

Stdlib `urllib` rather than requests/httpx: one GET with a Range header is all we need, and it keeps
`zoo fetch` free of another dependency. The caller owns the lock, the hash check and the final rename.
"""

from __future__ import annotations

import http.client
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO, Final

from . import _config
from .errors import WeightsError

__all__ = ["download"]

CHUNK: Final = 1 << 20
# Errors after which a retry with `Range: bytes=<have>-` can pick up where the file stopped.
_TRANSIENT = (http.client.IncompleteRead, http.client.RemoteDisconnected, ConnectionError, socket.timeout,
              TimeoutError, urllib.error.URLError)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection closed with {exc.expected} bytes still expected"
    if isinstance(exc, urllib.error.URLError):
        return f"{exc.reason}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _user_agent() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"zoo/{version('visionzoo')}"
    except PackageNotFoundError:
        return "zoo"


def _progress(total: int | None, initial: int, desc: str):  # noqa: ANN202 - tqdm or a no-op
    if not sys.stderr.isatty() or not _config.show_progress():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                file=sys.stderr, leave=False)


def _copy(response: http.client.HTTPResponse, out: BinaryIO, bar) -> None:  # noqa: ANN001
    while True:
        chunk = response.read(CHUNK)
        if not chunk:
            return
        out.write(chunk)
        if bar is not None:
            bar.update(len(chunk))


def _attempt(url: str, partial: Path, expected_size: int | None, desc: str) -> None:
    have = partial.stat().st_size if partial.exists() else 0
    if expected_size is not None and have == expected_size:
        return  # a previous run got every byte; only the hash check is left
    if expected_size is not None and have > expected_size:
        partial.unlink()
        have = 0
    request = urllib.request.Request(url, headers={"User-Agent": _user_agent()})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=_config.download_timeout())  # noqa: S310 - scheme checked by _uri
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # our partial is longer than the file: start over
            partial.unlink()
            raise ConnectionError("range not satisfiable; restarting") from None
        raise WeightsError(f"Download of {url} failed: HTTP {exc.code} {exc.reason}.") from None
    with response:
        if have and response.status == 206:
            mode = "ab"
        else:  # 200: the server ignored Range (or we asked for none): the body is the whole file
            mode, have = "wb", 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else expected_size
        bar = _progress(total, have, desc)
        try:
            with open(partial, mode) as out:
                _copy(response, out, bar)
                out.flush()
                os.fsync(out.fileno())
        finally:
            if bar is not None:
                bar.close()
    got = partial.stat().st_size
    if length and length.isdigit() and got != total:
        raise http.client.IncompleteRead(b"", (total or 0) - got)


def download(url: str, partial: Path, *, expected_size: int | None = None, desc: str = "") -> None:
    """Fetch `url` into `partial`, resuming what an earlier attempt (or process) left there.

    Retries transient failures (dropped connections, short bodies, timeouts) with exponential backoff,
    each retry asking only for the missing bytes. Servers without Range support get a fresh download.
    """
    partial.parent.mkdir(parents=True, exist_ok=True)
    retries = _config.download_retries()
    delay = 0.2
    for attempt in range(retries + 1):
        try:
            _attempt(url, partial, expected_size, desc or partial.name)
            return
        except _TRANSIENT as exc:
            if attempt == retries:
                have = partial.stat().st_size if partial.exists() else 0
                kept = (f"{have} bytes kept in {partial}, run the command again to resume" if have
                        else "nothing was received; check the network or use ZOO_MIRROR")
                tries = "1 attempt" if retries == 0 else f"{retries + 1} attempts"
                raise WeightsError(f"Download of {url} failed after {tries} ({_describe(exc)}); {kept}.") from None
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
