"""Concurrent pushes are written together (fewer offline files than pushes, every row
in both stores, each caller answered once its rows are durable), and a bad push among
them fails alone."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from almanac import FeatureStore
from almanac.offline.files import push_folder
from almanac.serving.app import create_app

FEATURES = """
from almanac import Aggregation, AggregationView, Entity, Expect, FeatureView, Field, Float64, PushSource

user = Entity(name="user", join_keys=["user_id"], dtype="int64")
clicks = PushSource(name="clicks")
last = FeatureView(name="last", entities=[user], source=clicks, schema=[Field("score", Float64)],
                   expectations=[Expect.between("score", 0, 100)])
counts = AggregationView(name="counts", entities=[user], source=clicks, columns=[Field("score", Float64)],
                         aggregations=[Aggregation(function="count", windows=["1d"])])
"""
NOW = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()


def test_concurrent_pushes_are_written_together_and_a_bad_one_fails_alone(tmp_path: Path, online_url: str) -> None:  # fmt: skip
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "almanac.yaml").write_text(f"project: gc\nonline:\n  url: {online_url}\n")
    (repo / "features.py").write_text(FEATURES)
    with FeatureStore(repo) as store:
        store.apply()
    bad = 17

    def body(i: int) -> dict:
        score = -1.0 if i == bad else float(i % 100)
        return {"push_source_name": "clicks", "df": {"user_id": [i], "event_timestamp": [NOW], "score": [score]}}  # fmt: skip

    with TestClient(create_app(repo)) as client, ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(lambda i: client.post("/push", json=body(i)), range(200)))
    assert [a.status_code for a in answers].count(200) == 199
    assert answers[bad].status_code == 422 and "between('score', 0, 100)" in answers[bad].json()["detail"]  # fmt: skip
    assert all(a.json()["rows"] == 1 for i, a in enumerate(answers) if i != bad)
    with FeatureStore(repo) as store:
        files = list(push_folder(store.config, store.catalog.sources["clicks"]).glob("*.parquet"))  # type: ignore[arg-type]
        assert len(files) < 150  # grouped (200 pushes one by one would be 199 files)
        served = store.get_online_features(["last:score", "counts:count_1d"], {"user_id": list(range(200))}).to_dict()  # fmt: skip
        assert served["score"] == [None if i == bad else float(i % 100) for i in range(200)]
        assert served["count_1d"] == [0 if i == bad else 1 for i in range(200)]
        import pyarrow.dataset as ds

        assert ds.dataset([str(f) for f in files]).count_rows() == 199
