"""zoo's built-in image-classification plugin.

Shaped exactly like a third-party plugin package: an entry point in the ``zoo.plugins`` group points
at this module, which imports only the standard library and ``zoo``. The cards for its models live
in zoo's built-in catalogue (``registry.yaml`` at the top of the repository), each naming
``plugin: classifier``; the builders in :mod:`zoo_classifier.models` are imported only by
``zoo.load``.
"""

from __future__ import annotations

__all__: list[str] = []
