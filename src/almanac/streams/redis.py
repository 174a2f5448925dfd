"""Redis Streams: a consumer group reads the stream (`XREADGROUP`) and acknowledges what
was applied (`XACK`).

A stream is one partition, and the worker applies a partition in order, so one consumer
of the group reads it at a time: it holds a lease (a key beside the stream, renewed by
every poll, `lease_seconds` long). The others wait; one takes over when the lease
lapses, and first reads every entry the group has pending (the previous holder's
unacknowledged batch, `XAUTOCLAIM`), then new ones.

An entry id `<ms>-<seq>` is the offset `ms * 1_000_000 + seq` (entry ids grow, so
offsets do).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis

from almanac.config import RepoConfig
from almanac.definitions.sources import RedisStreamSource, StreamSource
from almanac.errors import ConfigError, StoreUnavailableError
from almanac.ports.stream import Message, StreamReader
from almanac.streams.settings import expand

_SEQ = 1_000_000
_ERRORS = (redis.ConnectionError, redis.TimeoutError)


def offset_of(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms) * _SEQ + int(seq or 0)


class RedisStreamReader(StreamReader):
    lease_seconds: float = 10.0

    def __init__(self, source: RedisStreamSource, client: redis.Redis, group: str, consumer: str) -> None:  # fmt: skip
        self.source, self.client = source, client
        self.group, self.consumer = group, consumer
        self.key = source.stream
        self.lease = f"{source.stream}:almanac-lease:{group}"
        self._holding = False
        self._pending = True  # read the group's unacknowledged entries before new ones

    @classmethod
    def open(
        cls, source: StreamSource, config: RepoConfig, group: str, consumer: str
    ) -> RedisStreamReader:
        if not isinstance(source, RedisStreamSource):
            raise ConfigError(f"source '{source.name}' is not a Redis stream")
        url = expand(source.url, f"source '{source.name}': url")
        client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        try:
            client.xgroup_create(source.stream, group, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        except _ERRORS as error:
            raise StoreUnavailableError(f"Redis stream '{source.stream}' at {url}: {error}") from None  # fmt: skip
        return cls(source, client, group, consumer)

    def poll(self, max_messages: int, timeout_seconds: float) -> list[Message]:
        try:
            if not self._hold():
                time.sleep(timeout_seconds)  # another consumer holds the stream
                return []
            if self._pending:
                entries = self._claim(max_messages)
                if entries:
                    return entries
                self._pending = False
            return self._read(">", max_messages, max(1, int(timeout_seconds * 1000)))
        except _ERRORS as error:
            raise StoreUnavailableError(f"Redis stream '{self.key}': {error}") from None

    def _hold(self) -> bool:
        """Take or renew the lease; True while this consumer holds it. Taking it (also
        back, after it lapsed) means another consumer may have read meanwhile: what the
        group left pending comes first."""
        ms = int(self.lease_seconds * 1000)
        holder: Any = self.client.get(self.lease)
        if holder is not None and holder.decode() == self.consumer:
            self.client.pexpire(self.lease, ms)
            taken = not self._holding
        elif self.client.set(self.lease, self.consumer, nx=True, px=ms):
            taken = True
        else:
            self._holding = False
            return False
        if taken:
            self._holding, self._pending = True, True
            self.assignments += 1
        return True

    def rewind(self, messages: list[Message]) -> None:
        self._pending = True  # they are still pending: read back before new entries

    def _read(self, start: str, count: int, block_ms: int | None) -> list[Message]:
        reply: Any = self.client.xreadgroup(
            self.group, self.consumer, {self.key: start}, count=count, block=block_ms
        )
        entries = reply[0][1] if reply else []
        return [self._message(entry_id, fields) for entry_id, fields in entries if fields]

    def _claim(self, count: int) -> list[Message]:
        """Pending entries of the group, oldest first, taken over by this consumer."""
        reply: Any = self.client.xautoclaim(
            self.key, self.group, self.consumer, 0, start_id="0-0", count=count
        )
        return [self._message(entry_id, fields) for entry_id, fields in reply[1] if fields]

    def _message(self, entry_id: bytes, fields: dict[bytes, bytes]) -> Message:
        offset = offset_of(entry_id)
        timestamp = offset // _SEQ  # the entry id's milliseconds: when Redis added it
        if self.source.format == "json":
            return Message(self.key, offset, fields.get(b"json"), None, timestamp, entry_id)
        decoded = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}  # fmt: skip
        return Message(self.key, offset, None, decoded, timestamp, entry_id)

    def commit(self, messages: list[Message]) -> None:
        ids = [m.token for m in messages if m.token is not None]
        if ids:
            try:
                self.client.xack(self.key, self.group, *ids)
            except _ERRORS as error:
                raise StoreUnavailableError(f"Redis stream '{self.key}': {error}") from None

    def dead_letter(self, message: Message, reason: str) -> bool:
        if self.source.dead_letter is None:
            return False
        body: dict[str, Any] = {"reason": reason, "partition": message.partition, "offset": str(message.offset)}  # fmt: skip
        if message.value is not None:
            body["value"] = message.value
        if message.fields is not None:
            body["fields"] = orjson.dumps(message.fields)
        self.client.xadd(self.source.dead_letter, body)  # type: ignore[arg-type]
        return True

    def lag(self) -> dict[str, int]:
        try:
            groups = self.client.xinfo_groups(self.key)
        except (*_ERRORS, redis.ResponseError):
            return {}
        for group in groups:
            name = group.get("name")
            if (name.decode() if isinstance(name, bytes) else name) == self.group:
                lag = group.get("lag")
                return {self.key: int(lag)} if lag is not None else {}
        return {}

    def close(self) -> None:
        try:
            holder: Any = self.client.get(self.lease) if self._holding else None
            if holder is not None and holder.decode() == self.consumer:
                self.client.delete(self.lease)  # let another consumer take over at once
        except _ERRORS:
            pass
        self.client.close()
