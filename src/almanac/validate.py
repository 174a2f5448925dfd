"""Checking rows against their declared types: one set of rules however rows come in.

A batch reaches a store by `FeatureStore.push` (online, offline or both) or by
`write_to_offline_store`; both check it with `check_batch`, so the same rows get the
same answer either way. The entity rows of a training set (spines) use the same join key
and time rules, except that they may hold nulls, keep their timestamp precision and
have text times parsed by DuckDB (`offline.frames.utc_timestamps`).

The rules (a broken one is an InputError naming the batch, the column and the problem):

* join keys: present; an integer column (that fits int64) for an int64 key, text for a
  string key; no nulls in a batch (spines may have them);
* times: timestamps of any unit or zone (naive ones are UTC), dates (midnight UTC) or
  ISO-8601 text; batches keep microseconds, as the stores do (finer digits are dropped);
  the event time has no nulls;
* features (and the columns an aggregation reads): present, and castable to the
  declared dtype without loss. Text is not a number (Arrow would turn "12" into 12) and
  a number is not text (Arrow would turn 12 into "12"): both are wrong types, as are
  timestamps given as text inside lists.

Columns nobody declared are ignored. Nothing here writes: callers write only what this
module returned, so a refused batch leaves every store as it was (rule 7).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from almanac.definitions.types import Bytes, Int64, String, Timestamp, arrow_type
from almanac.errors import InputError

UTC_US = pa.timestamp("us", tz="UTC")
ISO_EXAMPLE = "e.g. '2024-05-01T12:00:00Z'"

# Text in, UTC timestamps out: null where a value does not parse (the caller reports it).
TextParser = Callable[[pa.ChunkedArray], pa.ChunkedArray]


class Declared(NamedTuple):
    """A column's declared dtype, and who declares it (for messages)."""

    dtype: str
    owner: str  # "feature view 'user_stats'"


def check_batch(
    table: pa.Table,
    what: str,
    *,
    keys: Mapping[str, Declared],
    timestamp_field: str,
    created_field: str | None,
    columns: Mapping[str, Declared],
) -> pa.Table:
    """The batch as the stores keep it: the join keys, the event time (and the created
    time, when given) as UTC microseconds and every declared column in its dtype, in that
    order; InputError naming the first problem. `what` names the batch in messages."""
    out: dict[str, pa.ChunkedArray] = {}
    for key, declared in keys.items():
        out[key] = key_column(table, key, declared.dtype, what, declared.owner, nulls=False)
    out[timestamp_field] = time_column(table, timestamp_field, what, nulls=False)
    if created_field is not None and created_field in table.column_names:
        out[created_field] = time_column(table, created_field, what, nulls=True)
    missing = [name for name in columns if name not in table.column_names]
    if missing:
        raise InputError(
            f"{what}: missing column(s) "
            + ", ".join(f"'{name}' (of {columns[name].owner})" for name in missing)
            + f"; columns given: {', '.join(table.column_names) or 'none'}"
        )
    for name, declared in columns.items():
        out[name] = feature_column(table, name, declared.dtype, what)
    return pa.table(out)


# ---- join keys ---------------------------------------------------------------------------


def key_column(
    table: pa.Table, key: str, dtype: str, what: str, owner: str, *, nulls: bool
) -> pa.ChunkedArray:
    """The join key column as int64 or string (its declared `dtype`), or an InputError.
    `owner` declares the key ("feature view 'stats'"); `nulls` says whether nulls pass."""
    if key not in table.column_names:
        raise InputError(f"{what}: missing join key column '{key}' ({dtype}, of {owner})")
    column, kind = _plain(table.column(key))
    if dtype == Int64 and (pa.types.is_integer(kind) or pa.types.is_null(kind)):
        try:
            column = column.cast(pa.int64())
        except pa.ArrowInvalid:
            raise InputError(f"{what}: join key '{key}' has values that do not fit int64") from None
    elif dtype == String and (_is_text(kind) or pa.types.is_null(kind)):
        column = column.cast(pa.string())
    else:
        hint = "cast it, e.g. with .astype" if dtype == Int64 else "convert the keys to text"
        raise InputError(
            f"{what}: join key '{key}' has type {kind}, but {owner} declares it {dtype} ({hint})"
        )
    if not nulls and column.null_count:
        raise InputError(f"{what}: join key '{key}' has {column.null_count} null value(s)")
    return column


# ---- features ----------------------------------------------------------------------------


def feature_column(table: pa.Table, name: str, dtype: str, what: str) -> pa.ChunkedArray:
    """Column `name` cast to its declared `dtype` without loss, or an InputError."""
    column, kind = _plain(table.column(name))
    label = f"{what}: column '{name}'"
    if dtype == Timestamp:
        return utc_times(column, label)
    if _is_text(kind) and dtype not in (String, Bytes):
        # Arrow would parse "12" as 12; text where a number is declared is a wrong type.
        raise InputError(f"{label} holds text, but the feature is declared {dtype}")
    if dtype == String and not (_is_text(kind) or pa.types.is_null(kind)):
        # ...and would print 12 as "12": a number where text is declared is one too.
        raise InputError(f"{label} holds {kind}, but the feature is declared string")
    if dtype.startswith("list<timestamp") and pa.types.is_list(kind) and _is_text(kind.value_type):
        raise InputError(f"{label}: timestamps inside lists must be timestamps, not text")
    try:
        return column.cast(arrow_type(dtype))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
        raise InputError(
            f"{label} has type {kind}, which does not convert to the declared {dtype}: "
            f"{str(error).splitlines()[0]}"
        ) from None


# ---- times -------------------------------------------------------------------------------


def time_column(
    table: pa.Table,
    name: str,
    what: str,
    *,
    nulls: bool,
    parse_text: TextParser | None = None,
    keep_unit: bool = False,
) -> pa.ChunkedArray:
    """Column `name` as tz-aware UTC timestamps (see `utc_times`), or an InputError.
    `nulls` says whether nulls pass; `keep_unit` keeps the precision of timestamps given
    as timestamps (spines), else microseconds."""
    if name not in table.column_names:
        raise InputError(f"{what}: missing timestamp column '{name}'")
    values = utc_times(table.column(name), f"{what}: column '{name}'", parse_text, keep_unit)
    if not nulls and values.null_count:
        raise InputError(f"{what}: timestamp column '{name}' has {values.null_count} null value(s)")
    return values


def utc_times(
    values: pa.ChunkedArray | pa.Array,
    label: str,
    parse_text: TextParser | None = None,
    keep_unit: bool = False,
) -> pa.ChunkedArray:
    """Timestamps (any unit or zone; naive ones are UTC), dates (midnight UTC) or ISO-8601
    text (parsed by `parse_text`, default `parse_iso`) as tz-aware UTC timestamps, in
    microseconds unless `keep_unit` (then timestamps keep theirs and dates are seconds).
    `label` names the column in errors ("push to 'clicks': column 'at'")."""
    if isinstance(values, pa.Array):
        values = pa.chunked_array([values])
    values, kind = _plain(values)
    if pa.types.is_timestamp(kind):
        # Changing the zone is metadata only: Arrow stores instants as UTC already.
        out = values.cast(pa.timestamp(kind.unit, tz="UTC"))
    elif pa.types.is_date(kind):
        out = values.cast(pa.timestamp("s")).cast(pa.timestamp("s", tz="UTC"))
    elif pa.types.is_null(kind):
        out = values.cast(UTC_US)
    elif _is_text(kind):
        out = (parse_text or parse_iso)(values)
        bad = pc.and_(pc.is_null(out), pc.is_valid(values))
        if pc.any(bad).as_py():
            index = pc.index(bad, True).as_py()
            raise InputError(
                f"{label}: row {index}: {values[index].as_py()!r} is not an ISO-8601 "
                f"timestamp ({ISO_EXAMPLE})"
            )
    else:
        raise InputError(f"{label} has type {kind}; expected timestamps, dates or ISO-8601 text")
    return out if keep_unit or out.type == UTC_US else out.cast(UTC_US, safe=False)


def parse_iso(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """ISO-8601 text as timestamp[us, UTC] (naive text is UTC); null where a value does
    not parse. Arrow parses a column of one form at once; mixed forms go value by value."""
    for target in (UTC_US, pa.timestamp("us")):  # with an offset, then naive (UTC)
        try:
            return pc.cast(values, target, safe=False).cast(UTC_US)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return pa.chunked_array([pa.array([_iso(text) for text in values.to_pylist()], UTC_US)])


def _iso(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# ---- helpers -----------------------------------------------------------------------------


def _plain(column: pa.ChunkedArray) -> tuple[pa.ChunkedArray, pa.DataType]:
    """The column with dictionary encoding and string views undone, and its type."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    if pa.types.is_string_view(kind):
        column, kind = column.cast(pa.string()), pa.string()
    return column, kind


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)
