"""Soak: N processes x M loads of verified weights against a flaky HTTP server on 127.0.0.1 (#20).

What: the weights store's promises (a file enters the cache only verified; every failure is one line; nothing
is left behind or written outside ZOO_HOME) held for a few seconds in each test of tests/security. This runs
them for minutes, with several processes sharing one ZOO_HOME and a server that misbehaves at random.

How:

* This process makes four small weights files in a temporary directory, three safetensors (8 KiB, 0.5 MiB,
  2 MiB; ``nn.Linear`` state dicts) and one torch pickle (``{"state_dict": {"module.weight", "module.bias"}}``,
  converted by the store), and a user registry (``ZOO_REGISTRY``) whose cards pin their full sha256 and size,
  builder ``torch.nn:Linear``. It serves them from a ``ThreadingHTTPServer`` on 127.0.0.1 (a random port)
  that honours ``Range`` and, per request, draws from a seeded ``random.Random`` one of: correct; connection
  dropped mid-body (reset, ``SO_LINGER`` 0); truncated body (fewer bytes than ``Content-Length``, then a clean
  close); 500 or 503 (half of them with ``Retry-After: 0`` or ``1``); a slow trickle (the whole body over about
  1.5 s); a body longer than its ``Content-Length`` (the length announces fewer bytes than are sent: the
  client stops at the length and has a short file); a body shorter than its ``Content-Length`` (the length
  announces more than the card's size: zoo refuses it before writing a byte). (tests/httpserver.py's
  ``Behaviour`` is fixed per file and counts its drops; a draw per request needs a handler of its own.)
* ``--processes`` workers (default 4), each a fresh interpreter started with its own empty ``HOME`` and
  ``TMPDIR`` and the shared ``ZOO_HOME``, loop until the deadline (``--minutes``, default 10, or ``--seconds``):
  pick a card (seeded per worker); now and then (``--remove-p``, default 0.3) remove its cache entry first, as
  ``zoo cache rm NAME`` does (``Store.remove_variant``, no lock, like the CLI: a download or load in another
  process may lose its file); then ``zoo.load(name, device="cpu")`` (p=0.7) or ``zoo.fetch(name)``, and compare
  the loaded tensors with the source's. The deadline is checked between operations, so no worker is
  interrupted mid-download.
  ``ZOO_DOWNLOAD_RETRIES`` stays at its default (5), ``ZOO_DOWNLOAD_TIMEOUT=10``, ``ZOO_DOWNLOAD_DEADLINE=60``.
* Counted per worker: loads/fetches completed, wrong tensors (goal 0), failures by their first line (each must
  be a ``ZooError`` with one line), anything else as a traceback (goal 0), and traceback text or zoo's
  warnings on the worker's stderr.
* At the end: server hits per file and per misbehaviour; ``zoo cache verify`` (corrupt entries, goal 0);
  leftover ``*.partial`` files and lock files still held. Partials: workers are never interrupted, so a
  download partial left at the end is legitimate only if the last operation on its file ended with zoo's
  "N bytes kept in <partial>, run the command again to resume" (a download given up after its retries keeps
  its bytes on purpose); any other partial (and any conversion partial under ``weights/``) is a leftover (goal
  0). Then a settle pass: the server turns honest, ``zoo fetch`` of every card in a fresh process, ``zoo cache
  verify`` again, and partials counted again (goal 0: the kept bytes were resumed and consumed). Bytes written
  outside ZOO_HOME: the files under the workers' (and the end processes') fresh HOME and TMPDIR (goal 0).

Prints one table. Exit status 1 if a corrupt entry, wrong tensors or a traceback was seen (also a multi-line
error, or a leftover after the settle pass). Traffic goes only to 127.0.0.1; the run stops by itself (workers
still running 120 s after the deadline are killed and reported); the temporary directory is removed unless
``--keep``.

Run: .venv/bin/python bench/soak/soak.py [--processes 4] [--minutes 10 | --seconds 60] [--seed 0] [--remove-p 0.3]
     [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# name -> (in_features, out_features, format); sizes about 8 KiB, 0.5 MiB, 2 MiB and 0.13 MiB (pickle)
CARDS = {
    "soak-small": (64, 32, "safetensors"),
    "soak-mid": (512, 256, "safetensors"),
    "soak-large": (1024, 512, "safetensors"),
    "soak-pickle": (256, 128, "torch-pickle"),
}

# misbehaviour -> weight (per request)
BEHAVIOURS = {
    "ok": 40,
    "drop mid-body (reset)": 12,
    "truncated body (clean close)": 12,
    "HTTP 500": 6,
    "HTTP 503": 6,
    "slow trickle": 10,
    "body longer than Content-Length": 5,
    "body shorter than Content-Length": 5,
}

P_LOAD = 0.7


# -- the flaky server --------------------------------------------------------------------------------------------


class Flaky:
    def __init__(self, files: dict[str, bytes], seed: int) -> None:
        self.files = files
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.hits: Counter[str] = Counter()
        self.by_kind: Counter[tuple[str, str]] = Counter()
        self.honest = False

    def draw(self, name: str) -> tuple[str, random.Random]:
        with self.lock:
            if self.honest:
                kind = "ok"
            else:
                kind = self.rng.choices(list(BEHAVIOURS), weights=list(BEHAVIOURS.values()))[0]
            self.hits[name] += 1
            self.by_kind[(name, kind)] += 1
            return kind, random.Random(self.rng.random())


def start_server(state: Flaky) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            name = self.path.rsplit("/", 1)[-1]
            data = state.files.get(name)
            if data is None:
                self.send_error(404)
                return
            kind, rng = state.draw(name)
            start = 0
            rng_header = self.headers.get("Range")
            if rng_header and rng_header.startswith("bytes="):
                start = int(rng_header[6:].split("-")[0] or 0)
                if start >= len(data):
                    self.send_error(416)
                    return
            payload = data[start:]
            if kind in ("HTTP 500", "HTTP 503"):
                self.send_response(int(kind[5:]))
                if rng.random() < 0.5:
                    self.send_header("Retry-After", str(rng.choice((0, 1))))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            length = len(payload)
            if kind == "body longer than Content-Length":
                length = max(1, len(payload) - rng.randint(1, max(1, len(payload) // 2)))
            elif kind == "body shorter than Content-Length":
                length = len(payload) + rng.randint(1, 4096)
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            try:
                if kind in ("drop mid-body (reset)", "truncated body (clean close)"):
                    self.wfile.write(payload[: rng.randint(0, max(0, len(payload) - 1))])
                    self.wfile.flush()
                    if kind.startswith("drop"):
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                elif kind == "slow trickle":
                    step = max(1024, len(payload) // 15)
                    for i in range(0, len(payload), step):
                        self.wfile.write(payload[i : i + step])
                        self.wfile.flush()
                        time.sleep(0.1)
                else:
                    self.wfile.write(payload)
            except OSError:
                self.close_connection = True

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


# -- setup -----------------------------------------------------------------------------------------------------


def make_files(work: Path, seed: int) -> tuple[dict[str, bytes], dict[str, str]]:
    """Weights files (served) and the expected state of each card (a safetensors file per card)."""
    import hashlib  # noqa: F401

    import torch
    from safetensors.torch import save_file

    served: dict[str, bytes] = {}
    expected: dict[str, str] = {}
    data_dir = work / "data"
    data_dir.mkdir()
    g = torch.Generator().manual_seed(seed)
    for name, (fin, fout, fmt) in CARDS.items():
        state = {"weight": torch.randn(fout, fin, generator=g), "bias": torch.randn(fout, generator=g)}
        exp = data_dir / f"{name}.expected.safetensors"
        save_file(state, str(exp))
        expected[name] = str(exp)
        if fmt == "safetensors":
            served[f"{name}.safetensors"] = exp.read_bytes()
        else:
            src = data_dir / f"{name}.pth"
            torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, str(src))
            served[f"{name}.pth"] = src.read_bytes()
    return served, expected


def write_registry(work: Path, port: int, served: dict[str, bytes]) -> Path:
    import hashlib

    lines = ["models:"]
    for name, (fin, fout, fmt) in CARDS.items():
        file = f"{name}.safetensors" if fmt == "safetensors" else f"{name}.pth"
        data = served[file]
        lines += [
            f"  {name}:",
            "    task: classifier",
            "    builder: torch.nn:Linear",
            f"    kwargs: {{in_features: {fin}, out_features: {fout}}}",
            "    weights:",
            "      v1:",
            f"        uri: http://127.0.0.1:{port}/files/{file}",
            f"        sha256: {hashlib.sha256(data).hexdigest()}",
            f"        size: {len(data)}",
            f"        format: {fmt}",
        ]
        if fmt != "safetensors":
            lines.append("        convert: {key: state_dict, strip_prefix: module.}")
    path = work / "registry.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def child_env(work: Path, tag: str, registry: Path) -> dict[str, str]:
    """The environment of every process that touches ZOO_HOME: a fresh HOME and TMPDIR of its own."""
    home, tmp = work / "outside" / tag / "home", work / "outside" / tag / "tmp"
    home.mkdir(parents=True)
    tmp.mkdir(parents=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ZOO_", "XDG_", "TORCH_HOME", "HF_")) and k not in ("TMP", "TEMP")
    }
    env.update(
        HOME=str(home),
        TMPDIR=str(tmp),
        ZOO_HOME=str(work / "zoo_home"),
        ZOO_REGISTRY=str(registry),
        ZOO_NO_PROGRESS="1",
        ZOO_DOWNLOAD_TIMEOUT="10",
        ZOO_DOWNLOAD_DEADLINE="60",
        ZOO_LOCK_TIMEOUT="120",
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        NO_PROXY="127.0.0.1",
        no_proxy="127.0.0.1",
    )
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(var, None)
    return env


# -- the worker ------------------------------------------------------------------------------------------------


def worker(wid: int, config: Path) -> None:
    import traceback

    cfg = json.loads(config.read_text())
    import torch
    from safetensors.torch import load_file

    import zoo
    from zoo._registry import get_registry
    from zoo._store import Store
    from zoo.errors import ZooError

    expected = {name: load_file(path) for name, path in cfg["expected"].items()}
    rng = random.Random(cfg["seed"] * 1000 + wid)
    names = sorted(expected)
    out = {
        "worker": wid,
        "ops": Counter(),
        "ok": Counter(),
        "wrong": [],
        "failures": Counter(),
        "multiline": [],
        "tracebacks": [],
        "events": [],
    }

    def same(state: dict[str, torch.Tensor], name: str) -> bool:
        exp = expected[name]
        return set(state) == set(exp) and all(torch.equal(state[k].float().cpu(), exp[k]) for k in exp)

    while time.time() < cfg["stop_at"]:
        name = rng.choice(names)
        if rng.random() < cfg["remove_p"]:
            try:
                Store().remove_variant(get_registry().resolve(name).variant)
                out["ops"]["cache rm"] += 1
                out["ok"]["cache rm"] += 1
                out["events"].append((time.time(), name, "rm", ""))
            except ZooError as exc:
                out["failures"][f"cache rm: {str(exc).splitlines()[0]}"] += 1
            except Exception:  # noqa: BLE001 - the point is to count these
                out["tracebacks"].append(f"cache rm {name}: {traceback.format_exc()}")
        op = "load" if rng.random() < P_LOAD else "fetch"
        out["ops"][op] += 1
        try:
            if op == "load":
                model = zoo.load(name, device="cpu")
                state = {k: v.detach() for k, v in model.state_dict().items()}
            else:
                path = zoo.fetch(name)
                try:
                    state = load_file(str(path))
                except FileNotFoundError:  # our own read, after zoo returned: another worker's cache rm won
                    out["failures"][
                        "(caller) the file zoo.fetch returned was removed by a concurrent cache rm "
                        "before the caller read it"
                    ] += 1
                    out["events"].append((time.time(), name, "gone", ""))
                    continue
            if same(state, name):
                out["ok"][op] += 1
                out["events"].append((time.time(), name, "ok", ""))
            else:
                out["wrong"].append(f"{op} {name}")
                out["events"].append((time.time(), name, "wrong", ""))
        except ZooError as exc:
            text = str(exc)
            if "\n" in text.strip():
                out["multiline"].append(text)
            out["failures"][f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"] += 1
            out["events"].append((time.time(), name, "fail", text))
        except Exception:  # noqa: BLE001
            out["tracebacks"].append(f"{op} {name}: {traceback.format_exc()}")
            out["events"].append((time.time(), name, "traceback", ""))
    result = Path(cfg["results"]) / f"worker-{wid}.json"
    result.write_text(json.dumps(out))


# -- the end ---------------------------------------------------------------------------------------------------


def outside_files(work: Path) -> list[tuple[str, int]]:
    found = []
    for path in sorted((work / "outside").rglob("*")):
        if path.is_file() or path.is_symlink():
            found.append((str(path.relative_to(work / "outside")), path.lstat().st_size))
    return found


def partials(home: Path) -> list[Path]:
    return sorted(
        [
            *home.glob("downloads/*.partial"),
            *home.glob("weights/*.partial"),
            *home.glob("verified/*.partial"),
            *home.glob("pins/*.partial"),
        ]
    )


def held_locks(home: Path) -> tuple[int, int]:
    from filelock import FileLock, Timeout

    files = sorted(home.glob("locks/*.lock"))
    held = 0
    for path in files:
        lock = FileLock(str(path), timeout=0)
        try:
            lock.acquire()
            lock.release()
        except Timeout:
            held += 1
    return len(files), held


def run_zoo(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "zoo", *args], env=env, capture_output=True, text=True, timeout=600, cwd=str(REPO)
    )


def corrupt_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stdout.splitlines() if "CORRUPT" in line]


def short(text: str, n: int = 110) -> str:
    import re

    text = re.sub(r"/\S*/zoo-soak-[^/\s]+/zoo_home/(\w+)/\S+?(\.safetensors|\.pth)?\.partial", r"\1/….partial", text)
    text = re.sub(r"/\S*/zoo-soak-[^/\s]+", "<work>", text)
    text = re.sub(r"\b[0-9a-f]{64}\b", lambda m: m.group(0)[:8] + "…", text)
    text = re.sub(r"127\.0\.0\.1:\d+/files/", "", text)
    text = re.sub(r"soak-[a-z]+\.(safetensors|pth)\b", "<file>", text)
    text = re.sub(r"'soak-[a-z]+'", "<model>", text)
    text = re.sub(r"(?<![\w.])-?\d+(?![\w.])", "N", text)
    return text if len(text) <= n else text[: n - 1] + "…"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=None, help="duration in seconds (overrides --minutes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--remove-p",
        type=float,
        default=0.3,
        help="probability of a 'zoo cache rm NAME' before an operation (0: never)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.config)
        return 0

    duration = args.seconds if args.seconds is not None else args.minutes * 60
    work = Path(tempfile.mkdtemp(prefix="zoo-soak-"))
    try:
        return soak(work, args.processes, duration, args.seed, args.remove_p)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def soak(work: Path, processes: int, duration: float, seed: int, remove_p: float) -> int:
    home = work / "zoo_home"
    home.mkdir()
    (work / "results").mkdir()
    (work / "logs").mkdir()
    served, expected = make_files(work, seed)
    state = Flaky(served, seed)
    httpd = start_server(state)
    registry = write_registry(work, httpd.server_address[1], served)
    started = time.time()
    stop_at = started + 15 + duration  # workers need a few seconds to import torch
    config = work / "config.json"
    config.write_text(
        json.dumps(
            {
                "expected": expected,
                "seed": seed,
                "stop_at": stop_at,
                "remove_p": remove_p,
                "results": str(work / "results"),
            }
        )
    )
    sizes = ", ".join(f"{n} {len(d)} B" for n, d in served.items())
    print(
        f"soak: {processes} processes, {duration:g} s, seed {seed}, cache rm p={remove_p:g}, server http://127.0.0.1:"
        f"{httpd.server_address[1]}/, {len(served)} files ({sizes})",
        flush=True,
    )
    procs = []
    for wid in range(processes):
        env = child_env(work, f"worker-{wid}", registry)
        err = open(work / "logs" / f"worker-{wid}.err", "w")  # noqa: SIM115 - closed below
        procs.append(
            (
                subprocess.Popen(
                    [sys.executable, str(Path(__file__).resolve()), "--worker", str(wid), "--config", str(config)],
                    env=env,
                    stdout=err,
                    stderr=err,
                    cwd=str(REPO),
                ),
                err,
            )
        )
    killed = []
    for wid, (proc, err) in enumerate(procs):
        try:
            proc.wait(timeout=max(1.0, stop_at + 120 - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            killed.append(wid)
        err.close()
    worked_s = time.time() - started

    results = []
    for wid in range(processes):
        path = work / "results" / f"worker-{wid}.json"
        results.append(json.loads(path.read_text()) if path.exists() else None)
    stderr_text = {wid: (work / "logs" / f"worker-{wid}.err").read_text(errors="replace") for wid in range(processes)}

    # -- the cache as the workers left it
    left = partials(home)
    events = sorted((tuple(e) for r in results if r for e in r["events"]), key=lambda e: e[0])
    last: dict[str, tuple] = {}
    for e in events:
        last[e[1]] = e
    explained = []
    for p in left:
        if p.parent.name == "downloads":
            if any(e[2] == "fail" and str(p) in e[3] for e in last.values()):
                explained.append(p)
    locks, held = held_locks(home)
    env = child_env(work, "verify-1", registry)
    verify1 = run_zoo(["cache", "verify"], env)
    # -- settle: an honest server, one more fetch of every card, then verify and count again
    state.honest = True
    settle = run_zoo(["fetch", *CARDS], child_env(work, "settle", registry))
    verify2 = run_zoo(["cache", "verify"], child_env(work, "verify-2", registry))
    left2 = partials(home)
    outside = outside_files(work)
    httpd.shutdown()
    httpd.server_close()

    # -- the table
    ops, ok, failures = Counter(), Counter(), Counter()
    wrong, multiline, tracebacks = [], [], []
    for r in results:
        if r is None:
            continue
        ops.update(r["ops"])
        ok.update(r["ok"])
        failures.update(r["failures"])
        wrong += r["wrong"]
        multiline += r["multiline"]
        tracebacks += r["tracebacks"]
    stderr_tracebacks = sum(t.count("Traceback (most recent call last)") for t in stderr_text.values())
    warnings = Counter()
    for t in stderr_text.values():
        for line in t.splitlines():
            if line.startswith("zoo:"):
                warnings[short(line, 150)] += 1
    missing = [wid for wid, r in enumerate(results) if r is None]
    c1, c2 = corrupt_lines(verify1), corrupt_lines(verify2)

    rows: list[tuple[str, str, str]] = []
    rows.append(
        (
            "workers",
            str(processes),
            f"{duration:g} s of operations each (+15 s to start), {worked_s:.0f} s "
            "wall; "
            + (
                "all exited by themselves"
                if not killed and not missing
                else f"killed {killed}, no result from {missing}"
            ),
        )
    )
    for op in ("load", "fetch", "cache rm"):
        rows.append((f"{op} completed", f"{ok[op]} of {ops[op]}", ""))
    rows.append(("wrong tensors loaded", str(len(wrong)), "goal 0" + ("" if not wrong else f": MISSED {wrong[:3]}")))
    rows.append(("failures (ZooError, one line)", str(sum(failures.values())), "fine when the server misbehaved"))
    grouped = Counter()
    for text, n in failures.items():
        grouped[short(text, 150)] += n
    for text, n in grouped.most_common():
        rows.append(("", str(n), text))
    rows.append(("multi-line errors", str(len(multiline)), "goal 0"))
    rows.append(("tracebacks", f"{len(tracebacks)} caught, {stderr_tracebacks} on stderr", "goal 0"))
    kinds = Counter(f"{tb.split(':', 1)[0].split()[0]}: {short(tb.strip().splitlines()[-1], 150)}" for tb in tracebacks)
    for text, n in kinds.most_common():
        rows.append(("", str(n), text))
    for text, n in warnings.most_common():
        rows.append(("warning on stderr", str(n), text))
    for file in served:
        kinds = ", ".join(f"{k} {n}" for (f, k), n in sorted(state.by_kind.items()) if f == file)
        rows.append((f"server hits {file}", str(state.hits[file]), kinds))
    said = verify1.stdout.strip().splitlines()[-1] if verify1.stdout.strip() else verify1.stderr.strip()[:80]
    rows.append(("corrupt entries (zoo cache verify)", str(len(c1)), f"goal 0; exit {verify1.returncode}; {said}"))
    rows.append(
        (
            "partials left by the workers",
            str(len(left)),
            f"{len(explained)} kept for resume by a failed last download; unexplained "
            f"{len(left) - len(explained)} (goal 0)",
        )
    )
    rows.append(("lock files / still held", f"{locks} / {held}", "held: goal 0"))
    rows.append(
        (
            "settle: honest server, zoo fetch all",
            f"exit {settle.returncode}",
            (settle.stderr.strip().splitlines() or [""])[-1][:80],
        )
    )
    rows.append(("settle: corrupt entries / partials", f"{len(c2)} / {len(left2)}", "goal 0 / 0"))
    rows.append(
        (
            "written outside ZOO_HOME (fresh HOME, TMPDIR)",
            f"{len(outside)} files, {sum(s for _, s in outside)} bytes",
            "goal 0" + ("" if not outside else ": " + ", ".join(p for p, _ in outside[:4])),
        )
    )
    width = max(len(r[0]) for r in rows)
    width2 = max(len(r[1]) for r in rows if len(r[1]) < 40)
    print()
    for a, b, c in rows:
        print(f"{a:{width}}  {b:{width2}}  {c}".rstrip())
    for tb in tracebacks[:3]:
        print("\n" + tb, file=sys.stderr)
    for wid, t in stderr_text.items():
        if "Traceback" in t:
            print(f"\nworker {wid} stderr:\n{t[-3000:]}", file=sys.stderr)
    bad = (
        c1
        or c2
        or wrong
        or tracebacks
        or stderr_tracebacks
        or multiline
        or left2
        or killed
        or missing
        or (len(left) - len(explained))
        or held
    )
    print(f"\nresult: {'FAILED' if bad else 'held'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
