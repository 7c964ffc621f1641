"""The Hugging Face hub as a weights source: ``hf://<namespace>/<repo>[@<revision>]/<file>`` URIs.

What the hub publishes, and what zoo does with it:

* For every large (LFS) file the hub gives its sha256 (``X-Linked-Etag`` on a HEAD of the file's ``resolve`` URL)
  and size. A card may pin the file itself (``sha256:``); a card that does not is pinned by the hub's sha256,
  which the store checks the bytes against and records on the first verified fetch (``pins/``, like a prefix
  pin), so a file the hub later replaces is refused rather than loaded. A small (non-LFS) file has only a git
  hash, so it needs ``sha256`` on the card.
* The user's Hugging Face cache (``HF_HUB_CACHE``, ``HF_HOME``; ``~/.cache/huggingface/hub``) is read before the
  network: a blob there is named by the sha256 the hub gave when it was downloaded, and is used (copied into
  zoo's cache) only if its bytes hash to that.
* ``HF_ENDPOINT`` (a mirror), ``HF_HUB_OFFLINE`` (cache only, no request at all) and the user's token
  (``HF_TOKEN`` or ``hf auth login``, for gated repos) are honoured as ``huggingface_hub`` does, read when a file
  is fetched rather than when a module was imported.

One HEAD request asks the hub, with the conventions of ``huggingface_hub``'s ``get_hf_file_metadata`` (redirects
within the hub followed, the one to the CDN not, the token never sent off the hub, ``X-Error-Code`` read for the
reason). It is done here rather than through that function because the library's request also fetches an
"agent harness" registry from the endpoint for its user-agent string, a request zoo has no business making;
``huggingface_hub`` still supplies the stored token. zoo's own downloader fetches the bytes, so the size cap,
deadline, resume and sha256 check are the same as for any URL. Imported only when an ``hf://`` file is not in
zoo's cache.
"""

from __future__ import annotations

import http.client
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Final
from urllib.parse import quote, urljoin, urlsplit

from ._config import TRUTHY
from ._uri import HfFile
from .errors import WeightsError

__all__ = ["HubFile", "cache_dir", "cached_blob", "endpoint", "hub_file", "offline", "resolve_url"]

DEFAULT_ENDPOINT: Final = "https://huggingface.co"
_SHA256: Final = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class HubFile:
    """What the hub says about one file at one revision."""

    sha256: str | None  # None for a small (non-LFS) file: the hub gives only its git hash
    size: int | None
    commit: str | None  # the commit the revision pointed at
    location: str  # where its bytes are (the CDN URL the hub redirects to, or the resolve URL)


def endpoint() -> str:
    """``HF_ENDPOINT`` (a mirror such as https://hf-mirror.com), else the hub."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline() -> bool:
    """``HF_HUB_OFFLINE=1``: no request to the hub; only files already cached are used."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUTHY


def cache_dir() -> Path:
    """The Hugging Face hub cache, found the way ``huggingface_hub`` finds it."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def resolve_url(file: HfFile) -> str:
    """The file's ``resolve`` URL on the endpoint (what ``huggingface_hub.hf_hub_url`` builds)."""
    return f"{endpoint()}/{file.repo_id}/resolve/{quote(file.revision, safe='')}/{quote(file.path)}"


def _token() -> str | None:
    """The user's hub token: HF_TOKEN, else the one 'hf auth login' stored (read by huggingface_hub)."""
    if os.environ.get("HF_TOKEN"):
        return os.environ["HF_TOKEN"]
    try:
        import huggingface_hub

        return huggingface_hub.get_token()
    except Exception:  # noqa: BLE001 - no token is an ordinary state, whatever the library's reason
        return None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Stop at every redirect: the hub's answer carries the file's sha256, and the token must not follow it."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201 - urllib's signature
        return None


def _head(url: str, token: str | None) -> tuple[int, Message]:
    """(status, headers) of one HEAD request, redirects not followed."""
    from ._download import user_agent

    headers = {"User-Agent": user_agent(), "Accept-Encoding": "identity"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, method="HEAD", headers=headers)
    try:
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=30) as response:
            return response.status, response.headers
    except urllib.error.HTTPError as exc:  # 3xx (not followed), 4xx, 5xx: all answers with headers
        return exc.code, exc.headers


# what the hub's X-Error-Code means, as huggingface_hub's hf_raise_for_status reads it
_ERRORS: Final = {
    "GatedRepo": "{repo} is a gated repo on {endpoint}. Accept its terms on the hub, then log in ('hf auth login') "
    "or set HF_TOKEN, and try again.",
    "RepoNotFound": "repo {repo} is not on {endpoint} (or is private: log in with 'hf auth login' or set HF_TOKEN).",
    "RevisionNotFound": "{repo} has no revision {revision!r} on {endpoint}.",
    "EntryNotFound": "{where} does not exist.",
}


def _head_retrying(url: str, token: str | None, model: str) -> tuple[int, Message]:
    """`_head`, asked again after a 429 or 5xx (the hub is busy, as the downloader retries it: backoff 1, 2, 4,
    8 s, ZOO_DOWNLOAD_RETRIES times); a connection that cannot be made is one line at once."""
    from . import _config
    from ._download import RETRY_STATUS

    retries = _config.download_retries()
    for attempt in range(retries + 1):
        try:
            status, headers = _head(url, token)
        except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError; so are socket timeouts
            reason = getattr(exc, "reason", None) or exc
            raise WeightsError(
                f"Weights for {model!r}: cannot reach {endpoint()} ({_first_line(reason)}). Check the network or "
                "HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use files already in the Hugging Face cache."
            ) from None
        if status not in RETRY_STATUS or attempt == retries:
            return status, headers
        time.sleep(min(2.0**attempt, 8.0))
    raise AssertionError("unreachable")  # the loop returns on its last attempt


def hub_file(file: HfFile, *, model: str, need_sha256: bool = True) -> HubFile:
    """Ask the hub for the file's sha256, size, commit and download location: one HEAD request (more only when
    the hub redirects within itself, as for a renamed repo). `need_sha256`: whether a file the hub gives no sha256
    for is an error (it is unless the card pins the file itself).

    Every failure is one line that says what to do: a missing repo, revision or file, a gated repo without a
    token, no network (HF_HUB_OFFLINE=1 uses the cache), a file the hub publishes no sha256 for.
    """
    url = resolve_url(file)
    hub_host = urlsplit(url).netloc
    token = _token()
    for _ in range(5):
        status, headers = _head_retrying(url, token if urlsplit(url).netloc == hub_host else None, model)
        location = headers.get("Location")
        if 300 <= status < 400 and location and urlsplit(urljoin(url, location)).netloc == hub_host:
            url = urljoin(url, location)  # a redirect within the hub (a renamed repo): ask there
            continue
        break
    if status >= 400:
        code = headers.get("X-Error-Code", "")
        if code == "RepoNotFound" and status == 403:
            code = "GatedRepo"
        text = _ERRORS.get(code, f"the hub answered HTTP {status} for {{where}}.")
        where = f"{file.path} in {file.repo_id}@{file.revision} on {endpoint()}"
        message = text.format(repo=file.repo_id, revision=file.revision, endpoint=endpoint(), where=where)
        raise WeightsError(f"Weights for {model!r}: {message}")
    etag = (headers.get("X-Linked-Etag") or headers.get("ETag") or "").removeprefix("W/").strip('"')
    if need_sha256 and not _SHA256.match(etag):
        raise WeightsError(
            f"Weights for {model!r}: the hub publishes no sha256 for {file.path} in {file.repo_id}@{file.revision} "
            "(not a large/LFS file), so zoo cannot verify it. Put the file's sha256 on the card ('sha256:')."
        )
    size = headers.get("X-Linked-Size") or (None if 300 <= status < 400 else headers.get("Content-Length"))
    target = urljoin(url, location) if 300 <= status < 400 and location else url
    if urlsplit(target).scheme.lower() not in ("http", "https"):  # urllib would open file:// and ftp:// too
        raise WeightsError(
            f"Weights for {model!r}: the hub sent {file.path} to {target[:100]!r}; zoo downloads over http(s) only."
        )
    return HubFile(
        sha256=etag if _SHA256.match(etag) else None,
        size=int(size) if size and size.isdigit() else None,
        commit=headers.get("X-Repo-Commit"),
        location=target,
    )


def _first_line(exc: object) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _repo_folder(file: HfFile) -> Path:
    return cache_dir() / f"models--{file.repo_id.replace('/', '--')}"


def cached_blob(file: HfFile, sha256: str | None) -> tuple[Path, str] | None:
    """(A file in the Hugging Face cache that should hold these bytes, the sha256 it should have), or None.

    With `sha256` known (the card's, the recorded pin or the hub's), the blob of that name, whichever revision
    brought it. Without (offline, first use), the file the cached revision points at, whose blob name is the
    sha256 the hub gave when it was downloaded. The caller hashes the bytes before using them.
    """
    folder = _repo_folder(file)
    if sha256 is not None:
        blob = folder / "blobs" / sha256
        return (blob, sha256) if blob.is_file() else None
    revision = file.revision
    if not re.fullmatch(r"[0-9a-f]{40}", revision):
        try:
            revision = (folder / "refs" / revision).read_text().strip()
        except OSError:
            return None
    snapshot = folder / "snapshots" / revision / file.path
    try:
        blob = snapshot.resolve(strict=True)
    except OSError:
        return None
    if not blob.is_relative_to((folder / "blobs").resolve()) or not _SHA256.match(blob.name):
        return None  # a copy (no symlinks on this filesystem) or a small file: its name says nothing
    return blob, blob.name
