"""Plugins that end, hang or hijack: real installed distributions, `zoo` run in a subprocess (#20)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_plugins import fake_distribution

GOOD = """\
    import zoo

    @zoo.hookimpl
    def register_models(register):
        register({"models": {"third-party-net": {"task": "classifier", "builder": "torch.nn:Identity"}}})
"""


def zoo_cli(site: Path, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(site), **env}
    return subprocess.run(
        [sys.executable, "-m", "zoo", *args], env=full_env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    fake_distribution(site, "zoo-good", "good", GOOD)
    return site


def assert_lists_everything_else(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr
    assert "resnet56-cifar" in result.stdout and "third-party-net" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("hook", ["register_models", "register_commands"])
def test_system_exit_in_a_hook_is_contained(site, hook):
    fake_distribution(
        site,
        "zoo-quitter",
        "quitter",
        f"""\
        import sys
        import zoo

        @zoo.hookimpl
        def {hook}():
            sys.exit(3)
    """,
    )
    result = zoo_cli(site, "list")
    assert_lists_everything_else(result)
    assert f"plugin 'quitter' raised in {hook}: SystemExit: 3" in result.stderr


def test_os_exit_at_import_does_not_end_zoo_list(site):
    fake_distribution(site, "zoo-exiter", "exiter", "import os\nos._exit(0)\n")
    result = zoo_cli(site, "list")
    assert_lists_everything_else(result)
    assert "plugin 'exiter' ended the process while being imported (exit code 0)" in result.stderr
    shown = zoo_cli(site, "plugins", "--json")
    (record,) = [r for r in json.loads(shown.stdout) if r["name"] == "exiter"]
    assert record["error"].startswith("ended the process while being imported")


def test_slow_import_is_cut_off_and_remembered(site):
    fake_distribution(site, "zoo-sleeper", "sleeper", "import time\ntime.sleep(30)\n")
    start = time.monotonic()
    first = zoo_cli(site, "list", ZOO_PLUGIN_TIMEOUT="2")
    assert time.monotonic() - start < 15
    assert_lists_everything_else(first)
    assert "plugin 'sleeper' took longer than 2 s to import" in first.stderr
    start = time.monotonic()
    again = zoo_cli(site, "list", ZOO_PLUGIN_TIMEOUT="2")  # the probe's verdict is cached for this plugin set
    assert time.monotonic() - start < 10
    assert_lists_everything_else(again)
    assert "took longer than 2 s to import" in again.stderr


# A registration hook that hangs or ends the process when it is called, not at import: the probe runs the hooks
# `zoo list` calls (register_commands, register_models) and `zoo list --help` calls (register_tasks) too.
HOOK_ARGS = {"register_models": "register", "register_tasks": "register", "register_commands": "cli"}
HOOK_RUN = {"register_models": ("list",), "register_commands": ("list",), "register_tasks": ("list", "--help")}


def plugin_whose_hook(site: Path, hook: str, body: str) -> None:
    fake_distribution(
        site,
        "zoo-hooked",
        "hooked",
        f"""\
        import os
        import time
        import zoo

        @zoo.hookimpl
        def {hook}({HOOK_ARGS[hook]}):
            {body}
    """,
    )


def assert_ran_without_the_plugin(result: subprocess.CompletedProcess, args: tuple[str, ...]) -> None:
    if args == ("list",):
        assert_lists_everything_else(result)
    else:  # `zoo list --help` names the tasks the loaded plugins register
        assert result.returncode == 0, result.stderr
        assert "Only models of this task (classifier, detector" in " ".join(result.stdout.split())
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("hook", sorted(HOOK_RUN))
def test_a_hook_that_hangs_is_cut_off_and_remembered(site, hook):
    plugin_whose_hook(site, hook, "time.sleep(60)")
    args = HOOK_RUN[hook]
    start = time.monotonic()
    first = zoo_cli(site, *args, timeout=30, ZOO_PLUGIN_TIMEOUT="2")
    assert time.monotonic() - start < 15
    assert_ran_without_the_plugin(first, args)
    assert f"plugin 'hooked' took longer than 2 s in {hook} (ZOO_PLUGIN_TIMEOUT" in first.stderr
    start = time.monotonic()
    again = zoo_cli(site, *args, timeout=30, ZOO_PLUGIN_TIMEOUT="2")  # the verdict is cached for this plugin set
    assert time.monotonic() - start < 10
    assert_ran_without_the_plugin(again, args)
    assert f"took longer than 2 s in {hook}" in again.stderr


@pytest.mark.parametrize("hook", sorted(HOOK_RUN))
def test_a_hook_that_ends_the_process_does_not_end_zoo(site, hook):
    plugin_whose_hook(site, hook, "os._exit(0)")
    args = HOOK_RUN[hook]
    result = zoo_cli(site, *args, timeout=30)
    assert_ran_without_the_plugin(result, args)
    assert f"plugin 'hooked' ended the process in {hook} (exit code 0)" in result.stderr
    shown = zoo_cli(site, "plugins", "--json")
    (record,) = [r for r in json.loads(shown.stdout) if r["name"] == "hooked"]
    assert record["error"] == f"ended the process in {hook} (exit code 0)"


def test_a_plugin_whose_hooks_behave_still_loads_after_the_probe_ran_them(site):
    """The probe calls every hook in its child; a well-behaved plugin's models, commands and tasks are all there."""
    fake_distribution(
        site,
        "zoo-complete",
        "complete",
        """\
        import click
        import zoo

        @zoo.hookimpl
        def register_models(register):
            register({"models": {"complete-net": {"task": "classifier", "builder": "torch.nn:Identity"}}})

        @zoo.hookimpl
        def register_tasks(register):
            register("completing", "zoo_complete_mod:Task")

        @zoo.hookimpl
        def register_commands(cli):
            @cli.command("complete-hello")
            def hello():
                click.echo("hello from complete")
    """,
    )
    listed = zoo_cli(site, "list")
    assert_lists_everything_else(listed)
    assert "complete-net" in listed.stdout and "plugin 'complete'" not in listed.stderr
    assert "completing" in " ".join(zoo_cli(site, "list", "--help").stdout.split())
    assert zoo_cli(site, "complete-hello").stdout.strip() == "hello from complete"


EVIL_CLASSIFIER = """\
    import zoo

    @zoo.hookimpl
    def register_models(register):
        register({"models": {"resnet56-cifar": {"task": "classifier", "builder": "os:system"}}})
"""


def test_a_third_party_package_cannot_take_a_builtin_plugin_name(site):
    fake_distribution(site, "evil-dist", "classifier", EVIL_CLASSIFIER, version="6.6")
    result = zoo_cli(site, "list", "--json")
    assert result.returncode == 0, result.stderr
    records = {r["name"]: r for r in json.loads(result.stdout)}
    assert records["resnet56-cifar"]["plugin"] == "classifier"
    assert "classifier/resnet56-cifar" == records["resnet56-cifar"]["qualified_name"]
    assert "'evil-dist 6.6'" in result.stderr and "'visionzoo" in result.stderr and "refused" in result.stderr
    info = json.loads(zoo_cli(site, "info", "resnet56-cifar", "--json").stdout)
    assert info["builder"] == "zoo_classifier.models:build_cifar_resnet"
    shown = {r["name"]: r for r in json.loads(zoo_cli(site, "plugins", "--json").stdout)}
    assert shown["classifier"]["distribution"] == "visionzoo"
    assert shown["classifier"]["refused"] == ["evil-dist 6.6"]


def test_zoo_plugins_shows_import_times(site):
    result = zoo_cli(site, "plugins", "--json")
    records = {r["name"]: r for r in json.loads(result.stdout)}
    assert isinstance(records["good"]["import_seconds"], float)
    assert isinstance(records["classifier"]["import_seconds"], float)
    table = zoo_cli(site, "plugins").stdout
    header = table.splitlines()[0].split()
    assert "import" in header
    row = next(line for line in table.splitlines() if line.startswith("good "))
    assert " ms" in row


def test_a_plugin_name_that_is_not_one_word_is_refused(site):
    fake_distribution(site, "zoo-weird", "wei\x1b[8mrd", GOOD.replace("third-party-net", "weird-net"))
    result = zoo_cli(site, "list")
    assert_lists_everything_else(result)
    assert "weird-net" not in result.stdout
    assert "plugin 'wei\\x1b[8mrd' has a name that is not one word" in result.stderr


def test_builtin_plugins_alone_are_never_probed(zoo_home):
    result = subprocess.run([sys.executable, "-m", "zoo", "list"], capture_output=True, text=True)
    assert result.returncode == 0 and "resnet56-cifar" in result.stdout
    assert not (zoo_home / "plugins").exists()  # no child process, no cache file: `zoo list` costs what it did
