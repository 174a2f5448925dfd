"""On-demand features online: request data in, computed features out.

`get_online_features` reads the stored features an on-demand view needs in its one round
trip (under working names), then `finish` computes the views with the same plan and code
as training sets (`almanac.transforms.ondemand`) and returns the response the caller
asked for: the requested features only, in order, on-demand ones PRESENT (or NULL_VALUE)
with no event time of their own — but write-time views, which carry the event time of the
row they were computed from.

Request fields come from `request_data` (``{"amount": [129.0, 15.5]}``: one value per
entity row; a single value is used for every row) or, as Feast's clients send them,
from the entity rows themselves. A missing or mistyped field is an `InputError` naming
it, raised before the store is read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from almanac.definitions.types import arrow_type
from almanac.errors import InputError
from almanac.online.response import NULL_VALUE, PRESENT, FeatureStatus, OnlineResponse
from almanac.semantics.times import to_utc
from almanac.transforms.ondemand import (
    REQUEST,
    ROWS_AS_LISTS,
    OnDemandPlan,
    compute,
    compute_rows,
    null_row,
    working_name,
)

_INTS = ("int32", "int64")
_FLOATS = ("float32", "float64")


def request_rows(
    plan: OnDemandPlan,
    keys: Mapping[str, Sequence[Any]],
    entity_rows: Any,
    request_data: Mapping[str, Any] | None,
) -> tuple[int, dict[str, Sequence[Any]]]:
    """How many rows the request has, and the request fields found in its entity rows
    (a list of dicts or a dict of columns)."""
    given: dict[str, Sequence[Any]] = {}
    if isinstance(entity_rows, Mapping):
        given = {f: entity_rows[f] for f in plan.request if f in entity_rows}
    elif isinstance(entity_rows, Sequence) and entity_rows:
        for field in plan.request:
            if all(isinstance(row, Mapping) and field in row for row in entity_rows):
                given[field] = [row[field] for row in entity_rows]
    for column in keys.values():
        return len(column), given
    if isinstance(entity_rows, Sequence) and entity_rows:
        return len(entity_rows), given
    for column in (*given.values(), *(request_data or {}).values()):
        if isinstance(column, Sequence) and not isinstance(column, str | bytes):
            return len(column), given
    return 1, given


def request_columns(
    plan: OnDemandPlan,
    entity_columns: Mapping[str, Sequence[Any]] | None,
    request_data: Mapping[str, Any] | None,
    rows: int,
) -> dict[str, list[Any]]:
    """The request fields the plan needs, checked and typed as Arrow would give them back
    (`to_pylist`), by working name."""
    out: dict[str, list[Any]] = {}
    for field, dtype in plan.request.items():
        if request_data is not None and field in request_data:
            values = request_data[field]
        elif entity_columns is not None and field in entity_columns:
            values = entity_columns[field]
        else:
            raise InputError(
                f"request field '{field}' is missing (on-demand view "
                f"'{plan.request_users[field]}' needs it): pass request_data={{'{field}': "
                "[...]}, one value per entity row"
            )
        out[working_name(REQUEST, field)] = _typed(field, dtype, _aligned(field, values, rows))
    return out


def _aligned(field: str, values: Any, rows: int) -> list[Any]:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        if hasattr(values, "tolist") and getattr(values, "ndim", False):  # numpy, pandas
            values = values.tolist()
        else:
            return [values] * rows  # one value: the same for every row
    if len(values) != rows:
        raise InputError(
            f"request field '{field}' has {len(values)} values for {rows} entity rows; give "
            "one per row (or a single value for all)"
        )
    return list(values)


def _typed(field: str, dtype: str, values: list[Any]) -> list[Any]:
    """Values of `dtype`, checked one by one (a request has a handful): no silent
    coercion of text to numbers or of floats to integers."""
    if dtype == "timestamp":
        return [None if v is None else to_utc(v, f"request field '{field}'") for v in values]
    for row, value in enumerate(values):
        if value is not None and not _fits(dtype, value):
            raise InputError(
                f"request field '{field}' must be {dtype}, got {type(value).__name__} "
                f"{value!r} in row {row}"
            )
    if dtype == "float64":
        return [None if v is None else float(v) for v in values]
    if dtype in ("bool", "string", "bytes"):
        return values
    try:  # integers (range), float32 (rounding), lists: as Arrow stores them
        typed: list[Any] = pa.array(values, type=arrow_type(dtype)).to_pylist()
        return typed
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as error:
        raise InputError(f"request field '{field}' must be {dtype}: {error}") from None


def _fits(dtype: str, value: Any) -> bool:
    if isinstance(value, bool):
        return dtype == "bool"
    if dtype in _INTS:
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if dtype in _FLOATS:
        return isinstance(value, int | float)
    if dtype == "string":
        return isinstance(value, str)
    if dtype == "bytes":
        return isinstance(value, bytes)
    return True  # lists: Arrow checks the items


def _stored_values(
    plan: OnDemandPlan, base: OnlineResponse, repo_path: Path | None
) -> dict[str, list[Any]]:
    """The values of stored (write-time) views by working name: the store's, and where
    it has no row within the source view's TTL, the view's value for a row of nulls."""
    out: dict[str, list[Any]] = {}
    for step in plan.steps:
        if not step.stored:
            continue
        fallback = None
        for feature in step.outputs:
            work = step.working(feature.name)
            values, statuses = base.values[work], base.statuses[work]
            if all(s is PRESENT or s is NULL_VALUE for s in statuses):
                out[work] = values
                continue
            fallback = fallback or null_row(step, repo_path)
            fill = fallback[feature.name]
            out[work] = [
                fill if s is not PRESENT and s is not NULL_VALUE else v
                for v, s in zip(values, statuses, strict=True)
            ]
    return out


def finish(
    plan: OnDemandPlan,
    base: OnlineResponse,
    request: dict[str, list[Any]],
    repo_path: Path | None,
) -> OnlineResponse:
    """The response the caller asked for, from the stored features read under working
    names (`base`) and the request fields. A few rows, or any number when only
    plain-Python functions run, are computed on Python lists (`compute_rows`: no Arrow
    array to build per request); more on Arrow columns."""
    rows = len(request[next(iter(request))]) if request else len(base)
    stored = _stored_values(plan, base, repo_path)
    columns: dict[str, Any] = dict(request)
    dtypes = {working_name(REQUEST, name): dtype for name, dtype in plan.request.items()}
    for ref in plan.inputs:  # only what a step reads
        work = ref.output_name
        columns[work] = stored[work] if work in stored else base.values[work]
        dtypes[ref.output_name] = ref.field.dtype
    # Lists for a few rows, or when only plain-Python functions run (they take lists).
    if plan.row_wise and (rows <= ROWS_AS_LISTS or not any(s.expressions for s in plan.steps)):
        compute_rows(plan, columns, rows, repo_path=repo_path, dtypes=dtypes)
    else:
        arrays = {name: pa.array(column, type=arrow_type(dtypes[name])) for name, column in columns.items()}  # fmt: skip
        columns = compute(plan, arrays, rows, repo_path=repo_path, dtypes=dtypes)
    values: dict[str, list[Any]] = {}
    statuses: dict[str, list[FeatureStatus]] = {}
    stamps: dict[str, Sequence[datetime | int | None]] = {}
    out_types = {key: base.dtypes[key] for key in base.join_keys if key in base.dtypes}
    no_times: list[None] = [None] * rows
    for output, work, dtype in plan.outputs:
        if work in stored:  # as if computed now; the time of the row it was computed from
            values[output] = stored[work]
            statuses[output] = [NULL_VALUE if v is None else PRESENT for v in stored[work]]
            found_at = zip(base._event_timestamps[work], base.statuses[work], strict=True)
            stamps[output] = [t if s is PRESENT or s is NULL_VALUE else None for t, s in found_at]
        elif work in base.values:
            values[output] = base.values[work]
            statuses[output] = base.statuses[work]
            stamps[output] = base._event_timestamps[work]
        else:
            found = columns[work]
            column = found if isinstance(found, list) else found.to_pylist()
            values[output] = column
            statuses[output] = [NULL_VALUE if v is None else PRESENT for v in column]
            stamps[output] = no_times
        out_types[output] = dtype
    response = OnlineResponse(base.join_keys, values, statuses, stamps, out_types)
    response.read_time = base.read_time
    return response
