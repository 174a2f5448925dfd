"""The OnlineStore contract, on SQLite and on a real Redis: round trips, keys,
monotonic writes (rule 3), concurrency, validation and deletion."""

from __future__ import annotations

import math
import random
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from online_helpers import ALL_DTYPES, PROJECT, T0, make_config, write

from almanac.config import RepoConfig
from almanac.definitions.types import arrow_type
from almanac.errors import ConfigError, InputError
from almanac.online import OnlineStore, ViewRead, open_online_store

INT_KEY = {"user_id": pa.int64()}


def read_one(
    online: OnlineStore, view: str, keys: dict[str, list[Any]], features: dict[str, str]
) -> tuple[list[int | None], list[list[Any]]]:
    request = ViewRead(
        view, list(keys), list(keys.values()), list(features), list(features.values())
    )
    (rows,) = online.read(PROJECT, [request])
    assert all(len(column) == len(rows.event_times) for column in rows.columns)
    return rows.event_times, [list(row) for row in zip(*rows.columns, strict=True)]


def micros(value: datetime) -> int:
    return (value - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


SAMPLE_ROWS: list[dict[str, Any]] = [
    {
        "flag": True,
        "small": -(2**31),
        "count": 2**63 - 1,
        "ratio": 0.1,
        "score": -1.5e300,
        "label": "héllo wörld ✓",
        "blob": b"\x00\xff\r\n",
        "seen_at": datetime(1969, 7, 20, 20, 17, 40, 123456, tzinfo=UTC),
        "embedding": [0.25, -1.0, 3.5e-8],
        "weights": [1e-300, 2.0],
        "ids": [-(2**63), 0, 2**63 - 1],
        "small_ids": [1, -2],
        "flags": [True, False, True],
        "tags": ["a", "", "b&c=s1:d"],
        "blobs": [b"", b"\x00"],
        "times": [datetime(2000, 1, 1, tzinfo=UTC), datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC)],
    },
    {  # empty values are values, not nulls
        "flag": False,
        "small": 0,
        "count": -(2**63),
        "ratio": float("inf"),
        "score": 0.0,
        "label": "",
        "blob": b"",
        "seen_at": datetime(2262, 4, 11, tzinfo=UTC),
        "embedding": [],
        "weights": [],
        "ids": [],
        "small_ids": [],
        "flags": [],
        "tags": [],
        "blobs": [],
        "times": [],
    },
    {name: None for name in ALL_DTYPES},  # every value null
    {  # lists with null items
        "embedding": [1.0, None],
        "ids": [None],
        "flags": [None, True],
        "tags": [None, "x"],
        "blobs": [b"y", None],
        "times": [None],
        "score": float("nan"),
    },
]


def test_round_trip_of_every_dtype_and_nulls(online: OnlineStore) -> None:
    features = {name: arrow_type(dtype) for name, dtype in ALL_DTYPES.items()}
    rows = [{"user_id": i, "event_timestamp": T0, **row} for i, row in enumerate(SAMPLE_ROWS)]
    assert write(online, "everything", INT_KEY, features, rows) == len(rows)
    # The expected values are what Arrow gives back for the same typed columns
    # (float32 values come back as the float32 number, e.g. 0.1 → 0.10000000149011612).
    table = pa.Table.from_pylist(rows, schema=pa.schema([("user_id", pa.int64()),
        ("event_timestamp", pa.timestamp("us", tz="UTC")), *features.items()]))  # fmt: skip
    expected = table.to_pylist()
    times, values = read_one(
        online, "everything", {"user_id": list(range(len(rows)))}, dict(ALL_DTYPES)
    )
    assert times == [micros(T0)] * len(rows)
    for row, got in zip(expected, values, strict=True):
        for name, value in zip(ALL_DTYPES, got, strict=True):
            want = row[name]
            if isinstance(want, float) and math.isnan(want):
                assert isinstance(value, float) and math.isnan(value), name
            else:
                assert value == want, (name, value, want)
                assert type(value) is type(want), name


def test_single_entity_read_matches_batch_read(online: OnlineStore) -> None:
    rows = [{"user_id": i, "event_timestamp": T0, "count": i * 10} for i in range(5)]
    write(online, "v", INT_KEY, {"count": pa.int64()}, rows)
    for i in range(5):
        assert read_one(online, "v", {"user_id": [i]}, {"count": "int64"})[1] == [[i * 10]]
    times, values = read_one(online, "v", {"user_id": [4, 9, 0, 4]}, {"count": "int64"})
    assert values == [[40], [None], [0], [40]]
    assert times[1] is None and times[0] == times[3] == micros(T0)


def test_reading_a_view_never_written_finds_nothing(online: OnlineStore) -> None:
    times, values = read_one(online, "nothing", {"user_id": [1, 2]}, {"x": "int64"})
    assert times == [None, None] and values == [[None], [None]]


def test_composite_and_string_keys_do_not_collide(online: OnlineStore) -> None:
    keys = {"a": pa.string(), "b": pa.string()}
    # Pairs whose naive concatenations coincide, and strings holding the separators.
    pairs = [("x&b=s1:y", "z"), ("x", "b=s1:y&z"), ("x&", "y"), ("x", "&y"), ("", "x&y"),
             ("x&y", ""), ("1", "2"), ("12", ""), ("é", "e"), ("e", "é"), ("", "")]  # fmt: skip
    rows = [{"a": a, "b": b, "event_timestamp": T0, "n": i} for i, (a, b) in enumerate(pairs)]
    write(online, "pairs", keys, {"n": pa.int64()}, rows)
    columns = {"a": [a for a, _ in pairs], "b": [b for _, b in pairs]}
    assert read_one(online, "pairs", columns, {"n": "int64"})[1] == [[i] for i in range(len(pairs))]
    assert read_one(online, "pairs", {"a": ["x&b"], "b": ["y"]}, {"n": "int64"})[0] == [None]


def test_int_and_string_keys_of_the_same_name_stay_apart(online: OnlineStore) -> None:
    write(online, "by_int", {"id": pa.int64()}, {"f": pa.int64()},
          [{"id": 1, "event_timestamp": T0, "f": 10}])  # fmt: skip
    write(online, "by_str", {"id": pa.string()}, {"f": pa.int64()},
          [{"id": "1", "event_timestamp": T0, "f": 20}])  # fmt: skip
    assert read_one(online, "by_int", {"id": [1]}, {"f": "int64"})[1] == [[10]]
    assert read_one(online, "by_str", {"id": ["1"]}, {"f": "int64"})[1] == [[20]]


def test_key_order_of_a_composite_key_does_not_matter(online: OnlineStore) -> None:
    write(online, "pair", {"b": pa.int64(), "a": pa.string()}, {"f": pa.int64()},
          [{"a": "x", "b": 2, "event_timestamp": T0, "f": 7}])  # fmt: skip
    assert read_one(online, "pair", {"b": [2], "a": ["x"]}, {"f": "int64"})[1] == [[7]]


def test_an_older_write_never_replaces_a_newer_one(online: OnlineStore) -> None:
    feature = {"count": pa.int64()}
    assert (
        write(online, "v", INT_KEY, feature, [{"user_id": 1, "event_timestamp": T0, "count": 2}])
        == 1
    )
    older = T0 - timedelta(microseconds=1)
    assert (
        write(online, "v", INT_KEY, feature, [{"user_id": 1, "event_timestamp": older, "count": 1}])
        == 0
    )
    assert read_one(online, "v", {"user_id": [1]}, {"count": "int64"}) == ([micros(T0)], [[2]])
    # An equal event time overwrites (a re-materialization of the same row wins).
    assert (
        write(online, "v", INT_KEY, feature, [{"user_id": 1, "event_timestamp": T0, "count": 3}])
        == 1
    )
    assert read_one(online, "v", {"user_id": [1]}, {"count": "int64"})[1] == [[3]]
    newer = T0 + timedelta(days=1)
    write(online, "v", INT_KEY, feature, [{"user_id": 1, "event_timestamp": newer, "count": None}])
    assert read_one(online, "v", {"user_id": [1]}, {"count": "int64"}) == (
        [micros(newer)],
        [[None]],
    )


def test_out_of_order_rows_within_one_batch_keep_the_latest(online: OnlineStore) -> None:
    stamps = [T0 + timedelta(seconds=s) for s in (5, 1, 9, 3, 9, 0)]
    rows = [{"user_id": 1, "event_timestamp": t, "count": i} for i, t in enumerate(stamps)]
    write(online, "v", INT_KEY, {"count": pa.int64()}, rows)
    # Latest event time wins; of the two rows at +9s the later one in the batch.
    assert read_one(online, "v", {"user_id": [1]}, {"count": "int64"})[1] == [[4]]


def test_a_view_keeps_its_own_event_time(online: OnlineStore) -> None:
    feature = {"count": pa.int64()}
    write(online, "a", INT_KEY, feature, [{"user_id": 1, "event_timestamp": T0, "count": 1}])
    older = T0 - timedelta(days=1)
    assert (
        write(online, "b", INT_KEY, feature, [{"user_id": 1, "event_timestamp": older, "count": 2}])
        == 1
    )
    assert read_one(online, "b", {"user_id": [1]}, {"count": "int64"})[1] == [[2]]


def test_concurrent_writers_end_with_the_newest_values(online: OnlineStore) -> None:
    keys = list(range(200))
    versions = list(range(12))
    random.Random(7).shuffle(versions)  # writers start with old and new versions mixed

    def writer(version: int) -> None:
        rows = [{"user_id": k, "event_timestamp": T0 + timedelta(seconds=version),
                 "count": version * 1000 + k} for k in keys]  # fmt: skip
        random.Random(version).shuffle(rows)
        for start in range(0, len(rows), 50):
            write(online, "v", INT_KEY, {"count": pa.int64()}, rows[start : start + 50])

    threads = [threading.Thread(target=writer, args=(v,)) for v in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    newest = max(versions)
    times, values = read_one(online, "v", {"user_id": keys}, {"count": "int64"})
    assert values == [[newest * 1000 + k] for k in keys]
    assert set(times) == {micros(T0 + timedelta(seconds=newest))}


def test_many_rows_through_several_slices(config: RepoConfig) -> None:
    small = config.model_copy(
        update={"online": config.online.model_copy(update={"batch_size": 100})}
    )
    online = open_online_store(small)
    try:
        count = 1_000
        table = pa.table({
            "user_id": pa.array(range(count), pa.int64()),
            # nanosecond and naive timestamps are accepted (naive means UTC)
            "event_timestamp": pa.array([T0.replace(tzinfo=None)] * count, pa.timestamp("ns")),
            "v": pa.array([float(i) for i in range(count)], pa.float64()),
            "e": pa.array([[float(i)] * 4 for i in range(count)], pa.list_(pa.float32(), 4)),
        })  # fmt: skip
        assert online.write_batch(PROJECT, "big", ["user_id"], ["v", "e"], table) == count
        ids = [999, 0, 500]
        times, values = read_one(
            online, "big", {"user_id": ids}, {"v": "float64", "e": "list<float32>"}
        )
        assert values == [[float(i), [float(i)] * 4] for i in ids]
        assert times == [micros(T0)] * 3
        # A slice of a table (non-zero Arrow offsets) encodes the right rows.
        assert (
            online.write_batch(PROJECT, "sliced", ["user_id"], ["v", "e"], table.slice(10, 5)) == 5
        )
        assert read_one(online, "sliced", {"user_id": [10, 14, 15]}, {"e": "list<float32>"})[1] == [
            [[10.0] * 4],
            [[14.0] * 4],
            [None],
        ]
    finally:
        online.close()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop_columns(["count"]), "column 'count' is missing"),
        (lambda t: t.drop_columns(["event_timestamp"]), "column 'event_timestamp' is missing"),
        (lambda t: t.set_column(0, "user_id", pa.array([1, None], pa.int64())), "null"),
        (lambda t: t.set_column(0, "user_id", pa.array([1.0, 2.0])), "must be int64 or string"),
        (lambda t: t.set_column(1, "event_timestamp", pa.array([1, 2])), "must be a timestamp"),
        (lambda t: t.set_column(2, "count", pa.array([{"a": 1}, None])), "no dtype carries"),
    ],
)
def test_a_bad_batch_is_rejected_and_nothing_is_written(
    online: OnlineStore, change: Any, message: str
) -> None:
    table = pa.table({"user_id": pa.array([1, 2], pa.int64()),
                      "event_timestamp": pa.array([T0, T0], pa.timestamp("us", tz="UTC")),
                      "count": pa.array([1, 2], pa.int64())})  # fmt: skip
    with pytest.raises(InputError, match=message):
        online.write_batch(PROJECT, "v", ["user_id"], ["count"], change(table))
    assert read_one(online, "v", {"user_id": [1, 2]}, {"count": "int64"})[0] == [None, None]


def test_an_empty_batch_writes_nothing(online: OnlineStore) -> None:
    assert write(online, "v", INT_KEY, {"count": pa.int64()}, []) == 0


def test_delete_view_forgets_only_that_view(online: OnlineStore) -> None:
    rows = [{"user_id": i, "event_timestamp": T0, "count": i} for i in range(3)]
    write(online, "gone", INT_KEY, {"count": pa.int64()}, rows)
    write(online, "kept", INT_KEY, {"count": pa.int64()}, rows)
    online.delete_view(PROJECT, "gone")
    assert read_one(online, "gone", {"user_id": [0, 1, 2]}, {"count": "int64"})[0] == [None] * 3
    assert read_one(online, "kept", {"user_id": [0, 1, 2]}, {"count": "int64"})[1] == [
        [0],
        [1],
        [2],
    ]
    online.delete_view(PROJECT, "never_written")  # no error
    # The view can be written again afterwards, even with older event times.
    old = [{"user_id": 0, "event_timestamp": T0 - timedelta(days=9), "count": 5}]
    assert write(online, "gone", INT_KEY, {"count": pa.int64()}, old) == 1


def test_projects_are_separate(online: OnlineStore) -> None:
    table = pa.table({"user_id": pa.array([1], pa.int64()),
                      "event_timestamp": pa.array([T0], pa.timestamp("us", tz="UTC")),
                      "count": pa.array([1], pa.int64())})  # fmt: skip
    online.write_batch("other", "v", ["user_id"], ["count"], table)
    assert read_one(online, "v", {"user_id": [1]}, {"count": "int64"})[0] == [None]


def test_a_feature_added_later_reads_as_null_for_old_rows(online: OnlineStore) -> None:
    write(online, "v", INT_KEY, {"a": pa.int64()}, [{"user_id": 1, "event_timestamp": T0, "a": 1}])
    assert read_one(online, "v", {"user_id": [1]}, {"a": "int64", "b": "string"})[1] == [[1, None]]
    write(online, "v", INT_KEY, {"a": pa.int64(), "b": pa.string()},
          [{"user_id": 2, "event_timestamp": T0, "a": 2, "b": "x"}])  # fmt: skip
    assert read_one(online, "v", {"user_id": [1, 2]}, {"b": "string", "a": "int64"})[1] == [
        [None, 1],
        ["x", 2],
    ]


def test_ping(online: OnlineStore) -> None:
    online.ping()


def test_unknown_url_scheme_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown scheme"):
        open_online_store(make_config("cassandra://x", tmp_path))


def test_sqlite_path_is_read_from_the_repo_folder(tmp_path: Path) -> None:
    online = open_online_store(make_config("sqlite:///data/online.db", tmp_path))
    online.close()
    assert (tmp_path / "data" / "online.db").is_file()


def test_another_store_instance_sees_new_views_and_features(
    config: RepoConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two instances stand for a server and a materialization job in other processes.
    monkeypatch.setattr("almanac.online.sqlite.store._RECHECK_SECONDS", 0.0)
    reader, writer = open_online_store(config), open_online_store(config)
    try:
        wanted = {"a": "int64", "b": "string"}
        assert read_one(reader, "v", {"user_id": [1]}, wanted)[0] == [None]
        write(
            writer, "v", INT_KEY, {"a": pa.int64()}, [{"user_id": 1, "event_timestamp": T0, "a": 1}]
        )
        assert read_one(reader, "v", {"user_id": [1]}, wanted)[1] == [[1, None]]
        write(writer, "v", INT_KEY, {"a": pa.int64(), "b": pa.string()},
              [{"user_id": 1, "event_timestamp": T0, "a": 2, "b": "x"}])  # fmt: skip
        assert read_one(reader, "v", {"user_id": [1]}, wanted)[1] == [[2, "x"]]
        writer.delete_view(PROJECT, "v")
        assert read_one(reader, "v", {"user_id": [1]}, wanted)[0] == [None]
    finally:
        reader.close()
        writer.close()


def test_a_view_keeps_its_key_types(online: OnlineStore) -> None:
    write(online, "v", INT_KEY, {"a": pa.int64()}, [{"user_id": 1, "event_timestamp": T0, "a": 1}])
    if type(online).__name__ == "SqliteOnlineStore":  # a table has typed key columns
        with pytest.raises(InputError, match="stored with join keys"):
            write(online, "v", {"user_id": pa.string()}, {"a": pa.int64()},
                  [{"user_id": "1", "event_timestamp": T0, "a": 2}])  # fmt: skip
    else:  # a hash key carries its type: the string key is another entity
        write(online, "v", {"user_id": pa.string()}, {"a": pa.int64()},
              [{"user_id": "1", "event_timestamp": T0, "a": 2}])  # fmt: skip
    assert read_one(online, "v", {"user_id": [1]}, {"a": "int64"})[1] == [[1]]


# ---- merge_batch: the read-modify-write behind pushed aggregation tiles ---------------------


def _add_counts(stored: Any, table: pa.Table) -> pa.Table:
    """A merge: the stored count plus the new one; the later event time."""
    counts = [
        (old or 0) + new
        for old, new in zip(stored.columns[0], table.column("n").to_pylist(), strict=True)
    ]
    times = [
        new if old is None else max(old, new)
        for old, new in zip(
            stored.event_times, table.column("event_timestamp").cast(pa.int64()).to_pylist(),
            strict=True,
        )
    ]  # fmt: skip
    return table.set_column(2, "n", pa.array(counts, pa.int64())).set_column(
        1, "event_timestamp", pa.array(times, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    )


def _counts(user_ids: list[int], times: list[datetime], n: list[int]) -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array(user_ids, pa.int64()),
            "event_timestamp": pa.array(times, pa.timestamp("us", tz="UTC")),
            "n": pa.array(n, pa.int64()),
        }
    )


def test_merge_batch_combines_with_what_is_stored(online: OnlineStore) -> None:
    merge = online.merge_batch
    assert merge(PROJECT, "c", ["user_id"], ["n"], _counts([1, 2], [T0, T0], [5, 1]), _add_counts) == 2  # fmt: skip
    # An older event time is merged too (a late event), and the later time is kept.
    earlier = T0 - timedelta(hours=1)
    merge(PROJECT, "c", ["user_id"], ["n"], _counts([1, 3], [earlier, earlier], [2, 7]), _add_counts)  # fmt: skip
    times, rows = read_one(online, "c", {"user_id": [1, 2, 3, 4]}, {"n": "int64"})
    assert rows == [[7], [1], [7], [None]]
    assert times == [micros(T0), micros(T0), micros(earlier), None]


def test_concurrent_merges_lose_no_update(online: OnlineStore) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(30):
                online.merge_batch(PROJECT, "c", ["user_id"], ["n"],
                                   _counts([1, 2], [T0, T0], [1, 2]), _add_counts)  # fmt: skip
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    _, rows = read_one(online, "c", {"user_id": [1, 2]}, {"n": "int64"})
    assert rows == [[120], [240]]


def test_equal_event_times_are_ordered_by_created_time(online: OnlineStore) -> None:
    """Rule 2's order online: on an equal event time the later created time wins, a row
    without one is the oldest, and an equal pair overwrites (replays are harmless)."""
    stamp = pa.timestamp("us", tz="UTC")

    def put(created: datetime | None, value: int, at: datetime = T0) -> int:
        table = pa.table({
            "user_id": pa.array([1], pa.int64()),
            "event_timestamp": pa.array([at], stamp),
            "created_timestamp": pa.array([created], stamp),
            "f": pa.array([value], pa.int64()),
        })  # fmt: skip
        return online.write_batch(PROJECT, "v", ["user_id"], ["f"], table)

    def stored() -> int:
        return read_one(online, "v", {"user_id": [1]}, {"f": "int64"})[1][0][0]

    later, earlier = T0 + timedelta(hours=2), T0 + timedelta(hours=1)
    assert put(later, 2) == 1
    assert put(earlier, 1) == 0 and stored() == 2  # created earlier: older
    assert put(None, 0) == 0 and stored() == 2  # no created time: the oldest
    assert put(later, 3) == 1 and stored() == 3  # the same pair: a replay overwrites
    assert put(None, 4, at=T0 + timedelta(seconds=1)) == 1 and stored() == 4  # newer event
    # Rows without created times keep the plain rule: an equal event time overwrites.
    write(online, "w", INT_KEY, {"f": pa.int64()}, [{"user_id": 1, "event_timestamp": T0, "f": 1}])
    write(online, "w", INT_KEY, {"f": pa.int64()}, [{"user_id": 1, "event_timestamp": T0, "f": 2}])
    assert read_one(online, "w", {"user_id": [1]}, {"f": "int64"})[1] == [[2]]
