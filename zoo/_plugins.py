"""The one plugin manager: discovery through entry points, and an error boundary around every plugin.

Built-in task plugins are found exactly like third-party ones, through the ``zoo.plugins``
entry-point group, so the public path is the one we use every day. A plugin that fails to import, that
implements a hook zoo does not know, or that raises inside a hook is recorded, reported once as a
warning line, and skipped; it never stops the other plugins or ``zoo list``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import pluggy

from . import _config, hookspecs

__all__ = ["ENTRY_POINT_GROUP", "PluginInfo", "Plugins", "get_plugins", "reset_plugins"]

ENTRY_POINT_GROUP: Final = "zoo.plugins"
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
        }


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


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
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in self.infos:
                continue  # the first distribution on sys.path wins, as for any import
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                name=ep.name,
                module=ep.value,
                distribution=dist.metadata["Name"] if dist else None,
                version=dist.version if dist else None,
            )
            info.builtin = info.distribution == BUILTIN_DISTRIBUTION
            self.infos[ep.name] = info
            if ep.name in disabled:
                info.skipped = "disabled by ZOO_DISABLE_PLUGINS"
                continue
            if selected is not None and ep.name not in selected:
                info.skipped = "not named in ZOO_LOAD_PLUGINS"
                continue
            try:
                plugin = ep.load()
            except BaseException as exc:  # noqa: BLE001 - a plugin may raise anything, even SystemExit
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self._fail(info, f"failed to import: {_describe(exc)}")
                continue
            self.register(plugin, ep.name, info)

    def register(self, plugin: object, name: str, info: PluginInfo | None = None) -> None:
        """Register one plugin object (a module or an instance with hookimpls); record a bad one."""
        info = info or self.infos.setdefault(name, PluginInfo(name=name, module=getattr(plugin, "__name__", None)))
        try:
            self.manager.register(plugin, name=name)
            # Reject hooks zoo does not define (a typo would otherwise be silently ignored).
            for hook_caller in self.manager.get_hookcallers(plugin) or []:
                if not hook_caller.has_spec():
                    raise pluggy.PluginValidationError(
                        plugin, f"unknown hook {hook_caller.name!r}; zoo's hooks are: "
                        + ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("register_")))
                    )
        except Exception as exc:  # noqa: BLE001
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
        import logging  # only when something went wrong: the import costs ~5 ms per CLI start

        logging.getLogger("zoo").warning(
            "zoo: plugin %r %s (skipped; see 'zoo plugins', silence with %s)", info.name, message, disable)

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

    def call_isolated(self, hook_name: str, make_kwargs: Callable[[str], dict[str, Any]], *,
                      fatal: bool = True) -> None:
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
            except Exception as exc:  # noqa: BLE001
                info = self.infos.setdefault(name, PluginInfo(name=name))
                self._fail(info, f"raised in {hook_name}: {_describe(exc)}", fatal=fatal)

    def fail_softly(self, name: str, message: str) -> None:
        """Record a non-fatal problem of plugin `name` (shown by `zoo plugins`, warned once)."""
        self._fail(self.infos.setdefault(name, PluginInfo(name=name)), message, fatal=False)

    def fail(self, name: str, message: str) -> None:
        """Mark plugin `name` as failed after loading (e.g. its cards conflict); it contributes nothing."""
        self._fail(self.infos.setdefault(name, PluginInfo(name=name)), message)

    def active(self) -> set[str]:
        """Names of the plugins that loaded without error."""
        return {name for name, info in self.infos.items() if info.error is None and info.skipped is None}


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
