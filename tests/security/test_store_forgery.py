"""Forged weights never pass as verified: nothing a cached file says about itself is trusted (#20).

Before #20, a converted file was checked against the content digest written in its own metadata: edit the
tensors, rewrite that digest, and `zoo cache verify` said ok and `zoo.load` returned the forgery. A file may
even claim to be "converted" when the card names a plain safetensors download. Now the only references are
the card's sha256 (the file's name) and the sha256 zoo recorded, outside the file, when it converted it.
"""

from __future__ import annotations

import hashlib
import json

import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import zoo
from tests.httpserver import Behaviour
from tests.test_weights_store import assert_loaded, register, safetensors_bytes, tiny_state
from zoo._convert import content_digest
from zoo.cli import cli

torch.set_num_threads(1)


def forge(path, provenance: dict) -> None:
    """Rewrite `path` with tampered tensors and metadata that describes them faithfully (what an attacker does)."""
    tensors = {k: v + 1.0 for k, v in load_file(str(path)).items()}
    meta = {**provenance, "content_sha256": content_digest(tensors)}
    save_file(tensors, str(path), metadata={"zoo": json.dumps(meta, sort_keys=True)})


def converted(tmp_path, monkeypatch, server):
    state = tiny_state()
    ckpt = tmp_path / "tiny.th"
    torch.save({"state_dict": state}, ckpt)
    server.files["tiny.th"] = Behaviour(ckpt.read_bytes())
    register(tmp_path, monkeypatch, server.url("tiny.th"), ckpt.read_bytes(), fmt="torch-pickle")
    return state


def test_forged_converted_file_fails_verify(tmp_path, monkeypatch, server):
    converted(tmp_path, monkeypatch, server)
    path = zoo.fetch("tiny-linear")
    with safe_open(str(path), framework="pt") as f:
        provenance = json.loads(f.metadata()["zoo"])
    forge(path, provenance)
    result = CliRunner().invoke(cli, ["cache", "verify"])
    assert result.exit_code == 1, result.output
    assert "CORRUPT: sha256" in result.output and "when it converted" in result.output


def test_forged_converted_file_is_never_loaded(tmp_path, monkeypatch, server, caplog):
    state = converted(tmp_path, monkeypatch, server)
    path = zoo.fetch("tiny-linear")
    with safe_open(str(path), framework="pt") as f:
        provenance = json.loads(f.metadata()["zoo"])
    forge(path, provenance)
    assert_loaded(state)  # the forgery was removed and the real file fetched and converted again
    assert "are corrupt" in caplog.text and len(server.gets("tiny.th")) == 2


def test_downloaded_file_posing_as_converted_is_never_loaded(tmp_path, monkeypatch, server, zoo_home):
    """The card names a plain safetensors file; a forgery that carries converted-file provenance (source
    sha256 = the card's, and a matching content digest) is still not the card's file."""
    state = tiny_state()
    data = safetensors_bytes(tmp_path, state)
    server.files["tiny.safetensors"] = Behaviour(data)
    register(tmp_path, monkeypatch, server.url("tiny.safetensors"), data)
    path = zoo.fetch("tiny-linear")
    sha = hashlib.sha256(data).hexdigest()
    forge(path, {"source_sha256": sha, "source_format": "torch-pickle", "source_uri": "x", "zoo_version": "0"})
    result = CliRunner().invoke(cli, ["cache", "verify"])
    assert result.exit_code == 1 and "CORRUPT" in result.output
    assert_loaded(state)


def test_converted_file_without_zoos_record_is_not_trusted(tmp_path, monkeypatch, server, zoo_home):
    """Deleting the record (verified/<sha>.json) does not turn the file's own metadata back into a reference."""
    converted(tmp_path, monkeypatch, server)
    path = zoo.fetch("tiny-linear")
    with safe_open(str(path), framework="pt") as f:
        provenance = json.loads(f.metadata()["zoo"])
    forge(path, provenance)
    for record in (zoo_home / "verified").iterdir():
        record.unlink()
    result = CliRunner().invoke(cli, ["cache", "verify"])
    assert result.exit_code == 1 and "no record of converting it" in result.output


def test_cache_poisoned_by_a_plugin_fails_verify_once_the_plugin_is_gone(tmp_path, monkeypatch, server, zoo_home):
    """A process with a plugin that monkeypatches zoo (here: Store.verify says yes to anything) rewrites a cached
    converted file with forged tensors and a faithful digest; there, `zoo cache verify` says ok. In a later process
    without the plugin, the entry must not verify, and zoo.load must not return the forgery (before #20 both
    trusted the file's own digest)."""
    import os
    import subprocess
    import sys
    import textwrap

    state = converted(tmp_path, monkeypatch, server)
    path = zoo.fetch("tiny-linear")
    poison = textwrap.dedent(f"""\
        import json, zoo, zoo._store
        from safetensors import safe_open
        from safetensors.torch import load_file, save_file
        from zoo._convert import content_digest
        zoo._store.Store.verify = lambda self, entry: None  # the plugin's monkeypatch
        path = {str(path)!r}
        with safe_open(path, framework="pt") as f:
            meta = json.loads(f.metadata()["zoo"])
        tensors = {{k: v + 1.0 for k, v in load_file(path).items()}}
        save_file(tensors, path, metadata={{"zoo": json.dumps({{**meta, "content_sha256": content_digest(tensors)}})}})
        from click.testing import CliRunner
        from zoo.cli import cli
        print(CliRunner().invoke(cli, ["cache", "verify"]).output)
        """)
    env = {
        **os.environ,
        "ZOO_HOME": str(zoo_home),
        "ZOO_REGISTRY": str(tmp_path / "registry.yaml"),
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run([sys.executable, "-c", poison], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "1 file verified." in done.stdout  # with the plugin: the forgery passes
    result = CliRunner().invoke(cli, ["cache", "verify"])  # this process never had the plugin
    assert result.exit_code == 1 and "CORRUPT" in result.output
    assert_loaded(state)


def test_a_cache_written_before_the_record_had_digests_is_migrated_not_refetched(
    tmp_path, monkeypatch, server, zoo_home
):
    """A stamp from before #20 (path, size, mtime only) still matching the file is zoo's own record: the first
    load records the digest instead of converting again; a file changed since is not accepted by it."""
    state = converted(tmp_path, monkeypatch, server)
    path = zoo.fetch("tiny-linear")
    (record_path,) = (zoo_home / "verified").iterdir()
    old = {k: v for k, v in json.loads(record_path.read_text()).items() if k in ("path", "size", "mtime_ns")}
    record_path.write_text(json.dumps(old))
    assert_loaded(state)
    assert len(server.gets("tiny.th")) == 1
    assert json.loads(record_path.read_text())["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    record_path.write_text(json.dumps(old))
    with safe_open(str(path), framework="pt") as f:
        provenance = json.loads(f.metadata()["zoo"])
    forge(path, provenance)  # changes the mtime: the old stamp no longer vouches for it
    assert_loaded(state)
    assert len(server.gets("tiny.th")) == 2
