"""Server fixtures: the test repo on SQLite and on a real Redis, seeded, and a client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from serving_helpers import seed, write_repo

from almanac import FeatureStore


@pytest.fixture
def repo(tmp_path: Path, online_url: str) -> Path:
    return write_repo(tmp_path / "repo", online_url, max_entities=50)


@pytest.fixture
def store(repo: Path) -> Iterator[FeatureStore]:
    with FeatureStore(repo) as store:
        seed(store)
        yield store
