"""Checking rows against their declared types: one set of rules however rows come in.

A batch reaches a store by `FeatureStore.push` (online, offline or both) or by
`write_to_offline_store`; both check it with `check_batch`, so the same rows get the
same answer either way. The entity rows of a training set (spines) use the same join key
and time rules, except that they may hold nulls, keep their timestamp precision, have
text times parsed by DuckDB (`offline.frames.utc_timestamps`) and may ask about any
time (a spine is a question; it stores nothing, so the range below does not apply).

The rules (a broken one is an InputError naming the batch, the column and the problem):

* join keys: present; an integer column (that fits int64) for an int64 key, text for a
  string key; no nulls in a batch (spines may have them);
* times: timestamps of any unit or zone (naive ones are UTC), dates (midnight UTC) or
  ISO-8601 text; batches keep microseconds, as the stores do (finer digits are dropped);
  the event time has no nulls. Event and created times lie between 1900-01-01 and now
  plus a few seconds of clock skew, timestamp features within what a Python datetime
  holds (years 1 to 9999): `almanac.semantics.times` has the bounds and why;
* features (and the columns an aggregation reads): present, and castable to the
  declared dtype without loss. Text is not a number (Arrow would turn "12" into 12) and
  a number is not text (Arrow would turn 12 into "12"): both are wrong types, as are
  timestamps given as text inside lists. Floats are finite: NaN and ±infinity (alone
  or inside lists) are refused, since JSON has no such values and a reader would get a
  null marked PRESENT; a missing value is null (pandas' NaN arrives as null already).

Columns nobody declared are ignored. Nothing here writes: callers write only what this
module returned, so a refused batch leaves every store as it was (rule 7).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from almanac.definitions.types import Bytes, Float32, Float64, Int64, String, Timestamp, arrow_type
from almanac.errors import InputError
from almanac.semantics.times import (
    FUTURE_TOLERANCE,
    MAX_TIMESTAMP,
    MIN_EVENT_TIME,
    MIN_TIMESTAMP,
    latest_event_time,
)

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
    now = datetime.now(UTC)
    out[timestamp_field] = time_column(table, timestamp_field, what, nulls=False)
    check_event_times(out[timestamp_field], f"{what}: column '{timestamp_field}'", now)
    if created_field is not None and created_field in table.column_names:
        out[created_field] = time_column(table, created_field, what, nulls=True)
        check_event_times(out[created_field], f"{what}: column '{created_field}'", now)
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
        values = utc_times(column, label)
        _check_range(values, MIN_TIMESTAMP, MAX_TIMESTAMP, label, _FEATURE_RANGE)
        return values
    if _is_text(kind) and dtype not in (String, Bytes):
        # Arrow would parse "12" as 12; text where a number is declared is a wrong type.
        raise InputError(f"{label} holds text, but the feature is declared {dtype}")
    if dtype == String and not (_is_text(kind) or pa.types.is_null(kind)):
        # ...and would print 12 as "12": a number where text is declared is one too.
        raise InputError(f"{label} holds {kind}, but the feature is declared string")
    if dtype.startswith("list<timestamp") and pa.types.is_list(kind) and _is_text(kind.value_type):
        raise InputError(f"{label}: timestamps inside lists must be timestamps, not text")
    try:
        out = column.cast(arrow_type(dtype))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
        raise InputError(
            f"{label} has type {kind}, which does not convert to the declared {dtype}: "
            f"{str(error).splitlines()[0]}"
        ) from None
    if dtype in (Float32, Float64):
        _check_finite(out, column, label, dtype)
    elif dtype in (f"list<{Float32}>", f"list<{Float64}>"):
        _check_finite(pc.list_flatten(out), column, label, dtype[5:-1], lists=out)
    elif dtype == f"list<{Timestamp}>":
        items = pc.list_flatten(out)
        _check_range(items, MIN_TIMESTAMP, MAX_TIMESTAMP, label, _FEATURE_RANGE, lists=out)
    return out


def _check_finite(
    values: pa.ChunkedArray,
    given: pa.ChunkedArray,
    label: str,
    dtype: str,
    lists: pa.ChunkedArray | None = None,
) -> None:
    """InputError naming the first NaN or infinite value of `values`: the cast column, or
    the items of the cast `lists`. `given` is the column as sent (for the message)."""
    finite = pc.is_finite(values)
    if pc.all(finite).as_py() is not False:  # all finite (or null), the common case
        return
    index = pc.index(finite, False).as_py()
    value = (given if lists is None else pc.list_flatten(given))[index].as_py()
    where = _where(index, lists)
    if isinstance(value, float) and math.isfinite(value):
        problem = f"{value!r} does not fit {dtype} (it would be {values[index].as_py()!r})"
    else:
        problem = f"{value!r} is not a finite number"
    raise InputError(
        f"{label}: {where}: {problem}; NaN and ±infinity are refused (send null for a "
        "missing value)"
    )


# ---- times -------------------------------------------------------------------------------

_FEATURE_RANGE = "the timestamps a feature can hold (years 1 to 9999, UTC)"


def check_event_times(values: pa.ChunkedArray, label: str, now: datetime) -> None:
    """InputError naming the first event (or created) time before `MIN_EVENT_TIME` or
    later than `now` plus the clock-skew tolerance (see `almanac.semantics.times`)."""
    early = pc.less(values, pa.scalar(MIN_EVENT_TIME, UTC_US))
    if pc.any(early).as_py():
        index = pc.index(early, True).as_py()
        raise InputError(
            f"{label}: row {index}: {_show(values, index)} is before "
            f"{_iso_text(MIN_EVENT_TIME)}, the earliest event time accepted"
        )
    late = pc.greater(values, pa.scalar(latest_event_time(now), UTC_US))
    if pc.any(late).as_py():
        index = pc.index(late, True).as_py()
        raise InputError(
            f"{label}: row {index}: {_show(values, index)} is in the future (now is "
            f"{_iso_text(now)}; times up to {FUTURE_TOLERANCE.total_seconds():g}s "
            "ahead are accepted): a row is recorded once it has happened"
        )


def _check_range(
    values: pa.ChunkedArray,
    low: datetime,
    high: datetime,
    label: str,
    accepted: str,
    lists: pa.ChunkedArray | None = None,
) -> None:
    """InputError naming the first of `values` (UTC microseconds; the items of `lists`,
    when given) outside [low, high]; `accepted` says what the range is."""
    outside = pc.or_(
        pc.less(values, pa.scalar(low, UTC_US)), pc.greater(values, pa.scalar(high, UTC_US))
    )
    if not pc.any(outside).as_py():
        return
    index = pc.index(outside, True).as_py()
    where = _where(index, lists)
    raise InputError(f"{label}: {where}: {_show(values, index)} is outside {accepted}")


def _where(index: int, lists: pa.ChunkedArray | None) -> str:
    """Where value `index` of a column is ("row 3"), or item `index` of the flattened
    `lists` ("row 3: an item")."""
    if lists is None:
        return f"row {index}"
    ends = np.cumsum(pc.list_value_length(lists).fill_null(0).to_numpy())
    return f"row {int(np.searchsorted(ends, index, side='right'))}: an item"


def _show(values: pa.ChunkedArray, index: int) -> str:
    """One timestamp as ISO text, even one a Python datetime cannot hold (year 0)."""
    text: str = pc.cast(values.slice(index, 1), pa.string())[0].as_py()
    return text.replace(" ", "T").replace(".000000", "")


def _iso_text(value: datetime) -> str:
    return value.isoformat(timespec="seconds").replace("+00:00", "Z")


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
    if keep_unit or out.type == UTC_US:
        return out
    if out.type.unit == "ns":  # finer digits are dropped; nanoseconds always fit
        return out.cast(UTC_US, safe=False)
    try:  # seconds or milliseconds: a value past microseconds' range would wrap around
        return out.cast(UTC_US)
    except pa.ArrowInvalid:
        raise InputError(
            f"{label} has times outside the range of microsecond timestamps "
            "(about 290,000 years either side of 1970)"
        ) from None


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
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))
