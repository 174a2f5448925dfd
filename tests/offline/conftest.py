"""Fixtures of the offline tests (helpers live in offline_repo.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from offline_repo import ENGINES, Repo, make_repo


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    """Each offline engine in turn: the same tests, the same expected rows."""
    return str(request.param)


@pytest.fixture
def repo(tmp_path: Path, engine_name: str) -> Iterator[Repo]:
    made = make_repo(tmp_path, engine_name)
    yield made
    made.engine.close()
