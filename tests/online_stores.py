"""The online stores each store-level suite runs on (the online suite, the no-skew
property suite): an embedded SQLite file, a real Redis and a real Redis Cluster (the
servers are the session fixtures of tests/conftest.py)."""

from __future__ import annotations

import pytest

ONLINE_STORES = [
    "sqlite",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("redis_cluster", marks=pytest.mark.redis),
]


def online_store_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """The URL of an empty store of the kind `request.param` names."""
    if request.param == "sqlite":
        return sqlite_url
    fixture = "redis_url" if request.param == "redis" else "redis_cluster_url"
    url: str = request.getfixturevalue(fixture)
    return url
