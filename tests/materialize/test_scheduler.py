"""The cadence scheduler over real stores: views run at their cadences, never two
schedulers on one view (checked from the run history of real `almanac schedule`
processes), a dead holder's lease expires and another takes over, a failing view is
retried with backoff and recorded without stopping the others, late rows reach the
online store on the next run; `run-due`'s exit codes, `runs`, `GET /runs`, `/metrics`."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from almanac import FeatureStore
from almanac.materialize import scheduler
from almanac.materialize.history import RunRecord
from almanac.materialize.scheduler import due_times, run_due
from almanac.serving.app import create_app

FEATURES = """
from almanac import Entity, FeatureView, Field, FileSource, Float64, Int64

account = Entity(name="account", join_keys=["account_id"], dtype=Int64)
fast = FeatureView(name="fast", entities=[account], source=FileSource(name="a", path="data/a/"),
                   schema=[Field("score", Float64)], materialize_every="{fast}")
slow = FeatureView(name="slow", entities=[account], source=FileSource(name="b", path="data/b/"),
                   schema=[Field("score", Float64)], materialize_every="1h")
manual = FeatureView(name="manual", entities=[account], source=FileSource(name="c", path="data/c/"),
                     schema=[Field("score", Float64)])
"""
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)


def write(repo: Path, source: str, name: str, rows: list[tuple[int, datetime, float]]) -> None:
    folder = repo / "data" / source
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table({
        "account_id": pa.array([r[0] for r in rows], pa.int64()),
        "event_timestamp": pa.array([r[1] for r in rows], pa.timestamp("us", tz="UTC")),
        "score": pa.array([r[2] for r in rows], pa.float64()),
    })  # fmt: skip
    pq.write_table(table, folder / name)


def make_repo(root: Path, online_url: str, fast: str = "2s") -> FeatureStore:
    repo = root / "repo"
    repo.mkdir()
    (repo / "almanac.yaml").write_text(f"project: sched\nregistry:\n  refresh_seconds: 0\nonline:\n  url: {online_url}\n")  # fmt: skip
    (repo / "features.py").write_text(FEATURES.replace("{fast}", fast))
    for source in "abc":
        write(repo, source, "0.parquet", [(1, NOW - timedelta(hours=2), 1.0), (2, NOW - timedelta(hours=1), 2.0)])  # fmt: skip
    store = FeatureStore(repo)
    store.apply()
    return store


def outcomes(store: FeatureStore, view: str) -> list[str]:
    return [r.outcome for r in store.runs(view)]


def test_views_run_at_their_cadences_and_only_scheduled_ones(tmp_path: Path, online_url: str) -> None:  # fmt: skip
    with make_repo(tmp_path, online_url) as store:
        first = store.run_due()
        assert sorted(r.view for r in first) == ["fast", "slow"]  # never ran: due now
        assert all(r.outcome == "success" and r.trigger == "schedule" for r in first)
        fast_started = next(r.started_at for r in first if r.view == "fast")
        again = [r.view for r in store.run_due()]  # a moment later: slow is not due
        # (fast only if its 2 s went by meanwhile, on a machine busy with other tests)
        assert again == (["fast"] if datetime.now(UTC) - fast_started >= timedelta(seconds=2) else [])  # fmt: skip
        time.sleep(2.2)
        assert [r.view for r in store.run_due()] == ["fast"]
        due = {d.view: d for d in due_times(store, store.registry.state)}
        assert due["slow"].due_at - due["slow"].last.started_at == timedelta(hours=1)  # type: ignore[union-attr]
        values = store.get_online_features(["fast:score", "slow:score"], {"account_id": [1, 2]}, full_feature_names=True).to_dict()  # fmt: skip
        assert values["fast__score"] == values["slow__score"] == [1.0, 2.0]
        with pytest.raises(Exception, match="no materialize_every"):
            store.run_due(["manual"])
        store.materialize_incremental(datetime.now(UTC), ["manual"])  # a manual run is recorded too
        assert [(r.outcome, r.trigger) for r in store.runs("manual")] == [("success", "manual")]


def test_a_failing_view_is_retried_with_backoff_and_stops_no_other(tmp_path: Path, online_url: str, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(scheduler, "BACKOFF", timedelta(seconds=1))
    with make_repo(tmp_path, online_url, fast="1h") as store:
        state = store.registry.state

        def due() -> Any:
            return due_times(store, state, ["fast"])[0]

        def wait_until_due() -> None:
            while datetime.now(UTC) < due().due_at:
                time.sleep(0.05)

        broken = store.repo_path / "data" / "a" / "0.parquet"
        broken.write_bytes(b"not parquet")
        runs = {r.view: r for r in store.run_due()}
        assert runs["fast"].outcome == "failed" and "cannot be read" in runs["fast"].error
        assert runs["slow"].outcome == "success"  # a failing view stops no other
        # Backoff: 1 s after the first failure, 2 s after the second (then 4 s ...).
        assert due().due_at - due().last.started_at == timedelta(seconds=1)
        wait_until_due()
        assert [r.outcome for r in store.run_due()] == ["failed"]
        assert due().failures == 2 and due().due_at - due().last.started_at == timedelta(seconds=2)  # fmt: skip
        if datetime.now(UTC) < due().due_at:
            assert store.run_due() == []  # not before its time
        write(store.repo_path, "a", "0.parquet", [(1, NOW - timedelta(hours=2), 1.0)])
        wait_until_due()
        assert [r.outcome for r in store.run_due()] == ["success"]
        assert outcomes(store, "fast") == ["success", "failed", "failed"]
        assert due().failures == 0 and due().due_at - due().last.started_at == timedelta(hours=1)


def test_a_dead_holders_lease_expires_and_another_takes_over(tmp_path: Path, online_url: str) -> None:  # fmt: skip
    with make_repo(tmp_path, online_url) as store:
        state = store.registry.state
        # What a scheduler killed mid-run leaves: its lease, which nobody renews.
        assert state.acquire_lease("materialize:fast", "dead-host:1", timedelta(seconds=1))
        ran = run_due(store, state, holder="me", lease=timedelta(seconds=5))
        assert [r.view for r in ran] == ["slow"]  # fast is held
        time.sleep(1.1)
        assert [r.view for r in run_due(store, state, holder="me")] == ["fast"]
        assert "materialize:fast" not in state.leases()  # released after the run


def test_late_rows_reach_the_online_store_on_the_next_run(tmp_path: Path, online_url: str) -> None:  # fmt: skip
    with make_repo(tmp_path, online_url) as store:
        store.materialize_incremental(datetime.now(UTC))
        # A late file: account 1's newer row, with an event time before the watermark.
        write(store.repo_path, "c", "1.parquet", [(1, NOW - timedelta(minutes=30), 10.0)])
        run = store.materialize_incremental(datetime.now(UTC), ["manual"]).runs[0]
        assert run.start is not None and run.start <= NOW - timedelta(minutes=30)
        assert store.get_online_features(["manual:score"], {"account_id": [1]}).to_dict()["score"] == [10.0]  # fmt: skip
        # An older late row never replaces a newer value (the monotonic rule).
        write(store.repo_path, "c", "2.parquet", [(1, NOW - timedelta(minutes=50), 99.0)])
        store.materialize_incremental(datetime.now(UTC), ["manual"])
        assert store.get_online_features(["manual:score"], {"account_id": [1]}).to_dict()["score"] == [10.0]  # fmt: skip
        # Unchanged files: the next run starts at the watermark again.
        again = store.materialize_incremental(datetime.now(UTC), ["manual"]).runs[0]
        assert again.start is not None and again.start > NOW


def cli(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from almanac.cli import main; main()", "--repo", str(repo), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_run_due_exit_codes_runs_http_and_metrics(tmp_path: Path, online_url: str) -> None:
    store = make_repo(tmp_path, online_url, fast="1h")
    repo = store.repo_path
    done = cli(repo, "run-due", "--json")
    assert done.returncode == 0, done.stderr
    assert sorted(r["view"] for r in json.loads(done.stdout)) == ["fast", "slow"]
    assert "nothing is due" in cli(repo, "run-due").stdout
    # Make both due now: forget the history (what runs of 90 days ago leave).
    store.registry.state.prune_runs("materialize", datetime.now(UTC) + timedelta(days=1))
    assert cli(repo, "run-due", "--views", "fast").returncode == 0
    (repo / "data" / "b" / "0.parquet").write_bytes(b"broken")
    failed = cli(repo, "run-due", "--views", "slow")
    assert failed.returncode == 1 and "failed" in failed.stdout and "Traceback" not in failed.stderr
    listed = json.loads(cli(repo, "runs", "--view", "slow", "--json").stdout)
    assert [r["outcome"] for r in listed] == ["failed"]
    assert cli(repo, "runs", "--view", "nope").returncode == 2
    with TestClient(create_app(FeatureStore(repo))) as client:
        body = client.get("/runs", params={"view": "slow"}).json()
        assert [r["outcome"] for r in body] == ["failed"]
        assert client.get("/runs", params={"view": "nope"}).status_code == 404
        metrics = client.get("/metrics").text
    assert 'almanac_materialization_runs_total{outcome="failed",view="slow"} 1.0' in metrics
    assert 'almanac_materialization_last_success_timestamp_seconds{view="fast"}' in metrics
    store.close()


def _wait_for_runs(store: FeatureStore, done: Callable[[list[RunRecord]], bool]) -> None:
    deadline = time.monotonic() + 90
    while not done(store.runs("fast", limit=1000)):
        assert time.monotonic() < deadline, store.runs("fast", limit=1000)
        time.sleep(0.2)


def test_two_schedulers_never_run_one_view_at_once(tmp_path: Path, online_url: str) -> None:
    """Two real `almanac schedule` processes on a 1 s cadence; one is killed with SIGKILL
    half-way, the other carries on alone. The history shows no overlapping runs."""
    store = make_repo(tmp_path, online_url, fast="1s")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-c", "from almanac.cli import main; main()", "--repo", str(store.repo_path),
            "schedule", "--poll", "0.1", "--lease", "2s", "--views", "fast"]  # fmt: skip
    procs = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    try:
        # Waits on the history, not on the clock: a loaded machine starts them late.
        _wait_for_runs(store, lambda runs: len(runs) >= 2)
        # Kill the one that ran it last (it may hold the lease right now).
        last = max(store.runs("fast", limit=1000), key=lambda r: r.started_at)
        victim = next(p for p in procs if last.host.endswith(f":{p.pid}"))
        survivor_process = next(p for p in procs if p is not victim)
        victim.send_signal(signal.SIGKILL)
        killed_at = datetime.now(UTC)
        _wait_for_runs(store, lambda runs: sum(r.started_at > killed_at + timedelta(seconds=0.5) for r in runs) >= 3)  # fmt: skip
    finally:
        for process in procs:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        out, err = survivor_process.communicate(timeout=30)
        victim.wait(timeout=30)
    assert survivor_process.returncode == 0, err
    assert "scheduler stopped" in out
    runs = sorted(store.runs("fast", limit=1000), key=lambda r: r.started_at)
    assert len(runs) >= 5, runs
    assert all(r.outcome == "success" for r in runs)
    for before, after in itertools.pairwise(runs):
        assert before.started_at + timedelta(seconds=before.seconds) <= after.started_at, (before, after)  # fmt: skip
        assert after.started_at - before.started_at >= timedelta(seconds=0.99)  # the cadence
    after = {r.host for r in runs if r.started_at > killed_at + timedelta(seconds=0.5)}
    assert len(after) == 1 and after.pop().endswith(f":{survivor_process.pid}")  # took over
    store.close()


def test_the_airflow_example_runs_what_it_says(tmp_path: Path, online_url: str) -> None:
    """docs/examples/airflow_dag.py's task, run as its BashOperator would run it."""
    import ast
    import shlex

    dag = Path(__file__).parents[2] / "docs" / "examples" / "airflow_dag.py"
    tree = ast.parse(dag.read_text())
    commands = [
        kw.value for node in ast.walk(tree) if isinstance(node, ast.Call)
        for kw in node.keywords if kw.arg == "bash_command"
    ]  # fmt: skip
    assert len(commands) == 1 and isinstance(commands[0], ast.JoinedStr)
    store = make_repo(tmp_path, online_url, fast="1h")
    text = "".join(
        part.value if isinstance(part, ast.Constant) else "{REPO}" for part in commands[0].values
    )  # type: ignore[union-attr]
    argv = shlex.split(text.replace("{REPO}", str(store.repo_path)))
    assert argv[0] == "almanac"
    done = subprocess.run([str(Path(sys.executable).parent / "almanac"), *argv[1:]], capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(r.view for r in store.runs()) == ["fast", "slow"]
    store.close()


def test_a_source_that_cannot_be_listed_is_a_recorded_failure_and_many_stop_nothing(tmp_path: Path, online_url: str) -> None:  # fmt: skip
    import shutil

    from almanac.materialize import history

    with make_repo(tmp_path, online_url, fast="1h") as store:
        store.run_due()
        shutil.rmtree(store.repo_path / "data" / "a")
        store.registry.state.prune_runs("materialize", datetime.now(UTC) + timedelta(days=1))
        runs = {r.view: r for r in store.run_due()}
        assert runs["fast"].outcome == "failed" and "does not exist" in runs["fast"].error
        assert runs["slow"].outcome == "success"  # the others go on
        assert due_times(store, store.registry.state, ["fast"])[0].failures == 1
        # Fifty failures in a row: the backoff is capped by the cadence, and nothing breaks.
        for _ in range(50):
            history.record(store.registry.state, history.RunRecord(
                view="fast", started_at=datetime.now(UTC), start=None, end=datetime.now(UTC),
                rows=0, seconds=0.0, outcome="failed", error="x",
            ))  # fmt: skip
        [due] = due_times(store, store.registry.state, ["fast"])
        assert due.failures == 50 and due.due_at - due.last.started_at == timedelta(hours=1)  # type: ignore[union-attr]
