"""Aggregation views: windowed aggregations over event rows, exact at any timestamp.

```python
customer_spend = AggregationView(
    name="customer_spend", entities=[customer], source=transactions,
    aggregations=[
        Aggregation(column="amount", function="sum", windows=["1h", "7d", "30d"]),
        Aggregation(function="count", windows=["1h", "7d"]),
    ],
)  # features: customer_spend:amount_sum_1h, ..., customer_spend:count_7d
```

Semantics (the same offline and online, see DESIGN.md):

* The value at time T aggregates the entity's events with event time in ``(T - W, T]``.
  Every source row is an event (rows with the same event time all count; the source's
  created-time column plays no part).
* With ``tile="1h"`` the far edge is rounded down to a tile boundary (boundaries are
  multiples of the tile since the Unix epoch, UTC): the window is
  ``(floor_tile(T - W), T]``, up to one tile wider. Online reads then merge whole tiles
  instead of single event times. Without `tile` (the default) windows are exact.
* Nulls in the aggregated column are ignored. An empty window gives count 0 and null for
  everything else; stddev/variance are the sample ones (null below two values); `last`
  is the value of the latest event with a non-null value (ties: the greatest value);
  `count_distinct` is exact.

The feature names are ``<column>_<function>_<window>`` (``count_<window>`` for a row
count), or ``<name>_<window>`` when an aggregation has a `name`. The types of the
aggregated source columns may be declared in `columns`; a column not declared there is
read as float64 (count and count_distinct read it as it is).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar, NamedTuple, cast

from pydantic import Field as PydanticField
from pydantic import field_validator

from almanac.definitions.base import Definition, Duration, Name, format_duration
from almanac.definitions.feature_view import FeatureView, Field
from almanac.definitions.types import (
    NUMERIC_DTYPES,
    SCALAR_DTYPES,
    Float64,
    Int64,
    String,
    Timestamp,
)
from almanac.errors import DefinitionError

FUNCTIONS = ("count", "sum", "mean", "min", "max", "stddev", "variance", "last", "count_distinct")
_NUMERIC_ONLY = ("sum", "mean", "stddev", "variance")
_ORDERED = (*NUMERIC_DTYPES, Timestamp, String)  # what min and max compare
# The inputs each function accepts (a column's declared dtype).
_ACCEPTS = {
    "count": SCALAR_DTYPES,
    "count_distinct": SCALAR_DTYPES,
    "sum": NUMERIC_DTYPES,
    "mean": NUMERIC_DTYPES,
    "stddev": NUMERIC_DTYPES,
    "variance": NUMERIC_DTYPES,
    "min": _ORDERED,
    "max": _ORDERED,
    "last": tuple(d for d in SCALAR_DTYPES if d != "bytes"),
}


class Aggregation(Definition):
    """One function of one column over one or more windows."""

    kind: ClassVar[str] = "aggregation"

    function: str
    windows: list[Duration]
    column: Name | None = None
    name: Name | None = None  # prefix of the feature names instead of <column>_<function>

    @field_validator("function", mode="before")
    @classmethod
    def _function(cls, value: Any) -> str:
        if value not in FUNCTIONS:
            raise ValueError(f"unknown function {value!r} (known: {', '.join(FUNCTIONS)})")
        return cast(str, value)

    @field_validator("windows")
    @classmethod
    def _windows(cls, windows: list[timedelta]) -> list[timedelta]:
        if not windows:
            raise ValueError("an aggregation needs at least one window")
        for window in windows:
            if window <= timedelta(0):
                raise ValueError(f"a window must be a positive duration, got {format_duration(window)}")  # fmt: skip
        if len(set(windows)) != len(windows):
            raise ValueError("a window is listed twice")
        return windows

    @property
    def prefix(self) -> str:
        if self.name is not None:
            return self.name
        return f"{self.column}_{self.function}" if self.column else self.function


class AggregateFeature(NamedTuple):
    """One output feature: which aggregation, which window, which input column."""

    name: str
    function: str
    column: str | None
    window: timedelta
    dtype: str


class AggregationView(FeatureView):
    """Windowed aggregations of one entity's events; see the module docstring.

    Its `schema` (the features) is derived from `aggregations` and is not stored.
    """

    kind: ClassVar[str] = "aggregation_view"

    schema_: list[Field] = PydanticField(default_factory=list, alias="schema", exclude=True)
    ttl: Duration | None = PydanticField(default=None, exclude=True)
    aggregations: list[Aggregation]
    columns: list[Field] = []
    tile: Duration | None = None

    def __init__(self, /, **data: Any) -> None:
        label = f"AggregationView {data.get('name')!r}"
        if "schema" in data or "schema_" in data:
            raise DefinitionError(
                f"{label}: field 'schema': the features are derived from aggregations; "
                "declare the types of source columns in 'columns'"
            )
        if data.get("ttl") is not None:
            raise DefinitionError(
                f"{label}: field 'ttl': an aggregation view has no ttl (its windows bound "
                "which events count)"
            )
        data.pop("ttl", None)
        aggregations = [_aggregation(a, label, i) for i, a in enumerate(data.get("aggregations") or [])]  # fmt: skip
        columns = [_field(c, label, i) for i, c in enumerate(data.get("columns") or [])]
        tile = _tile(data.get("tile"), label)
        data["schema"] = [
            Field(f.name, f.dtype) for f in derive_features(aggregations, columns, tile, label)
        ]
        data["aggregations"], data["columns"] = aggregations, columns
        super().__init__(**data)

    @field_validator("aggregations")
    @classmethod
    def _aggregations(cls, aggregations: list[Aggregation]) -> list[Aggregation]:
        if not aggregations:
            raise ValueError("an aggregation view needs at least one aggregation")
        return aggregations

    @property
    def aggregate_features(self) -> list[AggregateFeature]:
        return derive_features(self.aggregations, self.columns, self.tile, repr(self))

    @property
    def max_window(self) -> timedelta:
        return max(w for a in self.aggregations for w in a.windows)

    @property
    def reach(self) -> timedelta:
        """How far back from a time T its windows can look: the longest window, plus a
        tile when the far edge is rounded down to tiles."""
        return self.max_window + (self.tile or timedelta(0))

    def input_dtype(self, column: str) -> str | None:
        """The dtype a column is read as (None: as the source has it)."""
        return input_dtypes(self.aggregations, self.columns).get(column)


def input_dtypes(aggregations: list[Aggregation], columns: list[Field]) -> dict[str, str | None]:
    """Per aggregated column, the dtype it is read as: declared, else float64 when a
    function needs its values, else None (count and count_distinct take it as it is)."""
    declared = {c.name: c.dtype for c in columns}
    out: dict[str, str | None] = {}
    for aggregation in aggregations:
        column = aggregation.column
        if column is None:
            continue
        if column in declared:
            out[column] = declared[column]
        elif aggregation.function not in ("count", "count_distinct"):
            out[column] = Float64
        else:
            out.setdefault(column, None)
    return out


def output_dtype(function: str, dtype: str | None) -> str:
    if function in ("count", "count_distinct"):
        return Int64
    if function == "sum":
        return Int64 if dtype in ("int32", "int64") else Float64
    if function in ("mean", "stddev", "variance"):
        return Float64
    return dtype or Float64  # min, max, last keep the input's type


def derive_features(
    aggregations: list[Aggregation], columns: list[Field], tile: timedelta | None, label: str
) -> list[AggregateFeature]:
    """The view's features, checking columns, types and name clashes."""
    declared = {c.name: c.dtype for c in columns}
    dtypes = input_dtypes(aggregations, columns)
    features: list[AggregateFeature] = []
    seen: set[str] = set()
    for i, aggregation in enumerate(aggregations):
        where = f"{label}: field 'aggregations[{i}]'"
        function, column = aggregation.function, aggregation.column
        if column is None and function != "count":
            raise DefinitionError(f"{where}: function '{function}' needs a column")
        if column is not None and declared and column not in declared:
            raise DefinitionError(
                f"{where}: no column '{column}' in the declared source columns "
                f"({', '.join(declared)})"
            )
        dtype = dtypes.get(column) if column else None
        if column is not None and column in declared and dtype not in _ACCEPTS[function]:
            need = "a numeric" if function in _NUMERIC_ONLY else "a scalar"
            if function in ("min", "max"):
                need = "a numeric, timestamp or string"
            raise DefinitionError(
                f"{where}: '{function}' needs {need} column; '{column}' is {dtype}"
            )
        for window in aggregation.windows:
            if tile is not None and window < tile:
                raise DefinitionError(
                    f"{where}: window {format_duration(window)} is shorter than the tile "
                    f"{format_duration(tile)}"
                )
            name = f"{aggregation.prefix}_{format_duration(window)}"
            if name in seen:
                raise DefinitionError(
                    f"{where}: duplicate feature name '{name}' (give one of the aggregations a name)"
                )
            if len(name) > 63:
                raise DefinitionError(f"{where}: feature name '{name}' is too long; give it a shorter name")  # fmt: skip
            seen.add(name)
            features.append(
                AggregateFeature(name, function, column, window, output_dtype(function, dtype))
            )
    return features


def _aggregation(value: Any, label: str, index: int) -> Aggregation:
    try:
        if isinstance(value, Aggregation):
            return value
        if isinstance(value, dict):
            return Aggregation(**value)
    except DefinitionError as error:
        message = str(error).removeprefix("Aggregation: ")
        raise DefinitionError(f"{label}: field 'aggregations[{index}]': {message}") from None
    raise DefinitionError(
        f"{label}: field 'aggregations[{index}]': expected an Aggregation, got {type(value).__name__}"
    )


def _field(value: Any, label: str, index: int) -> Field:
    try:
        if isinstance(value, Field):
            return value
        if isinstance(value, dict):
            return Field(**value)
    except DefinitionError as error:
        raise DefinitionError(f"{label}: field 'columns[{index}]': {error}") from None
    raise DefinitionError(
        f"{label}: field 'columns[{index}]': expected a Field, got {type(value).__name__}"
    )


def _tile(value: Any, label: str) -> timedelta | None:
    from almanac.definitions.base import parse_duration

    if value is None:
        return None
    try:
        tile = parse_duration(value)
    except ValueError as error:
        raise DefinitionError(f"{label}: field 'tile': {error}") from None
    if tile <= timedelta(0):
        raise DefinitionError(f"{label}: field 'tile': must be a positive duration")
    return tile
