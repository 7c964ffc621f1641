"""zoo-tinynet: an example third-party zoo plugin.

This module runs on every `zoo list`, so it imports the standard library and `zoo` only; the model code
in `zoo_tinynet.models` is imported by `zoo.load`.
"""

from __future__ import annotations

from pathlib import Path

import zoo


@zoo.hookimpl
def register_models(register):  # noqa: ANN001, ANN201 - see zoo.hookspecs.register_models
    register(Path(__file__).with_name("registry.yaml"))
