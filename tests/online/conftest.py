"""Fixtures for the online-store tests: each store test runs on SQLite, a real Redis and a
real Redis Cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from online_helpers import StoreStub, catalog, make_config

from almanac.config import RepoConfig
from almanac.online import OnlineStore, open_online_store
from online_stores import ONLINE_STORES, online_store_url


@pytest.fixture(params=ONLINE_STORES)
def backend_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty online store of each kind (a relative SQLite file: inside
    the test's repo folder), Redis Cluster included."""
    return online_store_url(request, "sqlite:///online.db")


@pytest.fixture
def config(backend_url: str, tmp_path: Path) -> RepoConfig:
    return make_config(backend_url, tmp_path)


@pytest.fixture
def online(config: RepoConfig) -> Iterator[OnlineStore]:
    store = open_online_store(config)
    yield store
    store.close()


@pytest.fixture
def store(online: OnlineStore, config: RepoConfig) -> StoreStub:
    return StoreStub(catalog(), online, config)
