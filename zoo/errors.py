"""The exceptions zoo raises on purpose.

Every message follows one shape: the quoted value, what is wrong with it, what to do next. The CLI prints
`str(error)` as one line and exits 1, so a message must make sense without a traceback.
"""

from __future__ import annotations

__all__ = [
    "PluginError",
    "RegistryError",
    "UnknownModelError",
    "WeightsError",
    "ZooError",
]


class ZooError(Exception):
    """Base class: anything zoo reports to a user as a one-line error."""


class RegistryError(ZooError):
    """A registry file is unreadable or breaks the card schema (names file, entry and field)."""

    def __init__(
        self, message: str, *, file: str | None = None, entry: str | None = None, field: str | None = None
    ) -> None:
        where = ", ".join(
            part
            for part in (
                file and f"{file}",
                entry and f"entry {entry!r}",
                field and f"field {field!r}",
            )
            if part
        )
        super().__init__(f"{where}: {message}" if where else message)
        self.file = file
        self.entry = entry
        self.field = field


class UnknownModelError(ZooError, KeyError):
    """A name that no card (or no weights tag) answers to."""

    def __str__(self) -> str:  # KeyError would repr() the message and add quotes
        return str(self.args[0])


class PluginError(ZooError):
    """A plugin failed to import or raised inside a hook."""


class WeightsError(ZooError):
    """Weights could not be fetched, verified, converted or matched to the model."""
