"""zoo's built-in GAN plugin: unconditional and class-conditional generative adversarial networks.

Shaped exactly like a third-party plugin package: an entry point in the ``zoo.plugins`` group points at this
module, which imports only the standard library and ``zoo``. Cards live in zoo's built-in catalogue
(``registry.yaml``, ``plugin: gan``); the builders in :mod:`zoo_gan.models` and the task in :mod:`zoo_gan.task`
are imported only when a model runs.
"""

from __future__ import annotations

import zoo

__all__ = ["register_tasks"]


@zoo.hookimpl
def register_tasks(register):  # noqa: ANN001, ANN201 - see zoo.hookspecs
    register("gan", "zoo_gan.task:GanTask")
