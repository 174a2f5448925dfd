"""Feature vectors: `to_numpy()` of a training set and of an online read of the same
feature service are the same matrix — columns in the service's declared order (not the
views'), nulls as NaN, entity columns and labels left out — whatever values, nulls and
missing entities (a property, on the embedded store)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from almanac import FeatureStore

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)
FEATURES_PY = """
from almanac import Bool, Entity, FeatureService, FeatureView, Field, Float64, Int64, PushSource, String

user = Entity(name="user", join_keys=["user_id"], dtype=Int64)
stats = FeatureView(name="stats", entities=[user], source=PushSource(name="events"),
                    schema=[Field("count", Int64), Field("mean", Float64), Field("active", Bool)])
profile = FeatureView(name="profile", entities=[user], source=PushSource(name="profiles"),
                      schema=[Field("plan", String)])
model_v1 = FeatureService(name="model_v1", features=["stats:mean", "stats:active", "stats:count"])
with_text = FeatureService(name="with_text", features=["profile:plan", "stats:count"])
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vectors")
    (root / "almanac.yaml").write_text("project: vectors\n")
    (root / "features.py").write_text(FEATURES_PY)
    return root


@pytest.fixture
def store(repo: Path) -> Iterator[FeatureStore]:
    with FeatureStore(repo) as made:
        made.apply()
        yield made


user_row = st.fixed_dictionaries(
    {
        "count": st.one_of(st.none(), st.integers(-(2**40), 2**40)),
        "mean": st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, width=64)),
        "active": st.one_of(st.none(), st.booleans()),
        "plan": st.one_of(st.none(), st.sampled_from(["free", "pro", ""])),
    }
)


def same(left: np.ndarray, right: np.ndarray) -> bool:
    if left.shape != right.shape or left.dtype != right.dtype:
        return False
    if left.dtype == object:
        return all((a is None and b is None) or a == b for a, b in zip(left.flat, right.flat, strict=True))  # fmt: skip
    return bool(np.array_equal(left, right, equal_nan=True))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(users=st.lists(user_row, min_size=1, max_size=6), missing=st.integers(0, 2))
def test_offline_and_online_vectors_are_the_same_matrix(store: FeatureStore, users: list[dict[str, Any]], missing: int) -> None:  # fmt: skip
    for view in ("stats", "profile"):
        store.online.delete_view(store.project, view)
    for source in ("events", "profiles"):
        for path in store.config.resolve_path(store.config.offline.data_path).glob(f"{source}/*"):
            path.unlink()
    ids = list(range(1, len(users) + 1))
    at = [T0] * len(ids)
    store.push("events", {"user_id": ids, "event_timestamp": at, "count": [u["count"] for u in users], "mean": [u["mean"] for u in users], "active": [u["active"] for u in users]})  # fmt: skip
    store.push("profiles", {"user_id": ids, "event_timestamp": at, "plan": [u["plan"] for u in users]})  # fmt: skip
    asked = ids + [10_000 + i for i in range(missing)]  # entities nobody pushed
    read_at = T0 + timedelta(minutes=1)
    spine = {"user_id": asked, "event_timestamp": [read_at] * len(asked), "label": [1] * len(asked)}  # fmt: skip
    for service in ("model_v1", "with_text"):
        offline = store.get_historical_features(spine, feature_service=service)
        online = store.get_online_features(entity_rows=[{"user_id": i} for i in asked], feature_service=service, now=read_at)  # fmt: skip
        assert offline.columns == online.columns
        left, right = offline.to_numpy(), online.to_numpy()
        assert same(left, right), (service, left, right)
    # The service's declared order, not the view's; numeric: float64 with NaN for nulls.
    vectors = store.get_online_features(entity_rows=[{"user_id": i} for i in asked], feature_service="model_v1", now=read_at)  # fmt: skip
    assert vectors.columns == ["mean", "active", "count"]
    matrix = vectors.to_numpy()
    assert matrix.dtype == np.float64 and matrix.shape == (len(asked), 3)
    for row, user in zip(matrix, users, strict=False):
        expected = [user["mean"], user["active"], user["count"]]
        for got, want in zip(row, expected, strict=True):
            assert (math.isnan(got) and want is None) or got == float(want)
    assert np.isnan(matrix[len(users) :]).all()  # missing entities: all NaN
