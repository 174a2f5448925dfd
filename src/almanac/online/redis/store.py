"""The Redis online store (redis-py with hiredis; one hash per entity).

Keys, field names and the bytes on the wire come from `almanac.online.redis.wire`, which
describes the layout. Beside the entity hashes the store keeps
``alm:<project>#fields:<view>`` / ``#keys:<view>``: sets of the features and key-name
tuples ever written, so `delete_view` knows what to remove, and
``alm:<project>#watermarks``: a hash of view → ``<µs or -> <fingerprint>``, which a FLUSHALL
or a restart without persistence empties with the data.

Writes are monotonic inside Redis: Lua scripts (`almanac.online.redis.scripts`) compare
each row's (event time, created time) with the stored one before setting its fields.
`write_batch` streams their calls from a sender thread and `merge_batch` is an optimistic
read-modify-write (`almanac.online.redis.writes`).

Reads are one round trip: one HMGET per entity row covering every requested view of
that entity, packed by hand and sent on a per-thread connection (measured: redis-py's
pipeline object takes 1.9 ms for 100 HMGETs; packing them by hand, 0.4-0.8 ms), and
decoded by `almanac.online.redis.reads`. `read_async` sends the same bytes on an asyncio
connection (`almanac.online.redis.aio`) shared by every request of the event loop, for
the HTTP server.

`RedisClusterOnlineStore` subclasses this store: it overrides the hooks under "where keys
live" and `_load_script`, `_register`, `_stream_writes` to route by slot.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, cast

import numpy as np
import pyarrow as pa
import redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from almanac.config import RepoConfig
from almanac.errors import ConfigError, StoreUnavailableError
from almanac.online.batch import KeyColumn, PreparedBatch, prepare_batch
from almanac.online.codec import redis_decoder, redis_values
from almanac.online.redis.aio import AsyncRedis
from almanac.online.redis.reads import ReadLayout, ReadSpec, decode_read
from almanac.online.redis.scripts import (
    MERGE_SCRIPT,
    WATERMARK_SCRIPT,
    WRITE_SCRIPT,
    load_script_command,
    script_sha,
)
from almanac.online.redis.wire import (
    KEY_PREFIX,
    ROWS_PER_CALL,
    bulk,
    command,
    created_field,
    entity_keys,
    feature_field,
    first_error,
    key_encoder,
    key_prefix,
    read_replies,
    ts_field,
)
from almanac.online.redis.writes import (
    MERGE_ROUNDS,
    merge_call,
    merge_script_header,
    stored_rows,
    stream_writes,
    write_script_header,
)
from almanac.ports.online import Merge, OnlineStore, ViewRead, ViewRows, Watermark
from almanac.semantics.times import datetime_to_micros, micros_to_datetime

_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)
# A cluster's client raises its own errors when no master answers.
_DELETE_ERRORS = (*_UNAVAILABLE, RedisClusterException)


class RedisOnlineStore(OnlineStore):
    @classmethod
    def from_config(cls, config: RepoConfig) -> RedisOnlineStore:
        online = config.online
        return cls(
            online.url,
            timeout_seconds=online.timeout_seconds,
            key_ttl_seconds=online.key_ttl_seconds,
            batch_size=online.batch_size,
        )

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float = 2.0,
        key_ttl_seconds: int | None = None,
        batch_size: int = 50_000,
    ) -> None:
        try:
            self._pool = redis.ConnectionPool.from_url(
                url,
                socket_timeout=timeout_seconds,
                socket_connect_timeout=timeout_seconds,
                # Fail fast: an unreachable store is reported within the timeout; the
                # one retry worth doing (a stale pooled socket) is done by `_exchange`.
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
            )
        except ValueError as error:
            raise ConfigError(f"online.url: {error}") from None
        kwargs = self._pool.connection_kwargs
        self.address = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        self.timeout_seconds = timeout_seconds
        self.key_ttl_seconds = key_ttl_seconds or 0
        self.batch_size = batch_size
        self._client = redis.Redis(connection_pool=self._pool)
        self._local = threading.local()
        self._connections: list[redis.Connection] = []
        self._lock = threading.Lock()
        self._specs: dict[tuple[Any, ...], ReadSpec] = {}
        self._group_fields: dict[tuple[Any, ...], tuple[bytes, int]] = {}
        self._encoders: dict[tuple[str, tuple[str, ...]], Callable[..., list[bytes]]] = {}
        # Async reads: one client per event loop (see `_async_client`).
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncRedis]
        self._async_clients = weakref.WeakKeyDictionary()
        self._async_last: tuple[asyncio.AbstractEventLoop, AsyncRedis] | None = None

    # ---- connections and errors -------------------------------------------------------

    def _unavailable(self, error: BaseException) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"Redis online store at {self.address} is unavailable: {error} "
            f"(timeout {self.timeout_seconds}s; check online.url and that Redis is running)"
        )

    def _connection(self) -> redis.Connection:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():  # new thread, or a forked child
            local.connection = self._pool.connection_class(**self._pool.connection_kwargs)
            local.pid = os.getpid()
            with self._lock:
                self._connections.append(local.connection)
        connection: redis.Connection = local.connection
        return connection

    def _exchange(self, payload: list[bytes], replies: int) -> list[Any]:
        """Send packed commands and read their replies on this thread's connection.
        A reused socket that the server closed (Redis restarted) is replaced once: safe,
        as reads are pure and writes idempotent. Timeouts are not retried, so an
        unreachable server is reported within the configured timeout."""
        connection = self._connection()
        for attempt in (1, 2):
            reused = connection._sock is not None
            try:
                if not reused:
                    connection.connect()
                connection.send_packed_command(payload, check_health=False)
                return read_replies(connection, replies)
            except _UNAVAILABLE as error:
                connection.disconnect()
                stale = reused and isinstance(error, RedisConnectionError)
                if attempt == 2 or not stale:
                    raise self._unavailable(error) from None
        raise AssertionError("unreachable")

    def _checked(self, payload: list[bytes], replies: int) -> list[Any]:
        """`_exchange`, raising the first error reply."""
        answers = self._exchange(payload, replies)
        error = first_error(answers)
        if error is not None:
            raise error
        return answers

    def ping(self) -> None:
        self._checked([command(b"PING")], 1)

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
            clients = list(self._async_clients.values())
            self._async_clients.clear()
            self._async_last = None
        for client in clients:
            client.close()
        for connection in connections:
            connection.disconnect()
        self._local = threading.local()
        self._pool.disconnect()

    # ---- writes -----------------------------------------------------------------------

    def _load_script(self, script: str = WRITE_SCRIPT) -> bytes:
        """Load a script (hook: a cluster loads it on every master); its SHA-1."""
        return script_sha(self._checked([load_script_command(script)], 1)[0])

    def _register(self, project: str, view: str, join_keys: list[str], features: list[str]) -> None:
        """Record the view's features and key names, for `delete_view`."""
        meta = f"{KEY_PREFIX}:{project}#".encode()
        self._checked(
            [
                command(b"SADD", meta + b"fields:" + view.encode(), *(f.encode() for f in features)),
                command(b"SADD", meta + b"keys:" + view.encode(), "&".join(sorted(join_keys)).encode()),
            ],
            2,
        )  # fmt: skip

    def write_batch(
        self, project: str, view: str, join_keys: list[str], features: list[str], table: pa.Table
    ) -> int:
        batch = prepare_batch(view, table, join_keys, features)
        if batch.num_rows == 0:
            return 0
        sha = self._load_script()  # also (re)connects through the retrying path
        self._register(project, view, join_keys, features)
        header_args, header_count = write_script_header(view, features, self.key_ttl_seconds)
        try:
            return self._stream_writes(project, batch, sha, header_args, header_count)
        except NoScriptError:
            # Redis lost its script cache mid-batch (restart, SCRIPT FLUSH): load it and
            # resend everything; rows already applied are rewritten identically.
            sha = self._load_script()
            return self._stream_writes(project, batch, sha, header_args, header_count)

    def merge_batch(
        self,
        project: str,
        view: str,
        join_keys: list[str],
        features: list[str],
        table: pa.Table,
        merge: Merge,
    ) -> int:
        if table.num_rows > self.batch_size:  # bounded payloads, as write_batch has
            size = self.batch_size
            parts = (table.slice(start, size) for start in range(0, table.num_rows, size))
            return sum(self.merge_batch(project, view, join_keys, features, part, merge) for part in parts)  # fmt: skip
        batch = prepare_batch(view, table, join_keys, features)
        if batch.num_rows == 0:
            return 0
        sha = self._load_script(MERGE_SCRIPT)
        self._register(project, view, join_keys, features)
        fields = [ts_field(view)] + [feature_field(view, f) for f in features]
        decoders = [redis_decoder(f.dtype) for f in batch.features]
        header_args = merge_script_header(view, features, self.key_ttl_seconds)
        written, pending = 0, self._grouped(project, table, join_keys, features, view)
        for _ in range(MERGE_ROUNDS):
            key_array, slots = self._entity_keys(project, prepare_batch(view, pending, join_keys, features).keys)  # fmt: skip
            keys = key_array.to_pylist()
            replies = self._each([command(b"HMGET", key, *fields) for key in keys], slots)
            stored = stored_rows(replies, decoders)
            merged = prepare_batch(view, merge(stored, pending), join_keys, features)
            times = merged.event_times.cast(pa.string()).cast(pa.binary()).to_pylist()
            values = [redis_values(f)[0].to_pylist() for f in merged.features]
            conflicts: list[int] = []
            for start, stop in self._calls(slots, len(keys)):
                rows = range(start, stop)
                call = merge_call(
                    sha, header_args, len(features), rows, keys, replies, times, values
                )
                where = None if slots is None else slots[start : start + 1]
                try:
                    reply = self._each([call], where, write=True)[0]
                except NoScriptError:
                    stale, sha = sha, self._load_script(MERGE_SCRIPT)
                    reply = self._each([call.replace(stale, sha, 1)], where, write=True)[0]
                conflicts += [start + int(i) for i in reply]
            written += len(keys) - len(conflicts)
            if not conflicts:
                return written
            pending = pending.take(conflicts)
        raise StoreUnavailableError(
            f"Redis online store at {self.address}: {pending.num_rows} entities of view "
            f"'{view}' changed under every one of {MERGE_ROUNDS} merges; try again"
        )

    # ---- where keys live (one node here; `RedisClusterOnlineStore` routes by slot) -------

    def _entity_keys(self, project: str, keys: list[KeyColumn]) -> tuple[pa.Array, np.ndarray | None]:  # fmt: skip
        """The rows' hash keys, and each one's cluster slot (None: one node)."""
        return entity_keys(project, keys), None

    def _grouped(self, project: str, table: pa.Table, join_keys: list[str], features: list[str], view: str) -> pa.Table:  # fmt: skip
        """`table` with rows of one slot together (a script's keys share a slot)."""
        return table

    def _calls(self, slots: np.ndarray | None, count: int) -> list[tuple[int, int]]:
        """Row ranges of one script call each: `ROWS_PER_CALL` rows, within one slot."""
        return [(start, min(start + ROWS_PER_CALL, count)) for start in range(0, count, ROWS_PER_CALL)]  # fmt: skip

    def _each(self, commands: list[bytes], slots: np.ndarray | None, *, write: bool = False) -> list[Any]:  # fmt: skip
        """Send commands (one key each, of the given slots) and read their replies in
        order (`write`: they change data; a cluster waits for a replica)."""
        return self._checked(commands, len(commands))

    def _stream_writes(
        self, project: str, batch: PreparedBatch, sha: bytes, header_args: bytes, header_count: int
    ) -> int:
        """Send the batch's WRITE_SCRIPT calls and count the rows written (hook: a
        cluster sends each master its calls); see `stream_writes`."""
        connection = self._connection()
        try:
            return stream_writes(
                connection, project, batch, sha, header_args, header_count, self.batch_size
            )
        except _UNAVAILABLE as failure:
            raise self._unavailable(failure) from None

    def delete_view(self, project: str, view: str) -> None:
        meta = f"{KEY_PREFIX}:{project}#"
        fields_key, keys_key = f"{meta}fields:{view}", f"{meta}keys:{view}"
        try:
            self._client.hdel(_watermarks_key(project), view)  # first: see OnlineStore
            # The client does not decode responses: members are bytes.
            features = cast(set[bytes], self._client.smembers(fields_key))
            key_sets = cast(set[bytes], self._client.smembers(keys_key))
            fields = [ts_field(view), created_field(view)]
            fields += [feature_field(view, f.decode()) for f in features]
            for names in key_sets:
                # Keys start with the first join key (they are sorted by name); a wider
                # match only costs HDELs of fields that are not there.
                first = names.decode().split("&")[0]
                pattern = self._entity_pattern(project, first)
                for client in self._scanned_clients():
                    pipe = client.pipeline(transaction=False)
                    for count, key in enumerate(client.scan_iter(match=pattern, count=1000), 1):  # fmt: skip
                        pipe.hdel(key, *fields)
                        if count % 1000 == 0:
                            pipe.execute()
                    pipe.execute()
            self._client.delete(fields_key)
            self._client.delete(keys_key)
        except _DELETE_ERRORS as error:
            raise self._unavailable(error) from None

    def _entity_pattern(self, project: str, first_key: str) -> bytes:
        """A SCAN pattern that matches every entity hash whose first join key is this."""
        return key_prefix(project) + first_key.encode() + b"=*"

    def _scanned_clients(self) -> list[Any]:
        """The clients whose keys `delete_view` scans (a cluster: one per master)."""
        return [self._client]

    def watermarks(self, project: str) -> dict[str, Watermark]:
        try:
            stored = cast(dict[bytes, bytes], self._client.hgetall(_watermarks_key(project)))
        except _UNAVAILABLE as error:
            raise self._unavailable(error) from None
        return _decode_watermarks(stored.items())

    def set_watermark(
        self, project: str, view: str, watermark: datetime | None, layout: str
    ) -> None:
        micros = "-" if watermark is None else str(datetime_to_micros(watermark))
        key = _watermarks_key(project)
        try:
            self._client.eval(WATERMARK_SCRIPT, 1, key, view, micros, layout)
        except _UNAVAILABLE as error:
            raise self._unavailable(error) from None

    # ---- reads ------------------------------------------------------------------------

    def _spec(self, request: ViewRead) -> ReadSpec:
        cache_key = (request.view, tuple(request.join_keys), tuple(request.features),
                     tuple(request.dtypes))  # fmt: skip
        spec = self._specs.get(cache_key)
        if spec is None:
            spec = self._specs[cache_key] = ReadSpec(request)
        return spec

    def _encoder(self, project: str, join_keys: Sequence[str]) -> Callable[..., list[bytes]]:
        cache_key = (project, tuple(join_keys))
        encoder = self._encoders.get(cache_key)
        if encoder is None:
            encoder = self._encoders[cache_key] = key_encoder(project, join_keys)
        return encoder

    def _read_payload(
        self, project: str, requests: list[ViewRead]
    ) -> tuple[bytes, int, ReadLayout]:
        """The packed HMGETs of a read, how many replies they give, and how to decode them."""
        commands, _, layout = self._read_commands(project, requests)
        return b"".join(commands), len(commands), layout

    def _read_commands(
        self, project: str, requests: list[ViewRead]
    ) -> tuple[list[bytes], list[bytes], ReadLayout]:
        """One packed HMGET per entity row, the rows' hash keys, and how to decode the
        replies. Requests for the same entity key (same key names and the same key
        columns) share one HMGET per row."""
        groups: dict[tuple[Any, ...], list[tuple[int, ReadSpec]]] = {}
        first_request: dict[tuple[Any, ...], ViewRead] = {}
        for index, request in enumerate(requests):
            spec = self._spec(request)
            columns = dict(zip(request.join_keys, request.key_columns, strict=True))
            identity = (spec.group_key, tuple(id(columns[k]) for k in spec.group_key))
            groups.setdefault(identity, []).append((index, spec))
            first_request.setdefault(identity, request)
        commands: list[bytes] = []
        all_keys: list[bytes] = []
        layout: ReadLayout = []
        for identity, members in groups.items():
            request = first_request[identity]
            fields_key = tuple(id(spec) for _, spec in members)
            framed = self._group_fields.get(fields_key)
            if framed is None:
                fields = [field for _, spec in members for field in spec.fields]
                framed = (b"".join(bulk(f) for f in fields), len(fields))
                self._group_fields[fields_key] = framed
            fields_bytes, field_count = framed
            head = b"*%d\r\n$5\r\nHMGET\r\n" % (field_count + 2)
            keys = self._encoder(project, request.join_keys)(request.key_columns)
            commands += [b"%s$%d\r\n%s\r\n%s" % (head, len(k), k, fields_bytes) for k in keys]
            all_keys += keys
            layout.append((members, len(keys)))
        return commands, all_keys, layout

    def read(self, project: str, requests: list[ViewRead]) -> list[ViewRows]:
        payload, count, layout = self._read_payload(project, requests)
        replies = self._checked([payload], count) if count else []
        return decode_read(replies, layout, len(requests))

    def read_with_watermarks(
        self, project: str, requests: list[ViewRead]
    ) -> tuple[list[ViewRows], dict[str, Watermark]]:
        """The HMGETs and the watermarks' HGETALL in one round trip."""
        payload, count, layout = self._read_payload(project, requests)
        watermarks = command(b"HGETALL", _watermarks_key(project).encode())
        replies = self._checked([payload, watermarks], count + 1)
        flat = replies[-1]  # HGETALL: field, value, field, value, ... (a map on RESP3)
        pairs = flat.items() if isinstance(flat, dict) else zip(flat[::2], flat[1::2], strict=True)
        marks = _decode_watermarks(pairs)
        return decode_read(replies[:-1], layout, len(requests)), marks

    async def read_async(self, project: str, requests: list[ViewRead]) -> list[ViewRows]:
        """`read` on an asyncio connection of the running loop (pipelined, non-blocking)."""
        payload, count, layout = self._read_payload(project, requests)
        replies = await self._async_client().execute(payload, count) if count else []
        return decode_read(replies, layout, len(requests))

    async def ping_async(self) -> None:
        await self._async_client().execute(command(b"PING"), 1)

    @property
    def backend(self) -> str:
        return "redis"

    def _async_client(self) -> AsyncRedis:
        # One client (one pipelined connection) per event loop; the last one is cached so
        # the common case (one loop per worker) costs one comparison.
        loop = asyncio.get_running_loop()
        cached = self._async_last
        if cached is not None and cached[0] is loop:
            return cached[1]
        with self._lock:
            client = self._async_clients.get(loop)
            if client is None:
                use_ssl = issubclass(self._pool.connection_class, redis.SSLConnection)
                client = AsyncRedis(self._pool.connection_kwargs, self.timeout_seconds,
                                    self._unavailable, use_ssl)  # fmt: skip
                self._async_clients[loop] = client
            self._async_last = (loop, client)
        return client

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._async_clients.pop(loop, None)
            self._async_last = None
        if client is not None:
            client.close()


def _watermarks_key(project: str) -> str:
    return f"{KEY_PREFIX}:{project}#watermarks"


def _decode_watermarks(stored: Iterable[tuple[bytes, bytes]]) -> dict[str, Watermark]:
    """The watermarks hash's (view, "micros layout") pairs; micros "-": none."""
    out = {}
    for view, value in stored:
        micros, _, layout = value.decode().partition(" ")
        time = None if micros == "-" else micros_to_datetime(int(micros))
        out[view.decode()] = Watermark(time, layout)
    return out
