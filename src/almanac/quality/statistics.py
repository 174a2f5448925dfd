"""Statistics of a view's features over a batch of rows, vectorized (Arrow compute and
NumPy over whole columns: no Python loop per row).

Per feature: rows, nulls and the null rate, distinct values (exact), and by kind —
numbers: min, max, mean, standard deviation (sample), quantiles and a 10-bin
equal-width histogram; text and booleans: the 10 most frequent values; timestamps: min
and max; lists: the same numbers over list lengths.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
BINS = 10
TOP = 10


@dataclass
class FeatureStatistics:
    feature: str
    dtype: str
    rows: int
    nulls: int
    null_rate: float
    distinct: int | None = None
    min: Any = None
    max: Any = None
    mean: float | None = None
    stddev: float | None = None
    quantiles: dict[str, float] = field(default_factory=dict)
    histogram: dict[str, list[float]] = field(default_factory=dict)  # edges, counts
    top: list[tuple[Any, int]] = field(default_factory=list)
    of: str = "values"  # "lengths" for a list feature

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe(table: pa.Table, features: dict[str, str]) -> list[FeatureStatistics]:
    """Statistics of each column named in `features` (name → declared dtype)."""
    return [_one(table.column(name), name, dtype) for name, dtype in features.items()]


def numeric(column: pa.ChunkedArray | pa.Array) -> bool:
    kind = column.type
    return bool(
        pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
    )


def _one(column: pa.ChunkedArray, name: str, dtype: str) -> FeatureStatistics:
    rows, nulls = len(column), column.null_count
    stats = FeatureStatistics(name, dtype, rows, nulls, nulls / rows if rows else 0.0)
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        column = pc.list_value_length(column)
        stats.of = "lengths"
    present = column.drop_null()
    if len(present) == 0:
        stats.distinct = 0
        return stats
    stats.distinct = pc.count_distinct(present).as_py()
    if numeric(present):
        values = present.cast(pa.float64()).to_numpy()
        stats.min, stats.max = float(values.min()), float(values.max())
        stats.mean = float(values.mean())
        stats.stddev = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        points = np.quantile(values, QUANTILES)
        stats.quantiles = {f"p{round(q * 100):02d}": float(v) for q, v in zip(QUANTILES, points, strict=True)}  # fmt: skip
        counts, edges = np.histogram(values, bins=BINS)
        stats.histogram = {"edges": edges.tolist(), "counts": counts.astype(float).tolist()}
    elif pa.types.is_timestamp(present.type) or pa.types.is_date(present.type):
        bounds = pc.min_max(present)
        stats.min, stats.max = bounds["min"].as_py(), bounds["max"].as_py()
    else:
        stats.top = top_values(present)
    return stats


def top_values(present: pa.ChunkedArray | pa.Array, limit: int = TOP) -> list[tuple[Any, int]]:
    """The most frequent values with their counts, most frequent first (ties by value)."""
    counts = pc.value_counts(present)
    table = pa.table({"v": counts.field("values"), "n": counts.field("counts")})
    table = table.sort_by([("n", "descending"), ("v", "ascending")]).slice(0, limit)
    return list(zip(table.column("v").to_pylist(), table.column("n").to_pylist(), strict=True))
