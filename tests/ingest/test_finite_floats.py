"""NaN and ±infinity are refused at the door, in float features, in lists of floats and
in the columns an aggregation reads: JSON has no such values, so they used to be served
as null with status PRESENT. A missing value is null (pandas' NaN arrives as null), and
is served as null with status NULL_VALUE (docs/concepts.md, rule 7)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from almanac import FeatureStore
from almanac.errors import InputError
from almanac.semantics.validate import Declared, check_batch

FEATURES_PY = """
from almanac import (Aggregation, AggregationView, Array, Entity, FeatureView, Field, Float32,
                     Float64, PushSource)

user = Entity(name="user", join_keys=["user_id"])
events = PushSource(name="events")
plain = FeatureView(name="plain", entities=[user], source=events,
                    schema=[Field("score", Float32), Field("embedding", Array(Float64))])
spend = AggregationView(
    name="spend", entities=[user], source=PushSource(name="payments"),
    columns=[Field("amount", Float64)],
    aggregations=[Aggregation(column="amount", function="sum", windows=["1d"]),
                  Aggregation(column="amount", function="max", windows=["1d"])],
)
"""


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FeatureStore]:
    url = (
        "sqlite:///online.db" if request.param == "sqlite" else request.getfixturevalue("redis_url")
    )
    (tmp_path / "almanac.yaml").write_text(f"project: floats\nonline:\n  url: {url}\n")
    (tmp_path / "features.py").write_text(FEATURES_PY)
    with FeatureStore(tmp_path) as store:
        store.apply()
        yield store


def _offline_files(store: FeatureStore) -> list[Path]:
    root = store.config.resolve_path(store.config.offline.data_path)
    return sorted(root.rglob("*.parquet")) if root.exists() else []


@pytest.mark.parametrize(
    ("source", "columns", "problem"),
    [
        ("events", '"score": [1.5, NaN], "embedding": [[1.0], [2.0]]',
         "column 'score': row 1: nan is not a finite number"),
        ("events", '"score": [Infinity, 1.0], "embedding": [[1.0], [2.0]]',
         "column 'score': row 0: inf is not a finite number"),
        ("events", '"score": [1.0, 2.0], "embedding": [[1.0], [0.5, -Infinity]]',
         "column 'embedding': row 1: an item: -inf is not a finite number"),
        ("events", '"score": [1e300, 2.0], "embedding": [[1.0], [2.0]]',
         "column 'score': row 0: 1e+300 does not fit float32"),
        ("payments", '"amount": [2.0, NaN]', "column 'amount': row 1: nan is not a finite number"),
    ],
)  # fmt: skip
def test_http_push_of_nan_or_infinity_is_422_and_writes_nothing(
    client: TestClient, store: FeatureStore, source: str, columns: str, problem: str
) -> None:
    now = datetime.now(UTC).isoformat()
    body = (
        f'{{"push_source_name": "{source}", "df": {{"user_id": ["a", "b"], '
        f'"event_timestamp": ["{now}", "{now}"], {columns}}}}}'
    )
    answer = client.post("/push", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert f"push to '{source}': {problem}" in answer.text
    assert "NaN and ±infinity are refused" in answer.text
    assert _offline_files(store) == []
    got = store.get_online_features(
        ["plain:score", "spend:amount_sum_1d"], [{"user_id": "a"}, {"user_id": "b"}]
    ).statuses
    assert got == {"score": ["NOT_FOUND"] * 2, "amount_sum_1d": ["NOT_FOUND"] * 2}


def test_every_entry_path_refuses_them_and_a_missing_value_is_null(store: FeatureStore) -> None:
    now = datetime.now(UTC) - timedelta(minutes=1)
    rows = pa.table({"user_id": ["a", "b"], "event_timestamp": [now, now],
                     "score": pa.array([float("nan"), 1.0], pa.float32()),
                     "embedding": [[1.0], [2.0]]})  # fmt: skip
    for write in (
        lambda: store.push("events", rows),
        lambda: store.push("events", rows, to="online"),
        lambda: store.write_to_offline_store("plain", rows),
        lambda: store.push(
            "payments", {"user_id": ["a"], "event_timestamp": [now], "amount": [math.inf]}
        ),
    ):
        with pytest.raises(InputError, match="is not a finite number"):
            write()
    assert _offline_files(store) == []
    # pandas' NaN is its missing value: it arrives as null and reads as NULL_VALUE.
    frame = pd.DataFrame({"user_id": ["a", "b"], "event_timestamp": [now, now],
                          "score": [float("nan"), 1.0], "embedding": [[1.0], [2.0]]})  # fmt: skip
    assert store.push("events", frame) == 2
    got = store.get_online_features(["plain:score"], [{"user_id": "a"}, {"user_id": "b"}])
    assert got.to_dict(include_statuses=True) == {
        "user_id": ["a", "b"], "score": [None, 1.0], "score__status": ["NULL_VALUE", "PRESENT"]
    }  # fmt: skip


_floats = st.one_of(st.none(), st.floats(width=64), st.sampled_from([math.nan, -math.inf]))


@settings(max_examples=300, deadline=None)
@given(values=st.lists(_floats, min_size=1, max_size=5), items=st.lists(_floats, max_size=4))
def test_a_float_batch_is_accepted_exactly_when_every_value_is_finite(
    values: list[float | None], items: list[float | None]
) -> None:
    n = len(values)
    table = pa.table({
        "k": list(range(n)),
        "ts": [datetime(2024, 1, 1, tzinfo=UTC)] * n,
        "x": pa.array(values, pa.float64()),
        "v": pa.array([items] + [[]] * (n - 1), pa.list_(pa.float64())),
    })  # fmt: skip
    finite = all(value is None or math.isfinite(value) for value in [*values, *items])
    try:
        out = check_batch(
            table, "batch", keys={"k": Declared("int64", "view 'v'")}, timestamp_field="ts",
            created_field=None,
            columns={"x": Declared("float64", "view 'v'"), "v": Declared("list<float64>", "view 'v'")},
        )  # fmt: skip
    except InputError as error:
        assert not finite, error
        assert "is not a finite number" in str(error)
        return
    assert finite
    assert out.column("x").to_pylist() == values
    assert out.column("v").to_pylist()[0] == items
