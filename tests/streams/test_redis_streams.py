"""Redis Streams into both stores through `StreamWorker`, against a real redis-server:
events are servable and trainable, unreadable messages become dead letters without
stopping the worker, and a worker that dies at any point of a batch and is restarted
leaves every event in the offline log once and counted online once."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stream_repo import NOW, assert_exactly_once, event, make_repo, offline_log

from almanac import FeatureStore
from almanac.ingest.stream import StreamWorker, dead_letter_folder, open_reader
from almanac.offline.compaction import compact
from almanac.offline.writer import StagedFile

pytestmark = pytest.mark.redis


def stream_repo(tmp_path: Path, redis_url: str, online_url: str, fmt: str = "fields", extra: str = "") -> FeatureStore:  # fmt: skip
    args = f'stream="txns", url="{redis_url}", format="{fmt}"{extra}'
    return make_repo(tmp_path / "repo", online_url, "RedisStreamSource", args)


def send(client: redis.Redis, events: list[dict[str, Any]], fmt: str = "fields") -> None:
    pipe = client.pipeline()
    for e in events:
        if fmt == "json":
            pipe.xadd("txns", {"json": orjson.dumps(e)})
        else:
            pipe.xadd("txns", {k: str(v) for k, v in e.items()})
    pipe.execute()


def drain(store: FeatureStore, consumer: str = "w1", batch_size: int = 50) -> StreamWorker:
    worker = StreamWorker(store, "txns", open_reader(store, "txns", "g", consumer), batch_size, 0.05)  # fmt: skip
    while worker.step().messages:
        pass
    return worker


def test_a_worker_behind_reports_its_lag_in_messages_and_seconds(tmp_path: Path, redis_url: str) -> None:  # fmt: skip
    import time

    store = stream_repo(tmp_path, redis_url, "sqlite:///.almanac/online.db")
    client = redis.Redis.from_url(redis_url)
    send(client, [event(i, i % 3, minutes_ago=1, amount=1.0) for i in range(100)])
    time.sleep(0.3)
    worker = StreamWorker(store, "txns", open_reader(store, "txns", "g", "w1"), 10, 0.05)
    worker.step()
    status = worker.status()
    assert (status["lag"], status["written"]) == (90, 10)
    assert 0.3 <= status["lag_seconds"] < 30  # the newest message read is that old
    while worker.step().messages:
        pass
    assert (worker.status()["lag"], worker.status()["lag_seconds"]) == (0, 0.0)


@pytest.mark.parametrize("fmt", ["fields", "json"])
def test_events_are_served_and_trained_on(tmp_path: Path, redis_url: str, online_url: str, fmt: str) -> None:  # fmt: skip
    store = stream_repo(tmp_path, redis_url, online_url, fmt)
    client = redis.Redis.from_url(redis_url)
    events = [event(i, i % 7, minutes_ago=(i * 37) % 1500, amount=float(i % 50)) for i in range(300)]  # fmt: skip
    send(client, events, fmt)
    worker = drain(store)
    assert worker.totals.written == 300 and worker.totals.dead == 0
    assert_exactly_once(store, events)
    assert worker.reader.lag() == {"txns": 0}


def test_unreadable_messages_are_dead_letters_and_the_rest_is_written(tmp_path: Path, redis_url: str) -> None:  # fmt: skip
    store = stream_repo(tmp_path, redis_url, "sqlite:///.almanac/online.db", "json")
    client = redis.Redis.from_url(redis_url)
    good = [event(i, i % 3, minutes_ago=i, amount=1.0) for i in range(10)]
    bad = [
        {"json": b"{not json"},
        {"json": b"[1, 2]"},
        {"json": orjson.dumps({**good[0], "customer_id": None})},
        {"json": orjson.dumps({**good[0], "customer_id": "seven"})},
        {"json": orjson.dumps({**good[0], "ts": (NOW + timedelta(days=30)).isoformat()})},
        {"json": orjson.dumps({**good[0], "amout": 3.0})},
        {"other": b"no json field"},
    ]
    send(client, good[:5], "json")
    for fields in bad:
        client.xadd("txns", fields)
    send(client, good[5:], "json")
    worker = drain(store)
    assert worker.totals.written == 10 and worker.totals.dead == len(bad)
    assert_exactly_once(store, good)
    letters = [row for path in dead_letter_folder(store, "txns").glob("*.parquet") for row in pq.read_table(path).to_pylist()]  # fmt: skip
    reasons = " | ".join(sorted(r["reason"] for r in letters))
    for text in ("not JSON", "not a JSON object", "no join key 'customer_id'", "join key 'customer_id' has type string", "is in the future", "unknown column(s) 'amout'", "no value"):  # fmt: skip
        assert text in reasons, (text, reasons)
    assert len(letters) == len(bad)


def test_dead_letters_go_to_the_named_stream(tmp_path: Path, redis_url: str) -> None:
    store = stream_repo(tmp_path, redis_url, "sqlite:///.almanac/online.db", "json", ', dead_letter="txns-dead"')  # fmt: skip
    client = redis.Redis.from_url(redis_url)
    client.xadd("txns", {"json": b"nope"})
    send(client, [event(1, 1, 1, 2.0)], "json")
    drain(store)
    (entry,) = client.xrange("txns-dead")
    assert entry[1][b"value"] == b"nope" and b"not JSON" in entry[1][b"reason"]
    assert not dead_letter_folder(store, "txns").exists()


class Crash(BaseException):
    """The worker's process dying at that point (nothing after it runs)."""


CRASH_POINTS = ["online write", "offline commit", "before ack", "after ack"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    amounts=st.lists(st.integers(0, 100), min_size=20, max_size=120),
    minutes=st.lists(st.floats(0.01, 60 * 30), min_size=120, max_size=120),  # late ones: beyond 1d
    customers=st.lists(st.integers(0, 4), min_size=120, max_size=120),
    crashes=st.lists(st.tuples(st.sampled_from(CRASH_POINTS), st.integers(1, 4)), max_size=5),
    batch=st.integers(5, 40),
    compactions=st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_a_worker_killed_anywhere_and_restarted_writes_each_event_once(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, amounts: list[int],
    minutes: list[float], customers: list[int], crashes: list[tuple[str, int]], batch: int,
    compactions: list[bool],
) -> None:  # fmt: skip
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    online = redis_url if len(amounts) % 2 else "sqlite:///.almanac/online.db"
    store = stream_repo(tmp_path_factory.mktemp("crash"), redis_url, online)
    events = [
        event(i, customers[i], minutes[i], float(a)) for i, a in enumerate(amounts)
    ]  # out of order
    send(client, events)
    for (point, after), compacted in zip([*crashes, (None, 0)], compactions, strict=False):
        run_until_crash(store, point, after, batch)
        if compacted:  # the log compacted between a crash and the restart
            compact(store.config, store.catalog.sources["txns"], min_age=timedelta(0))  # type: ignore[arg-type]
    drain(store)  # whatever the last crash left
    assert_exactly_once(store, events)
    assert offline_log(store).num_rows == len(events)
    store.close()


def run_until_crash(store: FeatureStore, point: str | None, after: int, batch: int) -> None:
    """A worker (restarted: the same consumer name) that dies at the `after`-th time it
    reaches `point`, or drains the stream when `point` is None."""
    seen = {"n": 0}

    def hit(where: str) -> None:
        if where == point:
            seen["n"] += 1
            if seen["n"] == after:
                raise Crash(where)

    reader = open_reader(store, "txns", "g", "w1")
    real_commit, real_merge, real_ack = StagedFile.commit, type(store.online).merge_batch, reader.commit  # fmt: skip

    def commit(self: StagedFile) -> None:
        real_commit(self)
        hit("offline commit")

    def merge(self: Any, *args: Any, **kw: Any) -> int:
        written: int = real_merge(self, *args, **kw)
        hit("online write")
        return written

    def ack(messages: Any) -> None:
        hit("before ack")
        real_ack(messages)
        hit("after ack")

    reader.commit = ack  # type: ignore[method-assign]
    StagedFile.commit = commit  # type: ignore[method-assign]
    type(store.online).merge_batch = merge  # type: ignore[method-assign]
    worker = StreamWorker(store, "txns", reader, batch, 0.02)
    try:
        while worker.step().messages:
            pass
    except Crash:
        pass
    finally:
        StagedFile.commit, type(store.online).merge_batch = real_commit, real_merge  # type: ignore[method-assign]
        reader.close()


def test_almanac_stream_killed_with_sigkill_and_restarted(tmp_path: Path, redis_url: str) -> None:
    """The real thing: `almanac stream` in its own process, killed with SIGKILL at
    arbitrary moments three times while it works through 40,000 events, then restarted
    to the end."""
    import random
    import signal
    import subprocess
    import sys
    import time

    store = stream_repo(tmp_path, redis_url, redis_url)
    client = redis.Redis.from_url(redis_url)
    events = [event(i, i % 50, minutes_ago=(i * 7) % 1400 + 1, amount=float(i % 97)) for i in range(40_000)]  # fmt: skip
    send(client, events)
    command = [sys.executable, "-c", "from almanac.cli import main; main()", "--repo", str(store.repo_path),
               "stream", "--quiet", "--batch-size", "150", "--batch-seconds", "0.05"]  # fmt: skip
    rng = random.Random(7)
    logged = []
    for attempt in range(3):
        worker = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if attempt == 0:  # the first kill lands once it works, however slow its start-up
            deadline = time.monotonic() + 120
            while offline_log(store).num_rows == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.5))
        else:
            time.sleep(rng.uniform(1.0, 2.5))  # start-up is about 0.6 s
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        logged.append(offline_log(store).num_rows)
    assert 0 < logged[0] < len(events), logged  # the first kill landed while it worked
    final = [
        *command[:-4],
        "--batch-size",
        "2000",
        "--batch-seconds",
        "0.05",
        "--max-batches",
        "40",
    ]
    done = subprocess.run(final, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert client.xpending("txns", "almanac-streams")["pending"] == 0
    assert_exactly_once(store, events)


def test_the_worker_serves_metrics_and_stops_cleanly_on_sigterm(tmp_path: Path, redis_url: str) -> None:  # fmt: skip
    import contextlib
    import signal
    import subprocess
    import sys
    import time

    import httpx

    from servers import free_port

    store = stream_repo(tmp_path, redis_url, redis_url, "json")
    client = redis.Redis.from_url(redis_url)
    port = free_port()
    worker = subprocess.Popen(
        [sys.executable, "-c", "from almanac.cli import main; main()", "--repo", str(store.repo_path),
         "stream", "--quiet", "--batch-seconds", "0.1", "--metrics-port", str(port), "--consumer", "w1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        send(client, [event(i, i % 4, minutes_ago=i + 1, amount=1.0) for i in range(200)], "json")
        client.xadd("txns", {"json": b"not json"})
        text, deadline = "", time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):  # not listening yet
                text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            if 'almanac_stream_events_total{outcome="written",source="txns"} 200.0' in text and "dead" in text:  # fmt: skip
                break
            time.sleep(0.2)
        assert 'almanac_stream_events_total{outcome="written",source="txns"} 200.0' in text, text[-2000:]  # fmt: skip
        assert 'almanac_stream_events_total{outcome="dead",source="txns"} 1.0' in text
        assert 'almanac_stream_lag_events{source="txns"} 0.0' in text
        assert "almanac_stream_latency_seconds_count" in text
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "200" in out  # the final table
    # The feature server shows every worker's figures, as they last published them.
    from fastapi.testclient import TestClient

    from almanac.serving.app import create_app

    with TestClient(create_app(FeatureStore(store.repo_path))) as server:
        text = server.get("/metrics").text
    labels = 'consumer="w1",source="txns"'
    assert f'almanac_stream_events_total{{{labels[:-13]}outcome="written",source="txns"}} 200.0' in text, text[-3000:]  # fmt: skip
    assert f'almanac_stream_events_total{{{labels[:-13]}outcome="dead",source="txns"}} 1.0' in text
    assert f"almanac_stream_lag_events{{{labels}}} 0.0" in text
    assert f"almanac_stream_lag_seconds{{{labels}}} 0.0" in text
    assert f"almanac_stream_status_age_seconds{{{labels}}}" in text
    assert f"almanac_stream_last_latency_seconds{{{labels}}}" in text, text[
        text.index("almanac_stream") :
    ]


def test_an_online_store_that_stops_answering_pauses_the_worker_and_loses_nothing(tmp_path: Path, redis_url: str) -> None:  # fmt: skip
    """The online Redis frozen (SIGSTOP) mid-stream: batches fail, nothing is committed,
    the worker retries; once Redis answers again every event is there, once."""
    import signal
    import threading
    import time

    from servers import start_redis

    online = start_redis()
    try:
        first = stream_repo(tmp_path, redis_url, online.url, "json")
        config = first.repo_path / "almanac.yaml"
        config.write_text(config.read_text() + "  timeout_seconds: 0.5\n")
        store = FeatureStore(first.repo_path)
        client = redis.Redis.from_url(redis_url)
        events = [event(i, i % 6, minutes_ago=i % 300 + 1, amount=float(i % 11)) for i in range(600)]  # fmt: skip
        send(client, events[:200], "json")
        worker = StreamWorker(store, "txns", open_reader(store, "txns", "g", "w1"), 50, 0.05)
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), kwargs={"retry_seconds": 0.2})
        thread.start()
        deadline = time.monotonic() + 30
        while worker.totals.written < 100 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert online.process is not None
        online.process.send_signal(signal.SIGSTOP)  # the online store stops answering
        send(client, events[200:], "json")
        time.sleep(2)
        stalled = worker.totals.written
        online.process.send_signal(signal.SIGCONT)
        while worker.totals.written + worker.totals.replayed < 600 and time.monotonic() < deadline + 30:  # fmt: skip
            time.sleep(0.05)
        stop.set()
        thread.join(30)
        assert stalled < 600  # it did wait for the store
        assert_exactly_once(store, events)
        store.close()
    finally:
        if online.process is not None:
            online.process.send_signal(signal.SIGCONT)
        online.stop()


def test_one_consumer_reads_a_stream_at_a_time_and_the_next_takes_over_its_batch(tmp_path: Path, redis_url: str) -> None:  # fmt: skip
    """A stream is one partition, applied in order: a second worker waits while the
    first holds the lease, and when the first dies mid-batch it takes over that batch
    before any newer entry."""
    import time

    from almanac.streams.redis import RedisStreamReader

    store = stream_repo(tmp_path, redis_url, "sqlite:///.almanac/online.db", "json")
    client = redis.Redis.from_url(redis_url)
    events = [event(i, i % 3, minutes_ago=i + 1, amount=1.0) for i in range(30)]
    send(client, events[:10], "json")
    first = open_reader(store, "txns", "g", "w1")
    second = open_reader(store, "txns", "g", "w2")
    assert isinstance(first, RedisStreamReader) and isinstance(second, RedisStreamReader)
    first.lease_seconds = second.lease_seconds = 0.5
    taken = first.poll(5, 0.05)  # w1 reads 5 entries, then dies without acknowledging
    assert len(taken) == 5 and second.poll(5, 0.05) == []  # w2 waits
    send(client, events[10:], "json")
    time.sleep(0.6)  # w1's lease lapses
    again = second.poll(100, 0.05)
    assert [m.offset for m in again[:5]] == [m.offset for m in taken]  # its batch first
    worker = StreamWorker(store, "txns", second, 100, 0.05)
    while worker.step().messages:
        pass
    assert_exactly_once(store, events)


def test_a_worker_that_takes_a_stream_back_reads_the_log_again(tmp_path: Path, redis_url: str) -> None:  # fmt: skip
    """w2 works, loses the lease; w1 takes over, writes a batch and dies before
    acknowledging it; w2 takes the stream back and must see that batch in the log (it was
    written while w2 was not looking), so it logs it once."""
    import time

    store = stream_repo(tmp_path, redis_url, "sqlite:///.almanac/online.db", "json")
    client = redis.Redis.from_url(redis_url)
    events = [event(i, i % 3, minutes_ago=i + 1, amount=1.0) for i in range(30)]
    send(client, events[:10], "json")
    two, one = open_reader(store, "txns", "g", "w2"), open_reader(store, "txns", "g", "w1")
    two.lease_seconds = one.lease_seconds = 0.3  # type: ignore[attr-defined]
    w2 = StreamWorker(store, "txns", two, 10, 0.05)
    assert w2.step().written == 10
    time.sleep(0.4)  # w2's lease lapses
    send(client, events[10:20], "json")

    def die(messages: Any) -> None:
        raise Crash

    one.commit = die  # type: ignore[method-assign]
    with pytest.raises(Crash):
        StreamWorker(store, "txns", one, 10, 0.05).step()  # written to both stores, not acked
    time.sleep(0.4)  # w1's lease lapses: w2 takes the stream back
    send(client, events[20:], "json")
    while w2.step().messages:
        pass
    assert w2.totals.replayed == 10
    assert_exactly_once(store, events)


WRITE_TIME_VIEW = """
from almanac import on_demand_view

@on_demand_view(sources=[last_txn], schema=[Field("inverse", Float64)], mode="python",
                write_to_online=True)
def inverse(columns):
    return {"inverse": [None if a is None else 1 / a for a in columns["amount"]]}
"""


def test_a_write_time_view_failing_on_an_event_dead_letters_that_event(tmp_path: Path, redis_url: str) -> None:  # fmt: skip
    """The stream's write-time view is computed per batch; an event its function fails on
    is refused like an unreadable one, and the rest of the batch is written."""
    store = stream_repo(tmp_path, redis_url, "sqlite:///.almanac/online.db", "json")
    with open(store.repo_path / "features.py", "a") as features:
        features.write(WRITE_TIME_VIEW)
    store = FeatureStore(store.repo_path)
    store.apply()
    events = [event(i, i, minutes_ago=1, amount=float(i)) for i in range(4)]  # customer 0: 1/0
    send(redis.Redis.from_url(redis_url), events, "json")
    worker = drain(store)
    assert (worker.totals.written, worker.totals.dead) == (3, 1)
    answer = store.get_online_features(["inverse:inverse"], [{"customer_id": c} for c in range(4)])
    assert answer.to_dict()["inverse"] == [None, 1.0, 0.5, 1 / 3]
    (letter,) = [row for path in dead_letter_folder(store, "txns").glob("*.parquet") for row in pq.read_table(path).to_pylist()]  # fmt: skip
    assert "inverse" in letter["reason"] and "ZeroDivisionError" in letter["reason"]
