"""Statistics of a view's features over a batch of rows, vectorized (Arrow compute and
NumPy over whole columns: no Python loop per row).

Per feature: rows, nulls and the null rate, distinct values (exact), and by kind —
numbers: min, max, mean, standard deviation (sample), quantiles and a 10-bin
equal-width histogram; text and booleans: the 10 most frequent values; timestamps: min
and max; lists: the same numbers over list lengths.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
_QUANTILE_NAMES = [f"p{round(q * 100):02d}" for q in QUANTILES]
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
    """Statistics of each column named in `features` (name → declared dtype), the
    columns side by side on the machine's cores (NumPy and Arrow release the GIL)."""
    items = list(features.items())
    with ThreadPoolExecutor(min(len(items), os.cpu_count() or 1) or 1) as pool:
        return list(pool.map(lambda item: _one(table.column(item[0]), *item), items))


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
    if numeric(present):
        # One sort gives the distinct count (exact: hashing ten million floats is several
        # times slower), the extremes and the quantiles (NumPy's linear interpolation).
        ordered = np.sort(pc.cast(present, pa.float64(), safe=False).to_numpy())
        nans = int(np.isnan(ordered).sum())  # sorted last; a NaN (file data) is missing
        if nans:
            ordered = ordered[: len(ordered) - nans]
            stats.nulls += nans
            stats.null_rate = stats.nulls / rows
        if len(ordered) == 0:
            stats.distinct = 0
            return stats
        stats.distinct = int(np.count_nonzero(np.diff(ordered))) + 1
        stats.min, stats.max = float(ordered[0]), float(ordered[-1])
        stats.mean = float(ordered.mean())
        stats.stddev = float(ordered.std(ddof=1)) if len(ordered) > 1 else 0.0
        stats.quantiles = dict(zip(_QUANTILE_NAMES, _sorted_quantiles(ordered), strict=True))
        try:
            counts, edges = np.histogram(ordered, bins=BINS)
        except ValueError:  # a range too narrow for 10 finite bins (e.g. 0 and 5e-324)
            counts, edges = np.array([len(ordered)]), np.array([ordered[0], ordered[-1]])
        stats.histogram = {"edges": edges.tolist(), "counts": counts.astype(float).tolist()}
        return stats
    stats.distinct = pc.count_distinct(present).as_py()
    if pa.types.is_timestamp(present.type) or pa.types.is_date(present.type):
        bounds = pc.min_max(present)
        stats.min, stats.max = bounds["min"].as_py(), bounds["max"].as_py()
    else:
        stats.top = top_values(present)
    return stats


def _sorted_quantiles(ordered: np.ndarray) -> list[float]:
    """Quantiles of sorted values by linear interpolation between closest ranks (what
    `numpy.quantile` computes, without partitioning again)."""
    positions = np.asarray(QUANTILES) * (len(ordered) - 1)
    low = np.floor(positions).astype(np.int64)
    high = np.minimum(low + 1, len(ordered) - 1)
    fraction = positions - low
    values = ordered[low] + fraction * (ordered[high] - ordered[low])
    return [float(v) for v in values]


def top_values(present: pa.ChunkedArray | pa.Array, limit: int = TOP) -> list[tuple[Any, int]]:
    """The most frequent values with their counts, most frequent first (ties by value)."""
    counts = pc.value_counts(present)
    table = pa.table({"v": counts.field("values"), "n": counts.field("counts")})
    table = table.sort_by([("n", "descending"), ("v", "ascending")]).slice(0, limit)
    return list(zip(table.column("v").to_pylist(), table.column("n").to_pylist(), strict=True))
