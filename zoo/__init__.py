"""zoo: a plugin-based model zoo for PyTorch computer vision.

``import zoo`` is cheap: it imports no torch. Torch and model code are imported by ``zoo.load``.
"""

from __future__ import annotations

from typing import Any

from ._api import (
    card,
    ensemble,
    evaluate,
    explain,
    export,
    fetch,
    finetune,
    list_models,
    load,
    predict,
    register,
    sample,
    transforms,
)
from ._card import Metric, ModelCard, Preprocess, WeightsVariant
from .errors import PluginError, RegistryError, UnknownModelError, WeightsError, ZooError
from .hookspecs import hookimpl

__all__ = [
    "Metric",
    "ModelCard",
    "PluginError",
    "Preprocess",
    "RegistryError",
    "UnknownModelError",
    "WeightsError",
    "WeightsVariant",
    "ZooError",
    "__version__",
    "card",
    "ensemble",
    "evaluate",
    "explain",
    "export",
    "fetch",
    "finetune",
    "hookimpl",
    "list_models",
    "load",
    "predict",
    "register",
    "sample",
    "transforms",
]


def __getattr__(name: str) -> Any:
    # Reading distribution metadata costs a few ms; only pay it when someone asks (as pluggy does).
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("visionzoo")
        except PackageNotFoundError:
            return "0+unknown"
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
