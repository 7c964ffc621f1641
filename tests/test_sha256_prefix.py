"""Cards pinned by the publisher's sha256 prefix (torchvision's `-<hex>.pth`): trust on first use, then the full hash.

A real HTTP server on 127.0.0.1 serves a small torch.save'd state dict. An 8-hex prefix cannot be collided in a
test (2**32 hashes), so "the publisher now serves other bytes with the same prefix" is exercised through the two
places a full hash is compared: the pin record (edited to name another hash that starts with the prefix) and the
bytes served or cached after the first download (which then differ from the recorded hash).
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import zoo
from tests.httpserver import Behaviour
from zoo._card import parse_registry
from zoo._registry import reset_registry
from zoo._store import Store
from zoo.cli import cli
from zoo.errors import RegistryError, WeightsError

NAME = "tiny-linear"


def checkpoint(tmp_path: Path, seed: int = 0) -> tuple[dict[str, torch.Tensor], bytes]:
    """A torch.save'd state dict of a real nn.Linear(16, 4), and its bytes."""
    torch.manual_seed(seed)
    state = torch.nn.Linear(16, 4).state_dict()
    path = tmp_path / f"ckpt-{seed}.pth"
    torch.save(state, path)
    return state, path.read_bytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def register(tmp_path: Path, monkeypatch, uri: str, prefix: str) -> None:
    (tmp_path / "registry.yaml").write_text(
        textwrap.dedent(f"""\
        models:
          {NAME}:
            task: classifier
            builder: torch.nn:Linear
            kwargs: {{in_features: 16, out_features: 4}}
            weights:
              v1:
                uri: {uri}
                sha256_prefix: "{prefix}"
                format: torch-pickle
        """)
    )
    monkeypatch.setenv("ZOO_REGISTRY", str(tmp_path / "registry.yaml"))
    reset_registry()


def serve(tmp_path, monkeypatch, server, seed: int = 0, *, prefix: str | None = None):
    """Serve checkpoint `seed` under a torchvision-style name and register a card pinned by its prefix."""
    state, data = checkpoint(tmp_path, seed)
    prefix = prefix or sha(data)[:8]
    name = f"tiny-{prefix}.pth"
    server.files[name] = Behaviour(data)
    register(tmp_path, monkeypatch, server.url(name), prefix)
    return state, data, name


def the_pin() -> dict:
    variant = zoo.card(NAME).variant()
    return json.loads(Store().pin_path(variant).read_text())


def files_under(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


def assert_is(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    torch.testing.assert_close(model.weight, state["weight"])
    torch.testing.assert_close(model.bias, state["bias"])


def test_right_prefix_loads_converts_and_records_the_full_hash(tmp_path, monkeypatch, server, zoo_home):
    state, data, name = serve(tmp_path, monkeypatch, server)
    assert_is(zoo.load(NAME, device="cpu"), state)
    full = sha(data)
    assert files_under(zoo_home / "weights") == [f"{full}.safetensors"]  # named by the full hash once known
    pin = the_pin()
    assert pin["uri"] == server.url(name) and pin["sha256_prefix"] == full[:8]
    assert pin["sha256"] == full and pin["size"] == len(data) and pin["recorded"].startswith("20")
    assert not list(zoo_home.rglob("*.partial"))  # the pickle is gone once converted; no temporary left
    assert_is(zoo.load(NAME, device="cpu"), state)  # from the cache: no second request
    assert len(server.gets(name)) == 1
    listing = json.loads(CliRunner().invoke(cli, ["cache", "ls", "--json"]).output)
    assert [(r["sha256"], r["kind"], r["models"]) for r in listing] == [(full, "converted", [f"{NAME}.v1"])]
    verify = CliRunner().invoke(cli, ["cache", "verify"])
    assert verify.exit_code == 0 and "1 file verified." in verify.output


def test_wrong_prefix_is_refused_and_nothing_lands_in_the_cache(tmp_path, monkeypatch, server, zoo_home):
    _, data = checkpoint(tmp_path)
    wrong = format(int(sha(data)[:8], 16) ^ 0xFFFFFFFF, "08x")
    serve(tmp_path, monkeypatch, server, prefix=wrong)
    with pytest.raises(WeightsError) as info:
        zoo.load(NAME, device="cpu")
    assert f"sha256 {sha(data)} does not start with the publisher's prefix {wrong}" in str(info.value)
    assert "It was not loaded" in str(info.value)
    assert files_under(zoo_home / "weights") == [] and files_under(zoo_home / "pins") == []
    assert not list(zoo_home.rglob("*.partial"))  # wrong bytes are never kept for resuming


def test_publisher_changing_the_file_after_the_pin_is_refused(tmp_path, monkeypatch, server, zoo_home):
    state, data, name = serve(tmp_path, monkeypatch, server)
    path = zoo.fetch(NAME)
    path.unlink()  # the cache was cleaned by hand: the next load downloads again...
    _, other = checkpoint(tmp_path, seed=1)
    server.files[name] = Behaviour(other)  # ...and the server now sends other bytes under the same URL
    with pytest.raises(WeightsError) as info:
        zoo.load(NAME, device="cpu")
    message = str(info.value)
    for part in (
        f"has sha256 {sha(other)}",
        f"was pinned to {sha(data)}",
        "The publisher changed the file, or it was tampered with; it was not loaded",
        f"reset the pin with 'zoo cache rm {NAME}'",
    ):
        assert part in message
    assert files_under(zoo_home / "weights") == []
    assert the_pin()["sha256"] == sha(data)  # the record stands
    # The reset the message names: weights, pin and partial go; the next download is pinned afresh.
    server.files[name] = Behaviour(data)
    removed = CliRunner().invoke(cli, ["cache", "rm", NAME])
    assert removed.exit_code == 0 and "pins/" in removed.output
    assert files_under(zoo_home / "pins") == []
    assert_is(zoo.load(NAME, device="cpu"), state)
    assert the_pin()["sha256"] == sha(data)


def test_pin_record_naming_another_full_hash_is_enforced(tmp_path, monkeypatch, server, zoo_home, caplog):
    _, data, name = serve(tmp_path, monkeypatch, server)
    zoo.fetch(NAME)
    # What a record looks like when the publisher's first file had another hash with the same prefix.
    record_path = Store().pin_path(zoo.card(NAME).variant())
    record = json.loads(record_path.read_text())
    earlier = sha(data)[:8] + sha(b"the publisher's earlier file")[8:]
    record_path.write_text(json.dumps({**record, "sha256": earlier}))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / name).write_bytes(data)
    monkeypatch.setenv("ZOO_MIRROR", str(mirror))
    with pytest.raises(WeightsError, match=f"has sha256 {sha(data)}, but .* was pinned to {earlier}"):
        zoo.load(NAME, device="cpu")
    assert "ignoring mirror copy" in caplog.text and f"pinned to {earlier}" in caplog.text  # mirror checked too
    assert files_under(zoo_home / "weights") == [f"{sha(data)}.safetensors"]  # the earlier accepted file only


def test_damaged_pin_record_is_an_error_not_a_fresh_start(tmp_path, monkeypatch, server, zoo_home):
    serve(tmp_path, monkeypatch, server)
    zoo.fetch(NAME)
    record_path = Store().pin_path(zoo.card(NAME).variant())
    record_path.write_text(json.dumps({**the_pin(), "sha256": "f" * 64}))  # not even the prefix
    with pytest.raises(WeightsError, match=f"Pin record .* is damaged .* 'zoo cache rm {NAME}'"):
        zoo.load(NAME, device="cpu")
    record_path.write_text("{truncated")
    with pytest.raises(WeightsError, match="is damaged or not this card's"):
        zoo.load(NAME, device="cpu")


def test_tampered_cached_file_is_never_loaded(tmp_path, monkeypatch, server, zoo_home, caplog):
    state, data, name = serve(tmp_path, monkeypatch, server)
    path = zoo.fetch(NAME)
    path.write_bytes(b"\x00" * 64)  # another full hash under the recorded name
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(WeightsError, match="ZOO_OFFLINE=1 forbids downloading"):
        zoo.load(NAME, device="cpu")
    assert "are corrupt" in caplog.text and not path.exists()
    monkeypatch.delenv("ZOO_OFFLINE")
    assert_is(zoo.load(NAME, device="cpu"), state)  # fetched again and checked against the recorded hash
    assert len(server.gets(name)) == 2


def test_mirror_copy_is_used_and_recorded(tmp_path, monkeypatch, server, zoo_home):
    state, data, name = serve(tmp_path, monkeypatch, server)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / name).write_bytes(data)
    monkeypatch.setenv("ZOO_MIRROR", str(mirror))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    assert_is(zoo.load(NAME, device="cpu"), state)
    assert server.requests == []
    pin = the_pin()
    assert pin["sha256"] == sha(data) and pin["source"] == f"mirror {mirror / name}"
    assert (mirror / name).read_bytes() == data  # a mirror is read, never moved


def test_interrupted_prefix_pinned_download_resumes(tmp_path, monkeypatch, server, zoo_home):
    state, data, name = serve(tmp_path, monkeypatch, server)
    server.files[name] = Behaviour(data, drop_after=300, drops=1)
    monkeypatch.setenv("ZOO_DOWNLOAD_RETRIES", "0")
    with pytest.raises(WeightsError, match="300 bytes kept in .*partial"):
        zoo.fetch(NAME)
    key = Store.pin_key(zoo.card(NAME).variant())
    assert files_under(zoo_home / "downloads") == [f"{key}-{name}.partial"]  # keyed on the URI, not a hash
    assert files_under(zoo_home / "pins") == []  # nothing is recorded before the whole file matched
    assert_is(zoo.load(NAME, device="cpu"), state)
    assert server.gets(name) == [None, "bytes=300-"]


@pytest.mark.slow
def test_three_processes_download_convert_and_pin_once(tmp_path, monkeypatch, server, zoo_home):
    import os
    import subprocess
    import sys

    state = {"weight": torch.randn(512, 1024), "bias": torch.randn(512)}  # 2 MiB: the downloads overlap
    torch.save(state, tmp_path / "big.pth")
    data = (tmp_path / "big.pth").read_bytes()
    name = f"big-{sha(data)[:8]}.pth"
    server.files[name] = Behaviour(data, delay=0.02)
    (tmp_path / "registry.yaml").write_text(
        textwrap.dedent(f"""\
        models:
          {NAME}:
            task: classifier
            builder: torch.nn:Linear
            kwargs: {{in_features: 1024, out_features: 512}}
            weights:
              v1: {{uri: "{server.url(name)}", sha256_prefix: "{sha(data)[:8]}", format: torch-pickle}}
        """)
    )
    code = f"import zoo; m = zoo.load({NAME!r}, device='cpu'); print(float(m.weight.double().sum()))"
    env = {**os.environ, "ZOO_REGISTRY": str(tmp_path / "registry.yaml"), "ZOO_HOME": str(zoo_home)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outputs]
    assert all(abs(float(out) - float(state["weight"].double().sum())) < 1e-6 for out, _ in outputs)
    assert len(server.gets(name)) == 1
    assert files_under(zoo_home / "weights") == [f"{sha(data)}.safetensors"]
    monkeypatch.setenv("ZOO_REGISTRY", str(tmp_path / "registry.yaml"))
    reset_registry()
    assert the_pin()["sha256"] == sha(data)


def test_a_full_sha_card_for_the_same_bytes_shares_the_file(tmp_path, monkeypatch, server, zoo_home):
    state, data, name = serve(tmp_path, monkeypatch, server)
    path = zoo.fetch(NAME)
    text = (tmp_path / "registry.yaml").read_text()
    (tmp_path / "registry.yaml").write_text(text.replace(f'sha256_prefix: "{sha(data)[:8]}"', f"sha256: {sha(data)}"))
    reset_registry()
    assert zoo.fetch(NAME) == path and len(server.gets(name)) == 1


def test_info_says_which_kind_of_pin(tmp_path, monkeypatch, server):
    _, data, _ = serve(tmp_path, monkeypatch, server)
    prefix = sha(data)[:8]
    before = CliRunner().invoke(cli, ["info", NAME]).output
    assert (
        f"pin:      sha256 prefix {prefix} (publisher's; full hash recorded on first verified download: not yet)"
    ) in before
    assert "    sha256:" not in before
    pin = json.loads(CliRunner().invoke(cli, ["info", NAME, "--json"]).output)["weights"]["v1"]["pin"]
    assert pin == {"kind": "sha256_prefix", "prefix": prefix, "recorded_sha256": None}
    zoo.fetch(NAME)
    after = CliRunner().invoke(cli, ["info", NAME]).output
    assert f"full hash recorded on first verified download: {sha(data)} on 20" in after
    pin = json.loads(CliRunner().invoke(cli, ["info", NAME, "--json"]).output)["weights"]["v1"]["pin"]
    assert pin["recorded_sha256"] == sha(data) and pin["recorded_size"] == len(data)
    full = CliRunner().invoke(cli, ["info", "resnet56-cifar"]).output
    assert "sha256:   4bfd9763" in full and "pin:      sha256 (full)" in full


# -- the card schema --------------------------------------------------------------------------------

SHA = "ab" * 32


@pytest.mark.parametrize(
    "weights, field, message",
    [
        (
            "{uri: 'https://h/x-ab12cd34.pth', sha256: " + SHA + ", sha256_prefix: 'ab12cd34'}",
            "sha256_prefix",
            "give either 'sha256' (the full hash) or 'sha256_prefix', not both",
        ),
        ("{uri: 'https://h/x.pth'}", "sha256", "missing required field (or 'sha256_prefix'"),
        ("{uri: 'https://h/x.pth', sha256_prefix: 'AB12CD34'}", "sha256_prefix", "lower-case hex digits"),
        ("{uri: 'https://h/x.pth', sha256_prefix: 'ab12cd3'}", "sha256_prefix", "the first 8 to 63"),
        ("{uri: 'https://h/x.pth', sha256_prefix: 'ab12cd3g'}", "sha256_prefix", "got 'ab12cd3g'"),
        ("{uri: 'https://h/x.pth', sha256_prefix: '" + SHA + "'}", "sha256_prefix", "the full 64 go in 'sha256'"),
        ("{uri: 'https://h/x.pth', sha256_prefix: 12345678}", "sha256_prefix", "put them in quotes"),
        (
            "{uri: w.safetensors, sha256_prefix: 'ab12cd34'}",
            "sha256_prefix",
            "a local safetensors file is used in place and needs the full 'sha256'",
        ),
    ],
)
def test_pin_fields_are_checked_with_file_entry_and_field(weights, field, message):
    import yaml

    data = yaml.safe_load(f"models:\n  m: {{task: t, builder: a:b, weights: {{v1: {weights}}}}}")
    with pytest.raises(RegistryError) as info:
        parse_registry(data, file="/tmp/r.yaml", plugin="user")
    assert str(info.value).startswith(f"/tmp/r.yaml, entry 'm', field 'weights.v1.{field}': ")
    assert message in str(info.value)


def test_a_prefix_card_parses():
    (card,) = parse_registry(
        {
            "models": {
                "m": {
                    "task": "t",
                    "builder": "a:b",
                    "weights": {
                        "v1": {"uri": "https://h/x-ab12cd34.pth", "sha256_prefix": "ab12cd34", "format": "torch-pickle"}
                    },
                }
            }
        },
        file="r",
        plugin="user",
    )
    variant = card.variant()
    assert variant.sha256 is None and variant.sha256_prefix == "ab12cd34"
