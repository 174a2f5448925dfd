"""Admission at the door: strict columns and expectations, on every entry path, leave the
stores exactly as the policy says (reject: nothing anywhere; warn: everything, logged;
quarantine: the passing rows, the others kept aside with the reason)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from almanac import Expect, FeatureStore, FeatureView, Field, Float64
from almanac.errors import DefinitionError, InputError
from almanac.offline.files import quarantine_folder
from almanac.quality.admission import admit
from almanac.registry.diff import values_fingerprint
from almanac.semantics.expectations import REASON

FEATURES = """
from almanac import Aggregation, AggregationView, Entity, Expect, FeatureView, Field, Float64
from almanac import PushSource, String

user = Entity(name="user", join_keys=["user_id"])
payments = PushSource(name="payments", extra_columns={extra!r})
amounts = FeatureView(
    name="amounts", entities=[user], source=payments,
    schema=[Field("amount", Float64), Field("tier", String)],
    expectations=[Expect.between("amount", 0, 1000), Expect.one_of("tier", ["free", "pro"]),
                  Expect.not_null("tier")],
    on_violation={policy!r},
)
spend = AggregationView(
    name="spend", entities=[user], source=payments, columns=[Field("amount", Float64)],
    aggregations=[Aggregation(column="amount", function="sum", windows=["1d"])],
)
"""


def make_store(tmp_path: Path, url: str, policy: str = "reject", extra: str = "reject") -> FeatureStore:  # fmt: skip
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "almanac.yaml").write_text(f"project: admission\nonline:\n  url: {url}\n")
    (repo / "features.py").write_text(FEATURES.format(policy=policy, extra=extra))
    store = FeatureStore(repo)
    store.apply()
    return store


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def online_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return "sqlite:///.almanac/online.db"
    url: str = request.getfixturevalue("redis_url")
    return url


def rows(now: datetime, amounts: list[float | None], tiers: list[str | None]) -> dict[str, list]:
    users = [f"u{i}" for i in range(len(amounts))]
    return {"user_id": users, "event_timestamp": [now] * len(users), "amount": amounts, "tier": tiers}  # fmt: skip


def offline_rows(store: FeatureStore) -> list[dict]:
    folder = store.config.resolve_path(store.config.offline.data_path) / "payments"
    files = sorted(folder.glob("*.parquet")) if folder.exists() else []
    return [row for path in files for row in pq.read_table(path).to_pylist()]


def quarantined(store: FeatureStore) -> list[dict]:
    folder = quarantine_folder(store.config, "amounts")
    files = sorted(folder.glob("*.parquet")) if folder.exists() else []
    return [row for path in files for row in pq.read_table(path).to_pylist()]


def served(store: FeatureStore, users: list[str], now: datetime) -> dict[str, list]:
    response = store.get_online_features(
        ["amounts:amount", "spend:amount_sum_1d"], {"user_id": users}, now=now
    )
    return response.to_dict()


def test_reject_refuses_the_whole_batch_naming_each_breach(tmp_path: Path, online_url: str) -> None:  # fmt: skip
    with make_store(tmp_path, online_url) as store:
        now = datetime.now(UTC) - timedelta(seconds=1)
        store.push("payments", rows(now, [10.0], ["pro"]))
        before = (offline_rows(store), served(store, ["u0", "u1"], now))
        bad = rows(now, [20.0, -5.0, 5000.0], ["free", "gold", None])
        with pytest.raises(InputError) as caught:
            store.push("payments", bad)
        message = str(caught.value)
        assert "nothing was written" in message
        assert "between('amount', 0, 1000): 2 of 3 rows (e.g. -5.0, 5000.0)" in message
        assert "one_of('tier', ['free', 'pro']): 1 of 3 rows (e.g. 'gold')" in message
        assert "not_null('tier'): 1 of 3 rows" in message
        with pytest.raises(InputError, match="between"):
            store.write_to_offline_store("amounts", bad)
        assert (offline_rows(store), served(store, ["u0", "u1"], now)) == before
        assert quarantined(store) == []


def test_warn_writes_everything_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with make_store(tmp_path, "sqlite:///.almanac/online.db", policy="warn") as store:
        now = datetime.now(UTC) - timedelta(seconds=1)
        with caplog.at_level(logging.WARNING, logger="almanac.quality"):
            assert store.push("payments", rows(now, [10.0, -5.0], ["pro", "free"])) == 2
        assert [r.levelname for r in caplog.records] == ["WARNING"]
        assert "between('amount', 0, 1000): 1 of 2 rows (e.g. -5.0)" in caplog.records[0].message
        assert len(offline_rows(store)) == 2
        assert served(store, ["u1"], now)["amount"] == [-5.0]


def test_quarantine_writes_the_passing_rows_and_keeps_the_others(tmp_path: Path, online_url: str) -> None:  # fmt: skip
    with make_store(tmp_path, online_url, policy="quarantine") as store:
        now = datetime.now(UTC) - timedelta(seconds=1)
        batch = rows(now, [10.0, -5.0, 30.0, 5000.0], ["pro", "free", "gold", "free"])
        assert store.push("payments", batch) == 1
        assert [r["user_id"] for r in offline_rows(store)] == ["u0"]
        got = served(store, ["u0", "u1", "u2", "u3"], now)
        assert got["amount"] == [10.0, None, None, None]
        assert got["amount_sum_1d"] == [10.0, None, None, None]  # not summed online either
        kept = {r["user_id"]: r[REASON] for r in quarantined(store)}
        assert kept == {
            "u1": "between('amount', 0, 1000)",
            "u2": "one_of('tier', ['free', 'pro'])",
            "u3": "between('amount', 0, 1000)",
        }
        # A batch with no passing row writes nothing but the quarantine.
        assert store.write_to_offline_store("amounts", rows(now, [-1.0], ["pro"])) == 0
        assert len(offline_rows(store)) == 1 and len(quarantined(store)) == 4
        held = store.quarantine("amounts")
        assert held.reasons() == {"between('amount', 0, 1000)": 3, "one_of('tier', ['free', 'pro'])": 1}  # fmt: skip
        assert held.rows.column("amount").to_pylist()[0] == -1.0  # newest first


def test_a_column_no_view_reads_is_refused_unless_the_source_ignores_extras(tmp_path: Path) -> None:  # fmt: skip
    now = datetime.now(UTC) - timedelta(seconds=1)
    batch = {**rows(now, [1.0], ["pro"]), "amout": [2.0]}
    with make_store(tmp_path, "sqlite:///.almanac/online.db") as store:
        with pytest.raises(InputError, match=r"unknown column\(s\) 'amout'.*extra_columns=\"ignore\""):  # fmt: skip
            store.push("payments", batch)
        with pytest.raises(InputError, match=r"unknown column\(s\) 'amout'"):
            store.write_to_offline_store("amounts", batch)
        assert offline_rows(store) == []
    with make_store(tmp_path, "sqlite:///.almanac/online.db", extra="ignore") as store:
        assert store.push("payments", batch) == 1
        assert store.write_to_offline_store("amounts", batch) == 1
        assert all("amout" not in row for row in offline_rows(store))


def test_expectations_are_checked_when_defined() -> None:
    with pytest.raises(DefinitionError, match="between needs min, max or both"):
        Expect.between("amount")
    with pytest.raises(DefinitionError, match="not a valid RE2 pattern"):
        Expect.matches("email", r"(?<=@)x")
    with pytest.raises(DefinitionError, match="min 5 is greater than max 1"):
        Expect.row_count(min=5, max=1)


def test_an_expectation_on_a_column_the_view_does_not_read_fails_at_plan(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "almanac.yaml").write_text("project: p\n")
    (repo / "features.py").write_text(
        FEATURES.format(policy="reject", extra="reject").replace(
            'Expect.not_null("tier")', 'Expect.not_null("teir")'
        )
    )
    with FeatureStore(repo) as store, pytest.raises(DefinitionError, match="checks column 'teir'"):
        store.plan()


def test_expectations_are_admission_rules_not_values(tmp_path: Path) -> None:
    """Specs without expectations are unchanged (no plan change on upgrade), and editing
    expectations does not reset the online values (they decide what enters, not how
    stored values are computed)."""
    plain = FeatureView(name="v", entities=["u"], source="s", schema=[Field("x", Float64)])
    assert "expectations" not in plain.to_spec() and "on_violation" not in plain.to_spec()
    with make_store(tmp_path, "sqlite:///.almanac/online.db") as store:
        before = values_fingerprint(store.catalog, "amounts")
    with make_store(tmp_path, "sqlite:///.almanac/online.db", policy="warn") as store:
        assert values_fingerprint(store.catalog, "amounts") == before


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(
        st.one_of(st.none(), st.floats(-10, 10, allow_nan=False, width=32)), max_size=40
    ),
    low=st.floats(-5, 0, width=32),
    high=st.floats(0, 5, width=32),
)
def test_quarantine_splits_rows_exactly_as_the_reference(
    values: list[float | None], low: float, high: float
) -> None:
    """Admitted + quarantined = the batch, in order; a row is kept aside iff it breaks
    the bounds (nulls pass `between`)."""
    view = FeatureView(
        name="v", entities=["u"], source="s", schema=[Field("x", Float64)],
        expectations=[Expect.between("x", low, high)], on_violation="quarantine",
    )  # fmt: skip
    batch = pa.table({"id": list(range(len(values))), "x": pa.array(values, pa.float64())})
    result = admit(batch, [view], "test")
    bad = [i for i, v in enumerate(values) if v is not None and not (low <= v <= high)]
    assert result.rows.column("id").to_pylist() == [i for i in range(len(values)) if i not in bad]
    kept = result.quarantined[0][1].column("id").to_pylist() if result.quarantined else []
    assert kept == bad


def test_writes_take_parquet_paths_and_numpy_columns(tmp_path: Path) -> None:
    """The forms a batch may come in, admitted by the same rules on every path."""
    import numpy as np

    now = datetime.now(UTC) - timedelta(seconds=1)
    with make_store(tmp_path, "sqlite:///.almanac/online.db") as store:
        path = tmp_path / "batch.parquet"
        pq.write_table(pa.table(rows(now, [1.0, 2.0], ["pro", "free"])), path)
        assert store.write_to_offline_store("amounts", path) == 2
        numpy = {"user_id": np.array(["a", "b"], dtype=object), "event_timestamp": [now, now],
                 "amount": np.array([3.0, 4.0]), "tier": ["pro", "pro"]}  # fmt: skip
        assert store.push("payments", numpy) == 2
        pq.write_table(pa.table({**rows(now, [1.0], ["pro"]), "amout": [1.0]}), path)
        with pytest.raises(InputError, match="unknown column"):
            store.write_to_offline_store("amounts", path)
        assert len(offline_rows(store)) == 4


def test_the_edges_of_admission(tmp_path: Path) -> None:
    """An empty batch meets row_count(min=1)? No. Another view's column in a write for
    one view? Refused (it would be dropped). NaN and int64 beyond 2^53 under between."""
    now = datetime.now(UTC) - timedelta(seconds=1)
    repo = tmp_path / "edges"
    repo.mkdir()
    (repo / "almanac.yaml").write_text("project: edges\n")
    (repo / "features.py").write_text("""
from almanac import Entity, Expect, FeatureView, Field, Float64, Int64, PushSource, String
user = Entity(name="user", join_keys=["user_id"])
events = PushSource(name="events")
a = FeatureView(name="a", entities=[user], source=events, schema=[Field("big", Int64)],
                expectations=[Expect.between("big", 0), Expect.row_count(min=1)])
b = FeatureView(name="b", entities=[user], source=events, schema=[Field("tier", String)])
""")
    with FeatureStore(repo) as store:
        store.apply()
        with pytest.raises(InputError, match=r"row_count\(min=1, max=None\): the batch has 0 rows"):
            store.push("events", {"user_id": [], "event_timestamp": [], "big": [], "tier": []})
        assert store.push("events", {"user_id": ["u"], "event_timestamp": [now], "big": [2**53 + 1], "tier": ["x"]}) == 1  # fmt: skip
        with pytest.raises(InputError, match="between"):
            store.push("events", {"user_id": ["u"], "event_timestamp": [now], "big": [-(2**62)], "tier": ["x"]})  # fmt: skip
        with pytest.raises(InputError, match=r"unknown column\(s\) 'tier'"):
            store.write_to_offline_store("a", {"user_id": ["u"], "event_timestamp": [now], "big": [1], "tier": ["GOLD"]})  # fmt: skip


def test_time_columns_are_not_expectation_columns(tmp_path: Path) -> None:
    repo = tmp_path / "times"
    repo.mkdir()
    (repo / "almanac.yaml").write_text("project: times\n")
    (repo / "features.py").write_text(FEATURES.format(policy="reject", extra="reject").replace(
        'Expect.not_null("tier")', 'Expect.not_null("event_timestamp")'))  # fmt: skip
    with FeatureStore(repo) as store, pytest.raises(DefinitionError, match="checks column 'event_timestamp'"):  # fmt: skip
        store.plan()


def test_every_check_is_recorded_rejected_batches_included(tmp_path: Path) -> None:
    with make_store(tmp_path, "sqlite:///.almanac/online.db") as store:
        now = datetime.now(UTC) - timedelta(seconds=1)
        store.push("payments", rows(now, [10.0, 20.0], ["pro", "free"]))
        with pytest.raises(InputError):
            store.push("payments", rows(now, [-5.0], ["pro"]))
        store.write_to_offline_store("amounts", rows(now, [1.0], ["free"]))
        recorded = store.results("amounts").rows.to_pylist()
        assert len(recorded) == 9  # 3 batches × 3 expectations, newest first
        assert [r["entry"] for r in recorded[::3]] == ["write", "push", "push"]
        failed = store.results("amounts", failed=True).rows.to_pylist()
        assert [(r["expectation"], r["observed"], r["rows"], r["policy"]) for r in failed] == [
            ("between('amount', 0, 1000)", 1, 1, "reject")
        ]
        assert store.results("spend").rows.num_rows == 0  # no expectations, nothing recorded
        assert store.results(since=datetime.now(UTC) + timedelta(seconds=5)).rows.num_rows == 0
