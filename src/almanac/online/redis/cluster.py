"""The Redis Cluster online store: `online: {url: "redis+cluster://host:port[,host:port…]"}`
(`rediss+cluster://` for TLS). Everything the single-node store does — monotonic writes,
created-time ties, tile merges, watermarks, async reads — on a sharded cluster.

Layout. A Lua script may only touch keys of one slot, and the single-node store writes
64 entities per script call. So each entity hash carries a hash tag, a *bucket* of the
entity key: ``alm:<project>:{<bucket>}<entity key>`` with bucket = CRC-32(entity key) mod
`BUCKETS` (1,024). All of one entity's views share its hash (one HMGET reads them all,
as on one node); entities of one bucket share a slot, so a write batch sorted by bucket
makes script calls of up to 64 rows again. 1,024 buckets spread over the 16,384 slots
keep the masters' shares within a few percent. The bucket is computed in bulk with
numpy for writes and with zlib per key for reads (the same CRC-32, fixed here, so every
process and version places a key in the same slot). Metadata keys (watermarks, the views' field
lists) are named as on one node; each is read or written alone.

Routing. Commands are grouped per master (from the client's slot map) and sent to every
master before any reply is read: a read of many entities costs one round trip per
master, made at the same time. `MOVED` replies, connection errors and `CLUSTERDOWN`
(a failover in progress) refresh the slot map and resend the whole request — safe, as
reads are pure and writes idempotent (the monotonic rule) — until `timeout_seconds ×
FAILOVER_TIMEOUTS` has passed; then the request fails with StoreUnavailableError. A tile merge is not sent
again once it may have been applied (its reply lost, or no replica confirmed it): it
fails instead, as a lost reply does on one node. `ASK` (a slot being migrated) is
followed per command with `ASKING`. Writes end with `WAIT 1` on masters that have a
live replica: a write is acknowledged once its master and one replica hold it, so a
failover loses no acknowledged write (unless the replica dies too).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
import pyarrow as pa
import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    TryAgainError,
)
from redis.retry import Retry

from almanac.config import RepoConfig
from almanac.errors import ConfigError, StoreUnavailableError
from almanac.online.batch import KeyColumn, PreparedBatch, prepare_batch
from almanac.online.redis.aio import AsyncRedis
from almanac.online.redis.reads import decode_read
from almanac.online.redis.scripts import WRITE_SCRIPT, load_script_command, script_sha
from almanac.online.redis.store import _UNAVAILABLE, RedisOnlineStore
from almanac.online.redis.wire import (
    KEY_PREFIX,
    ROWS_PER_CALL,
    Pieces,
    command,
    count_written,
    entity_keys,
    first_error,
    key_encoder,
    key_prefix,
    read_replies,
    write_payload,
)
from almanac.ports.online import OnlineStore, ViewRead, ViewRows

BUCKETS = 1024
FAILOVER_TIMEOUTS = 5  # how many online timeouts a request keeps retrying through a failover
REPLICAS_EVERY = 5.0  # seconds between two looks at which masters have a live replica
_SLOT_OF_BUCKET = np.array([key_slot(b"%d" % b) for b in range(BUCKETS)], np.int64)
# Replies that a fresh slot map (or a moment's wait, in a failover) fixes.
_MOVED_OR_DOWN = (MovedError, AskError, ClusterDownError, TryAgainError, BusyLoadingError, MasterDownError)  # fmt: skip
_RETRYABLE = (*_MOVED_OR_DOWN, *_UNAVAILABLE)


def _crc_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0xEDB88320), table >> 1)
    return table.astype(np.uint32)


_CRC_TABLE = _crc_table()


def crc32(values: pa.Array) -> np.ndarray:
    """CRC-32 (zlib's) of each binary value, vectorized: one numpy step per byte position
    (keys are short), so a write batch's buckets cost no Python per row."""
    values = values.cast(pa.binary())
    offsets = np.frombuffer(values.buffers()[1], np.int32, len(values) + 1, values.offset * 4)
    data = np.frombuffer(values.buffers()[2], np.uint8) if len(values) else np.zeros(0, np.uint8)
    starts, lengths = offsets[:-1].astype(np.int64), np.diff(offsets)
    crc = np.full(len(values), 0xFFFFFFFF, np.uint32)
    for position in range(int(lengths.max()) if len(values) else 0):
        live = np.flatnonzero(lengths > position)
        current = crc[live]
        crc[live] = _CRC_TABLE[(current ^ data[starts[live] + position]) & 0xFF] ^ (current >> 8)
    return crc ^ np.uint32(0xFFFFFFFF)


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """Seed nodes and connection settings of a redis+cluster:// or rediss+cluster:// URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis+cluster", "rediss+cluster"):
        raise ConfigError(f"online.url: '{parts.scheme}://' is not a Redis Cluster URL")
    netloc = parts.netloc.rpartition("@")
    auth, hosts = (netloc[0], netloc[2]) if netloc[1] else ("", netloc[2])
    nodes = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"online.url: '{item}' is not host:port (redis+cluster://h1:6379,h2:6379)")  # fmt: skip
        nodes.append((host.strip("[]"), int(port)))
    settings: dict[str, Any] = {}
    if auth:
        user, _, password = auth.partition(":")
        settings["username"] = unquote(user) or None
        settings["password"] = unquote(password) or None
    if parts.scheme == "rediss+cluster":
        settings["ssl"] = True
        for key, value in (p.split("=", 1) for p in parts.query.split("&") if "=" in p):
            if key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"):
                settings[key] = value
    return nodes, settings


class _MayBeApplied(Exception):
    """Commands reached a master, but whether they were applied (or replicated) is not
    known: safe to send again only when they are idempotent."""


@dataclass(frozen=True)
class _Topology:
    addresses: dict[str, tuple[str, int]]  # master name → (host, port)
    node_of_slot: dict[int, str]  # the slot of each bucket → its master
    has_replica: dict[str, bool]  # masters with a live replica (writes WAIT for it)


class RedisClusterOnlineStore(RedisOnlineStore):
    @classmethod
    def from_config(cls, config: RepoConfig) -> RedisClusterOnlineStore:
        online = config.online
        return cls(
            online.url, timeout_seconds=online.timeout_seconds,
            key_ttl_seconds=online.key_ttl_seconds, batch_size=online.batch_size,
        )  # fmt: skip

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float = 2.0,
        key_ttl_seconds: int | None = None,
        batch_size: int = 50_000,
    ) -> None:
        seeds, settings = parse_cluster_url(url)
        self.address = ",".join(f"{h}:{p}" for h, p in seeds)
        self.timeout_seconds = timeout_seconds
        self.key_ttl_seconds = key_ttl_seconds or 0
        self.batch_size = batch_size
        self._settings = settings
        self._use_ssl = bool(settings.get("ssl"))
        try:
            self._client: Any = RedisCluster(
                startup_nodes=[ClusterNode(h, p) for h, p in seeds],
                socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds,
                require_full_coverage=False, **settings,
            )  # fmt: skip
        except (RedisClusterException, *_UNAVAILABLE) as error:
            raise self._unavailable(error) from None
        self._local = threading.local()
        self._connections: list[redis.Connection] = []
        self._lock = threading.Lock()
        self._specs = {}
        self._group_fields = {}
        self._encoders = {}
        self._node_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, AsyncRedis]]  # fmt: skip
        self._node_clients = weakref.WeakKeyDictionary()
        # Within the socket timeout, so that a replica too slow is told apart from a lost reply.
        self._wait_command = command(b"WAIT", b"1", str(int(timeout_seconds * 800)).encode())
        self._map = _Topology({}, {}, {})
        self._map_at = 0.0
        self._topology()

    # ---- topology and connections ----------------------------------------------------

    def _topology(self, refresh: bool = False) -> None:
        """The master of each bucket, from the client's slot map (read again on refresh),
        and which masters have a live replica (from CLUSTER NODES: CLUSTER SLOTS leaves
        out replicas that have not replicated anything yet). Swapped in as one object,
        so a request routes with one consistent map."""
        try:
            if refresh:
                self._client.nodes_manager.initialize()
            manager = self._client.nodes_manager
            nodes = [manager.get_node_from_slot(int(slot)) for slot in _SLOT_OF_BUCKET]
            described = self._client.cluster_nodes()
        except (RedisClusterException, *_UNAVAILABLE) as error:
            raise self._unavailable(error) from None
        ids = {info.get("node_id"): address for address, info in described.items()}
        replicated = {
            ids.get(info.get("master_id")) for info in described.values()
            if "slave" in info.get("flags", "") and "fail" not in info.get("flags", "")
            and info.get("connected", True)
        }  # fmt: skip
        self._map_at = time.monotonic()
        self._map = _Topology(
            addresses={node.name: (node.host, int(node.port)) for node in nodes},
            node_of_slot={int(s): n.name for s, n in zip(_SLOT_OF_BUCKET, nodes, strict=True)},
            has_replica={node.name: node.name in replicated for node in nodes},
        )

    def _forget_connections(self) -> None:
        """Drop this thread's connections (to a dead or demoted master), closing them."""
        for connection in getattr(self._local, "by_node", {}).values():
            connection.disconnect()
        self._local.by_node = {}

    def _connection_to(self, name: str) -> redis.Connection:
        """This thread's raw connection to one master."""
        local = self._local
        connections = getattr(local, "by_node", None)
        if connections is None:
            connections = local.by_node = {}
        connection = connections.get(name)
        if connection is None:
            host, port = self._map.addresses[name]
            kind = redis.SSLConnection if self._use_ssl else redis.Connection
            extra = {k: v for k, v in self._settings.items() if k != "ssl"}
            connection = kind(
                host=host, port=port, socket_timeout=self.timeout_seconds,
                socket_connect_timeout=self.timeout_seconds, retry=Retry(NoBackoff(), 0), **extra,
            )  # fmt: skip
            connections[name] = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def _retrying(self, attempt: Callable[[], Any], idempotent: bool = True) -> Any:
        """Run `attempt` until it succeeds, refreshing the slot map after each failure
        that a moved slot or a failover explains, within the failover budget. A request
        that is not `idempotent` (a tile merge) is not sent again once it may have been
        applied (its replies were lost, or no replica confirmed it): that is reported."""
        deadline = time.monotonic() + self.timeout_seconds * FAILOVER_TIMEOUTS
        while True:
            try:
                return attempt()
            except _MayBeApplied as error:
                if not idempotent or time.monotonic() >= deadline:
                    raise self._unavailable(error.__cause__ or error) from None
            except _RETRYABLE as error:
                if time.monotonic() >= deadline:
                    raise self._unavailable(error) from None
            except StoreUnavailableError:
                if time.monotonic() >= deadline:
                    raise
            self._forget_connections()
            time.sleep(0.1)
            with contextlib.suppress(StoreUnavailableError):
                self._topology(refresh=True)

    def _unavailable(self, error: BaseException) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"Redis Cluster online store at {self.address} is unavailable: {error} "
            f"(timeout {self.timeout_seconds}s × {FAILOVER_TIMEOUTS}; check online.url and "
            "the cluster's state)"
        )

    def _exchange_nodes(
        self, groups: dict[str, list[bytes]], counts: dict[str, int] | None = None, *, write: bool = False
    ) -> dict[str, list[Any]]:  # fmt: skip
        """Send each master its packed commands (`counts`: how many replies each gives;
        default one per item), all before reading any reply; the replies per master.
        Raises what a retry can fix: a moved slot or a failover (`_RETRYABLE`, nothing
        applied), or `_MayBeApplied` (the commands reached a master but their outcome
        is unknown, or no replica confirmed them). Writes end with a WAIT for one
        replica, on masters that have one (same round trip): a write is acknowledged
        once two nodes hold it. A connection whose replies were not all read is closed,
        so no later request reads them."""
        if write and time.monotonic() - self._map_at > REPLICAS_EVERY:
            with contextlib.suppress(StoreUnavailableError):  # replicas come and go
                self._topology()
        topology = self._map
        pending: list[tuple[str, redis.Connection, int, bool]] = []
        out: dict[str, list[Any]] = {}
        failure: BaseException | None = None
        try:
            for name, commands in groups.items():
                connection = self._connection_to(name)
                waits = write and topology.has_replica.get(name, False)
                if waits:
                    commands = [*commands, self._wait_command]
                expected = len(commands) if counts is None else counts[name] + int(waits)
                pending.append((name, connection, expected, waits))
                if connection._sock is None:
                    connection.connect()
                connection.send_packed_command(commands, check_health=False)
            while pending:
                name, connection, count, waits = pending[0]
                try:
                    replies = read_replies(connection, count)
                except _UNAVAILABLE as error:
                    failure = failure or _MayBeApplied("replies lost")
                    failure.__cause__ = error
                    connection.disconnect()
                    pending.pop(0)
                    continue
                pending.pop(0)
                for reply in replies:  # ASK is answered per command by the caller
                    if failure is None and isinstance(reply, _MOVED_OR_DOWN) and not isinstance(reply, AskError):  # fmt: skip
                        failure = reply
                if waits:
                    confirmed = replies.pop()
                    if not isinstance(confirmed, int) or confirmed < 1:
                        failure = failure or _MayBeApplied(f"no replica of {name} confirmed the write in time")  # fmt: skip
                out[name] = replies
        except _UNAVAILABLE as error:  # a master unreachable: nothing sent to it applied
            failure = failure or error
        finally:
            for _, connection, _, _ in pending:  # their replies would answer the next request
                connection.disconnect()
        if failure is not None:
            raise failure
        return out

    def _each(self, commands: list[bytes], slots: np.ndarray | None, *, write: bool = False) -> list[Any]:  # fmt: skip
        assert slots is not None

        def attempt() -> list[Any]:
            nodes = self._nodes_of(slots)
            groups: dict[str, list[int]] = {}
            for index, name in enumerate(nodes):
                groups.setdefault(name, []).append(index)
            # One socket write per master: the commands joined.
            payloads = {n: [b"".join([commands[i] for i in rows])] for n, rows in groups.items()}
            counts = {n: len(rows) for n, rows in groups.items()}
            replies = self._exchange_nodes(payloads, counts, write=write)
            out: list[Any] = [None] * len(commands)
            for name, rows in groups.items():
                for index, reply in zip(rows, replies[name], strict=True):
                    out[index] = reply
            for index, reply in enumerate(out):
                if isinstance(reply, AskError):  # its slot is being migrated: ask the new owner
                    out[index] = self._asking(commands[index], reply, write)
            error = first_error(out)
            if error is not None:
                raise error
            return out

        result: list[Any] = self._retrying(attempt, idempotent=not write)
        return result

    def _asking(self, command_bytes: bytes, ask: AskError, write: bool) -> Any:
        """One command again on the node its slot is moving to, after `ASKING`."""
        name = f"{ask.host}:{ask.port}"
        self._map.addresses.setdefault(name, (ask.host, int(ask.port)))
        replies = self._exchange_nodes({name: [command(b"ASKING"), command_bytes]}, {name: 2}, write=write)  # fmt: skip
        return replies[name][1]

    def _nodes_of(self, slots: np.ndarray) -> list[str]:
        by_slot = self._map.node_of_slot
        return [by_slot[int(slot)] for slot in slots]

    # ---- keys --------------------------------------------------------------------------

    def _entity_keys(self, project: str, keys: list[KeyColumn]) -> tuple[pa.Array, np.ndarray]:
        rest = entity_keys(project, keys, prefix=b"")
        buckets = crc32(rest) % BUCKETS
        pieces = Pieces()
        pieces.add(key_prefix(project) + b"{")
        pieces.add(pa.array(buckets).cast(pa.string()).cast(pa.binary()))
        pieces.add(b"}")
        pieces.add(rest)
        return pieces.join(), _SLOT_OF_BUCKET[buckets]

    def _encoder(self, project: str, join_keys: Sequence[str]) -> Callable[..., list[bytes]]:
        cache_key = (project, tuple(join_keys))
        encoder = self._encoders.get(cache_key)
        if encoder is None:
            plain = key_encoder(project, join_keys, prefix=b"")
            prefix = key_prefix(project)

            def encoder(columns: list[list[Any]]) -> list[bytes]:
                return [b"%s{%d}%s" % (prefix, zlib.crc32(rest) % BUCKETS, rest) for rest in plain(columns)]  # fmt: skip

            self._encoders[cache_key] = encoder
        return encoder

    def _grouped(self, project: str, table: pa.Table, join_keys: list[str], features: list[str], view: str) -> pa.Table:  # fmt: skip
        _, slots = self._entity_keys(project, prepare_batch(view, table, join_keys, features).keys)
        return table.take(np.argsort(slots, kind="stable"))

    def _calls(self, slots: np.ndarray | None, count: int) -> list[tuple[int, int]]:
        """Runs of one slot (the rows are sorted by slot), cut at `ROWS_PER_CALL`."""
        assert slots is not None
        if count == 0:
            return []
        cuts = np.flatnonzero(slots[1:] != slots[:-1]) + 1
        out = []
        for start, stop in zip(np.r_[0, cuts], np.r_[cuts, count], strict=True):
            out += [(int(a), int(min(a + ROWS_PER_CALL, stop))) for a in range(int(start), int(stop), ROWS_PER_CALL)]  # fmt: skip
        return out

    # ---- writes ------------------------------------------------------------------------

    def _load_script(self, script: str = WRITE_SCRIPT) -> bytes:
        def load() -> bytes:
            names = sorted(set(self._map.node_of_slot.values()))
            replies = self._exchange_nodes({n: [load_script_command(script)] for n in names})
            return script_sha(replies[names[0]][0])

        sha: bytes = self._retrying(load)
        return sha

    def _register(self, project: str, view: str, join_keys: list[str], features: list[str]) -> None:
        meta = _meta(project)
        self._retrying(lambda: (
            self._client.sadd(meta + "fields:" + view, *features),
            self._client.sadd(meta + "keys:" + view, "&".join(sorted(join_keys))),
        ))  # fmt: skip

    def _stream_writes(
        self, project: str, batch: PreparedBatch, sha: bytes, header_args: bytes, header_count: int
    ) -> int:
        """Per slice of the batch, its rows sorted by slot, each master's script calls in
        one pipelined round trip, the masters at once (`write_batch` of the single-node
        store calls this with the scripts' header)."""
        written = 0
        for part in batch.slices(self.batch_size):
            keys, slots = self._entity_keys(project, part.keys)
            order = np.argsort(slots, kind="stable")
            part, keys, slots = part.take(order), keys.take(order), slots[order]

            def attempt(part: Any = part, keys: Any = keys, slots: Any = slots) -> int:
                nonlocal sha
                calls = self._calls(slots, part.num_rows)
                nodes = self._nodes_of(slots[[start for start, _ in calls]])
                groups: dict[str, list[tuple[int, int]]] = {}
                for call, name in zip(calls, nodes, strict=True):
                    groups.setdefault(name, []).append(call)
                payloads, counts = {}, {}
                for name, ranges in groups.items():
                    payloads[name], counts[name] = write_payload(project, part, sha, header_args, header_count, keys=keys, calls=ranges)  # fmt: skip
                replies = self._exchange_nodes(payloads, counts, write=True)
                flat = [r for rs in replies.values() for r in rs]
                if any(isinstance(r, AskError) for r in flat):  # a slot being migrated:
                    raise TryAgainError("a slot is being migrated")  # sent again (idempotent)
                error = first_error(flat)
                if error is not None:
                    if isinstance(error, NoScriptError):  # a promoted replica has no script cache
                        sha = self._load_script()
                        raise ClusterDownError("script reloaded") from None  # sent again
                    raise error
                return count_written(flat)

            written += int(self._retrying(attempt))
        return written

    def _entity_pattern(self, project: str, first_key: str) -> bytes:
        return key_prefix(project) + b"{*}" + first_key.encode() + b"=*"

    def _scanned_clients(self) -> list[Any]:
        return [self._client.get_redis_connection(node) for node in self._client.get_primaries()]

    def watermarks(self, project: str) -> dict[str, Any]:
        return self._retrying(lambda: super(RedisClusterOnlineStore, self).watermarks(project))  # type: ignore[no-any-return]

    def set_watermark(self, project: str, view: str, watermark: Any, layout: str) -> None:
        self._retrying(lambda: super(RedisClusterOnlineStore, self).set_watermark(project, view, watermark, layout))  # fmt: skip

    # ---- reads -------------------------------------------------------------------------

    # Entities are spread over the masters and the watermarks live in one slot: the
    # port's two calls, not the one node's single exchange.
    read_with_watermarks = OnlineStore.read_with_watermarks

    def read(self, project: str, requests: list[ViewRead]) -> list[ViewRows]:
        commands, keys, layout = self._read_commands(project, requests)
        replies = self._each(commands, _slots_of(keys)) if commands else []
        return decode_read(replies, layout, len(requests))

    async def read_async(self, project: str, requests: list[ViewRead]) -> list[ViewRows]:
        commands, keys, layout = self._read_commands(project, requests)
        slots = _slots_of(keys)
        if not commands:
            return decode_read([], layout, len(requests))
        loop = asyncio.get_running_loop()
        nodes = self._nodes_of(slots)
        groups: dict[str, list[int]] = {}
        for index, name in enumerate(nodes):
            groups.setdefault(name, []).append(index)
        try:
            answers = await asyncio.gather(*(
                self._async_to(loop, name).execute(b"".join(commands[i] for i in rows), len(rows))
                for name, rows in groups.items()
            ))  # fmt: skip
        except StoreUnavailableError:
            # A moved slot or a failover: the blocking path refreshes and retries.
            return await asyncio.to_thread(self.read, project, requests)
        replies: list[Any] = [None] * len(commands)
        for rows, answer in zip(groups.values(), answers, strict=True):
            for index, reply in zip(rows, answer, strict=True):
                replies[index] = reply
        return decode_read(replies, layout, len(requests))

    def _async_to(self, loop: asyncio.AbstractEventLoop, name: str) -> AsyncRedis:
        with self._lock:
            clients = self._node_clients.setdefault(loop, {})
        client = clients.get(name)
        if client is None:
            host, port = self._map.addresses[name]
            extra = {k: v for k, v in self._settings.items() if k != "ssl"}
            client = clients[name] = AsyncRedis({"host": host, "port": port, **extra}, self.timeout_seconds, self._unavailable, self._use_ssl)  # fmt: skip
        return client

    async def ping_async(self) -> None:
        await asyncio.to_thread(self.ping)

    def ping(self) -> None:
        self._retrying(lambda: self._client.ping(target_nodes=RedisCluster.PRIMARIES))

    @property
    def backend(self) -> str:
        return "redis_cluster"

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
            clients = [c for per_loop in self._node_clients.values() for c in per_loop.values()]
            self._node_clients.clear()
        for client in clients:
            client.close()
        for connection in connections:
            connection.disconnect()
        self._local = threading.local()
        self._client.close()

    async def aclose(self) -> None:
        self.close()


def _meta(project: str) -> str:
    """Metadata keys of a project, as the single-node store names them (each is used
    alone, so they need no common slot)."""
    return f"{KEY_PREFIX}:{project}#"


def _slots_of(keys: list[bytes]) -> np.ndarray:
    """Each tagged key's slot (its bucket is between the braces)."""
    return _SLOT_OF_BUCKET[[int(k[k.index(b"{") + 1 : k.index(b"}")]) for k in keys]]
