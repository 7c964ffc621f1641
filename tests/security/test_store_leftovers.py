"""Lock time-outs and damaged headers are one line; a conversion killed with SIGKILL leaves a partial that
`zoo cache ls` shows and `zoo cache rm --partial` removes (#20). Real subprocesses, real signals."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from click.testing import CliRunner

import zoo
from tests.httpserver import Behaviour
from tests.test_weights_store import register, safetensors_bytes, tiny_state
from zoo.cli import cli
from zoo.errors import WeightsError

torch.set_num_threads(1)


def child_env(tmp_path, zoo_home) -> dict[str, str]:
    return {
        **os.environ,
        "ZOO_HOME": str(zoo_home),
        "ZOO_REGISTRY": str(tmp_path / "registry.yaml"),
        "OMP_NUM_THREADS": "1",
    }


def wait_for(path, proc, seconds: float = 60) -> None:
    end = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "the child never got there"
        time.sleep(0.05)


def test_lock_held_by_another_process_times_out_in_one_line(tmp_path, monkeypatch, server, zoo_home):
    data = safetensors_bytes(tmp_path, tiny_state())
    server.files["tiny.safetensors"] = Behaviour(data)
    register(tmp_path, monkeypatch, server.url("tiny.safetensors"), data)
    lock = zoo_home / "locks" / f"{hashlib.sha256(data).hexdigest()}.lock"
    lock.parent.mkdir()
    held = tmp_path / "held"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""\
        import pathlib, time, filelock
        with filelock.FileLock({str(lock)!r}):
            pathlib.Path({str(held)!r}).touch()
            time.sleep(60)
        """),
        ]
    )
    try:
        wait_for(held, holder)
        monkeypatch.setenv("ZOO_LOCK_TIMEOUT", "0.5")
        result = CliRunner().invoke(cli, ["fetch", "tiny-linear"])
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert f"Another process has held the lock {lock} for more than ZOO_LOCK_TIMEOUT=0.5 s" in result.output


def test_safetensors_file_with_a_damaged_header_is_one_line(tmp_path, monkeypatch):
    """The card's sha256 matches, but the header is garbage (the card pins a damaged file)."""
    data = (40).to_bytes(8, "little") + b'{"weight": {"dtype": "F32", "shape": [99' + b"\0" * 64
    (tmp_path / "w.safetensors").write_bytes(data)
    register(tmp_path, monkeypatch, "w.safetensors", data)
    with pytest.raises(WeightsError, match="matches the card's sha256 but is not a readable safetensors file"):
        zoo.load("tiny-linear", device="cpu")


def test_conversion_killed_with_sigkill_leaves_a_partial_that_ls_shows_and_rm_removes(
    tmp_path, monkeypatch, server, zoo_home
):
    ckpt = tmp_path / "tiny.th"
    torch.save({"state_dict": tiny_state()}, ckpt)
    server.files["tiny.th"] = Behaviour(ckpt.read_bytes())
    register(tmp_path, monkeypatch, server.url("tiny.th"), ckpt.read_bytes(), fmt="torch-pickle")
    ready = tmp_path / "converted"
    # The child stops right before the rename that would publish the converted file, and is killed there.
    code = textwrap.dedent(f"""\
        import os, pathlib, time, zoo
        replace = os.replace
        def slow_replace(src, dst):
            if str(src).endswith('.partial') and str(dst).endswith('.safetensors'):
                pathlib.Path({str(ready)!r}).touch()
                time.sleep(60)
            return replace(src, dst)
        os.replace = slow_replace
        zoo.fetch('tiny-linear')
        """)
    child = subprocess.Popen([sys.executable, "-c", code], env=child_env(tmp_path, zoo_home))
    try:
        wait_for(ready, child)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    (left,) = (zoo_home / "weights").glob("*.partial")
    listed = json.loads(CliRunner().invoke(cli, ["cache", "ls", "--json"]).output)
    # the downloaded pickle is kept too (hash-checked: the next run converts it without downloading again)
    assert (str(left), "partial", ["tiny-linear.v1"]) in [(r["path"], r["kind"], r["models"]) for r in listed]
    removed = CliRunner().invoke(cli, ["cache", "rm", "--partial"])
    assert f"removed {left}" in removed.output and not left.exists()
    zoo.fetch("tiny-linear")  # and the next fetch is clean
    assert not list(zoo_home.rglob("*.partial"))
