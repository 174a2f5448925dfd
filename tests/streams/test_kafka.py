"""Kafka into both stores through `StreamWorker` and `almanac stream`, against
librdkafka's mock cluster (a real Kafka-protocol broker inside confluent-kafka, on a
local port): partitions shared by a consumer group, offsets committed only after both
stores hold a batch, and a replay from the committed offsets writing nothing twice."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from stream_repo import assert_exactly_once, event, make_repo

from almanac import FeatureStore
from almanac.ingest.stream import StreamWorker, open_reader

# A restarted member rejoins once the broker gives up on the one it replaces.
OPTIONS = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500", "log_level": "3"}


@pytest.fixture(scope="module")
def brokers() -> Iterator[str]:
    owner = Producer({"test.mock.num.brokers": 3, "log_level": 3})  # keeps the cluster up
    metadata = owner.list_topics(timeout=10)
    yield ",".join(f"{b.host}:{b.port}" for b in metadata.brokers.values())
    owner.flush(5)


def kafka_repo(tmp_path: Path, brokers: str, online_url: str = "sqlite:///.almanac/online.db") -> tuple[FeatureStore, str]:  # fmt: skip
    topic = f"txns-{uuid.uuid4().hex[:8]}"
    store = make_repo(tmp_path / "repo", online_url, "KafkaSource", f'topic="{topic}", bootstrap_servers="{brokers}", options={OPTIONS!r}')  # fmt: skip
    return store, topic


def produce(brokers: str, topic: str, events: list[dict[str, Any]]) -> None:
    producer = Producer({"bootstrap.servers": brokers, "log_level": 3})
    for e in events:
        producer.produce(topic, key=str(e["customer_id"]), value=orjson.dumps(e))
    producer.flush(10)


def drain(worker: StreamWorker, messages: int, seconds: float = 60) -> None:
    """Batches until the worker has read `messages` (the group's first join takes a few
    seconds), then one more to see that nothing else comes."""
    deadline = time.monotonic() + seconds
    while worker.totals.messages < messages and time.monotonic() < deadline:
        worker.step()
    worker.step()


def test_events_are_served_and_trained_on(tmp_path: Path, brokers: str, online_url: str) -> None:
    store, topic = kafka_repo(tmp_path, brokers, online_url)
    events = [event(i, i % 9, minutes_ago=(i * 13) % 1400 + 1, amount=float(i % 30)) for i in range(400)]  # fmt: skip
    produce(brokers, topic, events)
    worker = StreamWorker(store, "txns", open_reader(store, "txns", "g", "w1"), 100, 1.0)
    drain(worker, 400)
    worker.reader.close()
    assert worker.totals.written == 400
    assert_exactly_once(store, events)


class Crash(BaseException):
    pass


def test_a_replay_from_the_committed_offsets_writes_nothing_twice(tmp_path: Path, brokers: str) -> None:  # fmt: skip
    """Die before committing, twice (after writing both stores, with batches of 30 and
    then 70: the replay reaches past the batch it repeats), then drain."""
    store, topic = kafka_repo(tmp_path, brokers, "sqlite:///.almanac/online.db")
    events = [event(i, i % 5, minutes_ago=i + 1, amount=float(i)) for i in range(300)]
    produce(brokers, topic, events)
    for size in (30, 70):
        reader = open_reader(store, "txns", "g", "w1")

        def die(messages: Any) -> None:
            raise Crash

        reader.commit = die  # type: ignore[method-assign]
        worker = StreamWorker(store, "txns", reader, size, 1.0)
        deadline = time.monotonic() + 60
        with pytest.raises(Crash):
            while time.monotonic() < deadline:
                worker.step()
        reader.close()
    worker = StreamWorker(store, "txns", open_reader(store, "txns", "g", "w1"), 500, 1.0)
    drain(worker, 300)
    worker.reader.close()
    assert worker.totals.replayed > 0  # it did read the first batches again
    assert_exactly_once(store, events)


def test_the_cli_worker(tmp_path: Path, brokers: str) -> None:
    store, topic = kafka_repo(tmp_path, brokers)
    events = [event(i, i % 3, minutes_ago=i + 1, amount=2.0) for i in range(50)]
    produce(brokers, topic, events)
    done = subprocess.run(
        [sys.executable, "-c", "from almanac.cli import main; main()", "--repo", str(store.repo_path),
         "stream", "--quiet", "--batch-seconds", "0.5", "--max-batches", "12"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "txns" in done.stdout and "50" in done.stdout
    assert_exactly_once(store, events)


def test_a_batch_that_failed_is_read_again_before_anything_newer(tmp_path: Path, brokers: str) -> None:  # fmt: skip
    """The online store refuses a batch once (StoreUnavailableError): the worker rewinds
    the partition to that batch and goes on; every event is written once."""
    import threading

    from almanac.errors import StoreUnavailableError

    store, topic = kafka_repo(tmp_path, brokers)
    events = [event(i, i % 4, minutes_ago=i + 1, amount=1.0) for i in range(200)]
    produce(brokers, topic, events)
    online = type(store.online)
    real, failures = online.write_batch, {"left": 1}

    def flaky(self: Any, *args: Any, **kwargs: Any) -> int:
        if failures["left"] and self is store.online:
            failures["left"] -= 1
            raise StoreUnavailableError("the online store went away")
        written: int = real(self, *args, **kwargs)
        return written

    online.write_batch = flaky  # type: ignore[method-assign]
    worker = StreamWorker(store, "txns", open_reader(store, "txns", "g", "w1"), 40, 1.0)
    stop = threading.Event()
    try:
        thread = threading.Thread(target=worker.run, args=(stop,), kwargs={"retry_seconds": 0.1})
        thread.start()
        deadline = time.monotonic() + 60
        while worker.totals.written < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        thread.join(30)
    finally:
        online.write_batch = real  # type: ignore[method-assign]
    worker.reader.close()
    assert failures["left"] == 0 and worker.totals.written == 200
    assert_exactly_once(store, events)
