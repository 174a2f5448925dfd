"""Push fixtures: the serving tests' repo (SQLite and Redis online stores)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "serving"))
from serving_helpers import write_repo

from almanac import FeatureStore


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FeatureStore]:
    url = (
        "sqlite:///.almanac/online.db"
        if request.param == "sqlite"
        else request.getfixturevalue("redis_url")
    )
    with FeatureStore(write_repo(tmp_path / "repo", url)) as store:
        yield store
