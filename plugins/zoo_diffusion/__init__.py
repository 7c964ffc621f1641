"""zoo's built-in diffusion plugin: denoising diffusion models (DDPM training; DDPM, DDIM and DPM-Solver++
sampling; classifier-free guidance).

Shaped exactly like a third-party plugin package: an entry point in the ``zoo.plugins`` group points at this
module, which imports only the standard library and ``zoo``. Cards live in zoo's built-in catalogue
(``registry.yaml``, ``plugin: diffusion``); the builders in :mod:`zoo_diffusion.models` and the task in
:mod:`zoo_diffusion.task` (which import ``diffusers``) are imported only when a model runs.
"""

from __future__ import annotations

import zoo

__all__ = ["register_tasks"]


@zoo.hookimpl
def register_tasks(register):  # noqa: ANN001, ANN201 - see zoo.hookspecs
    register("diffusion", "zoo_diffusion.task:DiffusionTask")
