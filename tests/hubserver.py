"""A real HTTP server on 127.0.0.1 that answers like the Hugging Face hub, for hf:// tests.

What huggingface.co does, and this server does too:

* ``HEAD|GET /<namespace>/<repo>/resolve/<revision>/<path>`` for a large (LFS) file: ``302`` to a CDN URL, with
  ``X-Repo-Commit``, ``X-Linked-Etag: "<sha256>"``, ``X-Linked-Size`` and the git ``ETag``;
* for a small (non-LFS) file: ``200`` with the body, ``X-Repo-Commit`` and its git-blob ``ETag`` (no sha256);
* errors carry ``X-Error-Code``: ``RepoNotFound`` (401 without a token), ``GatedRepo`` (403),
  ``RevisionNotFound`` and ``EntryNotFound`` (404), which huggingface_hub turns into its error types;
* ``GET /cdn/<sha256>``: the bytes, honouring ``Range`` (a signed, host-agnostic URL on the real CDN).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


@dataclass
class HubRepo:
    files: dict[str, bytes]  # path in the repo -> bytes
    lfs: set[str] = field(default_factory=set)  # paths stored as LFS files (the hub publishes their sha256)
    commit: str = "0123456789abcdef0123456789abcdef01234567"
    revisions: tuple[str, ...] = ("main",)
    gated: bool = False


@dataclass
class Hub:
    repos: dict[str, HubRepo] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    authorized: list[str] = field(default_factory=list)  # paths of the requests that carried a token
    busy: int = 0  # answer this many resolve requests with 503 first (the hub under load)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cdn(self) -> str:
        """Another host name for the same server: huggingface_hub follows a redirect that stays on the hub's host,
        and stops at one to another host (the CDN), reading the file's sha256 from that very answer."""
        return f"http://localhost:{self.port}"

    def add(self, repo_id: str, path: str, data: bytes, *, lfs: bool = True, **repo: object) -> str:
        """Publish `data` as `path` in `repo_id`; the sha256 the hub will announce for it."""
        entry = self.repos.setdefault(repo_id, HubRepo(files={}, **repo))  # type: ignore[arg-type]
        entry.files[path] = data
        if lfs:
            entry.lfs.add(path)
        return hashlib.sha256(data).hexdigest()

    def cdn_gets(self) -> list[str]:
        return [path for method, path in self.requests if method == "GET" and path.startswith("/cdn/")]


def start(hub: Hub) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _error(self, status: int, code: str) -> None:
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _answer(self, head: bool) -> None:
            path = urlsplit(self.path).path
            with hub.lock:
                hub.requests.append(("HEAD" if head else "GET", path))
                if self.headers.get("Authorization"):
                    hub.authorized.append(path)
            if path.startswith("/cdn/"):
                return self._cdn(path.removeprefix("/cdn/"), head)
            parts = path.lstrip("/").split("/", 4)
            if len(parts) < 5 or parts[2] != "resolve":
                return self._error(404, "EntryNotFound")
            with hub.lock:
                busy, hub.busy = hub.busy > 0, max(0, hub.busy - 1)
            if busy:
                return self._error(503, "")
            repo_id, revision, file = f"{parts[0]}/{parts[1]}", unquote(parts[3]), unquote(parts[4])
            repo = hub.repos.get(repo_id)
            if repo is None:
                return self._error(401, "RepoNotFound")
            if repo.gated and not self.headers.get("Authorization"):
                return self._error(403, "GatedRepo")
            if revision not in (*repo.revisions, repo.commit):
                return self._error(404, "RevisionNotFound")
            data = repo.files.get(file)
            if data is None:
                return self._error(404, "EntryNotFound")
            git_etag = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            if file in repo.lfs:
                sha = hashlib.sha256(data).hexdigest()
                self.send_response(302)
                self.send_header("Location", f"{hub.cdn}/cdn/{sha}?X-Amz-Signature=test")
                self.send_header("X-Repo-Commit", repo.commit)
                self.send_header("X-Linked-Etag", f'"{sha}"')
                self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("ETag", f'"{git_etag}"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            self.send_response(200)
            self.send_header("X-Repo-Commit", repo.commit)
            self.send_header("ETag", f'"{git_etag}"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not head:
                self.wfile.write(data)
            return None

        def _cdn(self, sha: str, head: bool) -> None:
            blobs = {hashlib.sha256(d).hexdigest(): d for r in hub.repos.values() for d in r.files.values()}
            data = blobs.get(sha)
            if data is None:
                return self._error(404, "EntryNotFound")
            start_at, status = 0, 200
            rng = self.headers.get("Range")
            if rng:
                start_at, status = int(rng.removeprefix("bytes=").split("-")[0]), 206
            payload = data[start_at:]
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start_at}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if not head:
                self.wfile.write(payload)
            return None

        def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
            self._answer(head=True)

        def do_GET(self) -> None:  # noqa: N802
            self._answer(head=False)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hub.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
