"""The one plugin manager: discovery through entry points, and an error boundary around every plugin.

Built-in task plugins are found exactly like third-party ones, through the ``zoo.plugins``
entry-point group, so the public path is the one we use every day. A plugin that fails to import, that
implements a hook zoo does not know, or that raises inside a hook (anything but KeyboardInterrupt, SystemExit
included) is recorded, reported once as a warning line, and skipped; it never stops the other plugins or
``zoo list``. A third-party plugin is first imported, and its registration hooks called, in a child process (the
probe, cached per installed plugin set), so one that hangs or ends the process at import or in a hook is skipped
instead of taking zoo with it (#20).
"""

from __future__ import annotations

import functools
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pluggy

from . import _config, hookspecs

__all__ = ["ENTRY_POINT_GROUP", "PluginInfo", "Plugins", "escape", "get_plugins", "probe", "reset_plugins"]

ENTRY_POINT_GROUP: Final = "zoo.plugins"
_PLUGIN_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # the card parser's WORD_RE
BUILTIN_DISTRIBUTION: Final = "visionzoo"


@dataclass
class PluginInfo:
    """What `zoo plugins` shows about one plugin."""

    name: str
    module: str | None = None
    distribution: str | None = None
    version: str | None = None
    builtin: bool = False
    hooks: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    error: str | None = None  # why the plugin was skipped (import failure, rejected, register_models raised)
    problems: list[str] = field(default_factory=list)  # non-fatal: a hook other than register_models raised
    skipped: str | None = None  # why the plugin was not imported at all (ZOO_DISABLE_PLUGINS / ZOO_LOAD_PLUGINS)
    import_seconds: float | None = None  # how long importing its entry-point module took (this process or the probe)
    refused: list[str] = field(default_factory=list)  # other distributions claiming this plugin name ("dist version")
    package: str | None = None  # the top-level package its code lives in: builders there are trusted (#20)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "module": self.module,
            "builtin": self.builtin,
            "hooks": self.hooks,
            "models": self.models,
            "error": self.error,
            "problems": self.problems,
            "skipped": self.skipped,
            "import_seconds": self.import_seconds,
            "refused": self.refused,
        }


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a plugin's exception may fail even at str()
        text = "<unprintable>"
    return f"{type(exc).__name__}: {text}".strip()


def escape(text: str) -> str:
    """`text` with every non-printable character (ANSI escapes, bidi overrides, newlines) written as an escape.

    Strings from cards and plugins go to a terminal through this, so none can move the cursor, recolour the
    screen or reorder what follows (#20); printable text of any script stays as it is.
    """
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char.isprintable():
            out.append(char)
        elif char in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[char])
        else:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def _top_package(value: str | None) -> str | None:
    return value.partition(":")[0].partition(".")[0].strip() or None if value else None


def _boundary(exc: BaseException) -> None:
    """Re-raise what a plugin boundary must let through: only the user's Ctrl-C."""
    if isinstance(exc, KeyboardInterrupt):
        raise exc


# -- the probe: import third-party plugins in a child process first ----------------------------------------

PROBE_MARK: Final = "@@zoo-probe@@ "
# The hooks the probe calls after the import, in the order `zoo` calls them: the CLI adds commands first, then
# `zoo list` reads the cards, and `--help` / the runtime ask for the tasks.
PROBE_HOOKS: Final = ("register_commands", "register_models", "register_tasks")
# The child imports the plugin, then calls each of its registration hooks with throw-away arguments, and writes
# one mark before each step, so the parent can say where a child that hung or ended stopped. The marks go out on a
# private copy of stdout (os.dup: not inherited); the plugin's own fd 1 is /dev/null, so neither its prints nor a
# process it leaves behind can fake or hold up the verdict. Exceptions are the parent's business: it imports and
# calls the plugin again in its own boundary and reports them itself.
_PROBE_CODE: Final = """\
import json, os, sys, time
verdict = os.dup(1)
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
sys.path[:] = json.loads(sys.argv[1])
def say(**fields):
    os.write(verdict, ("\\n" + sys.argv[5] + json.dumps(fields) + "\\n").encode())
import zoo
from importlib.metadata import EntryPoint
start = time.perf_counter()
try:
    plugin = EntryPoint(name=sys.argv[2], value=sys.argv[3], group=sys.argv[4]).load()
except BaseException:
    plugin = None
seconds = time.perf_counter() - start
say(stage="imported", seconds=seconds)
impls = {}
if plugin is not None:
    try:
        import pluggy
        from zoo import hookspecs
        manager = pluggy.PluginManager("zoo")
        manager.add_hookspecs(hookspecs)
        manager.register(plugin, name=sys.argv[2])
        impls = {hook: getattr(manager.hook, hook).get_hookimpls() for hook in json.loads(sys.argv[6])}
    except BaseException:
        impls = {}
def cli():
    from zoo.cli import cli
    return cli
def ignore(*args, **kwargs):
    pass
for hook, found in impls.items():
    for impl in found:
        say(stage="calling", hook=hook)
        try:
            args = {"cli": cli()} if "cli" in impl.argnames else {"register": ignore}
            impl.function(**{k: v for k, v in args.items() if k in impl.argnames})
        except BaseException:
            pass
say(stage="done", seconds=seconds)
os._exit(0)  # the plugin's atexit handlers and threads are none of the probe's business
"""


def plugin_timeout() -> float:
    """`ZOO_PLUGIN_TIMEOUT` (default 10): seconds a third-party plugin's import and registration hooks, together,
    may take in the probe.

    Lenient on purpose: this runs before the CLI's error handling, and a typo must not stop every command.
    """
    raw = os.environ.get("ZOO_PLUGIN_TIMEOUT", "").strip()
    try:
        value = float(raw) if raw else 10.0
    except ValueError:
        value = 10.0
    return value if value > 0 else 10.0


def _dist_identity(ep: Any) -> list[Any]:
    dist = getattr(ep, "dist", None)
    path = str(getattr(dist, "_path", "") or "")
    try:
        mtime = os.stat(path).st_mtime_ns if path else 0
    except OSError:
        mtime = 0
    return [ep.name, ep.value, dist.metadata["Name"] if dist else None, dist.version if dist else None, path, mtime]


def _probe_file(eps: list[Any]) -> Path | None:
    import hashlib
    import json

    from . import _config

    try:
        root = _config.cache_root()
    except Exception:  # noqa: BLE001 - no cache root: probe every time
        return None
    # The probe's own code is part of the key: a verdict from an older probe (one that did not call the hooks, say)
    # is not reused.
    key = json.dumps([sys.executable, sys.path, sorted(_dist_identity(ep) for ep in eps), _PROBE_CODE], default=str)
    return root / "plugins" / f"probe-{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def _run_probes(eps: list[Any]) -> dict[str, dict[str, Any]]:
    """Import each entry point and call its registration hooks in its own child process, all at once.

    {name: {"seconds"} or {"error"}}; one deadline, `ZOO_PLUGIN_TIMEOUT`, for the import and the hooks together.
    """
    import json
    import subprocess

    timeout = plugin_timeout()
    children = {}
    for ep in eps:
        cmd = [
            sys.executable,
            "-c",
            _PROBE_CODE,
            json.dumps(sys.path),
            ep.name,
            ep.value,
            ENTRY_POINT_GROUP,
            PROBE_MARK,
            json.dumps(PROBE_HOOKS),
        ]
        # A session of its own, so that the whole group (a plugin may start processes) can be killed at once.
        children[ep.name] = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            errors="replace",
            start_new_session=os.name == "posix",
        )
    deadline = time.monotonic() + timeout
    verdicts: dict[str, dict[str, Any]] = {}
    for name, child in children.items():
        try:  # a child that finished while another was awaited still needs a moment to hand over its output
            out, _ = child.communicate(timeout=max(0.5, deadline - time.monotonic()))
            hung = False
        except subprocess.TimeoutExpired:
            out, hung = _kill(child), True
        marks = []
        for line in out.splitlines():
            if line.startswith(PROBE_MARK):
                try:
                    marks.append(json.loads(line[len(PROBE_MARK) :]))
                except ValueError:
                    continue
        last = marks[-1] if marks and isinstance(marks[-1], dict) else {}
        where = (
            f"in {last.get('hook')}"
            if last.get("stage") == "calling"
            else "to import"
            if hung
            else "while being imported"
        )
        if hung:
            verdicts[name] = {
                "error": f"took longer than {timeout:g} s {where} (ZOO_PLUGIN_TIMEOUT; checked once "
                "per installed plugin set)"
            }
        elif child.returncode == 0 and last.get("stage") == "done":
            verdicts[name] = {"seconds": last.get("seconds")}
        else:
            how = f"exit code {child.returncode}" if child.returncode >= 0 else f"signal {-child.returncode}"
            verdicts[name] = {"error": f"ended the process {where} ({how})"}
    return verdicts


def _kill(child: Any) -> str:
    """Kill a probe and whatever it started; never wait on a pipe a grandchild may still hold. Its output so far."""
    import signal
    import subprocess

    try:
        if os.name == "posix":
            os.killpg(child.pid, signal.SIGKILL)
        else:
            child.kill()
    except OSError:
        pass
    try:
        out, _ = child.communicate(timeout=1)
    except subprocess.TimeoutExpired as exc:
        out = exc.output
    if isinstance(out, bytes):
        out = out.decode(errors="replace")
    return out or ""


def probe(eps: list[Any]) -> dict[str, dict[str, Any]]:
    """The probe's verdict per entry point, from the cache when this exact plugin set was probed before.

    Only plugins that hang or end the process are refused on the probe's word; an ordinary exception is
    left to the real import, which reports it (and sees a fixed dependency without a stale cache).
    """
    import json

    if not eps:
        return {}
    path = _probe_file(eps)
    cached: dict[str, dict[str, Any]] = {}
    if path is not None:
        try:
            cached = json.loads(path.read_text())
        except (OSError, ValueError):
            cached = {}
    missing = [ep for ep in eps if not isinstance(cached.get(ep.name), dict)]
    if missing:
        cached.update(_run_probes(missing))
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f"{path.name}.{os.getpid()}.partial")
                tmp.write_text(json.dumps(cached, indent=1))
                os.replace(tmp, path)
            except OSError:
                pass  # a read-only cache: probe again next time
    return cached


class Plugins:
    """A pluggy manager plus what we learned while loading each plugin."""

    def __init__(self, manager: pluggy.PluginManager | None = None) -> None:
        self.manager: Final = manager or pluggy.PluginManager("zoo")
        self.manager.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}

    # -- loading -----------------------------------------------------------------------------------
    def load_entry_points(self) -> None:
        """Import and register every selected plugin of the entry-point group, each in its own boundary."""
        from importlib.metadata import entry_points

        selected = _config.selected_plugins()
        disabled = _config.disabled_plugins()
        claims: dict[str, list[Any]] = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist else None
            same = claims.setdefault(ep.name, [])
            if not any((getattr(e, "dist", None) and e.dist.metadata["Name"]) == dist_name for e in same):
                same.append(ep)  # one distribution found twice on sys.path: the first copy, as for any import
        to_import = []
        for name, eps in claims.items():
            if name in self.infos:
                continue
            # A built-in plugin name is never taken over: the built-in wins wherever it sits on sys.path (#20).
            # Between third parties the first on sys.path wins; either way the others are refused out loud.
            builtin = [ep for ep in eps if _dist_name(ep) == BUILTIN_DISTRIBUTION]
            chosen = builtin[0] if builtin else eps[0]
            info = PluginInfo(
                name=name,
                module=chosen.value,
                distribution=_dist_name(chosen),
                version=_dist_version(chosen),
                package=_top_package(chosen.value),
            )
            info.builtin = info.distribution == BUILTIN_DISTRIBUTION
            self.infos[name] = info
            for other in eps:
                if other is not chosen:
                    claimant = f"{_dist_name(other) or '?'} {_dist_version(other) or ''}".strip()
                    info.refused.append(claimant)
                    owner = f"{info.distribution or '?'} {info.version or ''}".strip()
                    self._warn(
                        f"zoo: plugin name {name!r} claimed by distribution {claimant!r} was refused: it "
                        f"belongs to {owner!r}"
                        + (" (built-in)" if info.builtin else " (first on sys.path)")
                        + "; uninstall one of them"
                    )
            if not _PLUGIN_NAME_RE.fullmatch(name):  # it becomes part of every qualified model name (#20)
                self._fail(info, "has a name that is not one word of letters, digits, '.', '-' and '_'")
                continue
            if name in disabled:
                info.skipped = "disabled by ZOO_DISABLE_PLUGINS"
                continue
            if selected is not None and name not in selected:
                info.skipped = "not named in ZOO_LOAD_PLUGINS"
                continue
            to_import.append((chosen, info))
        verdicts = probe([ep for ep, info in to_import if not info.builtin])
        for ep, info in to_import:
            verdict = verdicts.get(ep.name, {})
            if "error" in verdict:
                self._fail(info, verdict["error"])
                continue
            start = time.perf_counter()
            try:
                plugin = ep.load()
            except BaseException as exc:  # noqa: BLE001 - a plugin may raise anything, even SystemExit
                _boundary(exc)
                info.import_seconds = time.perf_counter() - start
                self._fail(info, f"failed to import: {_describe(exc)}")
                continue
            info.import_seconds = time.perf_counter() - start
            self.register(plugin, ep.name, info)

    def register(self, plugin: object, name: str, info: PluginInfo | None = None) -> None:
        """Register one plugin object (a module or an instance with hookimpls); record a bad one."""
        if info is None:
            module = getattr(plugin, "__name__", None) if isinstance(plugin, type(sys)) else type(plugin).__module__
            info = self.infos.setdefault(name, PluginInfo(name=name, module=module, package=_top_package(module)))
        try:
            self.manager.register(plugin, name=name)
            # Reject hooks zoo does not define (a typo would otherwise be silently ignored).
            for hook_caller in self.manager.get_hookcallers(plugin) or []:
                if not hook_caller.has_spec():
                    raise pluggy.PluginValidationError(
                        plugin,
                        f"unknown hook {hook_caller.name!r}; zoo's hooks are: "
                        + ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("register_"))),
                    )
        except BaseException as exc:  # noqa: BLE001 - SystemExit too
            _boundary(exc)
            if self.manager.is_registered(plugin):
                self.manager.unregister(plugin)
            self._fail(info, f"was rejected: {_describe(exc)}")
            return
        info.hooks = sorted(hc.name for hc in self.manager.get_hookcallers(plugin) or [])

    def _fail(self, info: PluginInfo, message: str, *, fatal: bool = True) -> None:
        if fatal:
            info.error = message
        else:
            info.problems.append(message)
        disable = f"ZOO_DISABLE_PLUGINS={info.name}"
        self._warn(f"zoo: plugin {info.name!r} {message} (skipped; see 'zoo plugins', silence with {disable})")

    @staticmethod
    def _warn(line: str) -> None:
        import logging  # only when something went wrong: the import costs ~5 ms per CLI start

        logging.getLogger("zoo").warning("%s", escape(line))

    # -- calling -----------------------------------------------------------------------------------
    def each(self, hook_name: str, **kwargs: Any) -> Iterator[tuple[str, Callable[[], Any]]]:
        """Yield (plugin name, call) per implementation of one hook, in registration order.

        Each call passes only the arguments that implementation declares, as pluggy does, so a hook
        argument added later never breaks an older plugin.
        """
        caller = getattr(self.manager.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):  # pluggy stores LIFO; we report in load order
            wanted = {k: v for k, v in kwargs.items() if k in impl.argnames}
            yield impl.plugin_name, functools.partial(impl.function, **wanted)

    def call_isolated(
        self, hook_name: str, make_kwargs: Callable[[str], dict[str, Any]], *, fatal: bool = True
    ) -> None:
        """Call `hook_name` on each plugin separately; a plugin that raises is recorded and skipped.

        pluggy's own hook call stops at the first exception, which would let one broken plugin hide
        every plugin after it; calling implementations one by one keeps them independent. With
        ``fatal=False`` the failure is recorded as a problem and the plugin stays active (its models too).
        """
        caller = getattr(self.manager.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            name = impl.plugin_name
            try:
                impl.function(**{k: v for k, v in make_kwargs(name).items() if k in impl.argnames})
            except BaseException as exc:  # noqa: BLE001 - SystemExit too: a plugin must not end `zoo list`
                _boundary(exc)
                info = self.infos.setdefault(name, PluginInfo(name=name))
                self._fail(info, f"raised in {hook_name}: {_describe(exc)}", fatal=fatal)

    def fail_softly(self, name: str, message: str) -> None:
        """Record a non-fatal problem of plugin `name` (shown by `zoo plugins`, warned once)."""
        self._fail(self.infos.setdefault(name, PluginInfo(name=name)), message, fatal=False)

    def fail(self, name: str, message: str) -> None:
        """Mark plugin `name` as failed after loading (e.g. its cards conflict); it contributes nothing."""
        self._fail(self.infos.setdefault(name, PluginInfo(name=name)), message)

    def trusted_packages(self) -> set[str]:
        """Top-level packages of the plugins that loaded: their builders are trusted code (#20)."""
        # A plugin whose entry point names a standard-library module (`os`) does not make `os:system` trusted.
        stdlib = getattr(sys, "stdlib_module_names", frozenset({"os", "sys", "subprocess", "builtins", "shutil"}))
        return {
            info.package
            for name, info in self.infos.items()
            if info.package
            and info.package not in stdlib
            and info.package != "zoo"
            and info.error is None
            and info.skipped is None
        }

    def active(self) -> set[str]:
        """Names of the plugins that loaded without error."""
        return {name for name, info in self.infos.items() if info.error is None and info.skipped is None}


def _dist_name(ep: Any) -> str | None:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist else None


def _dist_version(ep: Any) -> str | None:
    dist = getattr(ep, "dist", None)
    return dist.version if dist else None


_PLUGINS: Plugins | None = None


def get_plugins() -> Plugins:
    """The process-wide plugin set, loaded on first use (idempotent)."""
    global _PLUGINS
    if _PLUGINS is None:
        plugins = Plugins()
        plugins.load_entry_points()
        _PLUGINS = plugins
    return _PLUGINS


def reset_plugins(plugins: Plugins | None = None) -> None:
    """Forget the loaded plugins (tests, or after installing one) or install a prepared set."""
    global _PLUGINS
    _PLUGINS = plugins
