"""zoo's built-in VAE plugin: variational autoencoders that sample, reconstruct and report bits/dim.

Shaped exactly like a third-party plugin package: an entry point in the ``zoo.plugins`` group points at this
module, which imports only the standard library and ``zoo``. Cards live in zoo's built-in catalogue
(``registry.yaml``, ``plugin: vae``); the builders in :mod:`zoo_vae.models` and the task in :mod:`zoo_vae.task`
are imported only when a model runs.
"""

from __future__ import annotations

import zoo

__all__ = ["register_tasks"]


@zoo.hookimpl
def register_tasks(register):  # noqa: ANN001, ANN201 - see zoo.hookspecs
    register("vae", "zoo_vae.task:VaeTask")
