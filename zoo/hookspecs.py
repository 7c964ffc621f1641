"""Every hook a zoo plugin can implement, and the two pluggy markers.

Plugins import :data:`zoo.hookimpl` and implement any of these by name. Hooks take keyword arguments
only, and an implementation may accept fewer arguments than the spec declares (pluggy passes only the
ones it asks for), so adding an argument later never breaks an old plugin.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

__all__ = ["hookimpl", "hookspec"]

#: Marks a hook specification (used only in this module).
hookspec = pluggy.HookspecMarker("zoo")
#: Marks a plugin's hook implementation: ``@zoo.hookimpl``.
hookimpl = pluggy.HookimplMarker("zoo")

RegisterModels = Callable[["Path | str | dict[str, Any]"], None]


@hookspec
def register_models(register: RegisterModels) -> None:
    """Hand zoo the plugin's model cards.

    Called once per process, the first time the registry is needed (``zoo list``, ``zoo.load``...).
    Call ``register`` with the path of a registry YAML file (the same schema as the built-in
    ``registry.yaml``) or with an already-parsed mapping of that schema. Cards registered here belong to
    this plugin: they are reachable as ``<plugin>/<name>`` and, when no other plugin claims the same
    name, as ``<name>``.

    Keep this hook cheap: it runs on every ``zoo list``. Import nothing heavier than the standard
    library here; builders are named by import string and imported only when a model is loaded.

    ``register`` also takes a callable returning such a mapping: an on-demand namespace, called only
    when a name, a pattern or ``--plugin`` reaches into this plugin (``tv/resnet50``, ``zoo list 'tv/*'``),
    so a catalogue of hundreds of cards (the torchvision bridge) costs plain ``zoo list`` nothing.

    Example::

        @zoo.hookimpl
        def register_models(register):
            register(Path(__file__).with_name("registry.yaml"))
    """


RegisterTask = Callable[[str, str], None]


@hookspec
def register_tasks(register: RegisterTask) -> None:
    """Tell the runtime how to evaluate, predict with and train models of a task.

    Called the first time the runtime needs a task (``zoo eval``, ``zoo predict``...), not by ``zoo list``.
    Call ``register(task_name, "package.module:TaskClass")``; the class is imported only when a model of
    that task is run, so this hook stays cheap. See ``zoo.runtime.tasks.Task`` for what the class provides.

    Example::

        @zoo.hookimpl
        def register_tasks(register):
            register("classifier", "zoo_classifier.task:ClassifierTask")
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``zoo`` command line.

    Called when the CLI starts, with the root :class:`click.Group`. Import heavy libraries inside the
    command function, not at module level, so that ``zoo --help`` and ``zoo list`` stay fast.
    """
