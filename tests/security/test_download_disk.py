"""Full disks, file-size limits and read-only homes are one line, and nothing half-written stays (#20).

Real small filesystems: a tmpfs mounted for the test when it runs as root (skipped otherwise), and
`ulimit -f` (RLIMIT_FSIZE) on a real subprocess, which works for any user.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

import zoo
from tests.httpserver import Behaviour
from tests.test_weights_store import register, safetensors_bytes
from zoo.cli import cli
from zoo.errors import WeightsError

torch.set_num_threads(1)


def big_safetensors(tmp_path) -> bytes:
    return safetensors_bytes(tmp_path, {"weight": torch.zeros(1 << 20)})  # 4 MiB


def pickle_checkpoint(tmp_path) -> bytes:
    path = tmp_path / "mirror" / "big.th"
    path.parent.mkdir(exist_ok=True)
    torch.save({"weight": torch.arange(200_000, dtype=torch.float32)}, path)  # ~800 KB
    return path.read_bytes()


def test_free_space_is_checked_before_downloading(tmp_path, monkeypatch, server, small_fs):
    home = small_fs(1 << 20)
    monkeypatch.setenv("ZOO_HOME", str(home))
    data = big_safetensors(tmp_path)
    server.files["big.safetensors"] = Behaviour(data)
    register(tmp_path, monkeypatch, server.url("big.safetensors"), data)
    with pytest.raises(WeightsError, match=f"needs {len(data)} bytes but only \\d+ are free in {home}"):
        zoo.fetch("tiny-linear")
    assert not list(home.rglob("*.partial"))  # refused before a byte was written


def test_disk_filling_up_during_a_download_of_unknown_size_is_one_line(tmp_path, monkeypatch, raw_server, small_fs):
    """No size on the card and no Content-Length: the free-space check cannot know; ENOSPC is one line."""
    home = small_fs(1 << 20)
    monkeypatch.setenv("ZOO_HOME", str(home))
    data = big_safetensors(tmp_path)
    server = raw_server(lambda conn, n, headers: conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + data))
    register(tmp_path, monkeypatch, server.url("big.safetensors"), data, size=False)
    monkeypatch.setenv("ZOO_DOWNLOAD_RETRIES", "0")
    result = CliRunner().invoke(cli, ["fetch", "tiny-linear"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "No space left on device" in result.output and len(result.output.strip().splitlines()) == 1


def test_read_only_home_is_one_line(tmp_path, monkeypatch, server, small_fs):
    home = small_fs(1 << 20, readonly=True)
    monkeypatch.setenv("ZOO_HOME", str(home))
    data = safetensors_bytes(tmp_path, {"weight": torch.zeros(8)})
    server.files["tiny.safetensors"] = Behaviour(data)
    register(tmp_path, monkeypatch, server.url("tiny.safetensors"), data)
    result = CliRunner().invoke(cli, ["fetch", "tiny-linear"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert (
        f"is not writable (Read-only file system). Set ZOO_HOME to a writable directory (now: {home})" in result.output
    )


def test_disk_full_during_conversion_is_one_line_and_leaves_no_partial(tmp_path, monkeypatch, small_fs):
    home = small_fs(512 << 10)
    monkeypatch.setenv("ZOO_HOME", str(home))
    data = pickle_checkpoint(tmp_path)  # the source comes from a mirror: only the converted output is in home
    monkeypatch.setenv("ZOO_MIRROR", str(tmp_path / "mirror"))
    register(tmp_path, monkeypatch, "https://example.invalid/big.th", data, fmt="torch-pickle")
    with pytest.raises(WeightsError, match="No space left on device .* nothing half-written was kept"):
        zoo.fetch("tiny-linear")
    assert not list(home.rglob("*.partial")) and not list(home.rglob("*.safetensors"))


def test_file_size_limit_during_conversion_is_one_line(tmp_path, monkeypatch, zoo_home):
    """`ulimit -f` on a real `zoo fetch` process (any user): EFBIG while converting is one line on stderr."""
    data = pickle_checkpoint(tmp_path)
    register(tmp_path, monkeypatch, "https://example.invalid/big.th", data, fmt="torch-pickle")
    env = {
        **os.environ,
        "ZOO_HOME": str(zoo_home),
        "ZOO_MIRROR": str(tmp_path / "mirror"),
        "ZOO_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, 256 << 10))

    done = subprocess.run(
        [sys.executable, "-c", "from zoo.cli import main; main()", "fetch", "tiny-linear"],
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("Error: ") and "Traceback" not in done.stderr, done.stderr
    assert "File too large" in done.stderr
    assert not list(zoo_home.rglob("*.partial"))
