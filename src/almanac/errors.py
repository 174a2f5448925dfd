"""The errors Almanac raises for things a user can fix.

Every user-facing error derives from `AlmanacError`; the CLI prints its message on one
line and exits 2, the HTTP service maps it to a 4xx/503. Anything else is a bug.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any

# The password of a URL (scheme://user:password@host) or of a libpq key=value string.
_URL_PASSWORD = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^\s/:@]*:)([^\s/@]+)(@)")
_KEY_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('[^']*'|[^\s]+)", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with every password in it replaced by ***."""
    return _KEY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***\3", text))


class AlmanacError(Exception):
    """A problem the user can fix; the message says what and where. Messages never
    carry a password: any URL credential in them is redacted (they reach logs, terminals
    and HTTP clients)."""

    def __init__(self, message: Any = "", *args: Any) -> None:
        super().__init__(redact(str(message)), *args)


class DefinitionError(AlmanacError):
    """A definition (entity, source, view, service) is invalid."""


class ConfigError(AlmanacError):
    """`almanac.yaml` or an environment override is invalid."""


class RepoError(AlmanacError):
    """The feature repo cannot be loaded (missing file, module that fails on import)."""


class RegistryError(AlmanacError):
    """The registry refused a change (for example deleting an object still in use)."""


class ConcurrentApplyError(RegistryError):
    """Another apply changed the registry while this one was being prepared."""


class NotFoundError(AlmanacError):
    """An unknown feature, view, service or entity was referenced."""

    def __init__(self, kind: str, name: str, known: Iterable[str] = (), hint: str = "") -> None:
        self.kind, self.name = kind, name
        message = f"unknown {kind} '{name}'"
        close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
        if hint:
            message += f" ({hint})"
        elif close:
            message += "; did you mean " + ", ".join(f"'{c}'" for c in close) + "?"
        super().__init__(message)


class InputError(AlmanacError):
    """Data handed to Almanac (entity rows, pushed rows, a time range) is invalid."""


class StoreUnavailableError(AlmanacError):
    """A backing store (online store, registry database) cannot be reached."""


class StorageFullError(AlmanacError):
    """A store has no room left (disk full); nothing of the refused write was kept."""


class AccessDeniedError(AlmanacError):
    """The caller is authenticated but no permission grants the action (HTTP 403)."""


class TransformationError(AlmanacError):
    """A user's transformation (an on-demand view's function) raised, or returned
    something other than its declared features for the rows it was given. Served as a
    500: the definition, not the request, is at fault."""
