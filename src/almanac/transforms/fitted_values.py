"""The values fitted transforms read: Arrow columns as numbers or as categories.

The kinds parameters are kept as (`KINDS`), a column's kind, its values as float64 for
NumPy, its categories and their counts, and the quantile every transform computes the
same way. Shared by the kinds (`fitted_kinds`), `fit` and `apply` (`fitted`) and the
training-set fingerprint (`fingerprints`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from almanac.errors import InputError

# The kinds of values parameters are kept as (any integer as int64, a decimal as float64).
KINDS: dict[str, pa.DataType] = dict(
    int64=pa.int64(), float64=pa.float64(), string=pa.string(), bool=pa.bool_()
)
CATEGORY_KINDS = ("int64", "string", "bool")


def quantile(ascending: np.ndarray, p: float) -> float:
    """The p-quantile of sorted values by linear interpolation (NumPy's default method,
    written out so that it never changes): with h = (n - 1)·p and i = ⌊h⌋,
    ``x[i] + (h - i)·(x[i+1] - x[i])``."""
    h = (len(ascending) - 1) * p
    i = math.floor(h)
    low = float(ascending[i])
    return low if h == i else low + (h - i) * (float(ascending[i + 1]) - low)


def plain(column: pa.ChunkedArray) -> pa.Array:
    """One array of plain (not dictionary-encoded) values."""
    values = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return values.dictionary_decode() if pa.types.is_dictionary(values.type) else values


def floats(values: pa.Array, label: str) -> np.ndarray:
    """Numbers (or booleans) as float64, nulls as NaN; anything else is refused."""
    if kind_of(values.type) not in ("int64", "float64", "bool", None):
        raise InputError(f"{label}: needs numbers, but the column holds {values.type} values")
    if values.type != pa.float64():
        values = pc.cast(values, pa.float64(), safe=False)  # int64 beyond 2**53 rounds
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)


def present_floats(values: pa.Array, label: str) -> np.ndarray:
    x = floats(values, label)
    present: np.ndarray = x[~np.isnan(x)]
    if present.size == 0:
        raise InputError(f"{label}: the column has no values to fit on (all null)")
    return present


def kind_of(data_type: pa.DataType) -> str | None:
    """Which of `KINDS` a column's values are ("other" if none; None for only nulls)."""
    for kind, test in _KIND_TESTS:
        if test(data_type):
            return kind
    return None if pa.types.is_null(data_type) else "other"


_KIND_TESTS: list[tuple[str, Callable[[pa.DataType], bool]]] = [
    ("int64", pa.types.is_integer),
    ("float64", lambda t: pa.types.is_floating(t) or pa.types.is_decimal(t)),
    ("string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
    ("bool", pa.types.is_boolean),
]


def category_kind(values: pa.Array, label: str) -> str:
    """The kind of a categorical column: integers, strings or booleans."""
    kind = kind_of(values.type) or "string"  # only nulls: no category either way
    if kind not in CATEGORY_KINDS:
        hint = " (Bucketize a float feature first)" if kind == "float64" else ""
        raise InputError(
            f"{label}: takes strings, integers or booleans, not {values.type} values{hint}"
        )
    return kind


def as_kind(values: pa.Array, kind: str, label: str) -> pa.Array:
    """`values` as the kind the transform was fitted on; another kind is an error."""
    actual = kind_of(values.type)
    if actual is not None and actual != kind:
        raise InputError(f"{label}: was fitted on {kind} values, not {values.type}")
    return values if values.type == KINDS[kind] else pc.cast(values, KINDS[kind])


def value_counts(values: pa.Array) -> list[tuple[Any, int]]:
    """(value, count) of the values present (never null, never NaN)."""
    present = values.drop_null()
    if pa.types.is_floating(present.type):
        present = present.filter(pc.invert(pc.is_nan(present)))
    counted = pc.value_counts(present)
    values_, counts = counted.field("values").to_pylist(), counted.field("counts").to_pylist()
    return list(zip(values_, counts, strict=True))
