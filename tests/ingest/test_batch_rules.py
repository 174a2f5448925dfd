"""One set of rules for rows, however they come in: `write_to_offline_store` and `push`
accept the same batches, store them the same way, and refuse the same bad ones with the
same message (only the part naming the batch differs) before writing anything."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from almanac import FeatureStore
from almanac.errors import InputError

T1 = datetime(2024, 5, 1, 12, tzinfo=UTC)
YEAR_0 = -62167219200000000  # 0000-01-01T00:00:00Z in microseconds since the epoch
FEATURES_PY = """
from almanac import Array, Entity, FeatureView, Field, Float64, Int64, PushSource, String, Timestamp

user = Entity(name="user", join_keys=["user_id"], dtype=Int64)
events = PushSource(name="events")
stats = FeatureView(
    name="stats", entities=[user], source=events,
    schema=[Field("clicks", Int64), Field("spend", Float64), Field("segment", String),
            Field("seen_at", Timestamp), Field("visits", Array(Timestamp))],
)
"""
ROWS = {
    "user_id": [1, 2],
    "event_timestamp": [T1, T1],
    "clicks": [3, 4],
    "spend": [1.5, None],
    "segment": ["x", "y"],
    "seen_at": [T1, None],
    "visits": [[T1, T1 - timedelta(days=1)], []],
}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FeatureStore]:
    (tmp_path / "almanac.yaml").write_text("project: rules\nonline:\n  url: sqlite:///online.db\n")
    (tmp_path / "features.py").write_text(FEATURES_PY)
    with FeatureStore(tmp_path) as made:
        made.apply()
        yield made


def files(store: FeatureStore) -> list[Path]:
    folder = store.config.resolve_path(store.config.offline.data_path) / "events"
    return sorted(folder.glob("*.parquet")) if folder.exists() else []


def refusals(store: FeatureStore, rows: pa.Table) -> tuple[str, str]:
    """The messages refusing `rows` by `write_to_offline_store` and by `push`."""
    with pytest.raises(InputError) as written:
        store.write_to_offline_store("stats", rows)
    with pytest.raises(InputError) as pushed:
        store.push("events", rows)
    return str(written.value), str(pushed.value)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        # Arrow would cast both of these; neither is what the view declares.
        ({"clicks": ["12", "13"]}, "column 'clicks' holds text, but the feature is declared int64"),
        ({"segment": [12, 13]}, "column 'segment' holds int64, but the feature is declared string"),
        ({"clicks": [1.5, 2.0]}, "column 'clicks' has type double, which does not convert to the declared int64"),
        ({"spend": ["1.5", "2"]}, "column 'spend' holds text, but the feature is declared float64"),
        ({"user_id": ["1", "2"]}, "join key 'user_id' has type string, but feature view 'stats' declares it int64"),
        ({"user_id": [1, None]}, "join key 'user_id' has 1 null value(s)"),
        ({"event_timestamp": ["2024-05-01T12:00:00Z", "soon"]}, "column 'event_timestamp': row 1: 'soon' is not an ISO-8601 timestamp"),
        ({"event_timestamp": [T1, None]}, "timestamp column 'event_timestamp' has 1 null value(s)"),
        ({"seen_at": [1.5, 2.5]}, "column 'seen_at' has type double; expected timestamps, dates or ISO-8601 text"),
        ({"seen_at": ["yesterday", None]}, "column 'seen_at': row 0: 'yesterday' is not an ISO-8601 timestamp"),
        ({"visits": [["2024-05-01"], []]}, "column 'visits': timestamps inside lists must be timestamps, not text"),
        # Times outside the documented range (rule 1), and floats that are not numbers.
        ({"event_timestamp": ["2024-05-01T12:00:00Z", "0000-01-01T00:00:00Z"]}, "column 'event_timestamp': row 1: 0000-01-01T00:00:00Z is before 1900-01-01T00:00:00Z, the earliest event time accepted"),
        ({"event_timestamp": [T1, datetime(9999, 1, 1, tzinfo=UTC)]}, "column 'event_timestamp': row 1: 9999-01-01T00:00:00Z is in the future"),
        ({"event_timestamp": pa.array([0, 10**15], pa.timestamp("s"))}, "column 'event_timestamp' has times outside the range of microsecond timestamps"),
        ({"seen_at": ["0000-01-01T00:00:00Z", None]}, "column 'seen_at': row 0: 0000-01-01T00:00:00Z is outside the timestamps a feature can hold (years 1 to 9999, UTC)"),
        ({"visits": pa.array([[], [0, YEAR_0]], pa.list_(pa.timestamp("us")))}, "column 'visits': row 1: an item: 0000-01-01T00:00:00Z is outside the timestamps a feature can hold"),
        ({"spend": [1.5, float("nan")]}, "column 'spend': row 1: nan is not a finite number; NaN and ±infinity are refused (send null for a missing value)"),
        ({"spend": [float("-inf"), None]}, "column 'spend': row 0: -inf is not a finite number"),
    ],
)  # fmt: skip
def test_a_bad_batch_is_refused_the_same_way_by_both_and_nothing_is_written(
    store: FeatureStore, change: dict, problem: str
) -> None:
    written, pushed = refusals(store, pa.table({**ROWS, **change}))
    assert written.startswith(f"batch for feature view 'stats': {problem}")
    assert pushed.startswith(f"push to 'events': {problem}")
    # Word for word the same problem; only the part naming the batch differs.
    assert written.split(": ", 1)[1] == pushed.split(": ", 1)[1]
    assert files(store) == []
    got = store.get_online_features(["stats:clicks"], {"user_id": [1, 2]}).statuses
    assert got["clicks"] == ["NOT_FOUND", "NOT_FOUND"]


def test_missing_columns_are_refused_the_same_way_by_both(store: FeatureStore) -> None:
    rows = pa.table({**ROWS}).drop_columns(["spend", "segment"])
    written, pushed = refusals(store, rows)
    problem = "missing column(s) 'spend' (of feature view 'stats'), 'segment' (of feature view 'stats')"  # fmt: skip
    assert written.startswith(f"batch for feature view 'stats': {problem}; columns given: user_id")
    assert pushed.startswith(f"push to 'events': {problem}; columns given: user_id")
    written, pushed = refusals(store, pa.table({**ROWS}).drop_columns(["user_id"]))
    problem = "missing join key column 'user_id' (int64, of feature view 'stats')"
    assert (written, pushed) == (f"batch for feature view 'stats': {problem}", f"push to 'events': {problem}")  # fmt: skip
    assert files(store) == []


def _loose() -> pa.Table:
    """Lossless conversions both ways accept: narrower ints, ints for floats, text
    timestamps (naive is UTC, offsets are converted), dictionary-encoded text."""
    return pa.table({
        "user_id": pa.array([1, 2], pa.int32()),
        "event_timestamp": ["2024-05-01 12:00:00", "2024-05-01T14:00:00+02:00"],
        "clicks": pa.array([3, 4], pa.int16()),
        "spend": pa.array([1.5, None]),
        "segment": pa.array(["x", "y"]).dictionary_encode(),
        "seen_at": [T1.isoformat(), None],
        "visits": pa.array(ROWS["visits"], pa.list_(pa.timestamp("ns"))),
    })  # fmt: skip


@pytest.mark.parametrize(
    "make",
    [lambda: pa.table(ROWS), lambda: pd.DataFrame(ROWS), _loose],
    ids=["arrow", "pandas", "lossless-casts"],
)
def test_a_good_batch_goes_through_both_and_is_stored_the_same(store: FeatureStore, make) -> None:  # type: ignore[no-untyped-def]
    assert store.write_to_offline_store("stats", make()) == 2
    assert store.push("events", make(), to="offline") == 2
    written, pushed = (pq.read_table(path) for path in files(store))
    assert written.equals(pushed)
    assert written.to_pylist() == pq.read_table(files(store)[0]).to_pylist()
    assert written.column("user_id").to_pylist() == [1, 2]
    assert written.column("event_timestamp").to_pylist() == [T1, T1]
    assert written.column("clicks").to_pylist() == [3, 4]
    assert written.column("segment").to_pylist() == ["x", "y"]
    assert written.column("seen_at").to_pylist() == [T1, None]
    assert written.column("visits").to_pylist() == ROWS["visits"]


def test_a_good_batch_reaches_the_online_store_by_push(store: FeatureStore) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    assert store.push("events", {**ROWS, "event_timestamp": [now, now]}) == 2
    got = store.get_online_features(["stats:clicks", "stats:segment"], {"user_id": [1, 2]})
    assert got.to_dict() == {"user_id": [1, 2], "clicks": [3, 4], "segment": ["x", "y"]}
    assert len(files(store)) == 1
