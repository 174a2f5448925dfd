"""`plan` (and so `apply`) checks new and changed views against their sources' schemas:
a column the data does not have, or a sum over text, is a definition error naming every
problem — not a failure at the first training set."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from almanac import FeatureStore
from almanac.errors import DefinitionError

HEADER = """
from almanac import (Aggregation, AggregationView, Entity, FeatureView, Field, FileSource,
                     Float64, String)
customer = Entity(name="customer", join_keys=["customer_id"])
tx = FileSource(path="data/tx.parquet", timestamp_field="ts")
"""


def repo(tmp_path: Path, body: str, with_data: bool = True) -> Path:
    (tmp_path / "data").mkdir(parents=True, exist_ok=True)
    (tmp_path / "almanac.yaml").write_text("project: check\n")
    (tmp_path / "features.py").write_text(HEADER + body)
    if with_data:
        pq.write_table(
            pa.table({"customer_id": ["a"], "ts": [datetime(2024, 1, 1, tzinfo=UTC)],
                      "amount": [1.0], "merchant": ["m"]}),
            tmp_path / "data" / "tx.parquet",
        )  # fmt: skip
    return tmp_path


def plan_error(path: Path) -> str:
    with FeatureStore(path) as store, pytest.raises(DefinitionError) as info:
        store.plan()
    return str(info.value)


def test_every_missing_or_mistyped_column_is_named_at_plan(tmp_path: Path) -> None:
    message = plan_error(repo(tmp_path, """
spend = AggregationView(name="spend", entities=[customer], source=tx,
    aggregations=[Aggregation(column="amont", function="sum", windows=["7d"]),
                  Aggregation(column="merchant", function="mean", windows=["7d"])])
profile = FeatureView(name="profile", entities=[customer], source=tx,
                      schema=[Field("segmnt", String), Field("amount", Float64)])
"""))  # fmt: skip
    assert "AggregationView 'spend' reads 'amont'" in message
    assert "'mean' needs a numeric column; 'merchant' is VARCHAR" in message
    assert "FeatureView 'profile' reads 'segmnt'" in message
    assert "it has: customer_id, ts, amount, merchant" in message


def test_a_wrong_timestamp_field_or_join_key_is_named(tmp_path: Path) -> None:
    message = plan_error(repo(tmp_path, """
other = FileSource(name="other", path="data/tx.parquet", timestamp_field="time")
user = Entity(name="user", join_keys=["user_id"])
profile = FeatureView(name="profile", entities=[user], source=other,
                      schema=[Field("amount", Float64)])
"""))  # fmt: skip
    assert "reads 'user_id', 'time'" in message


def test_matching_definitions_and_sources_without_data_plan_cleanly(tmp_path: Path) -> None:
    body = """
spend = AggregationView(name="spend", entities=[customer], source=tx,
    columns=[Field("amount", Float64), Field("merchant", String)],
    aggregations=[Aggregation(column="amount", function="sum", windows=["7d"]),
                  Aggregation(column="merchant", function="count_distinct", windows=["7d"])])
sql_view = FeatureView(name="sql_view", entities=[customer], source=tx,
    schema=[Field("double", Float64)],
    transformation="SELECT customer_id, ts, amount * 2 AS double FROM source")
"""
    with FeatureStore(repo(tmp_path / "a", body)) as store:
        assert not store.plan().empty
    # No data yet: nothing to check against, so nothing is refused.
    with FeatureStore(repo(tmp_path / "b", body + "\nbad = FeatureView(name='bad', entities=[customer], source=tx, schema=[Field('nope', Float64)])\n", with_data=False)) as store:  # fmt: skip
        assert not store.plan().empty


def test_a_sql_transformation_missing_a_feature_is_named(tmp_path: Path) -> None:
    message = plan_error(repo(tmp_path, """
sql_view = FeatureView(name="sql_view", entities=[customer], source=tx,
    schema=[Field("tripled", Float64)],
    transformation="SELECT customer_id, ts, amount * 2 AS double FROM source")
"""))  # fmt: skip
    assert "FeatureView 'sql_view' reads 'tripled'" in message


def test_the_cli_reports_it_in_one_line_and_applies_nothing(tmp_path: Path) -> None:
    path = repo(tmp_path, """
spend = AggregationView(name="spend", entities=[customer], source=tx,
    aggregations=[Aggregation(column="amont", function="sum", windows=["7d"])])
""")  # fmt: skip
    done = subprocess.run(
        [Path(sys.executable).parent / "almanac", "apply"], cwd=path, capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "'amont'" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    with FeatureStore(path) as store:
        assert store.registry.catalog(fresh=True).all_views() == {}
