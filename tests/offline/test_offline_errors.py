"""Bad input gets a clear error naming the problem, and nothing is half written (rule 7)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from offline_repo import Repo, ts

from almanac.definitions import Entity, FeatureView, Field, FileSource, Int64, SqlSource
from almanac.errors import InputError, NotFoundError
from almanac.registry.catalog import Catalog

UTC_US = pa.timestamp("us", tz="UTC")


def entity(**columns: object) -> pa.Table:
    base = {"user_id": pa.array([1], pa.int64()), "event_timestamp": pa.array([ts(1)], UTC_US)}
    return pa.table({**base, **columns})


def hist(repo: Repo, data: object, *features: str) -> pa.Table:
    refs = repo.catalog.resolve(list(features or ["stats:clicks"]))
    return repo.engine.get_historical_features(repo.catalog, data, refs).to_arrow()


def test_missing_timestamp_column(repo: Repo) -> None:
    with pytest.raises(InputError, match="missing timestamp column 'event_timestamp'"):
        hist(repo, entity().drop_columns(["event_timestamp"]))


def test_missing_key_column(repo: Repo) -> None:
    with pytest.raises(
        InputError, match=r"missing join key column 'user_id' \(int64, of feature view 'stats'\)"
    ):
        hist(repo, entity().drop_columns(["user_id"]))


def test_wrong_key_type(repo: Repo) -> None:
    with pytest.raises(InputError, match=r"'user_id' has type string.*int64"):
        hist(repo, entity(user_id=pa.array(["1"])))


def test_unknown_feature_and_view() -> None:
    from offline_repo import device_view, stats

    catalog = Catalog.from_definitions([stats, device_view])
    with pytest.raises(NotFoundError, match="did you mean 'stats:clicks'"):
        catalog.resolve(["stats:click"])
    with pytest.raises(NotFoundError, match="did you mean 'stats'"):
        catalog.resolve(["stat:clicks"])


def test_unparseable_timestamps(repo: Repo) -> None:
    with pytest.raises(
        InputError, match=r"'event_timestamp': row 0: 'yesterday' is not an ISO-8601"
    ):
        hist(repo, entity(event_timestamp=pa.array(["yesterday"])))
    with pytest.raises(InputError, match="expected timestamps"):
        hist(repo, entity(event_timestamp=pa.array([1.5])))


def test_output_name_collision(repo: Repo) -> None:
    with pytest.raises(InputError, match=r"'clicks'.*already a column"):
        hist(repo, entity(clicks=pa.array([0])))


def test_bad_entity_df_kinds(repo: Repo, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        hist(repo, str(tmp_path / "nope.parquet"))
    with pytest.raises(InputError, match="SQL query failed"):
        hist(repo, "SELECT * FROM no_such_table")
    with pytest.raises(InputError, match="must be a pandas"):
        hist(repo, 42)
    with pytest.raises(InputError, match="cannot be read as columns"):
        hist(repo, {"user_id": [1, 2], "event_timestamp": [ts(1)]})  # unequal lengths


def test_a_dict_of_columns_is_an_entity_df(repo: Repo) -> None:
    as_dict = hist(repo, {"user_id": [1], "event_timestamp": [ts(1)]})
    assert as_dict.equals(hist(repo, entity()))


def test_missing_source_path_is_named(repo: Repo, tmp_path: Path) -> None:
    user = Entity(name="user", join_keys=["user_id"], dtype=Int64)
    view = FeatureView(
        name="v",
        entities=[user],
        source=FileSource(name="s", path="gone.parquet"),
        schema=[Field("x", Int64)],
    )
    catalog = Catalog.from_definitions([view])
    with pytest.raises(InputError, match=r"gone\.parquet does not exist"):
        repo.engine.get_historical_features(catalog, entity(), catalog.resolve(["v:x"]))


def test_not_parquet_source_is_named(repo: Repo) -> None:
    (repo.path / "fake.parquet").write_text("user_id,x\n1,2\n")
    user = Entity(name="user", join_keys=["user_id"], dtype=Int64)
    view = FeatureView(
        name="v",
        entities=[user],
        source=FileSource(name="s", path="fake.parquet"),
        schema=[Field("x", Int64)],
    )
    catalog = Catalog.from_definitions([view])
    with pytest.raises(InputError, match=r"fake\.parquet.*not a Parquet file"):
        repo.engine.get_historical_features(catalog, entity(), catalog.resolve(["v:x"]))


def test_source_without_a_declared_column(repo: Repo) -> None:
    user = Entity(name="user", join_keys=["user_id"], dtype=Int64)
    view = FeatureView(
        name="v",
        entities=[user],
        source=FileSource(name="s", path="data/stats"),
        schema=[Field("nope", Int64)],
    )
    catalog = Catalog.from_definitions([view])
    with pytest.raises(InputError, match="no column 'nope'"):
        repo.engine.get_historical_features(catalog, entity(), catalog.resolve(["v:nope"]))


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (
            pd.DataFrame({"device_id": ["d"], "event_timestamp": [ts(1)]}),
            r"missing column\(s\) 'os' \(of feature view 'device_info'\)",
        ),
        (
            pd.DataFrame({"device_id": [1], "event_timestamp": [ts(1)], "os": ["x"]}),
            "'device_id' has type int64",
        ),
        (pd.DataFrame({"device_id": [None], "event_timestamp": [ts(1)], "os": ["x"]}), "null"),
        (
            pd.DataFrame({"device_id": ["d"], "event_timestamp": ["soon"], "os": ["x"]}),
            "'soon' is not an ISO-8601 timestamp",
        ),
        (
            pd.DataFrame({"device_id": ["d"], "os": ["x"]}),
            "missing timestamp column 'event_timestamp'",
        ),
        (
            pd.DataFrame({"device_id": ["d"], "event_timestamp": [ts(1)], "os": [[1, 2]]}),
            "'os'.*declared string",
        ),
    ],
)
def test_rejected_batch_leaves_nothing(repo: Repo, batch: pd.DataFrame, message: str) -> None:
    folder = repo.path / "data" / "offline"
    before = files(folder)
    with pytest.raises(InputError, match=message):
        repo.engine.write(repo.catalog, repo.view("device_info"), batch)
    assert files(folder) == before


def test_rejected_cast_to_declared_int(repo: Repo) -> None:
    batch = pd.DataFrame(
        {"user_id": [1], "event_timestamp": [ts(1)], "clicks": [1.5], "score": [1.0]}
    )
    before = files(repo.path / "data" / "stats")
    with pytest.raises(InputError, match=r"'clicks'.*int64"):
        repo.engine.write(repo.catalog, repo.view("stats"), batch)
    assert files(repo.path / "data" / "stats") == before


def test_cannot_append_to_single_file_or_sql(repo: Repo) -> None:
    user = Entity(name="user", join_keys=["user_id"], dtype=Int64)
    one = FeatureView(
        name="one",
        entities=[user],
        source=FileSource(name="f", path="data/stats/part-0.parquet"),
        schema=[Field("clicks", Int64)],
    )
    sql = FeatureView(
        name="sql",
        entities=[user],
        source=SqlSource(name="q", query="SELECT 1"),
        schema=[Field("clicks", Int64)],
    )
    catalog = Catalog.from_definitions([one, sql])
    batch = entity(clicks=pa.array([1]))
    with pytest.raises(InputError, match=r"single file .*point source 'f' at a folder"):
        repo.engine.write(catalog, one, batch)
    with pytest.raises(InputError, match="SQL source 'q'"):
        repo.engine.write(catalog, sql, batch)


def test_value_history_key_errors(repo: Repo) -> None:
    with pytest.raises(InputError, match="missing key"):
        repo.engine.value_history(repo.catalog, repo.view("stats"), {})
    with pytest.raises(InputError, match="not an integer"):
        repo.engine.value_history(repo.catalog, repo.view("stats"), {"user_id": "8a2f"})


def test_bad_cast_in_source_is_an_input_error(repo: Repo) -> None:
    (repo.path / "text").mkdir()
    pq.write_table(
        pa.table({"user_id": [1], "event_timestamp": pa.array([ts(0)], UTC_US), "x": ["abc"]}),
        repo.path / "text" / "a.parquet",
    )
    user = Entity(name="user", join_keys=["user_id"], dtype=Int64)
    view = FeatureView(
        name="v",
        entities=[user],
        source=FileSource(name="s", path="text"),
        schema=[Field("x", Int64)],
    )
    catalog = Catalog.from_definitions([view])
    with pytest.raises(InputError, match="does not match the definitions"):
        repo.engine.get_historical_features(catalog, entity(), catalog.resolve(["v:x"])).to_arrow()
