"""The stream port: what a stream backend (Kafka, Redis Streams, a plug-in's) provides to
the ingestion worker (`almanac.ingest.stream`).

A backend reads messages for a consumer group and commits how far the group has read.
Everything else — decoding, validation, the offline log, the online writes, exactly-once
— is the worker's, the same for every backend. Backends are registered as
`stream.<source type>` entry points (`almanac.backends`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from almanac.config import RepoConfig
from almanac.definitions.sources import StreamSource


@dataclass(frozen=True, slots=True)
class Message:
    """One message. `offset` orders the messages of a `partition` (strictly
    increasing); the worker keeps them in the offline log beside each event, so a replay
    after a crash never applies one twice."""

    partition: str  # "topic:3" for Kafka, the stream's key for Redis
    offset: int
    value: bytes | None  # the payload: a JSON object's text, or None with `fields`
    fields: dict[str, str] | None = None  # one field per column (Redis `format="fields"`)
    timestamp_ms: int | None = None  # the broker's time of the message
    token: Any = None  # what `commit` needs to acknowledge it (a Redis entry id)


class StreamReader(ABC):
    """A consumer of one stream source within a consumer group.

    `assignments` counts the times this consumer was given partitions (a Kafka
    rebalance, taking over a Redis stream's lease): another consumer may have written
    to the offline log meanwhile, so the worker reads the log's offsets again."""

    assignments: int = 0

    @classmethod
    @abstractmethod
    def open(
        cls, source: StreamSource, config: RepoConfig, group: str, consumer: str
    ) -> StreamReader:
        """Join `group` as `consumer` (creating the group, at the stream's start, if it
        does not exist)."""

    @abstractmethod
    def poll(self, max_messages: int, timeout_seconds: float) -> list[Message]:
        """Up to `max_messages` messages, waiting at most `timeout_seconds` for the first;
        in offset order within each partition, each partition read by one consumer of
        the group at a time. Messages delivered but never committed (a crashed
        consumer's) come again, before newer ones, here or to the consumer that takes
        the partition over."""

    @abstractmethod
    def rewind(self, messages: list[Message]) -> None:
        """Deliver `messages` (polled, not committed: their batch failed) again, before
        anything newer: the worker applies each partition in offset order."""

    @abstractmethod
    def commit(self, messages: list[Message]) -> None:
        """Record that the group has read `messages` (and, per partition, all before)."""

    @abstractmethod
    def dead_letter(self, message: Message, reason: str) -> bool:
        """Send a message that cannot be read to the source's `dead_letter` destination;
        False if the source names none (the worker keeps it in Parquet instead)."""

    def lag(self) -> dict[str, int]:
        """Messages not yet read by the group, per partition (as far as the broker says)."""
        return {}

    @abstractmethod
    def close(self) -> None:
        """Leave the group (without committing)."""

    def __enter__(self) -> StreamReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
