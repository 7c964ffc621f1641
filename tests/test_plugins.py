"""Plugin discovery and isolation: entry points, inline plugins, and plugins that break."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pluggy
import pytest
from click.testing import CliRunner

import zoo
from zoo import hookspecs
from zoo._plugins import Plugins, reset_plugins
from zoo._registry import Registry, reset_registry
from zoo.cli import cli
from zoo.errors import UnknownModelError

CARDS = {"models": {"inline-net": {"task": "classifier", "builder": "torch.nn:Identity"}}}


def fake_distribution(site: Path, dist: str, plugin: str, module_source: str, *, version: str = "1.0") -> None:
    """A minimal installed distribution (dist-info + module) exposing one `zoo.plugins` entry point."""
    module = f"{dist.replace('-', '_')}_mod"
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[zoo.plugins]\n{plugin} = {module}\n")
    (site / f"{module}.py").write_text(textwrap.dedent(module_source))


@pytest.fixture()
def pm() -> Plugins:
    """A fresh plugin set with the specs loaded but no entry points (pluggy's `pm` fixture)."""
    return Plugins(pluggy.PluginManager("zoo"))


def registry_with(pm: Plugins, *plugins: tuple[str, object]) -> Registry:
    pm.load_entry_points()
    for name, plugin in plugins:
        pm.register(plugin, name)
    return Registry.load(pm)


def test_hookimpl_is_reexported():
    assert zoo.hookimpl is hookspecs.hookimpl


def test_builtin_classifier_is_found_through_its_entry_point(pm):
    pm.load_entry_points()
    info = pm.infos["classifier"]
    assert (info.distribution, info.builtin, info.error, info.module) == ("visionzoo", True, None, "zoo_classifier")


def test_inline_plugin_registers_cards(pm):
    class InlinePlugin:
        @zoo.hookimpl
        def register_models(self, register):
            register(CARDS)

    registry = registry_with(pm, ("inline", InlinePlugin()))
    card = registry.card("inline/inline-net")
    assert card.plugin == "inline" and registry.card("inline-net") is card
    assert pm.infos["inline"].models == ["inline-net"] and pm.infos["inline"].hooks == ["register_models"]


def test_hook_that_raises_is_reported_and_contributes_nothing(pm, caplog):
    class HalfWay:
        @zoo.hookimpl
        def register_models(self, register):
            register(CARDS)
            raise RuntimeError("database on fire")

    class Good:
        @zoo.hookimpl
        def register_models(self, register):
            register({"models": {"good-net": {"task": "classifier", "builder": "torch.nn:Identity"}}})

    registry = registry_with(pm, ("halfway", HalfWay()), ("good", Good()))
    assert "good-net" in registry.by_short and "inline-net" not in registry.by_short
    assert "resnet56-cifar" in registry.by_short
    assert pm.infos["halfway"].error == "raised in register_models: RuntimeError: database on fire"
    assert "plugin 'halfway' raised in register_models" in caplog.text


def test_plugin_with_a_broken_registry_file_is_isolated(pm, tmp_path):
    (tmp_path / "bad.yaml").write_text("models:\n  net: {task: classifier}\n")

    class BadFile:
        @zoo.hookimpl
        def register_models(self, register):
            register(tmp_path / "bad.yaml")

    registry = registry_with(pm, ("badfile", BadFile()))
    assert "entry 'net', field 'builder': missing required field" in pm.infos["badfile"].error
    assert str(tmp_path / "bad.yaml") in pm.infos["badfile"].error
    assert "resnet56-cifar" in registry.by_short


def test_unknown_hook_name_is_rejected(pm):
    class Typo:
        @zoo.hookimpl
        def register_modles(self, register):
            pass

    pm.register(Typo(), "typo")
    assert "unknown hook 'register_modles'" in pm.infos["typo"].error
    assert "register_models" in pm.infos["typo"].error


def test_card_claiming_another_plugin_is_rejected(pm):
    class Liar:
        @zoo.hookimpl
        def register_models(self, register):
            register({"models": {"x": {"task": "t", "builder": "a:b", "plugin": "classifier"}}})

    registry_with(pm, ("liar", Liar()))
    assert "this file belongs to plugin 'liar', the card says 'classifier'" in pm.infos["liar"].error


# -- real entry points from installed distributions -------------------------------------------------

BROKEN_ON_IMPORT = "raise ImportError('No module named torchx (needed by broken-plugin)')\n"
GOOD = """\
    import zoo

    @zoo.hookimpl
    def register_models(register):
        register({"models": {"third-party-net": {"task": "classifier", "builder": "torch.nn:Identity"}}})
"""


@pytest.fixture()
def site(tmp_path, monkeypatch) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    fake_distribution(site, "broken-plugin", "broken", BROKEN_ON_IMPORT)
    fake_distribution(site, "zoo-good", "good", GOOD, version="2.5")
    monkeypatch.syspath_prepend(str(site))
    reset_registry()
    return site


def test_plugin_failing_to_import_breaks_nothing(site, caplog):
    names = zoo.list_models()
    assert "third-party-net" in names and "resnet56-cifar" in names
    plugins = zoo._registry.get_registry().plugins
    assert plugins.infos["broken"].error == (
        "failed to import: ImportError: No module named torchx (needed by broken-plugin)"
    )
    assert plugins.infos["good"].version == "2.5" and plugins.infos["good"].distribution == "zoo-good"
    warnings = [r.getMessage() for r in caplog.records if "broken" in r.getMessage()]
    assert warnings == [
        "zoo: plugin 'broken' failed to import: ImportError: No module named torchx (needed by "
        "broken-plugin) (skipped; see 'zoo plugins', silence with ZOO_DISABLE_PLUGINS=broken)"
    ]


@pytest.mark.parametrize(
    "env, present, absent",
    [
        ({"ZOO_DISABLE_PLUGINS": "good"}, ["resnet56-cifar"], ["third-party-net"]),
        ({"ZOO_LOAD_PLUGINS": "good"}, ["third-party-net"], ["resnet56-cifar"]),
        ({"ZOO_LOAD_PLUGINS": "good,classifier"}, ["third-party-net", "resnet56-cifar"], []),
        ({"ZOO_LOAD_PLUGINS": ""}, [], ["third-party-net", "resnet56-cifar"]),
    ],
)
def test_plugin_selection_variables(site, monkeypatch, env, present, absent):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_registry()
    names = zoo.list_models()
    assert all(n in names for n in present) and not any(n in names for n in absent)
    # a plugin left out by ZOO_LOAD_PLUGINS is never imported (so it cannot fail either), but still listed
    broken = zoo._registry.get_registry().plugins.infos["broken"]
    if "ZOO_LOAD_PLUGINS" in env:
        assert broken.error is None and broken.skipped == "not named in ZOO_LOAD_PLUGINS"
    else:
        assert broken.error.startswith("failed to import") and broken.skipped is None


def test_model_of_a_disabled_builtin_plugin_says_why(monkeypatch):
    monkeypatch.setenv("ZOO_DISABLE_PLUGINS", "classifier")
    reset_registry()
    with pytest.raises(
        UnknownModelError,
        match=r"Model 'resnet56-cifar' is unavailable: its plugin 'classifier' "
        r"is not loaded \(disabled by ZOO_DISABLE_PLUGINS\)",
    ):
        zoo.card("resnet56-cifar")


def test_zoo_plugins_shows_a_disabled_plugin(monkeypatch):
    monkeypatch.setenv("ZOO_DISABLE_PLUGINS", "classifier")
    reset_registry()
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0
    row = next(line for line in result.output.splitlines() if line.startswith("classifier "))
    assert "skipped" in row and "classifier: disabled by ZOO_DISABLE_PLUGINS" in result.output


def test_cli_with_a_broken_plugin_warns_once_and_still_lists(site):
    env = {**__import__("os").environ, "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-m", "zoo", "list"], env=env, capture_output=True, text=True)
    assert result.returncode == 0
    assert "third-party-net" in result.stdout and "resnet56-cifar" in result.stdout
    assert result.stderr.strip().splitlines() == [
        "zoo: plugin 'broken' failed to import: ImportError: No module named torchx (needed by broken-plugin) "
        "(skipped; see 'zoo plugins', silence with ZOO_DISABLE_PLUGINS=broken)"
    ]
    shown = subprocess.run([sys.executable, "-m", "zoo", "plugins", "--json"], env=env, capture_output=True, text=True)
    records = {r["name"]: r for r in json.loads(shown.stdout)}
    assert records["broken"]["error"].startswith("failed to import: ImportError")
    assert records["good"]["models"] == ["third-party-net"] and records["good"]["builtin"] is False
    assert records["classifier"]["builtin"] is True and records["classifier"]["error"] is None


def teardown_module() -> None:
    reset_plugins()


def test_plugin_registering_a_model_twice_is_isolated(pm):
    class Twice:
        @zoo.hookimpl
        def register_models(self, register):
            register(CARDS)
            register(CARDS)

    registry = registry_with(pm, ("twice", Twice()))
    assert pm.infos["twice"].error == "registers model 'inline-net' twice"
    assert "inline-net" not in registry.by_short and "resnet56-cifar" in registry.by_short


def test_hook_receives_only_the_arguments_it_declares(pm):
    calls = []

    class NoArgs:
        @zoo.hookimpl
        def register_models(self):
            calls.append("called")

    registry_with(pm, ("noargs", NoArgs()))
    assert calls == ["called"] and pm.infos["noargs"].error is None


COMMANDS = """\
    import click
    import zoo

    @zoo.hookimpl
    def register_models(register):
        register({"models": {"cmd-net": {"task": "classifier", "builder": "torch.nn:Identity"}}})

    @zoo.hookimpl
    def register_commands(cli):
        @cli.command("list")
        def hijack():
            click.echo("hijacked")

        @cli.command("hello")
        def hello():
            raise zoo.ZooError("Something the user should read, in one line.")
"""


def test_plugin_commands_cannot_replace_builtins_and_errors_stay_one_line(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    fake_distribution(site, "zoo-commands", "commands", COMMANDS)
    env = {**__import__("os").environ, "PYTHONPATH": str(site)}
    listed = subprocess.run([sys.executable, "-m", "zoo", "list"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0 and "hijacked" not in listed.stdout and "cmd-net" in listed.stdout
    assert "tried to replace the built-in command 'zoo list' (undone)" in listed.stderr
    hello = subprocess.run([sys.executable, "-m", "zoo", "hello"], env=env, capture_output=True, text=True)
    assert hello.returncode == 1
    assert hello.stderr.strip().splitlines()[-1] == "Error: Something the user should read, in one line."
    assert "Traceback" not in hello.stderr
    shown = subprocess.run([sys.executable, "-m", "zoo", "plugins", "--json"], env=env, capture_output=True, text=True)
    (record,) = [r for r in json.loads(shown.stdout) if r["name"] == "commands"]
    assert record["error"] is None and record["models"] == ["cmd-net"]
    assert record["problems"] == ["tried to replace the built-in command 'zoo list' (undone)"]
