"""Fixtures of the offline tests (helpers live in offline_repo.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from offline_repo import Repo, make_repo


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    made = make_repo(tmp_path)
    yield made
    made.engine.close()
