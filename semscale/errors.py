"""semscale's errors.

Every error derives from :class:`SemscaleError` and also from the matching built-in, so callers may catch
either. Messages name the file or key, what was expected and what was found, and how to fix it; the CLI
prints them on one line and exits non-zero.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DependencyError",
    "InputImageError",
    "ModelError",
    "SemscaleError",
    "StoreError",
]


class SemscaleError(Exception):
    """Base class of all semscale errors."""


class ConfigError(SemscaleError, ValueError):
    """A campaign config (YAML) is invalid: unknown key, wrong type, duplicate id, missing file..."""


class InputImageError(SemscaleError, ValueError):
    """An input image cannot be used: unreadable, wrong dimensionality, non-integer EDS factor..."""


class StoreError(SemscaleError, KeyError):
    """The campaign store lacks something a stage needs, or holds something inconsistent."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it plain.
        return str(self.args[0]) if self.args else ""


class ModelError(SemscaleError, ValueError):
    """A model file or its sidecar is missing, unsafe or inconsistent."""


class DependencyError(SemscaleError, ImportError):
    """An optional dependency is missing; the message says how to install it."""
