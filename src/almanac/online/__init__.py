"""The online store: latest feature values per entity, served in one round trip.

`open_online_store(config)` picks the backend from the scheme of ``online.url``:
``sqlite:///path.db`` (embedded default; relative paths are read from the repo folder)
or ``redis://[:password@]host:port/db`` (``rediss://`` for TLS), or a plug-in's
(``online.<scheme>`` in the ``almanac.backends`` entry points; see `almanac.backends`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from almanac import backends
from almanac.errors import ConfigError, redact
from almanac.online.response import FeatureStatus, OnlineResponse
from almanac.ports.online import OnlineStore, ViewRead, ViewRows

if TYPE_CHECKING:
    from almanac.config import RepoConfig

__all__ = [
    "FeatureStatus",
    "OnlineResponse",
    "OnlineStore",
    "ViewRead",
    "ViewRows",
    "open_online_store",
]


def open_online_store(config: RepoConfig) -> OnlineStore:
    """The online store that `config.online.url` names: the backend registered under
    ``online.<scheme>`` (connections open lazily for Redis)."""
    scheme = config.online.scheme
    if scheme not in backends.names("online"):
        raise ConfigError(
            f"online.url: unknown scheme in {redact(config.online.url)!r}; use sqlite:///path.db, "
            "redis://host:port/db or rediss://host:port/db (registered schemes: "
            f"{', '.join(backends.names('online'))})"
        )
    store: OnlineStore = backends.load("online", scheme).from_config(config)
    return store
