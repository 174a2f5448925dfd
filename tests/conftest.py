"""Shared fixtures: real servers on free ports, and a fresh starter repo."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from servers import (
    PostgresServer,
    RedisClusterServer,
    RedisServer,
    start_postgres,
    start_redis,
    start_redis_cluster,
)

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from almanac import FeatureStore

_counter = itertools.count()


class _XdistGroups:
    """`--dist loadgroup` on pytest 9.2: pytest-xdist (3.8) tags each test id with its
    xdist_group by setting `item._nodeid`, which pytest 9.2 no longer reads (its ids are
    structured: pytest-dev/pytest-xdist#1386), so every group was silently spread over
    the workers. Run after xdist's hook, this tags the ids that it could not."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:  # fmt: skip
        if not getattr(config.option, "loadgroup", False):  # set on xdist's workers only
            return
        for item in items:
            names = {str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                     for m in item.iter_markers("xdist_group")}  # fmt: skip
            suffix = "@" + "_".join(sorted(names))
            ident = getattr(item, "_id", None)
            if not names or item.nodeid.endswith(suffix) or not dataclasses.is_dataclass(ident):
                continue
            try:  # the same structured id, whose text (what xdist reads) ends in @group
                tagged = dataclasses.replace(ident)  # type: ignore[type-var]
                object.__setattr__(tagged, "_str_cache", item.nodeid + suffix)
            except (TypeError, AttributeError):  # another pytest: leave the id alone
                continue
            item._id = tagged


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_XdistGroups(), "almanac-xdist-groups")


# Modules whose single tests run longest (the docs' tutorial, 30-40 s): started first, so
# that no worker is left with one of them at the end while the other has nothing to do.
LONGEST_FIRST = ("tests/test_docs.py",)


# tryfirst: xdist's own hook turns the xdist_group marks into the group of each test id, so
# the marks must be added before it runs (else each worker starts a JVM of its own).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that runs the Spark engine is marked `spark` and kept on one xdist
    worker (`make test` runs with --dist loadgroup): one JVM for the whole run, while the
    other worker takes everything else."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if (
            params.get("engine_name") == "spark"
            or "tests/spark/" in item.nodeid.replace("\\", "/")
            or item.get_closest_marker("spark") is not None  # a test marked by hand
        ):
            item.add_marker(pytest.mark.spark)
            item.add_marker(pytest.mark.xdist_group("spark"))
    # A stable sort: each module's tests stay together and in their order.
    items.sort(key=lambda item: not item.nodeid.startswith(LONGEST_FIRST))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A Redis database emptied for this test."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster_server() -> Iterator[RedisClusterServer]:
    """A real Redis Cluster (3 masters, 3 replicas) for the whole run."""
    server = start_redis_cluster()
    yield server
    server.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster_server: RedisClusterServer) -> str:
    """The cluster, emptied for this test (every master flushed)."""
    redis_cluster_server.wait_healthy()
    redis_cluster_server.flushall()
    return redis_cluster_server.url


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def online_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty online store of each kind: an embedded SQLite file in the
    test's repo folder (relative URLs are read from there), then a real Redis."""
    if request.param == "sqlite":
        return "sqlite:///.almanac/online.db"
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    import psycopg

    name = f"almanac_test_{next(_counter)}"
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return postgres_server.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def client(store: FeatureStore) -> Iterator[TestClient]:
    """The HTTP app over the `store` fixture of the test's folder or module, in-process."""
    from fastapi.testclient import TestClient

    from almanac.serving.app import create_app

    with TestClient(create_app(store)) as client:
        yield client
