"""`FeatureStore.push`: every input form, validation before any write, both stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from almanac import FeatureStore
from almanac.errors import DefinitionError, InputError, NotFoundError

T1 = datetime(2024, 5, 1, 12, tzinfo=UTC)
T2 = T1 + timedelta(hours=1)
ROWS = {
    "user_id": ["a", "b"],
    "event_timestamp": [T1, T1],
    "clicks": [1, 2],
    "spend": [1.5, None],
    "segment": ["x", "y"],
    "last_page": ["/home", "/cart"],
}


def online(store: FeatureStore, users: list[str], features: list[str] | None = None) -> dict:
    response = store.get_online_features(
        features or ["user_stats:clicks", "user_stats:spend", "user_recent:last_page"],
        {"user_id": users},
    )
    return response.to_dict(include_statuses=True)


def offline_files(store: FeatureStore, source: str) -> list:
    folder = store.config.resolve_path(store.config.offline.data_path) / source
    return sorted(folder.glob("*.parquet")) if folder.exists() else []


@pytest.mark.parametrize(
    "make",
    [
        lambda: ROWS,
        lambda: [
            dict(zip(ROWS, values, strict=True)) for values in zip(*ROWS.values(), strict=True)
        ],
        lambda: pd.DataFrame(ROWS),
        lambda: pl.DataFrame(ROWS),
        lambda: pa.table(ROWS),
        lambda: pa.table(ROWS).to_batches()[0],
    ],
    ids=["dict", "rows", "pandas", "polars", "arrow", "record_batch"],
)
def test_every_input_form_reaches_the_online_store(store: FeatureStore, make) -> None:  # type: ignore[no-untyped-def]
    assert store.push("user_events", make(), to="online") == 2
    # The views' TTL (1 day) is long past for 2024 rows: read the raw values through a
    # view without TTL and check statuses of the one with it.
    got = online(store, ["a", "b"])
    assert got["last_page"] == ["/home", "/cart"]
    assert got["clicks__status"] == ["OUTSIDE_MAX_AGE", "OUTSIDE_MAX_AGE"]
    assert offline_files(store, "user_events") == []  # to="online" only


def test_the_default_push_writes_both_stores(store: FeatureStore) -> None:
    assert store.push("user_events", ROWS) == 2
    assert online(store, ["a", "b"])["last_page"] == ["/home", "/cart"]
    assert len(offline_files(store, "user_events")) == 1


def test_online_values_are_typed_and_monotonic(store: FeatureStore) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    store.push("user_events", {**ROWS, "event_timestamp": [now, now]})
    got = online(store, ["a", "b"])
    assert got["clicks"] == [1, 2] and got["spend"] == [1.5, None]
    assert got["spend__status"] == ["PRESENT", "NULL_VALUE"]
    # An older row never replaces a newer one (rule 3); within a batch too.
    older = {**ROWS, "event_timestamp": [now - timedelta(hours=1)] * 2, "clicks": [100, 200]}
    store.push("user_events", older)
    assert online(store, ["a"])["clicks"] == [1]
    newer_then_older = {
        "user_id": ["a", "a"], "event_timestamp": [now + timedelta(seconds=2), now + timedelta(seconds=1)],
        "clicks": [7, 8], "spend": [0.0, 0.0], "segment": ["z", "z"], "last_page": ["/n", "/o"],
    }  # fmt: skip
    store.push("user_events", newer_then_older)
    assert online(store, ["a"])["clicks"] == [7]


def test_text_timestamps_naive_mean_utc(store: FeatureStore) -> None:
    rows = {**ROWS, "event_timestamp": ["2024-05-01 12:00:00", "2024-05-01T14:00:00+02:00"]}
    store.push("user_events", rows, to="offline")
    (file,) = offline_files(store, "user_events")
    stamps = pq.read_table(file).column("event_timestamp").to_pylist()
    assert stamps == [T1, T1]


def test_offline_writes_the_source_dataset_once_with_every_view_column(store: FeatureStore) -> None:
    assert store.push("user_events", ROWS, to="offline") == 2
    (file,) = offline_files(store, "user_events")
    table = pq.read_table(file)
    assert {"user_id", "event_timestamp", "clicks", "spend", "segment", "last_page"} <= set(
        table.column_names
    )
    assert table.column("clicks").type == pa.int64()
    assert online(store, ["a"])["clicks__status"] == ["NOT_FOUND"]  # offline only
    # And training reads it back through both views.
    training = store.get_historical_features(
        pd.DataFrame({"user_id": ["a"], "event_timestamp": [T1 + timedelta(minutes=1)]}),
        ["user_stats:clicks", "user_recent:last_page"],
    ).to_pandas()
    assert training["clicks"].tolist() == [1] and training["last_page"].tolist() == ["/home"]


def test_online_and_offline(store: FeatureStore) -> None:
    now = datetime.now(UTC)
    assert (
        store.push("user_events", {**ROWS, "event_timestamp": [now, now]}, to="online_and_offline")
        == 2
    )
    assert len(offline_files(store, "user_events")) == 1
    assert online(store, ["b"])["clicks"] == [2]


def test_every_dtype(store: FeatureStore) -> None:
    store.push("profile_events", {
        "user_id": ["a"], "event_timestamp": [datetime.now(UTC)], "avatar": [b"\x01"],
        "signup_at": ["2020-01-01T00:00:00Z"], "embedding": [[1.0, 2.5]], "vip": [False],
    })  # fmt: skip
    got = store.get_online_features(["user_profile"], {"user_id": ["a"]}).to_dict()
    assert got == {"user_id": ["a"], "avatar": [b"\x01"], "signup_at": [datetime(2020, 1, 1, tzinfo=UTC)],
                   "embedding": [[1.0, 2.5]], "vip": [False]}  # fmt: skip


def test_unknown_push_source_lists_close_names(store: FeatureStore) -> None:
    with pytest.raises(
        NotFoundError, match="unknown push source 'user_event'; did you mean 'user_events'"
    ):
        store.push("user_event", ROWS)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"clicks": ["1", "2"]}, "column 'clicks' holds text, but the feature is declared int64"),
        ({"clicks": [1.5, 2.0]}, "column 'clicks'"),
        ({"user_id": [1, 2]}, r"join key 'user_id' has type int64, but .* declares it string"),
        ({"user_id": ["a", None]}, "join key 'user_id' has 1 null"),
        ({"event_timestamp": ["soon", "later"]}, "'soon' is not an ISO-8601 timestamp"),
        ({"event_timestamp": [T1, None]}, "timestamp column 'event_timestamp' has 1 null"),
        ({"segment": [1, 2]}, "column 'segment'"),
        ({"spend": [1, "x"]}, "column 'spend': values of mixed"),
        ({"segment": ["only one"]}, "different lengths"),
    ],
)
def test_bad_rows_name_the_column_and_write_nothing(
    store: FeatureStore, change: dict, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        store.push("user_events", {**ROWS, **change}, to="online_and_offline")
    assert online(store, ["a", "b"])["last_page__status"] == ["NOT_FOUND", "NOT_FOUND"]
    assert offline_files(store, "user_events") == []


def test_missing_columns(store: FeatureStore) -> None:
    with pytest.raises(
        InputError, match=r"missing column\(s\) 'last_page' \(of feature view 'user_recent'\)"
    ):
        store.push("user_events", {k: v for k, v in ROWS.items() if k != "last_page"})
    with pytest.raises(InputError, match="missing timestamp column 'event_timestamp'"):
        store.push("user_events", {k: v for k, v in ROWS.items() if k != "event_timestamp"})


def test_bad_arguments(store: FeatureStore) -> None:
    with pytest.raises(InputError, match="to must be one of"):
        store.push("user_events", ROWS, to="both")
    with pytest.raises(InputError, match="rows must be"):
        store.push("user_events", 42)
    with pytest.raises(InputError, match="must be a list of values"):
        store.push("user_events", {**ROWS, "clicks": 3})
    assert store.push("user_events", {k: [] for k in ROWS}) == 0


def test_a_column_no_view_reads_is_refused_by_name(store: FeatureStore) -> None:
    now = datetime.now(UTC)
    with pytest.raises(InputError, match=r"unknown column\(s\) 'live_score; DROP TABLE x'"):
        store.push("user_events", {**ROWS, "event_timestamp": [now, now], "live_score; DROP TABLE x": [1, 2]})  # fmt: skip
    assert offline_files(store, "user_events") == []
    assert online(store, ["a"])["last_page"] == [None]


def test_a_push_source_feeding_a_transformed_view_is_refused_before_any_write(
    tmp_path,
) -> None:
    repo = tmp_path / "transformed"
    repo.mkdir()
    (repo / "almanac.yaml").write_text("project: transformed\n")
    (repo / "features.py").write_text(
        "from almanac import Entity, FeatureView, Field, Int64, PushSource\n"
        "user = Entity(name='user', join_keys=['user_id'])\n"
        "clicks = PushSource(name='clicks')\n"
        "doubled = FeatureView(name='doubled', entities=[user], source=clicks,\n"
        "    schema=[Field('n2', Int64)],\n"
        "    transformation='SELECT user_id, event_timestamp, n * 2 AS n2 FROM source')\n"
    )
    with FeatureStore(repo) as store:
        store.apply()
        rows = {"user_id": ["a"], "event_timestamp": [T1], "n2": [1]}
        for to in ("online", "offline", "online_and_offline"):
            with pytest.raises(InputError, match="doubled, whose values come from a batch"):
                store.push("clicks", rows, to=to)
        assert offline_files(store, "clicks") == []


AGG_REPO = (
    "from almanac import Aggregation, AggregationView, Entity, Field, PushSource, String\n"
    "user = Entity(name='user', join_keys=['user_id'])\n"
    "clicks = PushSource(name='clicks')\n"
    "click_counts = AggregationView(name='click_counts', entities=[user], source=clicks,\n"
    "    columns=[Field('page', String)],\n"
    "    aggregations=[Aggregation(function='count', windows=['1h']),\n"
    "                  Aggregation(column='page', function='count_distinct', windows=['1h'])])\n"
    "visits = PushSource(name='visits')\n"
    "visit_counts = AggregationView(name='visit_counts', entities=[user], source=visits,\n"
    "    aggregations=[Aggregation(function='count', windows=['1h'])])\n"
)


def test_a_push_to_a_source_of_an_aggregation_view_counts_online_and_offline(
    tmp_path,
) -> None:
    """The whole path for a user: counts over push sources (one that reads a column, one
    that reads nothing but keys and times), both stores updated by one push."""
    repo = tmp_path / "agg"
    repo.mkdir()
    (repo / "almanac.yaml").write_text("project: agg\n")
    (repo / "features.py").write_text(AGG_REPO)
    with FeatureStore(repo) as store:
        store.apply()
        rows = {"user_id": ["a", "a", "b"], "event_timestamp": [T1, T1, T1],
                "page": ["/x", "/y", "/x"]}  # fmt: skip
        assert store.push("clicks", rows) == 3
        assert store.push("visits", {"user_id": ["a"], "event_timestamp": [T1]}) == 1
        features = ["click_counts:count_1h", "click_counts:page_count_distinct_1h"]
        online = store.get_online_features(features, [{"user_id": "a"}, {"user_id": "b"}], now=T1)
        assert online.to_dict()["count_1h"] == [2, 1]
        assert online.to_dict()["page_count_distinct_1h"] == [2, 1]
        spine = {"user_id": ["a", "b"], "event_timestamp": [T1, T1]}
        offline = store.get_historical_features(pa.table(spine), features).to_arrow()
        assert offline.column("count_1h").to_pylist() == [2, 1]
        visits = store.get_historical_features(pa.table(spine), ["visit_counts:count_1h"])
        assert visits.to_arrow().column("count_1h").to_pylist() == [1, 0]
        assert len(offline_files(store, "clicks")) == 1
        assert len(offline_files(store, "visits")) == 1


def test_a_counted_column_of_a_push_source_must_declare_its_type(tmp_path) -> None:
    repo = tmp_path / "untyped"
    repo.mkdir()
    (repo / "almanac.yaml").write_text("project: untyped\n")
    (repo / "features.py").write_text(
        AGG_REPO.replace("    columns=[Field('page', String)],\n", "")
    )
    with FeatureStore(repo) as store, pytest.raises(DefinitionError, match="'page' is counted but has no declared type"):  # fmt: skip
        store.apply()
