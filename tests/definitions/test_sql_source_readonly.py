"""SQL in a definition (a SqlSource query, a SQL transformation) is one read-only SELECT,
checked by DuckDB's own parser before anything runs: `plan` once wrote a file for a query
holding `COPY (...) TO 'out.csv'`. Every reader refuses such a query with a
DefinitionError naming it — plan's schema check, training sets, materialization, value
history — and nothing it asks for happens."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from almanac import FeatureStore
from almanac.config import RepoConfig
from almanac.definitions import Entity, FeatureView, Field, FileSource, Int64, SqlSource
from almanac.errors import DefinitionError
from almanac.offline.duckdb.engine import DuckDBEngine
from almanac.offline.duckdb.sql_check import check_select
from almanac.registry.catalog import Catalog

ROW = "SELECT 'a' AS user_id, TIMESTAMP '2024-01-01' AS event_timestamp, 1 AS n"


def writes(out: Path) -> dict[str, str]:
    """Queries that would each change something (`out` is a file they would write)."""
    return {
        "copy": f"COPY ({ROW}) TO '{out}'",
        # Balanced so that wrapping it in parentheses makes three statements.
        "smuggled copy": f"{ROW}) ; COPY (SELECT 42) TO '{out}'; SELECT * FROM ({ROW}",
        "two statements": f"{ROW}; COPY (SELECT 42) TO '{out}'",
        "attach": f"ATTACH '{out}' AS other",
        "install": "INSTALL httpfs",
        "load": "LOAD httpfs",
        "pragma": "PRAGMA enable_profiling",
        "set": "SET threads = 1",
        "create": f"CREATE TABLE t AS {ROW}",
        "checkpoint()": f"SELECT * FROM ({ROW}) JOIN checkpoint() ON true",
        "query()": f"SELECT * FROM query('{ROW}')",
        "setseed()": f"SELECT *, setseed(0.5) AS s FROM ({ROW})",
        "rejects tables": f"SELECT * FROM read_csv('{out}', store_rejects = true)",
    }


def _offline_paths(tmp_path: Path, query: str, *, transformation: bool) -> tuple[Catalog, DuckDBEngine]:  # fmt: skip
    (tmp_path / "data").mkdir(exist_ok=True)
    pq.write_table(
        pa.table({"user_id": ["a"], "event_timestamp": [datetime(2024, 1, 1, tzinfo=UTC)], "n": [1]}),
        tmp_path / "data" / "rows.parquet",
    )  # fmt: skip
    user = Entity(name="user", join_keys=["user_id"])
    if transformation:
        source = FileSource(name="src", path="data/rows.parquet")
        view = FeatureView(name="v", entities=[user], source=source, schema=[Field("n", Int64)],
                           transformation=query)  # fmt: skip
    else:
        source = SqlSource(name="src", query=query)
        view = FeatureView(name="v", entities=[user], source=source, schema=[Field("n", Int64)])
    config = RepoConfig(project="sql").model_copy(update={"repo_path": tmp_path})
    return Catalog.from_definitions([view]), DuckDBEngine(config)


def _readers(catalog: Catalog, engine: DuckDBEngine) -> dict[str, Callable[[], object]]:
    view = catalog.view("v")
    refs = catalog.resolve(["v:n"], None, False)
    spine = pd.DataFrame({"user_id": ["a"], "event_timestamp": [datetime(2024, 2, 1, tzinfo=UTC)]})
    return {
        "plan": lambda: engine.check_views(catalog, ["v"]),
        "training set": lambda: engine.get_historical_features(catalog, spine, refs).to_arrow(),
        "materialization": lambda: engine.latest_rows(
            catalog, view, None, datetime(2024, 2, 1, tzinfo=UTC)
        ).read_all(),
        "value history": lambda: engine.value_history(catalog, view, {"user_id": "a"}),
    }


@pytest.mark.parametrize("transformation", [False, True], ids=["source", "transformation"])
@pytest.mark.parametrize("reader", ["plan", "training set", "materialization", "value history"])
@pytest.mark.parametrize("kind", list(writes(Path("x"))))
def test_every_reader_refuses_sql_that_is_not_one_read_only_select(
    tmp_path: Path, kind: str, reader: str, transformation: bool
) -> None:
    out = tmp_path / "out.csv"
    query = writes(out)[kind]
    if transformation:  # the transformation's SQL is over the relation "source"
        query = query.replace(ROW, "SELECT * FROM source")
    catalog, engine = _offline_paths(tmp_path, query, transformation=transformation)
    with pytest.raises(DefinitionError) as info:
        _readers(catalog, engine)[reader]()
    label = "transformation of feature view 'v'" if transformation else "SQL source 'src'"
    assert str(info.value).startswith(label), str(info.value)
    assert not out.exists()


def test_plan_names_the_source_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    (tmp_path / "almanac.yaml").write_text("project: sql\n")
    (tmp_path / "features.py").write_text(f"""
from almanac import Entity, FeatureView, Field, Int64, SqlSource
user = Entity(name="user", join_keys=["user_id"])
evil = SqlSource(name="evil", query={writes(out)["smuggled copy"]!r})
copies = SqlSource(name="copies", query={writes(out)["copy"]!r})
a = FeatureView(name="a", entities=[user], source=evil, schema=[Field("n", Int64)])
b = FeatureView(name="b", entities=[user], source=copies, schema=[Field("n", Int64)])
""")
    with FeatureStore(tmp_path) as store, pytest.raises(DefinitionError) as info:
        store.plan()
    message = str(info.value)
    assert "SQL source 'evil': the query does not parse" in message
    assert (
        "SQL source 'copies': a query must be one read-only SELECT statement, not COPY" in message
    )
    assert not out.exists()


def test_a_reading_query_still_works_even_ending_in_a_comment(tmp_path: Path) -> None:
    query = f"""SELECT user_id, event_timestamp, n + count(*) OVER () - 1 AS n
FROM read_parquet('{tmp_path}/data/*.parquet') JOIN range(1) ON true -- one row per user"""
    catalog, engine = _offline_paths(tmp_path, query, transformation=False)
    spine = pd.DataFrame({"user_id": ["a"], "event_timestamp": [datetime(2024, 2, 1, tzinfo=UTC)]})
    refs = catalog.resolve(["v:n"], None, False)
    engine.check_views(catalog, ["v"])
    assert engine.get_historical_features(catalog, spine, refs).to_arrow().column("n").to_pylist() == [1]  # fmt: skip


_SELECTS = [ROW, "FROM range(3)", "SELECT * FROM read_csv('x.csv')", "VALUES (1), (2)",
            "WITH a AS (SELECT 1 AS x) SELECT x FROM a", "SELECT unnest([1, 2]) AS x"]  # fmt: skip
_OTHERS = [*writes(Path("out.csv")).values(), "EXPORT DATABASE 'd'", "DETACH other",
           "CALL checkpoint()", "BEGIN", "DROP TABLE t", "USE memory", "SET VARIABLE x = 1"]  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(st.sampled_from([*_SELECTS, *_OTHERS]), min_size=1, max_size=3),
    separator=st.sampled_from([";", "; ", ";\n", " ;\n-- note\n"]),
    trailing=st.sampled_from(["", ";", "\n", "; -- done"]),
)
def test_only_one_reading_select_passes(parts: list[str], separator: str, trailing: str) -> None:
    text = separator.join(parts) + trailing
    readonly = len(parts) == 1 and parts[0] in _SELECTS
    try:
        check_select(text, "SQL source 's'")
    except DefinitionError as error:
        assert not readonly, error
        assert str(error).startswith("SQL source 's': ")
    else:
        assert readonly, text
