"""The sorted cache of a view's rows (`almanac.offline.duckdb.sorted_cache`): training sets
read through it equal those read from the files, whatever happened to the files since it
was built — a changed file is never served stale, an added file is picked up, and rule 2's
ties (created time, then file, then row) are kept."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from offline_repo import Repo, make_repo, ts

from almanac.offline.duckdb import engine as duckdb_engine
from almanac.offline.duckdb.sorted_cache import cache_folder

UTC_US = pa.timestamp("us", tz="UTC")


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return make_repo(tmp_path)


def rows(users: list[int], hours: list[float], created: list[float | None], clicks: list[int]) -> pa.Table:  # fmt: skip
    return pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "event_timestamp": pa.array([ts(h) for h in hours], UTC_US),
            "created": pa.array([None if c is None else ts(c) for c in created], UTC_US),
            "clicks": pa.array(clicks, pa.int64()),
            "score": pa.array([float(c) / 10 for c in clicks]),
        }
    )


def spine() -> pa.Table:
    users = [1, 1, 1, 2, 2, 3, 3, 1]
    hours = [0, 1, 2, 5, 6, 1, 9, 30]
    return pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "event_timestamp": pa.array([ts(h) for h in hours], UTC_US),
        }
    )


def training(repo: Repo) -> pa.Table:
    refs = repo.catalog.resolve(["stats:clicks", "stats:score"])
    return repo.engine.get_historical_features(repo.catalog, spine(), refs).to_arrow()


def from_files(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> pa.Table:
    """The same training set read from the files (the cache bypassed)."""
    with monkeypatch.context() as patch:
        patch.setattr(duckdb_engine, "cached_rows", lambda *args, **kwargs: None)
        return training(repo)


def caches(repo: Repo) -> list[str]:
    folder = cache_folder(repo.config, "stats")
    return sorted(p.name for p in folder.glob("*.parquet")) if folder.exists() else []


def test_cache_is_built_and_used(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    first = training(repo)
    assert len(caches(repo)) == 1
    assert first.equals(from_files(repo, monkeypatch))
    assert training(repo).equals(first)  # read from the cache
    assert len(caches(repo)) == 1


def test_changed_file_is_never_served_stale(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    before = training(repo)
    part = repo.path / "data" / "stats" / "part-0.parquet"
    stat = part.stat()
    # New values, the same rows otherwise, and the file's old modification time: its
    # size or inode still tell that it changed.
    changed = rows([1, 1, 1, 2], [0, 1, 1, 5], [0, 3, 2, 5], [20, 21, 22, 23])
    temp = part.with_name(".part-0.tmp")
    pq.write_table(changed, temp)
    os.replace(temp, part)
    os.utime(part, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = training(repo)
    assert not after.equals(before)
    assert after.column("clicks").to_pylist()[:3] == [20, 21, 21]
    assert after.equals(from_files(repo, monkeypatch))


def test_removed_file_is_dropped(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = repo.path / "data" / "stats"
    pq.write_table(rows([3], [1], [1], [30]), folder / "part-1.parquet")
    assert training(repo).column("clicks").to_pylist()[5] == 30
    (folder / "part-1.parquet").unlink()
    after = training(repo)
    assert after.column("clicks").to_pylist()[5] is None
    assert after.equals(from_files(repo, monkeypatch))


def test_added_file_is_picked_up_with_ties_kept(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    training(repo)
    folder = repo.path / "data" / "stats"
    # Ties with the cached rows: (1, 1h) with the greatest created time wins over the
    # cached winner; (1, 0h) ties it on created time too, and the later file wins; a
    # null created time is the oldest, so (2, 5h) keeps the cached row.
    added = rows([1, 1, 2, 3], [1, 0, 5, 1], [4, 0, None, 1], [41, 40, 42, 43])
    pq.write_table(added, folder / "part-1.parquet")
    after = training(repo)
    assert after.column("clicks").to_pylist() == [40, 41, 41, None, None, 43, 43, None]
    assert after.equals(from_files(repo, monkeypatch))
    # The incremental cache equals one built from scratch.
    for name in caches(repo):
        (cache_folder(repo.config, "stats") / name).unlink()
    (cache_folder(repo.config, "stats")).joinpath("x").touch()  # an unrelated file is ignored
    assert training(repo).equals(after)


def test_appended_files_become_runs(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    training(repo)
    folder = repo.path / "data" / "stats"
    # No (key, event time) of the cache: a run of its own beside the cached one.
    pq.write_table(rows([1, 3], [1.5, 1], [1.5, 1], [70, 71]), folder / "part-1.parquet")
    assert training(repo).equals(from_files(repo, monkeypatch))
    assert len(caches(repo)) == 2
    # Ties a row of the second run and wins: the runs are merged into one.
    pq.write_table(rows([3], [1], [1], [72]), folder / "part-2.parquet")
    after = training(repo)
    assert after.column("clicks").to_pylist()[5] == 72
    assert after.equals(from_files(repo, monkeypatch))
    assert len(caches(repo)) == 3  # the replaced runs stay for readers, for a while


def test_file_inserted_before_others_rebuilds(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    folder = repo.path / "data" / "stats"
    pq.write_table(rows([1], [1], [3], [50]), folder / "part-1.parquet")
    assert training(repo).column("clicks").to_pylist()[1] == 50  # the later file wins
    # Sorts between the two: it loses the full tie to part-1, so a merge that ranked it
    # after the cached rows would be wrong.
    pq.write_table(rows([1], [1], [3], [60]), folder / "part-00.parquet")
    after = training(repo)
    assert after.column("clicks").to_pylist()[1] == 50
    assert after.equals(from_files(repo, monkeypatch))


def test_ties_in_one_file_follow_rule_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path)
    part = tmp_path / "data" / "stats" / "part-0.parquet"
    # (1, 1h): created 2h twice (the later row wins) and a null created time (oldest).
    pq.write_table(rows([1, 1, 1, 1], [1, 1, 1, 0], [2, 2, None, 0], [1, 2, 3, 4]), part)
    result = training(repo)
    assert result.column("clicks").to_pylist()[:3] == [4, 2, 2]
    assert result.equals(from_files(repo, monkeypatch))


def test_unwritable_cache_falls_back_to_the_files(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    folder = cache_folder(repo.config, "stats")
    folder.parent.mkdir(parents=True)
    folder.write_text("not a folder")  # the cache cannot be written
    assert training(repo).equals(from_files(repo, monkeypatch))


def test_the_cache_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`offline.duckdb.sorted_cache: false`: no copy on disk, the same training set."""
    repo = make_repo(tmp_path, sorted_cache=False)
    assert training(repo).equals(from_files(repo, monkeypatch))
    assert not cache_folder(repo.config, "stats").exists()
