"""Fixtures of the aggregation tests: a feature repo on each online backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from agg_repo import AggRepo, make_repo


@pytest.fixture
def repo(tmp_path: Path, online_url: str) -> Iterator[AggRepo]:
    made = make_repo(tmp_path, online_url)
    yield made
    made.store.close()
