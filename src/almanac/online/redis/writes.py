"""The write and merge paths of the Redis stores: the scripts' call arguments, the
single-node streaming writer, and the pieces of a merge round.

`write_batch` sends WRITE_SCRIPT calls built in bulk from Arrow columns by
`almanac.online.redis.wire.write_payload`. On one node `stream_writes` sends them on a
raw connection from a sender thread, so the client encodes the next slice while Redis
runs the previous one (a cluster routes them per master instead).

`merge_batch` (pushed events into aggregation tiles) is an optimistic read-modify-write:
read the entities' fields (`stored_rows` decodes them), merge in Python, then call
MERGE_SCRIPT (`merge_call`), which writes each entity only if the fields are still
those read; entities another writer changed meanwhile are read and merged again, up to
`MERGE_ROUNDS` times.

These functions need no store state; `RedisOnlineStore` (and the cluster store, through
its routing hooks) drives them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from typing import Any

import redis

from almanac.online.batch import PreparedBatch
from almanac.online.codec import Decoder
from almanac.online.redis.scripts import merge_digest
from almanac.online.redis.wire import (
    bulk,
    count_written,
    created_field,
    feature_field,
    first_error,
    read_replies,
    ts_field,
    write_payload,
)
from almanac.ports.online import ViewRows

# Rounds of read, merge, conditional write before giving up on entities that other
# writers keep changing.
MERGE_ROUNDS = 50


def write_script_header(view: str, features: list[str], key_ttl_seconds: int) -> tuple[bytes, int]:  # fmt: skip
    """WRITE_SCRIPT's leading arguments (before the rows), framed, and how many they are."""
    header = [str(len(features)).encode(), ts_field(view), created_field(view),
              str(key_ttl_seconds).encode()]  # fmt: skip
    header += [feature_field(view, f) for f in features]
    return b"".join(bulk(a) for a in header), len(header)


def merge_script_header(view: str, features: list[str], key_ttl_seconds: int) -> bytes:
    """MERGE_SCRIPT's leading arguments (before the rows), framed."""
    header = [str(len(features)).encode(), ts_field(view), str(key_ttl_seconds).encode()]
    return b"".join(bulk(a) for a in [*header, *(feature_field(view, f) for f in features)])


def stored_rows(replies: list[list[bytes | None]], decoders: list[Decoder]) -> ViewRows:
    """The entities as a merge round read them: HMGET replies of the event-time field
    then one field per feature, decoded."""
    return ViewRows(
        [None if reply[0] is None else int(reply[0]) for reply in replies],
        [
            [None if reply[j] is None else decode(reply[j]) for reply in replies]
            for j, decode in enumerate(decoders, 1)
        ],
    )


def merge_call(
    sha: bytes,
    header_args: bytes,
    feature_count: int,
    rows: range,
    keys: list[bytes],
    replies: list[list[bytes | None]],
    times: list[bytes],
    values: Sequence[list[Any]],
) -> bytes:
    """One packed EVALSHA of MERGE_SCRIPT for `rows` of a merge round: each row's key,
    the digest of its fields as read (`replies`), its merged event time and values."""
    args = [sha, str(len(rows)).encode(), *(keys[i] for i in rows)]
    for i in rows:
        args += [merge_digest(replies[i]), times[i], *(column[i] for column in values)]
    call = b"*%d\r\n$7\r\nEVALSHA\r\n" % (1 + len(args) + 3 + feature_count)
    call += b"".join(bulk(a) for a in args[: 2 + len(rows)]) + header_args
    call += b"".join(bulk(a) for a in args[2 + len(rows) :])
    return call


def stream_writes(
    connection: redis.Connection,
    project: str,
    batch: PreparedBatch,
    sha: bytes,
    header_args: bytes,
    header_count: int,
    slice_rows: int,
) -> int:
    """Send the batch's WRITE_SCRIPT calls slice by slice and then read every reply; the
    rows written. A sender thread writes slice k to the socket while this thread encodes
    slice k+1 (both release the GIL: socket writes and Arrow kernels), so the client's
    encoding overlaps with Redis running the script. Replies are tiny and wait in the
    socket. Connection errors propagate (the caller reports the store unavailable); the
    connection is then closed, as unread replies would answer the next command."""
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
            for part in batch.slices(slice_rows):
                if failures:
                    break
                pieces, count = write_payload(project, part, sha, header_args, header_count)
                outbox.put(pieces)
                calls += count
        finally:
            outbox.put(None)
            sender.join()
        if failures:
            raise failures[0]
        replies = read_replies(connection, calls)
        in_step = True
    finally:
        if not in_step:  # unread replies would answer the next command: drop the socket
            connection.disconnect()
    error = first_error(replies)
    if error is not None:
        raise error
    return count_written(replies)
