"""A push retried with the same idempotency key counts once, offline and online — also
when the first attempt died between its online write and its offline commit; through
the SDK and `POST /push` with an `Idempotency-Key` header; on both online stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from almanac import FeatureStore
from almanac.errors import InputError
from almanac.offline.files import push_folder
from almanac.offline.writer import StagedFile
from almanac.serving.app import create_app

FEATURES = """
from almanac import Aggregation, AggregationView, Entity, FeatureView, Field, Float64, PushSource

user = Entity(name="user", join_keys=["user_id"])
payments = PushSource(name="payments")
last = FeatureView(name="last", entities=[user], source=payments, schema=[Field("amount", Float64)])
spend = AggregationView(
    name="spend", entities=[user], source=payments, columns=[Field("amount", Float64)],
    aggregations=[Aggregation(column="amount", function="sum", windows=["1d"]),
                  Aggregation(function="count", windows=["1d"])],
)
"""
NOW = datetime.now(UTC) - timedelta(seconds=5)
ROWS = {"user_id": ["a", "a", "b"], "event_timestamp": [NOW - timedelta(minutes=m) for m in (1, 2, 3)], "amount": [1.0, 2.0, 4.0]}  # fmt: skip


def make_store(tmp_path: Path, online_url: str) -> FeatureStore:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "almanac.yaml").write_text(f"project: idem\nonline:\n  url: {online_url}\n")
    (repo / "features.py").write_text(FEATURES)
    store = FeatureStore(repo)
    store.apply()
    return store


def state(store: FeatureStore) -> tuple[int, dict]:
    files = sorted(push_folder(store.config, store.catalog.sources["payments"]).glob("*.parquet"))  # type: ignore[arg-type]
    logged = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    served = store.get_online_features(["spend:amount_sum_1d", "spend:count_1d", "last:amount"], {"user_id": ["a", "b"]}).to_dict()  # fmt: skip
    return logged, {k: served[k] for k in ("amount_sum_1d", "count_1d", "amount")}


ONCE = (3, {"amount_sum_1d": [3.0, 4.0], "count_1d": [2, 1], "amount": [1.0, 4.0]})


def test_a_retried_push_counts_once(tmp_path: Path, online_url: str) -> None:
    store = make_store(tmp_path, online_url)
    assert store.push("payments", ROWS, idempotency_key="order-42") == 3
    assert store.push("payments", ROWS, idempotency_key="order-42") == 3  # the same answer
    assert state(store) == ONCE
    store.push("payments", ROWS, idempotency_key="order-43")  # another key: another push
    logged, served = state(store)
    assert logged == 6 and served["count_1d"] == [4, 2]
    with pytest.raises(InputError, match="idempotency_key"):
        store.push("payments", ROWS, idempotency_key="")


class Crash(BaseException):
    pass


def test_a_push_that_died_before_its_offline_commit_is_completed_by_its_retry(tmp_path: Path, online_url: str) -> None:  # fmt: skip
    store = make_store(tmp_path, online_url)
    real = StagedFile.commit

    def die(self: StagedFile) -> None:
        raise Crash

    StagedFile.commit = die  # type: ignore[method-assign]
    try:
        with pytest.raises(Crash):
            store.push("payments", ROWS, idempotency_key="k")
    finally:
        StagedFile.commit = real  # type: ignore[method-assign]
    logged, served = state(store)
    assert logged == 0 and served["count_1d"] == [2, 1]  # online was written, offline not
    assert store.push("payments", ROWS, idempotency_key="k") == 3
    assert state(store) == ONCE  # offline completed, online not counted again


def test_the_idempotency_key_header(tmp_path: Path) -> None:
    store = make_store(tmp_path, "sqlite:///.almanac/online.db")
    body = {"push_source_name": "payments", "df": {**ROWS, "event_timestamp": [t.isoformat() for t in ROWS["event_timestamp"]]}}  # fmt: skip
    with TestClient(create_app(store.repo_path)) as client:
        for _ in range(3):
            answer = client.post("/push", json=body, headers={"Idempotency-Key": "batch-7"})
            assert answer.status_code == 200 and answer.json()["rows"] == 3
    assert state(store) == ONCE
