"""Compaction of push and stream logs: training sets unchanged (rule 2's file order kept,
for views on different keys over one source), atomic for readers, idempotency keys
remembered, replaced files deleted only after the grace, one compaction at a time."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from almanac import FeatureStore
from almanac.errors import NotFoundError
from almanac.offline import compaction
from almanac.offline.compaction import compact
from almanac.offline.files import list_files, push_folder
from cli_runner import run_cli

FEATURES = """
from almanac import Entity, FeatureView, Field, Int64, PushSource, String

user = Entity(name="user", join_keys=["user_id"], dtype=Int64)
shop = Entity(name="shop", join_keys=["shop"])
events = PushSource(name="events")
by_user = FeatureView(name="by_user", entities=[user], source=events, schema=[Field("v", Int64)])
by_shop = FeatureView(name="by_shop", entities=[shop], source=events, schema=[Field("v", Int64)])
"""
BASE = datetime(2024, 5, 1, tzinfo=UTC)
SPINE = {
    "user_id": [u for u in range(3) for _ in range(4)],
    "shop": [s for _ in range(3) for s in ("a", "b", "c", "d")],
    "event_timestamp": [BASE + timedelta(minutes=m) for m in (0, 1, 2, 3) for _ in range(3)],
}
WANTED = ["by_user:v", "by_shop:v"]


def make_store(root: Path) -> FeatureStore:
    repo = root / "repo"
    repo.mkdir()
    (repo / "almanac.yaml").write_text("project: compaction\n")
    (repo / "features.py").write_text(FEATURES)
    store = FeatureStore(repo)
    store.apply()
    return store


def training(store: FeatureStore) -> list[dict[str, Any]]:
    return (
        store.get_historical_features(SPINE, WANTED, full_feature_names=True).to_arrow().to_pylist()
    )


def files(store: FeatureStore) -> list[Path]:
    return list_files(store.config, store.catalog.sources["events"])[0]  # type: ignore[arg-type]


rows = st.fixed_dictionaries(
    {"user_id": st.integers(0, 2), "shop": st.sampled_from("abcd"), "minute": st.integers(0, 3),
     "v": st.none() | st.integers(0, 9)}
)  # fmt: skip


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    batches=st.lists(st.lists(rows, min_size=1, max_size=6), min_size=2, max_size=7),
    compact_after=st.sets(st.integers(1, 7)),
)
def test_compaction_changes_no_training_set(tmp_path_factory: pytest.TempPathFactory, batches: list[list[dict[str, Any]]], compact_after: set[int]) -> None:  # fmt: skip
    """Many exact ties (few keys, few minutes, no created time): only file and row order
    pick the winner, for both views, whose keys differ; compactions at several points
    (merging files compacted before) keep the answer of the uncompacted log."""
    store = make_store(tmp_path_factory.mktemp("prop"))
    with store:
        expected = None
        for i, batch in enumerate(batches, start=1):
            store.push("events", {
                "user_id": [r["user_id"] for r in batch], "shop": [r["shop"] for r in batch],
                "event_timestamp": [BASE + timedelta(minutes=r["minute"]) for r in batch],
                "v": [r["v"] for r in batch],
            }, to="offline")  # fmt: skip
            if i in compact_after:
                before = training(store)
                compact(store.config, store.catalog.sources["events"], min_age=timedelta(0))  # type: ignore[arg-type]
                assert training(store) == before
        expected = training(store)
        plain = make_store(tmp_path_factory.mktemp("plain"))
        with plain:
            for batch in batches:  # the same pushes, never compacted
                plain.push("events", {
                    "user_id": [r["user_id"] for r in batch], "shop": [r["shop"] for r in batch],
                    "event_timestamp": [BASE + timedelta(minutes=r["minute"]) for r in batch],
                    "v": [r["v"] for r in batch],
                }, to="offline")  # fmt: skip
            assert training(plain) == expected
        done = compact(store.config, store.catalog.sources["events"], min_age=timedelta(0))  # type: ignore[arg-type]
        assert len(files(store)) == 1 or done.merged_files == 0
        assert training(store) == expected


def push_rows(store: FeatureStore, n: int, key: str | None = None) -> int:
    return store.push("events", {
        "user_id": list(range(n)), "shop": ["a"] * n,
        "event_timestamp": [BASE] * n, "v": list(range(n)),
    }, to="offline", idempotency_key=key)  # fmt: skip


def test_the_swap_is_atomic_and_replaced_files_wait_for_the_grace(tmp_path: Path) -> None:
    with make_store(tmp_path) as store:
        for _ in range(4):
            push_rows(store, 3)
        folder = push_folder(store.config, store.catalog.sources["events"])  # type: ignore[arg-type]
        listed_before = files(store)
        done = store.compact(min_age="0s")
        assert [d.source for d in done] == ["events"]
        assert (done[0].merged_files, done[0].rows, done[0].files_after) == (4, 12, 1)
        # A reader that listed the old files before the swap can still read them all ...
        assert all(path.exists() for path in listed_before)
        assert sum(pq.read_metadata(p).num_rows for p in listed_before) == 12
        # ... and one listing now reads the merged file only: never both.
        assert [p.name for p in files(store)] == [done[0].written]
        assert store.get_historical_features(SPINE, WANTED, full_feature_names=True).to_arrow().num_rows == len(SPINE["shop"])  # fmt: skip
        # Within the grace nothing is deleted; after it, the replaced files go.
        assert store.compact(min_age="0s")[0].deleted_files == 0
        assert store.compact(min_age="0s", grace="0s")[0].deleted_files == 4
        assert sorted(p.name for p in folder.glob("*.parquet")) == [done[0].written]


def test_a_compacted_merge_of_compacted_files_and_newer_pushes_keeps_their_order(tmp_path: Path) -> None:  # fmt: skip
    with make_store(tmp_path) as store:
        push_rows(store, 2)
        push_rows(store, 2)
        first = store.compact(min_age="0s")[0].written
        store.push("events", {"user_id": [0], "shop": ["a"], "event_timestamp": [BASE], "v": [100]}, to="offline")  # fmt: skip
        assert files(store)[0].name == first  # the merged file sorts first
        assert training(store)[0]["by_user__v"] == 100  # the later push wins the tie
        second = store.compact(min_age="0s")[0]
        assert second.merged_files == 2 and second.rows == 5
        assert training(store)[0]["by_user__v"] == 100
        replaced = json.loads(pq.read_schema(files(store)[0]).metadata[b"almanac.replaces"])
        assert set(replaced) >= {first}  # and the first merge's own files, still on disk
        assert len(replaced) == 4


def test_idempotency_keys_survive_compaction(tmp_path: Path) -> None:
    with make_store(tmp_path) as store:
        assert push_rows(store, 3, key="order-1") == 3
        push_rows(store, 2, key="order-2")
        store.compact(min_age="0s")
        store.compact(min_age="0s", grace="0s")  # the keyed files themselves are gone now
        assert len(files(store)) == 1
        assert push_rows(store, 3, key="order-1") == 3  # recognised: not written again
        assert sum(pq.read_metadata(p).num_rows for p in files(store)) == 5
        push_rows(store, 1, key="order-3")
        assert sum(pq.read_metadata(p).num_rows for p in files(store)) == 6


def test_keys_older_than_the_retention_are_forgotten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    with make_store(tmp_path) as store:
        push_rows(store, 1, key="old")
        push_rows(store, 1, key="new")
        monkeypatch.setattr(compaction, "KEY_RETENTION", timedelta(0))
        store.compact(min_age="0s")
        keys = json.loads(pq.read_schema(files(store)[0]).metadata[b"almanac.keys"])
        assert keys == {}


def test_young_and_large_files_are_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    with make_store(tmp_path) as store:
        push_rows(store, 5)
        push_rows(store, 1)
        push_rows(store, 1)
        assert store.compact()[0].skipped  # all younger than a minute
        monkeypatch.setattr(compaction, "TARGET_ROWS", 5)
        done = store.compact(min_age="0s")[0]
        assert (done.merged_files, done.rows) == (2, 2)  # the 5-row file is passed over
        assert len(files(store)) == 2
        # A large file between small ones: the small ones after it are merged too.
        push_rows(store, 5)
        push_rows(store, 1)
        push_rows(store, 1)
        done = store.compact(min_age="0s")[0]
        assert (done.merged_files, done.rows) == (2, 2)
        assert [pq.read_metadata(p).num_rows for p in files(store)] == [5, 2, 5, 2]


def test_a_push_in_flight_holds_back_what_is_named_after_it(tmp_path: Path) -> None:
    """A push stages its file before it commits it: files named after a staged one wait."""
    with make_store(tmp_path) as store:
        push_rows(store, 1)
        folder = push_folder(store.config, store.catalog.sources["events"])  # type: ignore[arg-type]
        in_flight = folder / f".part-{time.time_ns():020d}-abcdef12.parquet.tmp"
        in_flight.write_bytes(b"")
        push_rows(store, 1)
        push_rows(store, 1)
        assert store.compact(min_age="0s")[0].merged_files == 0  # only one file is older
        in_flight.unlink()
        assert store.compact(min_age="0s")[0].merged_files == 3


def test_one_compaction_at_a_time_and_a_failed_one_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    with make_store(tmp_path) as store:
        push_rows(store, 2)
        push_rows(store, 2)
        source = store.catalog.sources["events"]
        folder = push_folder(store.config, source)  # type: ignore[arg-type]
        with compaction._locked(folder) as held:
            assert held
            assert "another compaction" in compact(store.config, source, min_age=timedelta(0)).skipped  # type: ignore[arg-type]  # fmt: skip

        def disk_full(table: pa.Table, schema: pa.Schema) -> pa.Table:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(compaction, "_conform", disk_full)
        with pytest.raises(OSError):
            store.compact(min_age="0s")
        assert sorted(p.name for p in folder.iterdir() if not p.name.startswith("_")) == sorted(p.name for p in files(store))  # fmt: skip
        assert len(files(store)) == 2


def test_only_push_sources_and_known_names(tmp_path: Path) -> None:
    with make_store(tmp_path) as store:
        with pytest.raises(NotFoundError, match="unknown source 'nope'"):
            store.compact(["nope"])
        assert store.compact()[0].skipped == "no files yet"


def test_cli_compact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with make_store(tmp_path) as store:
        push_rows(store, 2)
        push_rows(store, 2)
    repo = str(tmp_path / "repo")
    code, out = run_cli(capsys, "--repo", repo, "compact", "--min-age", "0s", "--json")
    assert code == 0, out
    assert json.loads(out)[0]["merged_files"] == 2
    code, out = run_cli(capsys, "--repo", repo, "compact", "nope")
    assert code == 2 and "unknown source 'nope'" in out and "Traceback" not in out
