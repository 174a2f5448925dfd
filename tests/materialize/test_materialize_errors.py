"""Bad materialization requests get clear errors and move no watermark."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from almanac.cli import main
from almanac.errors import InputError, NotFoundError
from almanac.store import FeatureStore
from conftest import write_repo


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    repo = write_repo(tmp_path / "repo", f"sqlite:///{tmp_path / 'online.db'}")
    store = FeatureStore(repo)
    store.apply()
    return store


def test_start_after_end_is_refused(store: FeatureStore) -> None:
    with pytest.raises(InputError, match="after end"):
        store.materialize(datetime(2025, 2, 1), datetime(2025, 1, 1))


def test_an_end_in_the_future_is_refused(store: FeatureStore) -> None:
    future = datetime.now(UTC) + timedelta(days=1)
    with pytest.raises(InputError, match="in the future"):
        store.materialize_incremental(future)
    assert store.online.watermarks(store.project) == {}


def test_an_unknown_view_names_close_ones(store: FeatureStore) -> None:
    with pytest.raises(NotFoundError, match="did you mean 'ttl_2h'"):
        store.materialize_incremental(datetime(2025, 1, 1), views=["ttl_2"])


def test_a_missing_source_file_names_its_path(store: FeatureStore) -> None:
    with pytest.raises(InputError, match=r"events\.parquet"):
        store.materialize_incremental(datetime(2025, 1, 1))
    # Nothing materialized (a view may be claimed for its definition: no time).
    assert all(mark.time is None for mark in store.online.watermarks(store.project).values())


def test_a_malformed_time_on_the_cli_is_one_line_and_exit_2(store: FeatureStore, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--repo", str(store.repo_path), "materialize", "yesterday", "2025-01-01"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "'yesterday' is not an ISO 8601 time" in err
    assert "Traceback" not in err
