"""Kafka, through confluent-kafka (librdkafka): a consumer group with automatic commits
off, so the worker commits a partition's offset only once the messages before it are in
both stores. A new group starts at the earliest offset: nothing already in the topic is
skipped. The source's `options` are librdkafka settings passed through (SASL, TLS).
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from almanac.config import RepoConfig
from almanac.definitions.sources import KafkaSource, StreamSource
from almanac.errors import ConfigError, StoreUnavailableError
from almanac.ports.stream import Message, StreamReader
from almanac.streams.settings import expand


class KafkaReader(StreamReader):
    def __init__(self, source: KafkaSource, settings: dict[str, Any], consumer: Consumer) -> None:  # fmt: skip
        self.source, self.settings, self.consumer = source, settings, consumer
        self._producer: Producer | None = None

    @classmethod
    def open(
        cls, source: StreamSource, config: RepoConfig, group: str, consumer: str
    ) -> KafkaReader:
        if not isinstance(source, KafkaSource):
            raise ConfigError(f"source '{source.name}' is not a Kafka topic")
        what = f"source '{source.name}': options"
        settings = {key: expand(value, what) for key, value in source.options.items()}
        settings["bootstrap.servers"] = expand(source.bootstrap_servers, f"source '{source.name}': bootstrap_servers")  # fmt: skip
        client = Consumer({
            **settings, "group.id": group, "client.id": consumer,
            "enable.auto.commit": False, "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
        })  # fmt: skip
        reader = cls(source, settings, client)
        client.subscribe([source.topic], on_assign=reader._assigned)
        return reader

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assignments += 1

    def poll(self, max_messages: int, timeout_seconds: float) -> list[Message]:
        out = []
        for message in self.consumer.consume(num_messages=max_messages, timeout=timeout_seconds):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                if error.fatal() or not error.retriable():
                    raise StoreUnavailableError(f"Kafka topic '{self.source.topic}': {error.str()}")  # fmt: skip
                continue
            kind, stamp = message.timestamp()
            out.append(Message(
                f"{message.topic()}:{message.partition()}", int(message.offset() or 0), message.value(),
                None, None if kind == TIMESTAMP_NOT_AVAILABLE else stamp,
                (message.topic(), message.partition()),
            ))  # fmt: skip
        return out

    def rewind(self, messages: list[Message]) -> None:
        first: dict[tuple[str, int], int] = {}
        for message in messages:
            topic, partition = message.token
            first[(topic, partition)] = min(first.get((topic, partition), message.offset), message.offset)  # fmt: skip
        for (topic, partition), offset in first.items():
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except (
                KafkaException
            ) as error:  # the partition moved: its new owner reads from the commit
                if "not assigned" not in str(error).lower() and "erroneous state" not in str(error).lower():  # fmt: skip
                    raise

    def commit(self, messages: list[Message]) -> None:
        last: dict[tuple[str, int], int] = {}
        for message in messages:
            topic, partition = message.token
            last[(topic, partition)] = max(last.get((topic, partition), -1), message.offset)
        if not last:
            return
        offsets = [TopicPartition(t, p, offset + 1) for (t, p), offset in last.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as error:
            raise StoreUnavailableError(f"Kafka topic '{self.source.topic}': commit failed: {error}") from None  # fmt: skip

    def dead_letter(self, message: Message, reason: str) -> bool:
        if self.source.dead_letter is None:
            return False
        if self._producer is None:
            self._producer = Producer(self.settings)
        headers: list[tuple[str, str | bytes | None]] = [("reason", reason.encode()), ("partition", message.partition.encode()),
                   ("offset", str(message.offset).encode())]  # fmt: skip
        self._producer.produce(self.source.dead_letter, value=message.value, headers=headers)
        self._producer.flush(10)
        return True

    def lag(self) -> dict[str, int]:
        out = {}
        try:
            for position in self.consumer.position(self.consumer.assignment()):
                _, high = self.consumer.get_watermark_offsets(position, timeout=1, cached=True)
                if high is not None and high >= 0:
                    out[f"{position.topic}:{position.partition}"] = max(0, high - max(position.offset, 0))  # fmt: skip
        except (KafkaException, RuntimeError):  # RuntimeError: the consumer is closed
            return {}
        return out

    def close(self) -> None:
        self.consumer.close()
        if self._producer is not None:
            self._producer.flush(10)
