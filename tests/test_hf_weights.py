"""hf:// weights: the hub's published sha256, the user's Hugging Face cache, HF_ENDPOINT and HF_HUB_OFFLINE.

A real HTTP server on 127.0.0.1 answers like huggingface.co (tests/hubserver.py): HEAD on a ``resolve`` URL gives
the LFS file's sha256 and a redirect to the CDN, errors carry ``X-Error-Code``. No test touches the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save

import zoo
from tests import hubserver
from zoo._card import parse_registry
from zoo._registry import reset_registry
from zoo._store import Store
from zoo._uri import check_uri
from zoo.cli import cli
from zoo.errors import RegistryError, WeightsError

NAME = "tiny-hub"
REPO = "acme/tiny-linear"
COMMIT = "c0ffee" + "0" * 34


def hf_cache() -> Path:
    return Path(os.environ["HF_HUB_CACHE"])  # the test's own (tests/conftest.py)


def linear(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.contiguous() for k, v in torch.nn.Linear(16, 4).state_dict().items()}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def register(tmp_path: Path, monkeypatch, uri: str, extra: str = "", fmt: str = "safetensors") -> None:
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
                format: {fmt}
        """)
        + "".join(f"        {line}\n" for line in extra.splitlines())
    )
    monkeypatch.setenv("ZOO_REGISTRY", str(tmp_path / "registry.yaml"))
    reset_registry()


def publish(hub: hubserver.Hub, tmp_path: Path, monkeypatch, seed: int = 0, **repo: object):
    state = linear(seed)
    data = save(state)
    hub.add(REPO, "model.safetensors", data, commit=COMMIT, **repo)
    register(tmp_path, monkeypatch, f"hf://{REPO}/model.safetensors")
    return state, data


def assert_is(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    torch.testing.assert_close(model.weight, state["weight"])
    torch.testing.assert_close(model.bias, state["bias"])


def the_pin() -> dict:
    return json.loads(Store().pin_path(zoo.card(NAME).variant()).read_text())


def hf_cache_entry(root: Path, data: bytes, *, path: str = "model.safetensors", commit: str = COMMIT) -> Path:
    """Lay out one file the way huggingface_hub caches it: the blob named by its sha256, a snapshot link to it."""
    folder = root / f"models--{REPO.replace('/', '--')}"
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    blob = folder / "blobs" / sha(data)
    blob.write_bytes(data)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit / path
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    snapshot.symlink_to(os.path.relpath(blob, snapshot.parent))
    return blob


def test_hub_file_is_verified_against_the_published_sha256_and_pinned(tmp_path, monkeypatch, hub, zoo_home):
    state, data = publish(hub, tmp_path, monkeypatch)
    assert_is(zoo.load(NAME, device="cpu"), state)
    assert [m for m, _ in hub.requests] == ["HEAD", "GET"], hub.requests  # the sha256, then the bytes
    assert hub.cdn_gets() == [f"/cdn/{sha(data)}"]
    assert sorted(p.name for p in (zoo_home / "weights").iterdir()) == [f"{sha(data)}.safetensors"]
    pin = the_pin()
    assert pin["sha256"] == sha(data) and pin["source"] == f"hf://{REPO}/model.safetensors"
    assert pin["size"] == len(data)
    assert_is(zoo.load(NAME, device="cpu"), state)  # from zoo's cache: no second request
    assert len(hub.requests) == 2
    info = CliRunner().invoke(cli, ["info", NAME])
    assert f"sha256 the hub publishes (checked on fetch; recorded on first verified download: {sha(data)}" in (
        info.output
    )


def test_a_pickle_on_the_hub_is_converted_after_its_hash_matched(tmp_path, monkeypatch, hub, zoo_home):
    state = linear(3)
    torch.save(state, tmp_path / "pytorch_model.bin")
    data = (tmp_path / "pytorch_model.bin").read_bytes()
    hub.add(REPO, "unet/pytorch_model.bin", data)
    register(tmp_path, monkeypatch, f"hf://{REPO}@main/unet/pytorch_model.bin", fmt="torch-pickle")
    assert_is(zoo.load(NAME, device="cpu"), state)
    assert the_pin()["sha256"] == sha(data)
    assert not list(zoo_home.rglob("*.partial")) and not list(zoo_home.rglob("*.bin"))


def test_the_hugging_face_cache_is_reused_offline_without_a_request(tmp_path, monkeypatch, hub, zoo_home):
    state, data = publish(hub, tmp_path, monkeypatch)
    blob = hf_cache_entry(hf_cache(), data)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_is(zoo.load(NAME, device="cpu"), state)
    assert hub.requests == []
    assert the_pin()["source"] == f"Hugging Face cache {blob}"
    assert blob.read_bytes() == data  # read and copied, never moved


def test_online_the_cache_saves_the_download_but_the_hub_is_asked_for_the_hash(tmp_path, monkeypatch, hub, zoo_home):
    state, data = publish(hub, tmp_path, monkeypatch)
    hf_cache_entry(hf_cache(), data)
    assert_is(zoo.load(NAME, device="cpu"), state)
    assert [m for m, _ in hub.requests] == ["HEAD"] and hub.cdn_gets() == []


def test_a_tampered_hugging_face_cache_blob_is_not_used(tmp_path, monkeypatch, hub, zoo_home, caplog):
    state, data = publish(hub, tmp_path, monkeypatch)
    blob = hf_cache_entry(hf_cache(), data)
    blob.write_bytes(save(linear(9)))  # other bytes under the published name
    assert_is(zoo.load(NAME, device="cpu"), state)  # downloaded instead
    assert "not using the Hugging Face cache's copy" in caplog.text and hub.cdn_gets() == [f"/cdn/{sha(data)}"]


def test_offline_with_nothing_cached_is_one_line_and_no_request(tmp_path, monkeypatch, hub, zoo_home):
    publish(hub, tmp_path, monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(cli, ["fetch", NAME])
    assert result.exit_code == 1 and hub.requests == []
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert "HF_HUB_OFFLINE=1 forbids asking" in result.output and f"'zoo fetch {NAME}'" in result.output
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("ZOO_OFFLINE", "1")  # zoo's own switch keeps hf:// off the network as well
    assert "ZOO_OFFLINE=1 forbids asking" in CliRunner().invoke(cli, ["fetch", NAME]).output
    assert hub.requests == []


def test_a_file_the_hub_replaced_after_the_pin_is_refused_before_downloading(tmp_path, monkeypatch, hub, zoo_home):
    _, data = publish(hub, tmp_path, monkeypatch)
    zoo.fetch(NAME).unlink()  # the cache was cleaned by hand
    other = save(linear(1))
    hub.add(REPO, "model.safetensors", other)  # and the repo's main now has other bytes
    with pytest.raises(WeightsError) as info:
        zoo.load(NAME, device="cpu")
    message = str(info.value)
    assert f"the hub now publishes sha256 {sha(other)}" in message and "zoo recorded" in message
    assert sha(data) in message and "nothing was downloaded" in message
    assert hub.cdn_gets() == [f"/cdn/{sha(data)}"]  # the first download only


def test_a_card_sha256_is_enforced_over_the_hubs(tmp_path, monkeypatch, hub, zoo_home):
    state, data = publish(hub, tmp_path, monkeypatch)
    pinned = sha(save(linear(5)))
    register(tmp_path, monkeypatch, f"hf://{REPO}/model.safetensors", extra=f"sha256: {pinned}")
    with pytest.raises(WeightsError, match=f"the hub now publishes sha256 {sha(data)} .* but the card pins {pinned}"):
        zoo.load(NAME, device="cpu")
    assert hub.cdn_gets() == []
    register(tmp_path, monkeypatch, f"hf://{REPO}/model.safetensors", extra=f"sha256: {sha(data)}")
    assert_is(zoo.load(NAME, device="cpu"), state)


def test_the_cdn_sending_other_bytes_is_caught_and_nothing_is_kept(tmp_path, monkeypatch, hub, zoo_home):
    _, data = publish(hub, tmp_path, monkeypatch)
    other = save(linear(2))
    hub.add("acme/other", "x.safetensors", other)
    # the hub vouches for `data`, but its redirect leads to another blob (a compromised or confused CDN)
    monkeypatch.setattr("zoo._hf.hub_file", _lying_hub(sha(data), f"{hub.cdn}/cdn/{sha(other)}"))
    with pytest.raises(WeightsError, match=f"sha256 {sha(other)}, expected {sha(data)}"):
        zoo.load(NAME, device="cpu")
    assert not list(zoo_home.rglob("*.partial")) and not list(zoo_home.rglob("*.safetensors"))
    assert not (zoo_home / "pins").exists() or not list((zoo_home / "pins").iterdir())


def _lying_hub(sha256: str, location: str):
    from zoo._hf import HubFile

    return lambda file, model: HubFile(sha256=sha256, size=None, commit=COMMIT, location=location)


@pytest.mark.parametrize(
    ("uri", "repo", "expected"),
    [
        ("hf://acme/nope/model.safetensors", {}, "repo acme/nope is not on"),
        (f"hf://{REPO}/missing.safetensors", {}, f"missing.safetensors in {REPO}@main on"),
        (f"hf://{REPO}@v9/model.safetensors", {}, f"{REPO} has no revision 'v9'"),
        (f"hf://{REPO}/model.safetensors", {"gated": True}, f"{REPO} is a gated repo"),
        (f"hf://{REPO}/config.json", {}, "the hub publishes no sha256 for config.json"),
    ],
)
def test_what_the_hub_refuses_is_one_line(tmp_path, monkeypatch, hub, zoo_home, uri, repo, expected):
    hub.add(REPO, "model.safetensors", save(linear()), commit=COMMIT, **repo)
    hub.add(REPO, "config.json", b"{}", lfs=False)
    register(tmp_path, monkeypatch, uri)
    result = CliRunner().invoke(cli, ["fetch", NAME])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.count("\n") == 1 and expected in result.output, result.output


def test_a_gated_repo_works_with_a_token(tmp_path, monkeypatch, hub, zoo_home):
    state, _ = publish(hub, tmp_path, monkeypatch, gated=True)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    assert_is(zoo.load(NAME, device="cpu"), state)


def test_a_small_file_with_the_sha256_on_the_card_is_fetched_and_checked(tmp_path, monkeypatch, hub, zoo_home):
    state = linear(4)
    data = save(state)
    hub.add(REPO, "small.safetensors", data, lfs=False)  # no sha256 from the hub: the card's is the pin
    register(tmp_path, monkeypatch, f"hf://{REPO}/small.safetensors", extra=f"sha256: {sha(data)}")
    assert_is(zoo.load(NAME, device="cpu"), state)


def test_unreachable_endpoint_is_one_line_naming_the_offline_switch(tmp_path, monkeypatch, hub, zoo_home):
    publish(hub, tmp_path, monkeypatch)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    result = CliRunner().invoke(cli, ["fetch", NAME])
    assert result.exit_code == 1 and "cannot reach http://127.0.0.1:9" in result.output
    assert "HF_HUB_OFFLINE=1" in result.output and result.output.count("\n") == 1


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("hf://acme/tiny", "needs a file path inside the repo"),
        ("hf://acme/../x.bin", "needs a repo id"),
        ("hf://acme/tiny/../../etc/passwd", "needs a file path inside the repo"),
        ("hf://acme/tiny@../x.bin", "is not a branch, tag or commit name"),
        ("hf://acme/tiny/model.safetensors?download=1", "no query or fragment"),
        ("hf://acme/tiny/.hidden", "not a plain file name"),
    ],
)
def test_bad_hf_uris_are_refused_with_the_reason(uri, reason):
    problem = check_uri(uri)
    assert problem is not None and reason in problem


def test_a_sha256_prefix_on_an_hf_card_is_refused(tmp_path):
    data = {
        "models": {
            "m": {
                "task": "classifier",
                "builder": "torch.nn:Linear",
                "weights": {"v1": {"uri": "hf://acme/tiny/model.safetensors", "sha256_prefix": "abcdef12"}},
            }
        }
    }
    with pytest.raises(RegistryError, match="an hf:// file is pinned by the full sha256 the hub publishes"):
        parse_registry(data, file=str(tmp_path / "registry.yaml"), plugin="user")
    del data["models"]["m"]["weights"]["v1"]["sha256_prefix"]
    (card,) = parse_registry(data, file=str(tmp_path / "registry.yaml"), plugin="user")
    assert card.variant().hub_pinned


def test_cache_rm_resets_the_record_and_the_next_fetch_pins_the_new_file(tmp_path, monkeypatch, hub, zoo_home):
    """The way out that the 'replaced upstream' error names."""
    publish(hub, tmp_path, monkeypatch)
    zoo.fetch(NAME)
    other_state = linear(7)
    hub.add(REPO, "model.safetensors", save(other_state))
    removed = CliRunner().invoke(cli, ["cache", "rm", NAME])
    assert removed.exit_code == 0 and "pins/" in removed.output
    assert_is(zoo.load(NAME, device="cpu"), other_state)
    assert the_pin()["sha256"] == sha(save(other_state))


def test_a_busy_hub_is_asked_again(tmp_path, monkeypatch, hub, zoo_home):
    state, _ = publish(hub, tmp_path, monkeypatch)
    hub.busy = 2  # two 503s, then the answer
    assert_is(zoo.load(NAME, device="cpu"), state)
    assert [m for m, _ in hub.requests] == ["HEAD", "HEAD", "HEAD", "GET"]
    hub.busy = 99
    monkeypatch.setenv("ZOO_DOWNLOAD_RETRIES", "1")
    register(tmp_path, monkeypatch, f"hf://{REPO}/other.safetensors")
    result = CliRunner().invoke(cli, ["fetch", NAME])
    assert result.exit_code == 1 and "the hub answered HTTP 503" in result.output
