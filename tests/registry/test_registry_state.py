"""The registry's operational state (leases, runs, status) on SQLite and PostgreSQL:
one holder per lease across processes' connections, expiry, per-project isolation,
and registries made before the state tables existed."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from almanac.registry.store import SqliteRegistry, SqlRegistry


def test_a_lease_has_one_holder_until_it_expires_or_is_released(open_backend: Callable[..., SqlRegistry]) -> None:  # fmt: skip
    one, two = open_backend(), open_backend()  # two connections, as two processes
    assert one.acquire_lease("materialize:v", "a", timedelta(seconds=30))
    assert not two.acquire_lease("materialize:v", "b", timedelta(seconds=30))
    assert one.acquire_lease("materialize:v", "a", timedelta(seconds=30))  # renewed
    assert two.leases()["materialize:v"][0] == "a"
    one.release_lease("materialize:v", "b")  # not b's: nothing happens
    assert not two.acquire_lease("materialize:v", "b", timedelta(seconds=30))
    one.release_lease("materialize:v", "a")
    assert two.acquire_lease("materialize:v", "b", timedelta(milliseconds=50))
    time.sleep(0.1)  # b died without releasing: its lease lapses
    assert one.leases() == {}
    assert one.acquire_lease("materialize:v", "a", timedelta(seconds=30))
    other_project = open_backend("other")
    assert other_project.acquire_lease("materialize:v", "c", timedelta(seconds=30))


def test_runs_newest_first_filtered_and_limited(open_backend: Callable[..., SqlRegistry]) -> None:  # fmt: skip
    registry = open_backend()
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(5):
        registry.record_run(
            "materialize",
            f"v{i % 2}",
            base + timedelta(minutes=i),
            "success" if i else "failed",
            {"i": i},
        )
    assert [r["i"] for r in registry.runs("materialize")] == [4, 3, 2, 1, 0]
    assert [r["i"] for r in registry.runs("materialize", subject="v1")] == [3, 1]
    assert [r["i"] for r in registry.runs("materialize", since=base + timedelta(minutes=3))] == [4, 3]  # fmt: skip
    assert [r["i"] for r in registry.runs("materialize", limit=2)] == [4, 3]
    assert open_backend("other").runs("materialize") == []
    summary = {(s, o): (n, at) for s, o, n, at in registry.run_summary("materialize")}
    assert summary == {
        ("v0", "failed"): (1, base), ("v0", "success"): (2, base + timedelta(minutes=4)),
        ("v1", "success"): (2, base + timedelta(minutes=3)),
    }  # fmt: skip
    registry.prune_runs("materialize", base + timedelta(minutes=2))
    assert [r["i"] for r in registry.runs("materialize")] == [4, 3, 2]


def test_status_is_the_latest_value_per_key(open_backend: Callable[..., SqlRegistry]) -> None:
    registry = open_backend()
    assert registry.status("stream") == {}
    registry.put_status("stream", "txns/w1", {"lag": 5})
    registry.put_status("stream", "txns/w1", {"lag": 2})
    registry.put_status("stream", "txns/w2", {"lag": 0})
    found = open_backend().status("stream")
    assert {k: v for k, (_, v) in found.items()} == {"txns/w1": {"lag": 2}, "txns/w2": {"lag": 0}}
    assert all(abs((datetime.now(UTC) - at).total_seconds()) < 60 for at, _ in found.values())


def test_nothing_is_created_by_reading_state(tmp_path) -> None:  # type: ignore[no-untyped-def]
    registry = SqliteRegistry(tmp_path / "nope" / "registry.db", "shop")
    assert registry.leases() == {} and registry.runs("materialize") == [] and registry.status("x") == {}  # fmt: skip
    assert not (tmp_path / "nope").exists()


def test_a_registry_made_before_the_state_tables_gets_them(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "registry.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE almanac_registry (project TEXT PRIMARY KEY, version BIGINT NOT NULL, updated_at TEXT NOT NULL, author TEXT NOT NULL)")  # fmt: skip
    old.commit()
    old.close()
    registry = SqliteRegistry(path, "shop")
    assert registry.runs("materialize") == []
    registry.record_run("materialize", "v", datetime.now(UTC), "success", {"ok": True})
    assert registry.runs("materialize") == [{"ok": True}]
