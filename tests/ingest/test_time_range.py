"""Times outside the documented range are refused at the door, and no stored time can
make a read fail (docs/concepts.md, rule 1).

An event (or created) time lies between 1900-01-01 and now plus a few seconds of clock
skew; a timestamp feature within what a Python datetime holds (years 1 to 9999). One
year-0 row used to make every read of its entity answer 500, and a year-9999 row won
rule 2 forever, so that later pushes of its entity were ignored online."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from almanac import FeatureStore
from almanac.errors import InputError
from almanac.online.codec import (
    MAX_DATETIME,
    MIN_DATETIME,
    decode_list,
    redis_decoder,
    sqlite_decoder,
)
from almanac.semantics.tiles import TILES_FEATURE
from almanac.semantics.times import FUTURE_TOLERANCE, MIN_EVENT_TIME, micros_to_datetime
from almanac.semantics.validate import Declared, check_batch

US = pa.timestamp("us", tz="UTC")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
INT64 = st.integers(-(2**63), 2**63 - 1)
YEAR_0 = -62167219200000000  # 0000-01-01T00:00:00Z in microseconds
YEAR_10000 = 253402300800000000  # 10000-01-01T00:00:00Z
FEATURES_PY = """
from almanac import (Aggregation, AggregationView, Entity, FeatureView, Field, Float64,
                     PushSource, Timestamp)

user = Entity(name="user", join_keys=["user_id"])
events = PushSource(name="events", created_timestamp_field="created")
plain = FeatureView(name="plain", entities=[user], source=events,
                    schema=[Field("amount", Float64), Field("seen", Timestamp)])
spend = AggregationView(
    name="spend", entities=[user], source=events, columns=[Field("amount", Float64)],
    aggregations=[Aggregation(function="count", windows=["30d"]),
                  Aggregation(column="amount", function="sum", windows=["30d"])],
)
"""
FEATURES = ["plain:amount", "plain:seen", "spend:count_30d", "spend:amount_sum_30d"]


@pytest.fixture
def store(tmp_path: Path, online_url: str) -> Iterator[FeatureStore]:
    (tmp_path / "almanac.yaml").write_text(f"project: times\nonline:\n  url: {online_url}\n")
    (tmp_path / "features.py").write_text(FEATURES_PY)
    with FeatureStore(tmp_path) as store:
        store.apply()
        yield store


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _push(client: TestClient, user: str, at: str, **columns: object) -> tuple[int, str]:
    df = {"user_id": [user], "event_timestamp": [at], "amount": [1.0], "seen": [at], **columns}
    answer = client.post("/push", json={"push_source_name": "events", "df": df})
    return answer.status_code, answer.text


def _read(client: TestClient, user: str) -> dict[str, list[object]]:
    answer = client.post("/get-online-features",
                         json={"features": FEATURES, "entities": {"user_id": [user]}})  # fmt: skip
    assert answer.status_code == 200, answer.text
    body = answer.json()
    entity = client.get(f"/entities/user/{user}", params={"features": ",".join(FEATURES)})
    assert entity.status_code == 200, entity.text
    names = body["metadata"]["feature_names"]
    return {name: result["values"] for name, result in zip(names, body["results"], strict=True)}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"event_timestamp": ["0000-01-01T00:00:00Z"]},
         "column 'event_timestamp': row 0: 0000-01-01T00:00:00Z is before 1900-01-01T00:00:00Z"),
        ({"event_timestamp": ["1899-12-31T23:59:59Z"]},
         "column 'event_timestamp': row 0: 1899-12-31T23:59:59Z is before 1900-01-01T00:00:00Z"),
        ({"event_timestamp": ["9999-01-01T00:00:00Z"]},
         "column 'event_timestamp': row 0: 9999-01-01T00:00:00Z is in the future"),
        ({"created": ["9999-01-01T00:00:00Z"]},
         "column 'created': row 0: 9999-01-01T00:00:00Z is in the future"),
        ({"seen": ["0000-06-01T00:00:00Z"]},
         "column 'seen': row 0: 0000-06-01T00:00:00Z is outside the timestamps a feature can hold"),
    ],
)  # fmt: skip
def test_a_push_outside_the_range_is_422_naming_column_and_value(
    client: TestClient, change: dict[str, list[str]], problem: str
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    status, text = _push(client, "u1", _iso(now), **{"created": [_iso(now)], **change})
    assert status == 422, text
    assert f"push to 'events': {problem}" in text
    got = _read(client, "u1")
    assert got["amount"] == [None] and got["count_30d"] == [0]
    # The entity is not stuck: the next push is served.
    status, text = _push(client, "u1", _iso(now), created=[_iso(now)], amount=[2.5])
    assert status == 200, text
    got = _read(client, "u1")
    assert got["amount"] == [2.5] and got["count_30d"] == [1] and got["amount_sum_30d"] == [2.5]


def test_event_times_ahead_by_more_than_the_tolerance_are_refused_by_every_entry_path(
    store: FeatureStore,
) -> None:
    ahead = datetime.now(UTC) + FUTURE_TOLERANCE + timedelta(minutes=1)
    rows = {"user_id": ["u1"], "event_timestamp": [ahead], "created": [None],
            "amount": [1.0], "seen": [ahead]}  # fmt: skip
    for write in (
        lambda: store.push("events", rows),
        lambda: store.push("events", rows, to="offline"),
        lambda: store.write_to_offline_store("plain", pa.table(rows)),
    ):
        with pytest.raises(
            InputError, match=r"column 'event_timestamp': row 0: .* is in the future"
        ):
            write()
    folder = store.config.resolve_path(store.config.offline.data_path) / "events"
    assert not folder.exists() or not list(folder.glob("*.parquet"))
    # Within the tolerance (a client's clock slightly ahead): accepted.
    close = datetime.now(UTC) + FUTURE_TOLERANCE / 5
    assert store.push("events", {**rows, "event_timestamp": [close], "seen": [close]}) == 1


@pytest.mark.parametrize("event_micros", [YEAR_0, YEAR_10000])
def test_no_stored_time_makes_a_read_fail(client: TestClient, store: FeatureStore,
                                         event_micros: int) -> None:  # fmt: skip
    """Rows a store holds from before the rule (or from another writer): the plain view's
    row and the aggregation view's tiles read back, the times clamped to years 1..9999."""
    rows = pa.table({"user_id": ["u1"], "event_timestamp": pa.array([event_micros], US),
                     "created": pa.array([event_micros], US), "amount": [1.0],
                     "seen": pa.array([-(2**63) if event_micros < 0 else 2**63 - 1], US)})  # fmt: skip
    store.online.write_batch(store.project, "plain", ["user_id"], ["amount", "seen"], rows)
    tiles = store.offline.tiles_of_rows(
        store.catalog, store.catalog.view("spend"), rows.select(["user_id", "event_timestamp", "amount"])
    )  # fmt: skip
    store.online.write_batch(store.project, "spend", ["user_id"], [TILES_FEATURE], tiles)
    clamped = MIN_DATETIME if event_micros < 0 else MAX_DATETIME
    got = store.get_online_features(FEATURES, [{"user_id": "u1"}])
    assert got.to_dict()["seen"] == [clamped]
    assert got.event_timestamps["amount"] == [clamped]
    assert got.event_timestamps["count_30d"] == [clamped]
    assert _read(client, "u1")["amount"] == [1.0]


# ---- the rules themselves, on generated input ---------------------------------------------


@settings(max_examples=300, deadline=None)
@given(event=INT64, seen=INT64)
def test_a_batch_is_accepted_exactly_when_its_times_are_in_range(event: int, seen: int) -> None:
    before = datetime.now(UTC)
    table = pa.table({"k": [1], "ts": pa.array([event], US), "seen": pa.array([seen], US)})
    try:
        check_batch(table, "batch", keys={"k": Declared("int64", "view 'v'")}, timestamp_field="ts",
                    created_field=None, columns={"seen": Declared("timestamp", "view 'v'")})  # fmt: skip
        accepted = True
    except InputError as error:
        accepted = False
        assert "column 'ts'" in str(error) or "column 'seen'" in str(error)
    after = datetime.now(UTC)
    low = (MIN_EVENT_TIME - EPOCH) // timedelta(microseconds=1)
    seen_ok = (
        (MIN_DATETIME - EPOCH) // timedelta(microseconds=1)
        <= seen
        <= (MAX_DATETIME - EPOCH) // timedelta(microseconds=1)
    )
    surely_ok = low <= event <= (before + FUTURE_TOLERANCE - EPOCH) // timedelta(microseconds=1)
    surely_late = event > (after + FUTURE_TOLERANCE - EPOCH) // timedelta(microseconds=1)
    if surely_ok and seen_ok:
        assert accepted
    if event < low or surely_late or not seen_ok:
        assert not accepted


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(micros=INT64)
def test_decoding_a_stored_time_never_fails(micros: int) -> None:
    try:
        expected = EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        expected = MIN_DATETIME if micros < 0 else MAX_DATETIME
    raw = struct.pack("<q", micros)
    assert micros_to_datetime(micros) == expected
    assert redis_decoder("timestamp")(raw) == expected
    assert sqlite_decoder("timestamp")([micros, None]) == [expected, None]  # type: ignore[misc]
    assert decode_list(b"R" + raw, "timestamp") == [expected]
    assert decode_list(b"L" + (8).to_bytes(4, "little") + raw, "timestamp") == [expected]
    assert redis_decoder("list<timestamp>")(b"R" + raw * 2) == [expected, expected]
