"""Strings from cards and plugins reach the terminal with control characters escaped (#20)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.test_plugins import fake_distribution
from zoo._registry import reset_registry
from zoo.cli import cli

ESC, RLO, BEL = "\x1b", "\u202e", "\x07"
FAKE = "\x1b[2K\r  verified:   yes (signed by zoo)"
SHA = "a" * 64
CARD = {
    "task": "classifier",
    "builder": "torch.nn:Identity",
    "description": FAKE,
    "labels": ["cat", "dog\u202e\u2066gnp.exe", "bell\x07"],
    "license": "MIT\x1b]8;;http://x\x07",
    "source": "https://example.org/\u202eevil",
    "citation": "c\x9b31m",
    "weights": {
        "v1": {
            "uri": "x.safetensors",
            "sha256": SHA,
            "notes": "n\x1b[31m",
            "license": "L\r",
            "metrics": [
                {
                    "name": "top1\x1b[8m",
                    "value": 1.0,
                    "dataset": "d\x1b[1m",
                    "split": "val",
                    "source": "published",
                    "reference": "r\x1b[5m",
                    "note": "\u202enote",
                }
            ],
        }
    },
}


def no_raw_controls(text: str) -> None:
    bad = [c for c in text if not (c.isprintable() or c == "\n")]
    assert not bad, f"raw control characters in the output: {bad!r}"


@pytest.fixture()
def hostile_card(tmp_path, monkeypatch) -> None:
    path = tmp_path / "user.yaml"
    path.write_text(json.dumps({"models": {"hostile-net": CARD}}))  # JSON is YAML
    monkeypatch.setenv("ZOO_REGISTRY", str(path))
    reset_registry()


def test_info_escapes_every_card_string(hostile_card):
    result = CliRunner().invoke(cli, ["info", "hostile-net"])
    assert result.exit_code == 0, result.output
    no_raw_controls(result.output)
    assert "\\x1b[2K\\r  verified:   yes" in result.output
    assert "dog\\u202e\\u2066gnp.exe" in result.output and "bell\\x07" in result.output
    assert "\n  verified:" not in result.output  # the fake line stays inside the description's line


def test_list_escapes_card_strings(hostile_card):
    result = CliRunner().invoke(cli, ["list"])
    assert result.exit_code == 0, result.output
    no_raw_controls(result.output)
    # JSON output escapes by itself (ensure_ascii): the raw values survive a round trip
    records = json.loads(CliRunner().invoke(cli, ["list", "--json"]).output)
    (record,) = [r for r in records if r["name"] == "hostile-net"]
    assert record["metric"]["dataset"] == "d\x1b[1m"


HOSTILE_PLUGIN = """\
    raise ImportError("no module named \\x1b[32mOK\\x1b[0m \\u202e")
"""


def test_plugin_errors_are_escaped_in_warnings_and_zoo_plugins(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    fake_distribution(site, "zoo-hostile", "hostile", HOSTILE_PLUGIN, version="1.0\x1b[31m")
    env = {**os.environ, "PYTHONPATH": str(site)}
    listed = subprocess.run([sys.executable, "-m", "zoo", "list"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0
    no_raw_controls(listed.stderr)
    assert "\\x1b[32mOK" in listed.stderr
    shown = subprocess.run([sys.executable, "-m", "zoo", "plugins"], env=env, capture_output=True, text=True)
    no_raw_controls(shown.stdout)
    no_raw_controls(shown.stderr)
    assert "\\x1b[32mOK" in shown.stdout


def test_escape_helper():
    from zoo.cli import escape

    assert escape("plain ascii, ünïcödé, 中文 and emoji 🐍") == "plain ascii, ünïcödé, 中文 and emoji 🐍"
    assert escape("a\nb\tc\x1b\x7f\x9b\u202e\u2066\u200b") == "a\\nb\\tc\\x1b\\x7f\\x9b\\u202e\\u2066\\u200b"


def test_card_file_name_is_escaped(tmp_path, monkeypatch):
    path = Path(tmp_path / "reg\x1b[31m.yaml")
    path.write_text(json.dumps({"models": {"plain-net": {"task": "classifier", "builder": "torch.nn:Identity"}}}))
    monkeypatch.setenv("ZOO_REGISTRY", str(path))
    reset_registry()
    result = CliRunner().invoke(cli, ["info", "plain-net"])
    assert result.exit_code == 0, result.output
    assert "reg\\x1b[31m.yaml" in result.output
    no_raw_controls(result.output)
