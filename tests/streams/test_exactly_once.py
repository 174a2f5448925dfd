"""The merge of `almanac.ingest.exactly_once` on its own: a replay that reaches further
than the batch it repeats (Kafka re-reading from the committed offset with a larger
batch) merges exactly the events not merged yet, entity by entity, partition by
partition; on both online stores."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from stream_repo import assert_exactly_once, event, make_repo, served

from almanac.ingest.exactly_once import OFFSET, PARTITION
from almanac.ingest.push import push
from online_stores import ONLINE_STORES, online_store_url


def rows(events: list[dict], origins: list[tuple[str, int]]) -> pa.Table:
    table = pa.Table.from_pylist(events)
    return table.append_column(PARTITION, pa.array([p for p, _ in origins])).append_column(
        OFFSET, pa.array([o for _, o in origins], pa.int64())
    )


@pytest.fixture(params=ONLINE_STORES)
def online_url(request: pytest.FixtureRequest) -> str:
    """Exactly once on every online store, Redis Cluster included (its merges are
    conditional per entity, as on one node)."""
    return online_store_url(request, "sqlite:///.almanac/online.db")


def test_overlapping_replays_count_each_event_once(tmp_path: Path, online_url: str) -> None:
    store = make_repo(tmp_path / "repo", online_url, "KafkaSource", 'topic="t", bootstrap_servers="localhost:1"')  # fmt: skip
    events = [event(i, i % 4, minutes_ago=1 + i, amount=float(i + 1)) for i in range(40)]
    origins = [(f"t:{i % 2}", i // 2) for i in range(40)]  # two partitions, offsets 0..19 each
    push(store, "txns", rows(events[:16], origins[:16]), to="online")  # the batch cut short
    push(
        store, "txns", rows(events[:30], origins[:30]), to="online"
    )  # its replay, reaching further
    push(store, "txns", rows(events[10:40], origins[10:40]), to="online")  # and again
    want = {c: sum(e["amount"] for e in events if e["customer_id"] == c) for c in range(4)}
    got = served(store, list(range(4)))
    assert {c: got[c]["sum_1d"] for c in range(4)} == want
    assert {c: got[c]["count_1d"] for c in range(4)} == {c: 10 for c in range(4)}
    # The offline side is the worker's (it skips what the log holds); pushed whole once,
    # the log and the online values agree with the reference.
    push(store, "txns", rows(events, origins), to="offline")
    assert_exactly_once(store, events)
