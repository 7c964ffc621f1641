"""Resumable HTTP(S) download into a `.partial` file.

Stdlib `urllib` rather than requests/httpx: one GET with a Range header is all we need, and it keeps
`zoo fetch` free of another dependency. The caller owns the lock, the hash check and the final rename.

What a hostile or broken server cannot do (#20):

* write anywhere but the partial: it is opened with ``O_NOFOLLOW`` (a link planted there is an error, never
  followed), and a redirect may lead only to http(s) (urllib itself would follow ``ftp://``);
* fill the disk: a body longer than the card's ``size``, or a ``Content-Length`` announcing more, is refused
  (the latter before a byte is written), and free space is checked first, as ``huggingface_hub`` does;
* hold the lock forever: besides the per-read timeout there is an overall deadline (``ZOO_DOWNLOAD_DEADLINE``),
  and a body is read with ``read1`` so a server trickling one byte a second still reaches the check;
* get a bad answer treated as final: 5xx and 429 are retried with backoff, honouring ``Retry-After``
  (seconds or an HTTP date) as pip does, within the deadline.
"""

from __future__ import annotations

import errno
import http.client
import os
import shutil
import socket
import stat
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Final

from . import _config
from ._hashing import open_nofollow
from .errors import WeightsError

__all__ = ["download"]

CHUNK: Final = 1 << 20
RETRY_STATUS: Final = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER: Final = 300.0  # seconds; a longer Retry-After is waited for only up to the deadline
# Errors after which a retry with `Range: bytes=<have>-` can pick up where the file stopped. HTTPException
# covers a malformed status line (BadStatusLine), which urllib does not wrap.
_TRANSIENT = (
    http.client.IncompleteRead,
    http.client.HTTPException,
    ConnectionError,
    socket.timeout,
    TimeoutError,
    urllib.error.URLError,
)


class _Retryable(Exception):
    """A 5xx/429 answer: worth another try, after `delay` seconds when the server said so."""

    def __init__(self, message: str, delay: float | None) -> None:
        super().__init__(message)
        self.delay = delay


def _describe(exc: BaseException) -> str:
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection closed with {exc.expected} bytes still expected"
    if isinstance(exc, http.client.BadStatusLine):
        return f"malformed HTTP status line {str(exc)[:60]!r}"
    if isinstance(exc, urllib.error.URLError):
        return f"{exc.reason}"
    if isinstance(exc, _Retryable):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def user_agent() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"zoo/{version('visionzoo')}"
    except PackageNotFoundError:
        return "zoo"


def _progress(total: int | None, initial: int, desc: str):  # noqa: ANN202 - tqdm or a no-op
    if not sys.stderr.isatty() or not _config.show_progress():
        return None
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        file=sys.stderr,
        leave=False,
    )


def _size_on_disk(path: Path) -> int:
    """Bytes in the partial; 0 if absent. A link there is an error, never followed."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise WeightsError(
            f"{path} is a symbolic link or not a regular file; zoo never writes through a link "
            f"in its cache. Remove it (it was not created by zoo) and try again."
        )
    return st.st_size


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only; urllib would follow ftp:// too (and then retry it)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201 - urllib's signature
        from urllib.parse import urljoin, urlsplit

        scheme = urlsplit(urljoin(req.full_url, newurl)).scheme.lower()
        if scheme not in ("http", "https"):
            raise WeightsError(
                f"Download of {req.full_url} failed: the server redirected it to {newurl!r}; "
                "zoo follows redirects to http(s) only."
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        from datetime import timezone

        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - time.time())


def _check_free_space(directory: Path, needed: int, url: str) -> None:
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise WeightsError(
            f"Download of {url} needs {needed} bytes but only {free} are free in {directory}. "
            "Free some space or point ZOO_HOME at a larger disk."
        )


def _attempt(url: str, partial: Path, expected_size: int | None, desc: str, deadline: float) -> None:
    have = _size_on_disk(partial)
    if expected_size is not None and have == expected_size:
        return  # a previous run got every byte; only the hash check is left
    if expected_size is not None and have > expected_size:
        partial.unlink()
        have = 0
    request = urllib.request.Request(url, headers={"User-Agent": user_agent()})
    if have:
        request.add_header("Range", f"bytes={have}-")
    opener = urllib.request.build_opener(_HttpOnlyRedirects)
    timeout = max(0.1, min(_config.download_timeout(), deadline - time.monotonic()))
    try:
        response = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and have:  # our partial is longer than the file: start over
            partial.unlink()
            raise ConnectionError("range not satisfiable; restarting") from None
        if exc.code in RETRY_STATUS:
            raise _Retryable(f"HTTP {exc.code} {exc.reason}", _retry_after(exc.headers.get("Retry-After"))) from None
        raise WeightsError(f"Download of {url} failed: HTTP {exc.code} {exc.reason}.") from None
    with response:
        if have and response.status == 206:
            append = True
        else:  # 200: the server ignored Range (or we asked for none): the body is the whole file
            append, have = False, 0
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.strip().isdigit() else None
        total = have + length if length is not None else expected_size
        if expected_size is not None and length is not None and have + length > expected_size:
            raise WeightsError(
                f"Download of {url} refused: the server announces {have + length} bytes, the card "
                f"says the file has {expected_size}. Nothing was written."
            )
        needed = (expected_size - have) if expected_size is not None else (length or 0)
        _check_free_space(partial.parent, needed, url)
        limit = expected_size - have if expected_size is not None else None
        bar = _progress(total, have, desc)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        try:
            with os.fdopen(open_nofollow(partial, flags), "wb") as out:
                written = 0
                while True:
                    if time.monotonic() > deadline:
                        raise WeightsError(
                            f"Download of {url} stopped: it took longer than ZOO_DOWNLOAD_DEADLINE="
                            f"{_config.download_deadline():g} s; {have + written} bytes kept in {partial}, run "
                            "the command again to resume (or raise the deadline)."
                        )
                    chunk = response.read1(CHUNK)
                    if not chunk:
                        break
                    if limit is not None and written + len(chunk) > limit:
                        out.truncate(0)
                        partial.unlink(missing_ok=True)
                        raise WeightsError(
                            f"Download of {url} refused: the server sent more than the {expected_size} bytes the "
                            "card gives as the file's size (wrong file or a hostile server); nothing was kept."
                        )
                    out.write(chunk)
                    written += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise WeightsError(
                    f"Download of {url} stopped: {os.strerror(exc.errno)} while writing {partial} "
                    "(disk full or file size limit). Free some space or point ZOO_HOME at a "
                    "larger disk, then run the command again to resume."
                ) from None
            raise
        finally:
            if bar is not None:
                bar.close()
    got = _size_on_disk(partial)
    if length is not None and got != total:
        raise http.client.IncompleteRead(b"", (total or 0) - got)


def download(url: str, partial: Path, *, expected_size: int | None = None, desc: str = "") -> None:
    """Fetch `url` into `partial`, resuming what an earlier attempt (or process) left there.

    Retries transient failures (dropped connections, short bodies, timeouts, 5xx and 429) with exponential
    backoff, each retry asking only for the missing bytes. Servers without Range support get a fresh download.
    The whole download, retries included, ends at ZOO_DOWNLOAD_DEADLINE.
    """
    partial.parent.mkdir(parents=True, exist_ok=True)
    retries = _config.download_retries()
    deadline = time.monotonic() + _config.download_deadline()
    delay = 0.2
    for attempt in range(retries + 1):
        try:
            _attempt(url, partial, expected_size, desc or partial.name, deadline)
            return
        except (*_TRANSIENT, _Retryable) as exc:
            wait = exc.delay if isinstance(exc, _Retryable) and exc.delay is not None else delay
            wait = min(wait, MAX_RETRY_AFTER)
            out_of_time = time.monotonic() + wait > deadline
            if attempt == retries or out_of_time:
                have = partial.stat().st_size if partial.is_file() and not partial.is_symlink() else 0
                kept = (
                    f"{have} bytes kept in {partial}, run the command again to resume"
                    if have
                    else "nothing was received; check the network or use ZOO_MIRROR"
                )
                tries = "1 attempt" if attempt == 0 else f"{attempt + 1} attempts"
                why = " (ZOO_DOWNLOAD_DEADLINE reached)" if out_of_time and attempt < retries else ""
                raise WeightsError(f"Download of {url} failed after {tries}{why} ({_describe(exc)}); {kept}.") from None
            time.sleep(wait)
            delay = min(delay * 2, 5.0)
