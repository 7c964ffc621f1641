"""A real HTTP server on 127.0.0.1 for download tests, with switchable misbehaviour."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Behaviour:
    data: bytes
    drop_after: int | None = None  # close the connection after this many body bytes...
    drops: int = 0  # ...on this many requests (then behave)
    ranges: bool = True  # honour Range headers
    send_length: bool = True  # send Content-Length
    delay: float = 0.0  # seconds to sleep between 64 KiB chunks (to make downloads overlap)


@dataclass
class FileServer:
    files: dict[str, Behaviour] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/files/{name}"

    def gets(self, name: str) -> list[str | None]:
        return [rng for path, rng in self.requests if path == f"/files/{name}"]


def start(server_state: FileServer) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            name = self.path.rsplit("/", 1)[-1]
            rng = self.headers.get("Range")
            with server_state.lock:
                server_state.requests.append((self.path, rng))
                behaviour = server_state.files.get(name)
                drop = False
                if behaviour is not None and behaviour.drops > 0:
                    behaviour.drops -= 1
                    drop = True
            if behaviour is None:
                self.send_error(404)
                return
            body, status, start_at = behaviour.data, 200, 0
            if rng and behaviour.ranges:
                start_at = int(rng.removeprefix("bytes=").split("-")[0])
                if start_at >= len(body):
                    self.send_error(416)
                    return
                status = 206
            payload = body[start_at:]
            self.send_response(status)
            if behaviour.send_length:
                self.send_header("Content-Length", str(len(payload)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start_at}-{len(body) - 1}/{len(body)}")
            if behaviour.ranges:
                self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if drop and behaviour.drop_after is not None:
                payload = payload[: behaviour.drop_after]
            for i in range(0, len(payload), 65536):
                self.wfile.write(payload[i : i + 65536])
                if behaviour.delay:
                    time.sleep(behaviour.delay)
            if drop:
                self.close_connection = True

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    server_state.port = httpd.server_address[1]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd
