"""Value encodings shared by the online backends: Arrow columns in bulk, bytes back.

Encoding of one non-null value (Redis stores these bytes; SQLite stores native values
except for lists, which use the list form below):

| dtype | bytes |
|---|---|
| bool | 1 byte, 0 or 1 |
| int32 / int64 | 4 / 8 bytes, little-endian two's complement |
| float32 / float64 | 4 / 8 bytes, little-endian IEEE 754 (exact round trip, NaN kept) |
| timestamp | 8 bytes, little-endian int64 microseconds since the epoch, UTC |
| string | ``s`` + UTF-8 |
| bytes | ``b`` + the bytes |
| list<...> | ``R`` + packed items (fixed-width items, no null item), or ``L`` + for each item a 4-byte little-endian length (0xFFFFFFFF: null item) and the item's bytes |

No encoded value is empty, so an empty value can mean null on the write path (Redis
then deletes the field). Numbers decode by their length, so a float32 column later
read as float64 (or int32 as int64) still decodes to the same number.

Decoding never fails on a stored time: microseconds outside what a Python datetime
holds (years 1 to 9999; such a time is refused where rows come in, but a store written
before that rule, or by another writer, may hold one) decode to the nearest time it
holds, `MIN_DATETIME` or `MAX_DATETIME`, so one bad row cannot make reads fail.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from almanac.online.batch import NULL_DTYPE, FeatureColumn, numbers
from almanac.semantics.times import micros_to_datetime

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_DATETIME = datetime.min.replace(tzinfo=UTC)
MAX_DATETIME = datetime.max.replace(tzinfo=UTC)
FIXED_WIDTH = {"bool": 1, "int32": 4, "int64": 8, "float32": 4, "float64": 8, "timestamp": 8}
# array module codes of fixed-width list items ("b" for bools: one byte each).
_ARRAY_CODE = {"bool": "b", "int32": "i", "int64": "q", "float32": "f", "float64": "d"}
_ARRAY_CODE["timestamp"] = "q"
_NULL_ITEM = b"\xff\xff\xff\xff"
_LITTLE_ENDIAN = sys.byteorder == "little"
_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")

Decoder = Callable[[Any], Any]


# ---- bulk encoding (write path) -----------------------------------------------------------


def binary_scalar(value: bytes | None) -> pa.Scalar:
    """`pa.scalar(value, pa.binary())` built from buffers: converting a Python value (as
    `pa.scalar`, `pa.array` and compute functions given bytes do) imports pandas, 0.3-0.4 s
    of a cold `materialize`."""
    if value is None:
        return pa.nulls(1, pa.binary())[0]
    offsets = pa.py_buffer(np.array([0, len(value)], dtype=np.int32))
    return pa.Array.from_buffers(pa.binary(), 1, [None, offsets, pa.py_buffer(value)])[0]


_EMPTY = binary_scalar(b"")


def fixed_width_bytes(values: pa.Array, width: int) -> pa.Array:
    """Reinterpret a fixed-width numeric array as binary values without copying the data
    (validity is ignored: null slots hold whatever bytes the buffer has)."""
    data = values.buffers()[1].slice(values.offset * width, len(values) * width)
    offsets = pa.py_buffer(np.arange(len(values) + 1, dtype=np.int32) * np.int32(width))
    return pa.Array.from_buffers(pa.binary(), len(values), [None, offsets, data])


def redis_values(column: FeatureColumn) -> tuple[pa.Array, int | None]:
    """Encoded values of a column as a binary array with b"" for nulls, and the common
    width when every value has the same one (the caller then frames them as constants)."""
    values, dtype = column.values, column.dtype
    if dtype == NULL_DTYPE:
        return pc.if_else(values.is_null(), _EMPTY, _EMPTY), 0
    width = FIXED_WIDTH.get(dtype)
    if width is not None:
        if dtype == "bool":
            values = values.cast(pa.uint8())  # Arrow packs bools as bits
        encoded = fixed_width_bytes(values, width)
        if values.null_count == 0:
            return encoded, width
        return pc.if_else(values.is_valid(), encoded, _EMPTY), None
    if dtype == "string" or dtype == "bytes":
        tag = b"s" if dtype == "string" else b"b"
        encoded = pc.binary_join_element_wise(binary_scalar(tag), values.cast(pa.binary()), _EMPTY)
    else:
        encoded = list_blobs(values, column.item_dtype)
    return encoded.fill_null(_EMPTY), None


def list_blobs(values: pa.Array, item: str) -> pa.Array:
    """Encode a list column to one blob per row (null rows stay null)."""
    width = FIXED_WIDTH.get(item)
    offsets = numbers(values.offsets)
    child = values.values
    if item == "bool":
        child = child.cast(pa.uint8())
    start, stop = int(offsets[0]), int(offsets[-1])
    used = child.slice(start, stop - start)
    if width is not None and used.null_count == 0 and _LITTLE_ENDIAN:
        # Fast path: the list's items are already packed little-endian in the child
        # buffer; only the offsets change (items → bytes), then a 1-byte tag is added.
        data = used.buffers()[1].slice(used.offset * width, (stop - start) * width)
        byte_offsets = ((offsets - start) * width).astype(np.int32)
        raw = pa.Array.from_buffers(
            pa.binary(), len(values), [None, pa.py_buffer(byte_offsets), data]
        )
        blobs = pc.binary_join_element_wise(binary_scalar(b"R"), raw, _EMPTY)
        if values.null_count:
            blobs = pc.if_else(values.is_valid(), blobs, binary_scalar(None))
        return blobs
    # Lists with null items, or of strings/bytes: one Python call per row (rarer).
    python = values.to_pylist()
    return pa.array([None if v is None else encode_list(v, item) for v in python], pa.binary())


def encode_list(items: list[Any], item: str) -> bytes:
    """Encode one list of plain Python items (timestamps as int microseconds)."""
    code = _ARRAY_CODE.get(item)
    if code is not None and None not in items:
        packed = array(code, [int(x) for x in items] if item == "bool" else items)
        if not _LITTLE_ENDIAN:
            packed.byteswap()
        return b"R" + packed.tobytes()
    parts = [b"L"]
    for x in items:
        if x is None:
            parts.append(_NULL_ITEM)
        else:
            encoded = _encode_item(x, item)
            parts.append(len(encoded).to_bytes(4, "little") + encoded)
    return b"".join(parts)


def _encode_item(value: Any, item: str) -> bytes:
    if item == "string":
        text: str = value
        return text.encode()
    if item == "bytes":
        return bytes(value)
    if item == "bool":
        return b"\x01" if value else b"\x00"
    if item == "float32":
        return _F32.pack(value)
    if item == "float64":
        return _F64.pack(value)
    return int(value).to_bytes(FIXED_WIDTH[item], "little", signed=True)


def sqlite_values(column: FeatureColumn) -> list[Any]:
    """A column as Python values for sqlite3 (lists as blobs, bools as 0/1,
    timestamps as int microseconds); converted in C where the column allows."""
    values, dtype = column.values, column.dtype
    if dtype == NULL_DTYPE:
        return [None] * len(values)
    if dtype == "bool":
        values = values.cast(pa.int8())
    elif dtype.startswith("list<"):
        blobs: list[Any] = list_blobs(values, column.item_dtype).to_pylist()
        return blobs
    python: list[Any] = (
        numbers(values).tolist()
        if values.null_count == 0 and dtype in FIXED_WIDTH
        else values.to_pylist()
    )
    if dtype in ("float32", "float64") and pc.any(pc.is_nan(values)).as_py():
        # SQLite turns a NaN REAL into NULL: keep NaN as its 8 encoded bytes instead.
        python = [_F64.pack(v) if v is not None and v != v else v for v in python]
    return python


# ---- decoding (read path) -----------------------------------------------------------------


def _decode_int(raw: bytes) -> int:
    return int.from_bytes(raw, "little", signed=True)


def _decode_float(raw: bytes) -> float:
    value: float = (_F32 if len(raw) == 4 else _F64).unpack(raw)[0]
    return value


def _decode_timestamp(raw: bytes) -> datetime:
    return micros_to_datetime(int.from_bytes(raw, "little", signed=True))


def _decode_bool(raw: bytes) -> bool:
    return raw != b"\x00"


def _decode_tagged(raw: bytes) -> Any:
    return raw[1:]


def _decode_string(raw: bytes) -> str:
    return raw[1:].decode()


def decode_list(blob: bytes, item: str) -> list[Any]:
    """Decode a list blob written by `list_blobs` / `encode_list`."""
    body = memoryview(blob)[1:]
    if blob[:1] == b"R":
        packed = array(_ARRAY_CODE[item])
        packed.frombytes(body)
        if not _LITTLE_ENDIAN:
            packed.byteswap()
        items = packed.tolist()
        if item == "bool":
            return [x != 0 for x in items]
        if item == "timestamp":
            return [micros_to_datetime(x) for x in items]
        return items
    decode_item = _item_decoder(item)
    out: list[Any] = []
    position = 0
    while position < len(body):
        length = int.from_bytes(body[position : position + 4], "little")
        position += 4
        if length == 0xFFFFFFFF:
            out.append(None)
            continue
        out.append(decode_item(bytes(body[position : position + length])))
        position += length
    return out


def _item_decoder(item: str) -> Decoder:
    if item == "string":
        return bytes.decode
    if item == "bytes":
        return bytes
    if item == "bool":
        return _decode_bool
    if item in ("float32", "float64"):
        return _decode_float
    if item == "timestamp":
        return _decode_timestamp
    return _decode_int


def redis_decoder(dtype: str) -> Decoder:
    """Bytes stored by the Redis backend → the Python value of `dtype`."""
    if dtype.startswith("list<"):
        item = dtype[5:-1]
        return lambda blob: decode_list(blob, item)
    if dtype == "string":
        return _decode_string
    if dtype == "bytes":
        return _decode_tagged
    return _item_decoder(dtype)


ColumnDecoder = Callable[[list[Any]], list[Any]]


def sqlite_decoder(dtype: str) -> ColumnDecoder | None:
    """SQLite values of one column (None for null) → Python values of `dtype`, or None
    when SQLite's own values are already right."""
    if dtype.startswith("list<"):
        item = dtype[5:-1]
        return lambda column: [None if v is None else decode_list(v, item) for v in column]
    if dtype == "bool":
        return lambda column: [None if v is None else v != 0 for v in column]
    if dtype == "timestamp":
        return lambda column: [None if v is None else micros_to_datetime(v) for v in column]
    if dtype in ("float32", "float64"):
        return _sqlite_floats
    return None


def _sqlite_floats(column: list[Any]) -> list[Any]:
    if bytes not in map(type, column):  # the common case, checked at C speed
        return column
    return [_F64.unpack(v)[0] if v.__class__ is bytes else v for v in column]
