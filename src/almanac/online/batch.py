"""Validate and normalize a batch of rows before any backend writes it.

Every check happens here, before a single value is written, so that a rejected batch
leaves the store as it was (DESIGN.md, rule 7). The result holds plain Arrow arrays in
a small set of physical types that the backends encode in bulk:

* join keys: int64 or string, never null;
* event times: int64 microseconds since the epoch (UTC; naive timestamps read as UTC);
* created times (optional, may be null): the same;
* features: bool, int32, int64, float32, float64, string, binary, timestamps as int64
  microseconds, and lists of those.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from almanac.errors import InputError
from almanac.ports.online import CREATED_TIMESTAMP, EVENT_TIMESTAMP

# A column of nulls only (Arrow type `null`) carries no dtype; it is written as nulls.
NULL_DTYPE = "null"


@dataclass(frozen=True)
class KeyColumn:
    name: str
    dtype: str  # "int64" or "string"
    values: pa.Array


@dataclass(frozen=True)
class FeatureColumn:
    name: str
    dtype: str  # an Almanac dtype ("int64", "list<float32>", ...) or NULL_DTYPE
    values: pa.Array

    @property
    def item_dtype(self) -> str:
        """The item dtype of a list column."""
        return self.dtype[5:-1]


@dataclass(frozen=True)
class PreparedBatch:
    view: str
    keys: list[KeyColumn]
    features: list[FeatureColumn]
    event_times: pa.Array  # int64 microseconds, no nulls
    num_rows: int
    created_times: pa.Array | None = None  # int64 microseconds, nulls allowed

    def take(self, indices: pa.Array | np.ndarray) -> PreparedBatch:
        """The rows at `indices`, in that order (a cluster groups rows by slot)."""
        return PreparedBatch(
            view=self.view,
            keys=[KeyColumn(k.name, k.dtype, k.values.take(indices)) for k in self.keys],
            features=[
                FeatureColumn(f.name, f.dtype, f.values.take(indices)) for f in self.features
            ],
            event_times=self.event_times.take(indices),
            num_rows=len(indices),
            created_times=None if self.created_times is None else self.created_times.take(indices),
        )

    def slices(self, size: int) -> Iterator[PreparedBatch]:
        """Zero-copy slices of at most `size` rows (bounds memory of encoded payloads)."""
        for start in range(0, self.num_rows, size):
            length = min(size, self.num_rows - start)
            yield PreparedBatch(
                view=self.view,
                keys=[KeyColumn(k.name, k.dtype, k.values.slice(start, length)) for k in self.keys],
                features=[
                    FeatureColumn(f.name, f.dtype, f.values.slice(start, length))
                    for f in self.features
                ],
                event_times=self.event_times.slice(start, length),
                num_rows=length,
                created_times=None
                if self.created_times is None
                else self.created_times.slice(start, length),
            )


def numbers(values: pa.Array) -> np.ndarray:
    """A null-free integer or float array as a zero-copy NumPy view. Not `to_numpy()`:
    pyarrow imports pandas on its first use, 0.3-1.5 s of a short job (materialize)."""
    kind = values.type
    code = "f" if pa.types.is_floating(kind) else "i" if pa.types.is_signed_integer(kind) else "u"
    width = kind.byte_width
    return np.frombuffer(values.buffers()[1], f"<{code}{width}", len(values), values.offset * width)


def prepare_batch(
    view: str, table: pa.Table | pa.RecordBatch, join_keys: list[str], features: list[str]
) -> PreparedBatch:
    """Check that `table` has the keys, features and event times, and normalize them."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    if not isinstance(table, pa.Table):
        raise InputError(f"view '{view}': rows to write must be a pyarrow Table, got {type(table)}")
    if not join_keys:
        raise InputError(f"view '{view}': no join keys given")
    if not features:
        raise InputError(f"view '{view}': no features given")
    names = set(table.column_names)
    for name in [*join_keys, EVENT_TIMESTAMP, *features]:
        if name not in names:
            raise InputError(
                f"view '{view}': column '{name}' is missing from the rows to write "
                f"(columns: {', '.join(table.column_names)})"
            )
    if len(set(join_keys) | set(features)) != len(join_keys) + len(features):
        raise InputError(f"view '{view}': a column is listed twice among keys and features")
    created = CREATED_TIMESTAMP in names and CREATED_TIMESTAMP not in [*join_keys, *features]
    extra = [CREATED_TIMESTAMP] if created else []
    table = table.select([*join_keys, EVENT_TIMESTAMP, *extra, *features]).combine_chunks()

    def column(name: str) -> pa.Array:
        chunks = table.column(name).chunks
        return chunks[0] if chunks else pa.array([], table.schema.field(name).type)

    keys = [_key_column(view, name, column(name)) for name in join_keys]
    event_times = _event_times(view, column(EVENT_TIMESTAMP))
    columns = [_feature_column(view, name, column(name)) for name in features]
    created_times = _created_times(view, column(CREATED_TIMESTAMP)) if created else None
    return PreparedBatch(view, keys, columns, event_times, table.num_rows, created_times)


def _key_column(view: str, name: str, values: pa.Array) -> KeyColumn:
    kind = values.type
    if values.null_count:
        raise InputError(f"view '{view}': join key '{name}' has {values.null_count} null values")
    if pa.types.is_integer(kind):
        try:
            return KeyColumn(name, "int64", values.cast(pa.int64()))
        except pa.ArrowInvalid:
            raise InputError(f"view '{view}': join key '{name}' has values beyond int64") from None
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return KeyColumn(name, "string", values.cast(pa.string()))
    raise InputError(f"view '{view}': join key '{name}' must be int64 or string, got {kind}")


def _event_times(view: str, values: pa.Array) -> pa.Array:
    if not pa.types.is_timestamp(values.type):
        raise InputError(
            f"view '{view}': column '{EVENT_TIMESTAMP}' must be a timestamp, got {values.type}"
        )
    if values.null_count:
        raise InputError(
            f"view '{view}': column '{EVENT_TIMESTAMP}' has {values.null_count} null values"
        )
    return _timestamps_to_micros(values)


def _created_times(view: str, values: pa.Array) -> pa.Array:
    if pa.types.is_null(values.type):
        return pa.nulls(len(values), pa.int64())
    if not pa.types.is_timestamp(values.type):
        raise InputError(
            f"view '{view}': column '{CREATED_TIMESTAMP}' must be a timestamp, got {values.type}"
        )
    return _timestamps_to_micros(values)


def _timestamps_to_micros(values: pa.Array) -> pa.Array:
    # Arrow stores UTC instants whatever the tz; a naive column is read as UTC (rule 1).
    # Sub-microsecond digits are dropped (`safe=False`): the stores keep microseconds.
    micros = pc.cast(values, pa.timestamp("us", tz=values.type.tz), safe=False)
    return micros.cast(pa.int64())


def scalar_dtype(kind: pa.DataType) -> str | None:
    """The Almanac dtype that carries Arrow type `kind`, or None if there is none."""
    if pa.types.is_boolean(kind):
        return "bool"
    if pa.types.is_integer(kind):
        small = kind.bit_width < 32 or (kind.bit_width == 32 and pa.types.is_signed_integer(kind))
        return "int32" if small else "int64"
    if pa.types.is_floating(kind):
        return "float32" if kind.bit_width <= 32 else "float64"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "string"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return "bytes"
    if pa.types.is_fixed_size_binary(kind):
        return "bytes"
    if pa.types.is_timestamp(kind):
        return "timestamp"
    return None


_PHYSICAL = {
    "bool": pa.bool_(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bytes": pa.binary(),
}


def _feature_column(view: str, name: str, values: pa.Array) -> FeatureColumn:
    kind = values.type
    if pa.types.is_null(kind):
        return FeatureColumn(name, NULL_DTYPE, values)
    dtype = scalar_dtype(kind)
    try:
        if dtype == "timestamp":
            return FeatureColumn(name, dtype, _timestamps_to_micros(values))
        if dtype is not None:
            return FeatureColumn(name, dtype, values.cast(_PHYSICAL[dtype]))
        is_list = pa.types.is_list(kind) or pa.types.is_large_list(kind)
        if is_list or pa.types.is_fixed_size_list(kind):
            item = scalar_dtype(kind.value_type)
            if item is not None:
                item_type = pa.int64() if item == "timestamp" else _PHYSICAL[item]
                if item == "timestamp":
                    values = values.cast(
                        pa.list_(pa.timestamp("us", kind.value_type.tz)), safe=False
                    )
                return FeatureColumn(name, f"list<{item}>", values.cast(pa.list_(item_type)))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise InputError(
            f"view '{view}': feature '{name}' ({kind}) cannot be stored: {error}"
        ) from None
    raise InputError(f"view '{view}': feature '{name}' has type {kind}, which no dtype carries")
