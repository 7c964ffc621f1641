"""zoo's built-in object-detection plugin.

Shaped exactly like a third-party plugin package: an entry point in the ``zoo.plugins`` group points at this
module, which imports only the standard library and ``zoo``. Its cards live in zoo's built-in catalogue
(``registry.yaml`` at the top of the repository, ``plugin: detector``); the builders, the annotation readers and
the task behaviour are imported only when a detector runs.
"""

from __future__ import annotations

import zoo

__all__ = ["register_commands", "register_tasks"]


@zoo.hookimpl
def register_tasks(register):  # noqa: ANN001, ANN201 - see zoo.hookspecs
    register("detector", "zoo_detector.task:DetectorTask")


@zoo.hookimpl
def register_commands(cli):  # noqa: ANN001, ANN201 - see zoo.hookspecs
    from .data_cli import add_commands  # click and zoo only: `zoo --help` stays torch-free

    add_commands(cli)
