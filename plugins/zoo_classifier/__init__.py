"""zoo's built-in image-classification plugin.

Shaped exactly like a third-party plugin package: an entry point in the ``zoo.plugins`` group points
at this module, which imports only the standard library and ``zoo``. The cards for its models live
in zoo's built-in catalogue (``registry.yaml`` at the top of the repository), each naming
``plugin: classifier``; the builders in :mod:`zoo_classifier.models` and the task behaviour in
:mod:`zoo_classifier.task` are imported only when a model runs.
"""

from __future__ import annotations

import zoo

__all__ = ["register_tasks"]


@zoo.hookimpl
def register_tasks(register):  # noqa: ANN001, ANN201 - see zoo.hookspecs
    register("classifier", "zoo_classifier.task:ClassifierTask")
