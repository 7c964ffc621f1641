"""torchvision's pretrained classifiers and COCO detectors as zoo cards: ``tv/<arch>`` and ``tv/<arch>.<WEIGHTS>``.

Shaped like a third-party plugin: one entry point in the ``zoo.plugins`` group, named ``tv`` (the plugin name is
the namespace, so ``tv/resnet50`` is this plugin's card ``resnet50``). Its ``register_models`` hands zoo a
callable instead of cards: an on-demand namespace (docs/architecture.md §15), read only when a ``tv/...`` name or
pattern (or ``--plugin tv``) is asked for, so plain ``zoo list`` neither shows these models nor imports torch.

The cards come from torchvision's own ``Weights`` enums, turned into an index once per torchvision version and
cached as JSON under ``$ZOO_HOME/index/`` (``zoo_torchvision.index`` builds it; that needs torch). Reading the
cached index imports only the standard library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import zoo

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["load_index", "register_models"]


def load_index() -> dict[str, Any]:
    """The namespace's cards: the cached index for the installed torchvision, built first if missing."""
    from . import _paths

    def build(path: Path) -> dict[str, Any]:
        from .index import write_index  # imports torch and torchvision: only when the index is (re)built

        return write_index(path)

    path = _paths.index_path()
    return _paths.expand(_paths.cached_index(path, _paths.INDEX_FORMAT, build), str(path))


@zoo.hookimpl
def register_models(register: Any) -> None:
    register(load_index)
