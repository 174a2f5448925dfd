"""Expectations at materialization: a view over a file source (rows that never passed
the door) has the run's rows admitted by its policy before they are served —
reject writes nothing of the view and keeps its watermark, warn writes everything,
quarantine writes the rows that pass — and every check is recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from almanac import FeatureStore
from almanac.cli import main

T0 = datetime(2024, 5, 1, tzinfo=UTC)
FEATURES = """
from almanac import Entity, Expect, FeatureView, Field, FileSource, Float64, String

user = Entity(name="user", join_keys=["user_id"], dtype="int64")
scores = FeatureView(
    name="scores", entities=[user], source=FileSource(name="scores_source", path="data/"),
    schema=[Field("score", Float64), Field("tier", String)],
    expectations=[Expect.between("score", 0, 1), Expect.row_count(min=2)],
    on_violation={policy!r},
)
plain = FeatureView(
    name="plain", entities=[user], source=FileSource(name="plain_source", path="plain/"),
    schema=[Field("tier", String)],
)
"""


def make_store(tmp_path: Path, url: str, policy: str) -> FeatureStore:
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "plain").mkdir()
    (repo / "almanac.yaml").write_text(f"project: mat\nonline:\n  url: {url}\n")
    (repo / "features.py").write_text(FEATURES.format(policy=policy))
    times = [T0 + timedelta(hours=h) for h in range(3)]
    pq.write_table(pa.table({
        "user_id": [1, 2, 3], "event_timestamp": times,
        "score": [0.5, 7.0, 0.25], "tier": ["a", "b", "c"],
    }), repo / "data" / "part-0.parquet")  # fmt: skip
    pq.write_table(pa.table({"user_id": [1], "event_timestamp": times[:1], "tier": ["x"]}), repo / "plain" / "p.parquet")  # fmt: skip
    store = FeatureStore(repo)
    store.apply()
    return store


def served(store: FeatureStore) -> list[float | None]:
    now = T0 + timedelta(days=1)
    return store.get_online_features(["scores:score"], {"user_id": [1, 2, 3]}, now=now).to_dict()["score"]  # fmt: skip


END = T0 + timedelta(days=1)


def test_reject_writes_nothing_of_the_view_and_keeps_its_watermark(tmp_path: Path, online_url: str) -> None:  # fmt: skip
    with make_store(tmp_path, online_url, "reject") as store:
        result = store.materialize(None, END)
        refused = {run.view: run.refused for run in result.runs}
        assert "between('score', 0, 1): 1 of 3 rows (e.g. 7.0)" in refused["scores"]
        assert refused["plain"] == ""  # the other view is materialized
        assert served(store) == [None, None, None]
        marks = store.online.watermarks(store.project)
        assert marks["scores"].time is None and marks["plain"].time == END
        recorded = store.results("scores").rows.to_pylist()
        assert {(r["expectation"], r["passed"], r["observed"], r["entry"]) for r in recorded} == {
            ("between('score', 0, 1)", False, 1, "materialize"),
            ("row_count(min=2, max=None)", True, 3, "materialize"),
        }
        assert len({r["batch"] for r in recorded}) == 1
        # The CLI says so and exits 1.
        with pytest.raises(SystemExit) as done:
            main(["--repo", str(store.repo_path), "materialize-incremental", END.isoformat()])
        assert done.value.code == 1


def test_warn_writes_every_row(tmp_path: Path, online_url: str) -> None:
    with make_store(tmp_path, online_url, "warn") as store:
        result = store.materialize(None, END, ["scores"])
        assert result.refused == [] and result.rows == 3
        assert served(store) == [0.5, 7.0, 0.25]
        failed = store.results("scores", failed=True).rows.to_pylist()
        assert [(r["expectation"], r["policy"]) for r in failed] == [("between('score', 0, 1)", "warn")]  # fmt: skip


def test_quarantine_serves_the_rows_that_pass(tmp_path: Path, online_url: str) -> None:
    with make_store(tmp_path, online_url, "quarantine") as store:
        assert store.materialize(None, END, ["scores"]).rows == 2
        assert served(store) == [0.5, None, 0.25]
        held = store.quarantine("scores")
        assert held.rows.column("user_id").to_pylist() == [2]
        assert held.reasons() == {"between('score', 0, 1)": 1}
        assert store.online.watermarks(store.project)["scores"].time == END


def test_an_empty_run_meets_row_count_min_or_not(tmp_path: Path) -> None:
    with make_store(tmp_path, "sqlite:///.almanac/online.db", "reject") as store:
        # No rows in the window: row_count(min=2) refuses it.
        run = store.materialize(T0 - timedelta(days=2), T0 - timedelta(days=1), ["scores"]).runs[0]
        assert "row_count(min=2, max=None): the batch has 0 rows" in run.refused
