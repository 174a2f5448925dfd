"""Evaluating a view's expectations over a batch, vectorized (Arrow compute: no Python
loop per row). What each check means is in `almanac.definitions.expectations`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from almanac.definitions.expectations import Expectation
from almanac.errors import InputError

_EXAMPLES = 3
# The columns a quarantined row gains: the expectations it breaks, and when.
REASON = "__almanac_reason"
QUARANTINED_AT = "__almanac_quarantined_at"


@dataclass(frozen=True)
class Breach:
    """An expectation a batch does not meet."""

    expectation: Expectation
    failed: int  # rows that break it (row_count: every row of the batch)
    rows: int
    examples: list[Any]  # a few distinct values that break it
    mask: pa.ChunkedArray | None  # True for each row that breaks it; None: the whole batch

    def describe(self) -> str:
        label = self.expectation.label
        if self.mask is None:
            return f"{label}: the batch has {self.rows} rows"
        shown = ", ".join(repr(v) for v in self.examples)
        return f"{label}: {self.failed} of {self.rows} rows (e.g. {shown})"


def breaches(table: pa.Table, expectations: Sequence[Expectation], what: str) -> list[Breach]:
    """The expectations `table` breaks (its columns in their declared types)."""
    found = []
    for expectation in expectations:
        breach = _check(table, expectation, what)
        if breach is not None:
            found.append(breach)
    return found


def bad_rows(found: Sequence[Breach], rows: int) -> pa.ChunkedArray:
    """True for each row that breaks any of `found` (all rows for a batch-level one)."""
    mask = pa.chunked_array([pa.repeat(pa.scalar(False), rows)])
    for breach in found:
        if breach.mask is None:
            return pa.chunked_array([pa.repeat(pa.scalar(True), rows)])
        mask = pc.or_(mask, breach.mask)
    return mask


def reasons(found: Sequence[Breach], rows: int) -> pa.Array:
    """Per row, the labels of the expectations it breaks, joined by '; ' (null: none)."""
    joined: pa.Array = pa.nulls(rows, pa.string())
    for breach in found:
        hit = pa.repeat(pa.scalar(True), rows) if breach.mask is None else breach.mask.combine_chunks()  # fmt: skip
        label = pc.if_else(hit, pa.scalar(breach.expectation.label), pa.scalar(None, pa.string()))  # fmt: skip
        both = pc.binary_join_element_wise(joined, label, "; ")  # null where either is
        joined = pc.coalesce(both, joined, label)
    return joined


def _check(table: pa.Table, expectation: Expectation, what: str) -> Breach | None:
    rows = table.num_rows
    if expectation.check == "row_count":
        low, high = expectation.min, expectation.max
        if (low is not None and rows < low) or (high is not None and rows > high):
            return Breach(expectation, rows, rows, [], None)
        return None
    assert expectation.column is not None
    column = table.column(expectation.column)
    mask = _mask(column, expectation, what)
    failed = pc.sum(mask.cast(pa.int64())).as_py() or 0
    if not failed:
        return None
    examples = pc.unique(column.filter(mask)).slice(0, _EXAMPLES).to_pylist()
    return Breach(expectation, failed, rows, examples, mask)


def _mask(column: pa.ChunkedArray, expectation: Expectation, what: str) -> pa.ChunkedArray:
    """True where a row breaks the expectation (never null)."""
    label = f"{what}: {expectation.label}"
    if expectation.check == "not_null":
        return pc.is_null(column)
    if expectation.check == "between":
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
            raise InputError(f"{label}: between needs a numeric column, '{expectation.column}' is {column.type}")  # fmt: skip
        values = pc.cast(column, pa.float64(), safe=False)  # int64 beyond 2^53: nearest
        bad = pa.chunked_array([pa.repeat(pa.scalar(False), len(column))])
        if pa.types.is_floating(column.type):  # NaN is within no bounds
            bad = pc.is_nan(column).fill_null(False)
        if expectation.min is not None:
            bad = pc.or_(bad, pc.less(values, expectation.min).fill_null(False))
        if expectation.max is not None:
            bad = pc.or_(bad, pc.greater(values, expectation.max).fill_null(False))
        return bad
    if expectation.check == "one_of":
        try:
            allowed = pa.array(expectation.values).cast(column.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            raise InputError(f"{label}: the values are not {column.type}, the column's type") from None  # fmt: skip
        return pc.and_(pc.invert(pc.is_in(column, value_set=allowed)), pc.is_valid(column))
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise InputError(f"{label}: matches needs a text column, '{expectation.column}' is {column.type}")  # fmt: skip
    found = pc.match_substring_regex(column, expectation.pattern or "")
    return pc.invert(found).fill_null(False)
