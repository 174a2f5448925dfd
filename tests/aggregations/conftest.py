"""Fixtures of the aggregation tests: a feature repo on each offline engine and online
backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from agg_repo import ENGINES, AggRepo, make_repo

from online_stores import ONLINE_STORES, online_store_url


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    """Each offline engine in turn (a test pins one with parametrize("engine_name"))."""
    return str(request.param)


@pytest.fixture(params=ONLINE_STORES)
def online_url(request: pytest.FixtureRequest) -> str:
    """Tiles are written and merged on every online store, Redis Cluster included."""
    return online_store_url(request, "sqlite:///.almanac/online.db")


@pytest.fixture
def repo(tmp_path: Path, online_url: str, engine_name: str) -> Iterator[AggRepo]:
    made = make_repo(tmp_path, online_url, engine_name)
    yield made
    made.store.close()
