"""Feature value types.

A dtype is a plain, canonical string (``"int64"``, ``"list<float32>"``) so that
definitions serialize to readable, diffable JSON. The constants below are what users
import; `parse_dtype` validates and canonicalizes anything else.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pyarrow is imported on first use: the CLI starts faster without it
    import pyarrow as pa

Bool = "bool"
Int32 = "int32"
Int64 = "int64"
Float32 = "float32"
Float64 = "float64"
String = "string"
Bytes = "bytes"
Timestamp = "timestamp"

SCALAR_DTYPES: tuple[str, ...] = (Bool, Int32, Int64, Float32, Float64, String, Bytes, Timestamp)
KEY_DTYPES = (Int64, String)
NUMERIC_DTYPES = (Int32, Int64, Float32, Float64)

_ALIASES = {
    "boolean": Bool,
    "int": Int64,
    "integer": Int64,
    "float": Float64,
    "double": Float64,
    "str": String,
    "utf8": String,
    "binary": Bytes,
    "datetime": Timestamp,
}


def Array(item: str) -> str:
    """A list-of dtype, e.g. ``Array(Float32)`` for an embedding vector."""
    item = parse_dtype(item)
    if item.startswith("list<"):
        raise ValueError("nested lists are not supported")
    return f"list<{item}>"


def parse_dtype(value: str) -> str:
    """Return the canonical form of a dtype string, or raise ValueError naming it."""
    if not isinstance(value, str):
        raise ValueError(f"dtype must be a string such as 'int64', got {value!r}")
    text = value.strip().lower().replace(" ", "")
    text = _ALIASES.get(text, text)
    if text in SCALAR_DTYPES:
        return text
    for prefix in ("list<", "array<"):
        if text.startswith(prefix) and text.endswith(">"):
            return Array(text[len(prefix) : -1])
    known = ", ".join([*SCALAR_DTYPES, "list<...>"])
    raise ValueError(f"unknown dtype '{value}' (known: {known})")


@cache
def arrow_type(dtype: str) -> pa.DataType:
    """The Arrow type that carries values of `dtype`."""
    import pyarrow as pa

    dtype = parse_dtype(dtype)
    if dtype.startswith("list<"):
        return pa.list_(arrow_type(dtype[5:-1]))
    return {
        Bool: pa.bool_(),
        Int32: pa.int32(),
        Int64: pa.int64(),
        Float32: pa.float32(),
        Float64: pa.float64(),
        String: pa.string(),
        Bytes: pa.binary(),
        Timestamp: pa.timestamp("us", tz="UTC"),
    }[dtype]


def widest_dtype(kind: pa.DataType) -> str:
    """The Almanac dtype of a computed Arrow column of scalars, integers and floats widened
    to 64 bits (what a transform or an untyped column is read as)."""
    import pyarrow as pa

    if pa.types.is_integer(kind):
        return Int64
    if pa.types.is_floating(kind):
        return Float64
    if pa.types.is_boolean(kind):
        return Bool
    if pa.types.is_timestamp(kind):
        return Timestamp
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return Bytes
    return String
