"""The starter repo that `almanac init` writes gives a sensible training set: checked by
values against the raw sample data, read from another working directory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from almanac import FeatureStore
from almanac.starter import create_starter_repo
from almanac.starter.sample_data import generate

END = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def training(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    repo = create_starter_repo(tmp_path_factory.mktemp("starter") / "repo", 60, 4000, end=END)
    store = FeatureStore(repo)
    store.apply()
    frame = store.get_historical_features(
        repo / "data" / "labels.parquet", feature_service="recommender_v1"
    ).to_pandas()
    store.close()
    return repo, frame


def test_the_training_set_keeps_the_labels_rows_and_order(training) -> None:
    repo, frame = training
    labels = pd.read_parquet(repo / "data" / "labels.parquet")
    labels["event_timestamp"] = labels.event_timestamp.dt.tz_convert("UTC")
    assert list(frame.columns[:3]) == list(labels.columns)
    pd.testing.assert_frame_equal(frame[labels.columns].reset_index(drop=True), labels)
    assert {"user_segment", "watch_count_30d", "last_genre"} <= set(frame.columns)


def test_last_genre_is_the_latest_watch_at_or_before_the_label(training) -> None:
    repo, frame = training
    events = pd.read_parquet(repo / "data" / "watch_events.parquet")
    for row in frame.sample(40, random_state=1).itertuples():
        past = events[
            (events.user_id == row.user_id)
            & (events.event_timestamp <= row.event_timestamp)
            & (events.event_timestamp >= row.event_timestamp - timedelta(days=90))
        ]
        expected = past.sort_values("event_timestamp").genre.iloc[-1] if len(past) else None
        assert (row.last_genre if isinstance(row.last_genre, str) else None) == expected


def test_watch_count_is_the_exact_30_day_count_at_the_label_time(training) -> None:
    repo, frame = training
    events = pd.read_parquet(repo / "data" / "watch_events.parquet")
    for row in frame.sample(60, random_state=2).itertuples():
        window = events[
            (events.user_id == row.user_id)
            & (events.event_timestamp > row.event_timestamp - timedelta(days=30))
            & (events.event_timestamp <= row.event_timestamp)
        ]
        assert row.watch_count_30d == len(window)


def test_a_csv_spine_gives_the_same_training_set(training, tmp_path) -> None:
    repo, frame = training
    labels = pd.read_parquet(repo / "data" / "labels.parquet")
    labels.to_csv(tmp_path / "labels.csv", index=False)
    with FeatureStore(repo) as store:
        from_csv = store.get_historical_features(
            str(tmp_path / "labels.csv"), feature_service="recommender_v1"
        ).to_pandas()
    features = ["user_segment", "watch_count_30d", "last_genre"]
    pd.testing.assert_frame_equal(from_csv[features], frame[features], check_dtype=False)


def test_the_starter_data_is_the_same_every_time(tmp_path: Path) -> None:
    """The same seed and end give the same files, row for row: tests compare two starter
    repos built apart (DuckDB's and Spark's training sets, each from its own labels).
    Labels sorted by time alone came out of DuckDB's parallel sort with ties in any order."""
    tables = []
    for i in range(3):
        generate(tmp_path / str(i), users=300, events=20_000, end=datetime(2024, 6, 1, tzinfo=UTC))
        tables.append({p.name: pq.read_table(p) for p in sorted((tmp_path / str(i)).iterdir())})
    labels = tables[0]["labels.parquet"]
    assert labels.equals(labels.sort_by([("event_timestamp", "ascending"), ("user_id", "ascending")]))  # fmt: skip
    assert all(t.keys() == tables[0].keys() for t in tables)
    for name, table in tables[0].items():
        assert all(t[name].equals(table) for t in tables[1:]), name
