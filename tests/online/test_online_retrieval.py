"""get_online_features on SQLite and Redis: statuses (rule 4), TTL bounds, request
order, entity-row validation and the response object."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from online_helpers import T0, StoreStub, catalog, write

from almanac.errors import InputError, NotFoundError
from almanac.online import FeatureStatus, OnlineResponse
from almanac.online.retrieval import get_online_features

S = FeatureStatus
USER = {"user_id": pa.int64()}
ITEM = {"item_id": pa.string()}
HOUR = timedelta(hours=1)


def fill(store: StoreStub) -> None:
    write(store.online, "user_stats", USER, {"clicks": pa.int64(), "spend": pa.float64()}, [
        {"user_id": 1, "event_timestamp": T0, "clicks": 10, "spend": 1.5},
        {"user_id": 2, "event_timestamp": T0, "clicks": None, "spend": 2.5},
        {"user_id": 3, "event_timestamp": T0 - HOUR, "clicks": 30, "spend": 3.5},
    ])  # fmt: skip
    write(store.online, "item_stats", ITEM, {"price": pa.float64(), "clicks": pa.int64()}, [
        {"item_id": "a", "event_timestamp": T0 - timedelta(days=400), "price": 9.5, "clicks": 1},
        {"item_id": "1", "event_timestamp": T0, "price": 1.0, "clicks": 2},
    ])  # fmt: skip
    write(store.online, "user_item", {**USER, **ITEM}, {"affinity": pa.float32()}, [
        {"user_id": 1, "item_id": "a", "event_timestamp": T0, "affinity": 0.5},
    ])  # fmt: skip


def test_statuses_and_the_exact_ttl_boundary(store: StoreStub) -> None:
    fill(store)
    rows = [{"user_id": u} for u in (1, 2, 3, 4)]
    # At T0, user 3's row is exactly one TTL (1h) old: still valid (e >= now - ttl).
    response = get_online_features(store, ["user_stats:clicks"], rows, now=T0)
    assert response.to_dict() == {"user_id": [1, 2, 3, 4], "clicks": [10, None, 30, None]}
    assert response.statuses["clicks"] == [S.PRESENT, S.NULL_VALUE, S.PRESENT, S.NOT_FOUND]
    assert response.event_timestamps["clicks"] == [T0, T0, T0 - HOUR, None]
    # One microsecond later it is outside the max age: null, but its event time is kept.
    later = T0 + timedelta(microseconds=1)
    response = get_online_features(store, ["user_stats:clicks"], rows, now=later)
    assert response.to_dict()["clicks"] == [10, None, None, None]
    assert response.statuses["clicks"] == [S.PRESENT, S.NULL_VALUE, S.OUTSIDE_MAX_AGE, S.NOT_FOUND]
    assert response.event_timestamps["clicks"][2] == T0 - HOUR
    # A view without TTL never expires.
    response = get_online_features(store, ["item_stats:price"], [{"item_id": "a"}], now=T0)
    assert response.statuses["price"] == [S.PRESENT]


def test_values_come_in_request_order(store: StoreStub) -> None:
    fill(store)
    features = ["user_item:affinity", "user_stats:spend", "item_stats:price", "user_stats:clicks"]
    rows = [
        {"item_id": "1", "user_id": 2},
        {"user_id": 1, "item_id": "a"},
        {"user_id": 1, "item_id": "a"},
    ]
    response = get_online_features(store, features, rows, now=T0)
    assert response.to_dict() == {
        "user_id": [2, 1, 1],
        "item_id": ["1", "a", "a"],
        "affinity": [None, 0.5, 0.5],
        "spend": [2.5, 1.5, 1.5],
        "price": [1.0, 9.5, 9.5],
        "clicks": [None, 10, 10],
    }
    assert list(response.statuses) == ["affinity", "spend", "price", "clicks"]


def test_one_entity_asked_for_several_times(store: StoreStub) -> None:
    """Scoring several transactions of one customer asks for it once per row: every row
    gets its values (a store that collapsed duplicates to one key once found none)."""
    fill(store)
    for rows in ([{"user_id": 1}] * 3, [{"user_id": 1}, {"user_id": 9}, {"user_id": 1}]):
        response = get_online_features(store, ["user_stats:spend"], rows, now=T0)
        expected = [1.5 if row["user_id"] == 1 else None for row in rows]
        assert response.to_dict()["spend"] == expected
    twice = get_online_features(store, ["user_item:affinity"], [{"user_id": 1, "item_id": "a"}] * 2, now=T0)  # fmt: skip
    assert twice.to_dict()["affinity"] == [0.5, 0.5]


def test_same_feature_name_in_two_views_needs_full_names(store: StoreStub) -> None:
    fill(store)
    rows = {"user_id": [1], "item_id": ["1"]}
    with pytest.raises(InputError, match="full_feature_names"):
        get_online_features(store, ["user_stats:clicks", "item_stats:clicks"], rows)
    response = get_online_features(
        store, ["user_stats:clicks", "item_stats"], rows, full_feature_names=True, now=T0
    )
    assert response.to_dict() == {"user_id": [1], "item_id": ["1"], "user_stats__clicks": [10],
                                  "item_stats__price": [1.0], "item_stats__clicks": [2]}  # fmt: skip


def test_feature_service(store: StoreStub) -> None:
    fill(store)
    response = get_online_features(
        store, entity_rows=[{"user_id": 1, "item_id": "1"}], feature_service="ranker", now=T0
    )
    assert response.to_dict() == {"user_id": [1], "item_id": ["1"], "clicks": [10], "price": [1.0]}


def test_int_and_string_keys_with_equal_text_are_different_entities(store: StoreStub) -> None:
    fill(store)
    # item "1" exists; user 1 exists: each is found only through its own view.
    response = get_online_features(
        store, ["item_stats:price", "user_stats:spend"], {"item_id": ["1"], "user_id": [1]}, now=T0
    )
    assert response.to_dict()["price"] == [1.0] and response.to_dict()["spend"] == [1.5]
    response = get_online_features(store, ["item_stats:price"], [{"item_id": "2"}], now=T0)
    assert response.statuses["price"] == [S.NOT_FOUND]


def test_entity_rows_as_columns_dataframe_or_numpy(store: StoreStub) -> None:
    fill(store)
    expected = {"user_id": [2, 1], "spend": [2.5, 1.5]}
    for rows in (
        {"user_id": [2, 1]},
        {"user_id": (2, 1)},
        {"user_id": np.array([2, 1])},
        pd.DataFrame({"user_id": [2, 1], "label": [0, 1]}),
        pa.table({"user_id": [2, 1]}),
        pl.DataFrame({"user_id": [2, 1]}),
        [{"user_id": np.int64(2)}, {"user_id": 1, "extra": "ignored"}],
    ):
        response = get_online_features(store, ["user_stats:spend"], rows, now=T0)
        assert response.to_dict() == expected, rows


def test_no_rows_gives_an_empty_response(store: StoreStub) -> None:
    response = get_online_features(store, ["user_stats:spend"], [])
    assert len(response) == 0 and response.to_dict() == {"user_id": [], "spend": []}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"user": 1}], "entity row 0 has no join key 'user_id'"),
        ([{"user_id": 1}, {}], "entity row 1 has no join key 'user_id'"),
        ({"userid": [1]}, "no join key 'user_id'"),
        ([{"user_id": "1"}], "join key 'user_id' must be an int64, got str '1' in entity row 0"),
        ([{"user_id": True}], "join key 'user_id' must be an int64, got bool"),
        ([{"user_id": 1.0}], "must be an int64, got float"),
        ([{"user_id": None}], "must be an int64, got NoneType"),
        ([{"user_id": 2**63}], "must fit in int64"),
        ([1], "entity row 0 must be a dict"),
        ("user_id=1", "must be a list of dicts or a dict of columns"),
    ],
)
def test_bad_entity_rows_name_the_problem(store: StoreStub, rows: Any, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        get_online_features(store, ["user_stats:spend", "user_stats:clicks"], rows)


def test_key_columns_of_different_lengths(store: StoreStub) -> None:
    with pytest.raises(InputError, match="different lengths"):
        get_online_features(store, ["user_item:affinity"], {"user_id": [1, 2], "item_id": ["a"]})


def test_a_string_key_rejects_numbers(store: StoreStub) -> None:
    with pytest.raises(InputError, match="join key 'item_id' must be a string, got int 1"):
        get_online_features(store, ["item_stats:price"], [{"item_id": 1}])


def test_unknown_features_and_offline_views(store: StoreStub) -> None:
    with pytest.raises(NotFoundError, match="did you mean 'user_stats:clicks'"):
        get_online_features(store, ["user_stats:click"], [{"user_id": 1}])
    with pytest.raises(InputError, match="not served online"):
        get_online_features(store, ["offline_only:x"], [{"user_id": 1}])
    with pytest.raises(InputError, match="no entity rows"):
        get_online_features(store, ["user_stats:spend"])


def test_every_dtype_through_the_response(store: StoreStub) -> None:
    embedding = [0.5, 1.5]
    stamp = datetime(2020, 2, 2, 2, 2, 2, 2, tzinfo=UTC)
    write(store.online, "everything", USER, {
        "embedding": pa.list_(pa.float32()), "seen_at": pa.timestamp("us", tz="UTC"),
        "blob": pa.binary(), "flag": pa.bool_(),
    }, [{"user_id": 1, "event_timestamp": T0, "embedding": embedding, "seen_at": stamp,
         "blob": b"\x00", "flag": False}])  # fmt: skip
    features = ["everything:embedding", "everything:seen_at", "everything:blob", "everything:flag",
                "everything:label"]  # fmt: skip
    response = get_online_features(store, features, [{"user_id": 1}, {"user_id": 5}])
    assert response.to_dict() == {
        "user_id": [1, 5], "embedding": [embedding, None], "seen_at": [stamp, None],
        "blob": [b"\x00", None], "flag": [False, None], "label": [None, None],
    }  # fmt: skip
    assert response.statuses["label"] == [S.NULL_VALUE, S.NOT_FOUND]
    table = response.to_arrow(include_statuses=True)
    assert table.schema.field("embedding").type == pa.list_(pa.float32())
    assert table.schema.field("seen_at").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("user_id").type == pa.int64()
    assert table.column("label__status").to_pylist() == ["NULL_VALUE", "NOT_FOUND"]
    frame = response.to_pandas(include_event_timestamps=True)
    assert list(frame.columns[:3]) == ["user_id", "embedding", "embedding__event_timestamp"]
    assert frame["embedding__event_timestamp"][0] == pd.Timestamp(T0)


def test_response_is_plain_data() -> None:
    response = OnlineResponse(
        join_keys={"user_id": [1]},
        values={"x": [None]},
        statuses={"x": [S.NOT_FOUND]},
        event_timestamps={"x": [None]},
        dtypes={"user_id": "int64", "x": "int64"},
    )
    assert response.to_dict(include_statuses=True) == {
        "user_id": [1], "x": [None], "x__status": ["NOT_FOUND"]
    }  # fmt: skip
    assert response.to_arrow().schema.field("x").type == pa.int64()


def test_through_the_feature_store_facade(config: Any) -> None:
    from almanac.registry.diff import make_plan
    from almanac.store import FeatureStore

    with FeatureStore(config=config) as feature_store:
        feature_store.apply(make_plan(feature_store.registry.catalog(fresh=True), catalog()))
        now = datetime.now(UTC)
        write(feature_store.online, "user_stats", USER, {"clicks": pa.int64(), "spend": pa.float64()},
              [{"user_id": 1, "event_timestamp": now, "clicks": 3, "spend": None}])  # fmt: skip
        response = feature_store.get_online_features(
            ["user_stats:spend", "user_stats:clicks"], [{"user_id": 1}, {"user_id": 2}]
        )
        assert response.to_dict(include_statuses=True) == {
            "user_id": [1, 2],
            "spend": [None, None],
            "spend__status": ["NULL_VALUE", "NOT_FOUND"],
            "clicks": [3, None],
            "clicks__status": ["PRESENT", "NOT_FOUND"],
        }
