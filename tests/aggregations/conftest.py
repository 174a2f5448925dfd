"""Fixtures of the aggregation tests: a feature repo on each online backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from agg_repo import AggRepo, make_repo


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def backend_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return "sqlite:///.almanac/online.db"
    return request.getfixturevalue("redis_url")


@pytest.fixture
def repo(tmp_path: Path, backend_url: str) -> Iterator[AggRepo]:
    made = make_repo(tmp_path, backend_url)
    yield made
    made.store.close()
