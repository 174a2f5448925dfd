"""The fingerprint of a training set: which rows a fit was learned from.

`fingerprint_of` hashes columns' names and values in row order, the same whatever the
table's chunking, slicing or integer and float widths; `FittedTransforms.fingerprint`
keeps it, and out-of-fold encoding is offered only for the rows it names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from almanac.errors import InputError
from almanac.transforms.fitted_values import kind_of, plain


def fingerprint_of(table: pa.Table, columns: Sequence[str]) -> str:
    """A SHA-256 of `columns`' names and values in row order: the same for the same
    values however the table is chunked, sliced or typed (integers of any width hash as
    int64, floats as float64, strings and binaries as bytes, dictionaries decoded)."""
    digest = hashlib.sha256(f"rows={table.num_rows}".encode())
    for name in columns:
        if table.schema.get_field_index(name) < 0:
            raise InputError(f"fingerprint: column {name!r} is not in the table")
        digest.update(f"\x00column={name}\x00".encode())
        _digest(digest, plain(table.column(name)))
    return digest.hexdigest()


def _digest(digest: Any, values: pa.Array) -> None:
    """Feed one array's nulls and values into `digest` in a canonical form: the bytes
    under a null are undefined in Arrow, so they are never read."""
    data_type = values.type
    valid = np.asarray(values.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    digest.update(np.packbits(valid).tobytes())
    kind = kind_of(data_type)
    if kind == "string" or pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type):
        filled = pc.fill_null(values.cast(pa.large_binary()), b"")
        _, offsets, body = filled.buffers()
        ends = np.frombuffer(offsets, dtype=np.int64)[filled.offset :][: len(filled) + 1]
        digest.update(b"bytes" + np.diff(ends).tobytes())
        if body is not None and len(ends):
            digest.update(memoryview(body)[int(ends[0]) : int(ends[-1])])
    elif kind in ("int64", "bool"):
        digest.update(kind.encode() + pc.fill_null(values.cast(pa.int64()), 0).to_numpy().tobytes())
    elif kind == "float64":
        numbers = pc.fill_null(values.cast(pa.float64()), 0.0).to_numpy()
        digest.update(b"float64" + np.where(np.isnan(numbers), np.nan, numbers).tobytes())
    elif any(test(data_type) for test in _TIME_TESTS):  # their integers, with unit and zone
        width = pa.int32() if data_type.bit_width == 32 else pa.int64()
        numbers = pc.fill_null(values.view(width), 0).cast(pa.int64()).to_numpy()
        digest.update(str(data_type).encode() + numbers.tobytes())
    else:  # lists, structs and rarer types: their Python values (None for a null)
        digest.update(repr(values.to_pylist()).encode())


_TIME_TESTS = (pa.types.is_timestamp, pa.types.is_date, pa.types.is_time, pa.types.is_duration)
