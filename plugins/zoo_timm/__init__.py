"""timm's pretrained classifiers as zoo cards: ``timm/<arch>`` and ``timm/<arch>.<tag>``.

Shaped like the torchvision bridge (docs/architecture.md §15, §17): one entry point in the ``zoo.plugins`` group,
named ``timm``, whose ``register_models`` hands zoo a callable, an on-demand namespace read only when a
``timm/...`` name or pattern (or ``--plugin timm``) is asked for, so plain ``zoo list`` neither shows these models
nor imports timm or torch.

The cards come from timm's own pretrained configs, turned into an index once per timm version and cached as JSON
under ``$ZOO_HOME/index/`` (``zoo_timm.index`` builds it; that imports timm). Reading the cached index imports
only the standard library; the weights are ``hf://`` files of timm's Hugging Face hub repos.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import zoo

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["load_index", "register_models"]


def load_index() -> dict[str, Any]:
    """The namespace's cards: the cached index for the installed timm (built first if missing), with the
    parameter counts recorded so far."""
    from zoo.namespaces import cached_index

    from . import _paths

    def build(path: Path) -> dict[str, Any]:
        from .index import write_index  # imports timm and torch: only when the index is (re)built

        return write_index(path)

    path = _paths.index_path()
    data = cached_index(path, _paths.INDEX_FORMAT, build)
    return _paths.with_params(data, _paths.read_params(), str(path))


@zoo.hookimpl
def register_models(register: Any) -> None:
    register(load_index)
