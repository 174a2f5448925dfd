"""Redis wire encoding: hash keys, field names, RESP framing, write payloads and replies.

Layout
* One hash per (project, entity key): ``alm:<project>:<key>=<typed value>[&...]`` with
  the join keys sorted by name, ints as ``i<decimal>`` and strings as
  ``s<UTF-8 byte length>:<text>``. The length prefix makes the encoding collision-free
  (no separator inside a string can end it early) and the type tag keeps int 1 and
  string "1" apart. Views of the same entity share the hash, so one HMGET reads all of
  an entity's views.
* Fields: ``<view>:<feature>`` per feature, ``<view>#ts`` for the view's event time and
  ``<view>#c`` for its created time, when the row has one (decimal microseconds). Names
  are identifiers, so ':' and '#' cannot collide. A null value is an absent field.
* Values: the compact binary encodings of `almanac.online.codec`.

Keys are encoded two ways that must agree byte for byte: `entity_keys` in bulk from
Arrow columns (writes) and `key_encoder` per row from Python values (reads).

The write payload (`write_payload`: EVALSHA calls of the store's write script,
`ROWS_PER_CALL` rows each) is built in bulk from Arrow columns: pyarrow compute renders
keys, lengths and values as RESP bytes, so Python does no per-value work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import redis
from redis.exceptions import ResponseError

from almanac.online.batch import KeyColumn, PreparedBatch
from almanac.online.codec import binary_scalar, redis_values

KEY_PREFIX = "alm"
# Rows per EVALSHA: small enough that one call blocks Redis for well under a
# millisecond, large enough to amortize the script call (measured: 50-100 is best).
ROWS_PER_CALL = 64
# Bytes per socket write: each sendall gets the full timeout, whatever the batch size.
_SEND_PIECE = 256 * 1024


# ---- field names and RESP framing ---------------------------------------------------------


def ts_field(view: str) -> bytes:
    return f"{view}#ts".encode()


def created_field(view: str) -> bytes:
    return f"{view}#c".encode()


def feature_field(view: str, feature: str) -> bytes:
    return f"{view}:{feature}".encode()


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(bulk(a) for a in args)


# ---- entity keys --------------------------------------------------------------------------


def key_prefix(project: str) -> bytes:
    return f"{KEY_PREFIX}:{project}:".encode()


def _length_text(values: pa.Array) -> pa.Array:
    return pc.binary_length(values).cast(pa.string()).cast(pa.binary())


class Pieces:
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
        items = [binary_scalar(i) if isinstance(i, bytes) else i for i in self.items]
        return pc.binary_join_element_wise(*items, binary_scalar(b""))


def entity_keys(project: str, keys: list[KeyColumn], prefix: bytes | None = None) -> pa.Array:
    """The hash key of every row, in bulk (must match `key_encoder` byte for byte);
    `prefix` replaces the project's."""
    pieces = Pieces()
    pieces.add(key_prefix(project) if prefix is None else prefix)
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


def key_encoder(project: str, join_keys: Sequence[str], prefix: bytes | None = None) -> Callable[[list[list[Any]]], list[bytes]]:  # fmt: skip
    """A function from key columns (in `join_keys` order) to hash keys, per row."""
    prefix = key_prefix(project) if prefix is None else prefix
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


# ---- write payloads -----------------------------------------------------------------------


def _offsets(values: pa.Array) -> list[int]:
    offsets = np.frombuffer(values.buffers()[1], np.int32, len(values) + 1, values.offset * 4)
    ends: list[int] = offsets.tolist()
    return ends


def write_payload(
    project: str,
    part: PreparedBatch,
    sha: bytes,
    header_args: bytes,
    header_count: int,
    keys: pa.Array | None = None,
    calls: list[tuple[int, int]] | None = None,
) -> tuple[list[bytes], int]:
    """EVALSHA commands for a slice of rows, as a few large byte strings: `ROWS_PER_CALL`
    rows each, or the row ranges of `calls` (a cluster's: one slot each); `keys` are the
    rows' hash keys (default: `entity_keys`)."""  # fmt: skip
    key_pieces = Pieces()
    key_pieces.bulk(entity_keys(project, part.keys) if keys is None else keys)
    keys = key_pieces.join()
    row_pieces = Pieces()
    row_pieces.bulk(part.event_times.cast(pa.string()).cast(pa.binary()))
    if part.created_times is None:
        row_pieces.add(b"$0\r\n\r\n")  # no created time: an empty argument
    else:
        created = part.created_times.cast(pa.string()).cast(pa.binary())
        row_pieces.bulk(created.fill_null(binary_scalar(b"")))
    for feature in part.features:
        row_pieces.bulk(*redis_values(feature))
    rows = row_pieces.join()
    key_offsets, row_offsets = _offsets(keys), _offsets(rows)
    key_data, row_data = memoryview(keys.buffers()[2]), memoryview(rows.buffers()[2])
    args_per_row = len(part.features) + 2  # event time, created time, values
    pieces: list[bytes] = []
    group: list[Any] = []
    size = sent = 0
    if calls is None:
        calls = [(start, min(start + ROWS_PER_CALL, part.num_rows)) for start in range(0, part.num_rows, ROWS_PER_CALL)]  # fmt: skip
    for start, stop in calls:
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
        sent += 1
        if size >= _SEND_PIECE:
            pieces.append(b"".join(group))
            group, size = [], 0
    if group:
        pieces.append(b"".join(group))
    return pieces, sent


# ---- replies ------------------------------------------------------------------------------


def read_replies(connection: redis.Connection, count: int) -> list[Any]:
    """Read `count` replies; an error reply is kept in the list (not raised) so that the
    connection stays in step with the commands sent."""
    replies = []
    for _ in range(count):
        try:
            replies.append(connection.read_response())
        except ResponseError as error:
            replies.append(error)
    return replies


def first_error(replies: list[Any]) -> ResponseError | None:
    for reply in replies:
        if isinstance(reply, ResponseError):
            return reply
    return None


def count_written(replies: list[Any]) -> int:
    return sum(r for r in replies if isinstance(r, int))
