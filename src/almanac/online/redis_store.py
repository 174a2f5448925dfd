"""The Redis online store (redis-py with hiredis; one hash per entity).

Layout
* One hash per (project, entity key): ``alm:<project>:<key>=<typed value>[&...]`` with
  the join keys sorted by name, ints as ``i<decimal>`` and strings as
  ``s<UTF-8 byte length>:<text>``. The length prefix makes the encoding collision-free
  (no separator inside a string can end it early) and the type tag keeps int 1 and
  string "1" apart. Views of the same entity share the hash, so one HMGET reads all of
  an entity's views.
* Fields: ``<view>:<feature>`` per feature and ``<view>#ts`` for the view's event time
  (decimal microseconds). Names are identifiers, so ':' and '#' cannot collide. A null
  value is an absent field.
* Values: the compact binary encodings of `almanac.online.codec`.
* ``alm:<project>#fields:<view>`` / ``#keys:<view>``: sets of the features and key-name
  tuples ever written, so `delete_view` knows what to remove.

Writes are monotonic inside Redis: a Lua script takes many rows per call and, per row,
compares the stored event time with the new one before setting the fields (scripts
run atomically, so concurrent writers cannot interleave). The wire payload is built in
bulk from Arrow columns (pyarrow compute renders keys, lengths and values as RESP
bytes) and streamed on a raw connection by a sender thread, so Python does no
per-value work and the client encodes the next slice while Redis runs the previous one.

Event times are compared with Lua's `tonumber` (doubles): exact up to 2^53 microseconds,
that is until the year 2255.

Reads are one round trip: one HMGET per entity row covering every requested view of
that entity, packed by hand and sent on a per-thread connection (measured: redis-py's
pipeline object takes 1.9 ms for 100 HMGETs; packing them by hand, 0.4-0.8 ms).
`read_async` sends the same bytes on an asyncio connection (`redis_async`) shared by
every request of the event loop, for the HTTP server.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from almanac.errors import ConfigError, StoreUnavailableError
from almanac.online.base import OnlineStore, ViewRead, ViewRows
from almanac.online.batch import KeyColumn, PreparedBatch, prepare_batch
from almanac.online.codec import Decoder, redis_decoder, redis_values
from almanac.online.redis_async import AsyncRedis

KEY_PREFIX = "alm"
# Rows per EVALSHA: small enough that one call blocks Redis for well under a
# millisecond, large enough to amortize the script call (measured: 50-100 is best).
ROWS_PER_CALL = 64
# Bytes per socket write: each sendall gets the full timeout, whatever the batch size.
_SEND_PIECE = 256 * 1024
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)

# KEYS: one hash per row. ARGV: feature count, event-time field, expiry seconds (0 for
# none), the feature fields, then per row the event time (decimal microseconds) and one
# value per feature (empty: null, the field is deleted).
WRITE_SCRIPT = """
local nf = tonumber(ARGV[1])
local ts_field = ARGV[2]
local expire = tonumber(ARGV[3])
local base = 3 + nf
local written = 0
local set = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local at = base + (i - 1) * (nf + 1) + 1
  local ts = ARGV[at]
  local stored = redis.call('HGET', key, ts_field)
  if (not stored) or tonumber(stored) <= tonumber(ts) then
    set[1] = ts_field
    set[2] = ts
    local n = 2
    local nulls = nil
    for j = 1, nf do
      local value = ARGV[at + j]
      if value == '' then
        nulls = nulls or {}
        nulls[#nulls + 1] = ARGV[3 + j]
      else
        set[n + 1] = ARGV[3 + j]
        set[n + 2] = value
        n = n + 2
      end
    end
    redis.call('HSET', key, unpack(set, 1, n))
    if nulls then redis.call('HDEL', key, unpack(nulls)) end
    if expire > 0 then redis.call('EXPIRE', key, expire) end
    written = written + 1
  end
end
return written
"""


def ts_field(view: str) -> bytes:
    return f"{view}#ts".encode()


def feature_field(view: str, feature: str) -> bytes:
    return f"{view}:{feature}".encode()


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(_bulk(a) for a in args)


# ---- entity keys --------------------------------------------------------------------------


def key_prefix(project: str) -> bytes:
    return f"{KEY_PREFIX}:{project}:".encode()


def _length_text(values: pa.Array) -> pa.Array:
    return pc.binary_length(values).cast(pa.string()).cast(pa.binary())


class _Pieces:
    """Arguments of one binary_join_element_wise call, merging adjacent constants."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def add(self, item: bytes | pa.Array) -> None:
        if isinstance(item, bytes) and self.items and isinstance(self.items[-1], bytes):
            self.items[-1] += item
        else:
            self.items.append(item)

    def bulk(self, values: pa.Array, width: int | None = None) -> None:
        """Add values as RESP bulk strings ($<length>\\r\\n<value>\\r\\n)."""
        if width is None:
            self.add(b"$")
            self.add(_length_text(values))
            self.add(b"\r\n")
        else:
            self.add(b"$%d\r\n" % width)
        self.add(values)
        self.add(b"\r\n")

    def join(self) -> pa.Array:
        return pc.binary_join_element_wise(*self.items, b"")


def entity_keys(project: str, keys: list[KeyColumn]) -> pa.Array:
    """The hash key of every row, in bulk (must match `key_encoder` byte for byte)."""
    pieces = _Pieces()
    pieces.add(key_prefix(project))
    for position, key in enumerate(sorted(keys, key=lambda k: k.name)):
        pieces.add(b"&" if position else b"")
        if key.dtype == "int64":
            pieces.add(f"{key.name}=i".encode())
            pieces.add(key.values.cast(pa.string()).cast(pa.binary()))
        else:
            text = key.values.cast(pa.binary())
            pieces.add(f"{key.name}=s".encode())
            pieces.add(_length_text(text))
            pieces.add(b":")
            pieces.add(text)
    return pieces.join()


def key_encoder(project: str, join_keys: Sequence[str]) -> Callable[[list[list[Any]]], list[bytes]]:
    """A function from key columns (in `join_keys` order) to hash keys, per row."""
    prefix = key_prefix(project)
    if len(join_keys) == 1:
        as_int = prefix + f"{join_keys[0]}=i".encode()
        as_str = prefix + f"{join_keys[0]}=s".encode()

        def encode_one(columns: list[list[Any]]) -> list[bytes]:
            out = []
            for value in columns[0]:
                if type(value) is int:
                    out.append(as_int + b"%d" % value)
                else:
                    text = value.encode()
                    out.append(as_str + b"%d:%s" % (len(text), text))
            return out

        return encode_one
    order = sorted(range(len(join_keys)), key=lambda i: join_keys[i])
    names = [(b"&" if n else b"") + join_keys[i].encode() + b"=" for n, i in enumerate(order)]

    def encode_many(columns: list[list[Any]]) -> list[bytes]:
        ordered = [columns[i] for i in order]
        out = []
        for row in zip(*ordered, strict=True):
            parts = [prefix]
            for name, value in zip(names, row, strict=True):
                if type(value) is int:
                    parts.append(name + b"i%d" % value)
                else:
                    text = value.encode()
                    parts.append(name + b"s%d:%s" % (len(text), text))
            out.append(b"".join(parts))
        return out

    return encode_many


# ---- the store ----------------------------------------------------------------------------


class _ReadSpec:
    """Per (view, join keys, features, dtypes): fields to ask for and how to decode."""

    __slots__ = ("decoders", "fields", "group_key", "width")

    def __init__(self, request: ViewRead) -> None:
        self.fields = [ts_field(request.view)] + [
            feature_field(request.view, f) for f in request.features
        ]
        self.decoders: list[Decoder] = [redis_decoder(d) for d in request.dtypes]
        self.width = len(request.features)
        self.group_key = tuple(sorted(request.join_keys))


class RedisOnlineStore(OnlineStore):
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
        self._specs: dict[tuple[Any, ...], _ReadSpec] = {}
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
        return local.connection

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
                return _read_replies(connection, replies)
            except _UNAVAILABLE as error:
                connection.disconnect()
                stale = reused and isinstance(error, RedisConnectionError)
                if attempt == 2 or not stale:
                    raise self._unavailable(error) from None
        raise AssertionError("unreachable")

    def _checked(self, payload: list[bytes], replies: int) -> list[Any]:
        """`_exchange`, raising the first error reply."""
        answers = self._exchange(payload, replies)
        error = _first_error(answers)
        if error is not None:
            raise error
        return answers

    def ping(self) -> None:
        self._checked([_command(b"PING")], 1)

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

    def _load_script(self) -> bytes:
        sha = self._checked([_command(b"SCRIPT", b"LOAD", WRITE_SCRIPT.encode())], 1)[0]
        return sha if isinstance(sha, bytes) else sha.encode()

    def write_batch(
        self, project: str, view: str, join_keys: list[str], features: list[str], table: pa.Table
    ) -> int:
        batch = prepare_batch(view, table, join_keys, features)
        if batch.num_rows == 0:
            return 0
        sha = self._load_script()  # also (re)connects through the retrying path
        meta = f"{KEY_PREFIX}:{project}#".encode()
        self._checked(
            [
                _command(b"SADD", meta + b"fields:" + view.encode(), *(f.encode() for f in features)),
                _command(b"SADD", meta + b"keys:" + view.encode(), "&".join(sorted(join_keys)).encode()),
            ],
            2,
        )  # fmt: skip
        header = [str(len(features)).encode(), ts_field(view), str(self.key_ttl_seconds).encode()]
        header += [feature_field(view, f) for f in features]
        header_args = b"".join(_bulk(a) for a in header)
        try:
            return self._stream_writes(project, batch, sha, header_args, len(header))
        except NoScriptError:
            # Redis lost its script cache mid-batch (restart, SCRIPT FLUSH): load it and
            # resend everything; rows already applied are rewritten identically.
            sha = self._load_script()
            return self._stream_writes(project, batch, sha, header_args, len(header))

    def _stream_writes(
        self, project: str, batch: PreparedBatch, sha: bytes, header_args: bytes, header_count: int
    ) -> int:
        """Send the batch slice by slice and then read every reply. A sender thread
        writes slice k to the socket while this thread encodes slice k+1 (both release
        the GIL: socket writes and Arrow kernels), so the client's encoding overlaps
        with Redis running the script. Replies are tiny and wait in the socket."""
        connection = self._connection()
        outbox: queue.Queue[list[bytes] | None] = queue.Queue(maxsize=2)
        failures: list[BaseException] = []

        def send() -> None:
            while (pieces := outbox.get()) is not None:
                if not failures:
                    try:
                        connection.send_packed_command(pieces, check_health=False)
                    except BaseException as error:  # reported by the calling thread
                        failures.append(error)

        sender = threading.Thread(target=send, name="almanac-redis-writer", daemon=True)
        sender.start()
        calls, in_step = 0, False
        try:
            try:
                for part in batch.slices(self.batch_size):
                    if failures:
                        break
                    pieces, count = _write_payload(project, part, sha, header_args, header_count)
                    outbox.put(pieces)
                    calls += count
            finally:
                outbox.put(None)
                sender.join()
            if failures:
                raise failures[0]
            replies = _read_replies(connection, calls)
            in_step = True
        except _UNAVAILABLE as failure:
            raise self._unavailable(failure) from None
        finally:
            if not in_step:  # unread replies would answer the next command: drop the socket
                connection.disconnect()
        error = _first_error(replies)
        if error is not None:
            raise error
        return _count_written(replies)

    def delete_view(self, project: str, view: str) -> None:
        meta = f"{KEY_PREFIX}:{project}#"
        fields_key, keys_key = f"{meta}fields:{view}", f"{meta}keys:{view}"
        try:
            features = self._client.smembers(fields_key)
            key_sets = self._client.smembers(keys_key)
            fields = [ts_field(view)] + [feature_field(view, f.decode()) for f in features]
            for names in key_sets:
                # Keys start with the first join key (they are sorted by name); a wider
                # match only costs HDELs of fields that are not there.
                first = names.decode().split("&")[0]
                pattern = key_prefix(project) + first.encode() + b"=*"
                pipe = self._client.pipeline(transaction=False)
                for count, key in enumerate(self._client.scan_iter(match=pattern, count=1000), 1):
                    pipe.hdel(key, *fields)
                    if count % 1000 == 0:
                        pipe.execute()
                pipe.execute()
            self._client.delete(fields_key, keys_key)
        except _UNAVAILABLE as error:
            raise self._unavailable(error) from None

    # ---- reads ------------------------------------------------------------------------

    def _spec(self, request: ViewRead) -> _ReadSpec:
        cache_key = (request.view, tuple(request.join_keys), tuple(request.features),
                     tuple(request.dtypes))  # fmt: skip
        spec = self._specs.get(cache_key)
        if spec is None:
            spec = self._specs[cache_key] = _ReadSpec(request)
        return spec

    def _encoder(self, project: str, join_keys: Sequence[str]) -> Callable[..., list[bytes]]:
        cache_key = (project, tuple(join_keys))
        encoder = self._encoders.get(cache_key)
        if encoder is None:
            encoder = self._encoders[cache_key] = key_encoder(project, join_keys)
        return encoder

    def _read_payload(
        self, project: str, requests: list[ViewRead]
    ) -> tuple[bytes, int, list[tuple[list[tuple[int, _ReadSpec]], int]]]:
        """The packed HMGETs of a read, how many replies they give, and how to decode them.
        Requests for the same entity key (same key names and the same key columns) share
        one HMGET per row."""
        groups: dict[tuple[Any, ...], list[tuple[int, _ReadSpec]]] = {}
        first_request: dict[tuple[Any, ...], ViewRead] = {}
        for index, request in enumerate(requests):
            spec = self._spec(request)
            columns = dict(zip(request.join_keys, request.key_columns, strict=True))
            identity = (spec.group_key, tuple(id(columns[k]) for k in spec.group_key))
            groups.setdefault(identity, []).append((index, spec))
            first_request.setdefault(identity, request)
        commands: list[bytes] = []
        layout = []
        for identity, members in groups.items():
            request = first_request[identity]
            fields_key = tuple(id(spec) for _, spec in members)
            framed = self._group_fields.get(fields_key)
            if framed is None:
                fields = [field for _, spec in members for field in spec.fields]
                framed = (b"".join(_bulk(f) for f in fields), len(fields))
                self._group_fields[fields_key] = framed
            fields_bytes, field_count = framed
            head = b"*%d\r\n$5\r\nHMGET\r\n" % (field_count + 2)
            keys = self._encoder(project, request.join_keys)(request.key_columns)
            commands += [b"%s$%d\r\n%s\r\n%s" % (head, len(k), k, fields_bytes) for k in keys]
            layout.append((members, len(keys)))
        return b"".join(commands), len(commands), layout

    def read(self, project: str, requests: list[ViewRead]) -> list[ViewRows]:
        payload, count, layout = self._read_payload(project, requests)
        replies = self._checked([payload], count) if count else []
        return _decode_read(replies, layout, len(requests))

    async def read_async(self, project: str, requests: list[ViewRead]) -> list[ViewRows]:
        """`read` on an asyncio connection of the running loop (pipelined, non-blocking)."""
        payload, count, layout = self._read_payload(project, requests)
        replies = await self._async_client().execute(payload, count) if count else []
        return _decode_read(replies, layout, len(requests))

    async def ping_async(self) -> None:
        await self._async_client().execute(_command(b"PING"), 1)

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


def _decode_read(
    replies: list[Any], layout: list[tuple[list[tuple[int, _ReadSpec]], int]], size: int
) -> list[ViewRows]:
    out: list[ViewRows | None] = [None] * size
    start = 0
    for members, count in layout:
        group_replies = replies[start : start + count]
        start += count
        offset = 0
        for index, spec in members:
            out[index] = _decode_view(group_replies, offset, spec)
            offset += spec.width + 1
    return out  # type: ignore[return-value]


def _decode_view(replies: list[list[bytes | None]], offset: int, spec: _ReadSpec) -> ViewRows:
    """One view's slice of the HMGET replies (event time at `offset`, then features)."""
    if len(replies) == 1:  # the common single-entity request, without per-column loops
        reply = replies[0]
        stamp = reply[offset]
        if stamp is None:
            return ViewRows([None], [[None] for _ in spec.decoders])
        raws = reply[offset + 1 : offset + 1 + spec.width]
        pairs = zip(spec.decoders, raws, strict=True)
        return ViewRows(
            [int(stamp)], [[None if raw is None else decode(raw)] for decode, raw in pairs]
        )
    times = [None if (raw := reply[offset]) is None else int(raw) for reply in replies]
    columns = []
    for index, decode in enumerate(spec.decoders, offset + 1):
        column = [reply[index] for reply in replies]
        columns.append([None if raw is None else decode(raw) for raw in column])
    return ViewRows(times, columns)


def _read_replies(connection: redis.Connection, count: int) -> list[Any]:
    """Read `count` replies; an error reply is kept in the list (not raised) so that the
    connection stays in step with the commands sent."""
    replies = []
    for _ in range(count):
        try:
            replies.append(connection.read_response())
        except ResponseError as error:
            replies.append(error)
    return replies


def _first_error(replies: list[Any]) -> ResponseError | None:
    for reply in replies:
        if isinstance(reply, ResponseError):
            return reply
    return None


def _count_written(replies: list[Any]) -> int:
    return sum(r for r in replies if isinstance(r, int))


def _offsets(values: pa.Array) -> list[int]:
    offsets = np.frombuffer(values.buffers()[1], np.int32, len(values) + 1, values.offset * 4)
    return offsets.tolist()


def _write_payload(
    project: str, part: PreparedBatch, sha: bytes, header_args: bytes, header_count: int
) -> tuple[list[bytes], int]:
    """EVALSHA commands for a slice of rows, as a few large byte strings."""
    key_pieces = _Pieces()
    key_pieces.bulk(entity_keys(project, part.keys))
    keys = key_pieces.join()
    row_pieces = _Pieces()
    row_pieces.bulk(part.event_times.cast(pa.string()).cast(pa.binary()))
    for feature in part.features:
        row_pieces.bulk(*redis_values(feature))
    rows = row_pieces.join()
    key_offsets, row_offsets = _offsets(keys), _offsets(rows)
    key_data, row_data = memoryview(keys.buffers()[2]), memoryview(rows.buffers()[2])
    args_per_row = len(part.features) + 1
    pieces: list[bytes] = []
    group: list[Any] = []
    size = calls = 0
    for start in range(0, part.num_rows, ROWS_PER_CALL):
        stop = min(start + ROWS_PER_CALL, part.num_rows)
        count = stop - start
        arity = 3 + count + header_count + count * args_per_row
        digits = len(str(count))
        group.append(
            b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$%d\r\n%d\r\n" % (arity, sha, digits, count)
        )
        group.append(key_data[key_offsets[start] : key_offsets[stop]])
        group.append(header_args)
        group.append(row_data[row_offsets[start] : row_offsets[stop]])
        size += key_offsets[stop] - key_offsets[start] + row_offsets[stop] - row_offsets[start]
        calls += 1
        if size >= _SEND_PIECE:
            pieces.append(b"".join(group))
            group, size = [], 0
    if group:
        pieces.append(b"".join(group))
    return pieces, calls
