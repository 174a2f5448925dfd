"""The online store: latest feature values per entity, served in one round trip.

`open_online_store(config)` picks the backend from ``online.url``:
``sqlite:///path.db`` (embedded default; relative paths are read from the repo folder)
or ``redis://[:password@]host:port/db`` (``rediss://`` for TLS).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from almanac.errors import ConfigError
from almanac.online.base import OnlineStore, ViewRead, ViewRows
from almanac.online.response import FeatureStatus, OnlineResponse

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
    """The online store that `config.online.url` names (connections open lazily for Redis)."""
    online = config.online
    url = config.resolve_url(online.url)
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        from almanac.online.sqlite_store import SqliteOnlineStore

        path = url.removeprefix("sqlite:///")
        if not url.startswith("sqlite:///") or not path:
            raise ConfigError(f"online.url: expected sqlite:///path/to/file.db, got {url!r}")
        return SqliteOnlineStore(
            path, timeout_seconds=online.timeout_seconds, batch_size=online.batch_size
        )
    if scheme in ("redis", "rediss"):
        from almanac.online.redis_store import RedisOnlineStore

        return RedisOnlineStore(
            url,
            timeout_seconds=online.timeout_seconds,
            key_ttl_seconds=online.key_ttl_seconds,
            batch_size=online.batch_size,
        )
    raise ConfigError(
        f"online.url: unknown scheme in {online.url!r}; use sqlite:///path.db, "
        "redis://host:port/db or rediss://host:port/db"
    )
