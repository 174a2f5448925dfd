"""Aggregation views online: per-entity tiles stored as one blob, merged at read time.

Materialization writes, per entity, one `bytes` feature named `TILES_FEATURE` through the
ordinary `OnlineStore.write_batch` (its event time is the entity's latest event, so the
store's monotonic rule keeps the newest blob), and `get_online_features` reads it with
`OnlineStore.read`. The blob (JSON, built by DuckDB in `almanac.offline.aggregations`)
holds partial aggregates per tile ``(b - tile, b]`` (without a tile, per distinct event
time ``b``):

    {"b": [tile ends, µs, ascending], "n": [rows],
     "c": {column: {"n": [non-null count], "s": [sum], "m": [mean], "q": [M2],
                    "lo": [min], "hi": [max], "l": [{"t": µs, "v": value}], "d": [[distinct]]}}}

At read time R a window W keeps the tiles with ``lower_W(R) < b`` and ``b - tile < R``
(the ones overlapping ``(lower_W(R), R]``), which selects exactly the events the offline
query selects at T = R: a 7-day count decays as events age out, without any write.

Tiles are mergeable partial aggregates, so a pushed event could update a blob in place
(add to tile ``ceil_tile(t)`` or insert one, raise the blob's event time): the layout is
designed for it; today blobs are rebuilt by materialization only.

Float results (sum, mean, stddev, variance of floats) are computed in another order than
the offline query, so they agree to rounding (about 1e-12 relative), not bit for bit.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson

from almanac.definitions.aggregation import AggregateFeature, AggregationView
from almanac.online.base import ViewRows
from almanac.online.codec import micros_to_datetime

TILES_FEATURE = "tiles"
TILES_DTYPE = "bytes"
_US = timedelta(microseconds=1)
_COUNTS = ("count", "count_distinct")


@dataclass(frozen=True)
class TilePlan:
    """How to turn one aggregation view's blobs into the requested features."""

    features: list[AggregateFeature]
    tile_us: int  # 1 without a tile: every event time is its own tile
    exact: bool
    windows: list[int]  # distinct windows in µs; features refer to them by index
    window_of: list[int]
    defaults: list[Any]  # the value when the store has no blob: count 0, else None

    @classmethod
    def of(cls, view: AggregationView, names: list[str]) -> TilePlan:
        by_name = {f.name: f for f in view.aggregate_features}
        features = [by_name[name] for name in names]
        windows = list(dict.fromkeys(f.window // _US for f in features))
        return cls(
            features=features,
            tile_us=1 if view.tile is None else view.tile // _US,
            exact=view.tile is None,
            windows=windows,
            window_of=[windows.index(f.window // _US) for f in features],
            defaults=[0 if f.function in _COUNTS else None for f in features],
        )


def evaluate(plan: TilePlan, rows: ViewRows, now_micros: int) -> ViewRows:
    """The requested features at `now_micros` from one `tiles` column read per entity."""
    blobs = rows.columns[0]
    columns: list[list[Any]] = [[] for _ in plan.features]
    for blob in blobs:
        if blob is None:
            for column, default in zip(columns, plan.defaults, strict=True):
                column.append(default)
            continue
        values = values_at(plan, decode(blob), now_micros)
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return ViewRows(rows.event_times, columns)


def decode(blob: bytes) -> dict[str, Any]:
    try:
        return orjson.loads(blob)
    except orjson.JSONDecodeError:  # NaN or Infinity among the values: JSON5-ish tokens
        return json.loads(blob)


def values_at(plan: TilePlan, tiles: dict[str, Any], now: int) -> list[Any]:
    """Each feature's value over the tiles overlapping its window ending at `now`."""
    ends = tiles["b"]
    g = plan.tile_us
    # Tiles with b - g < now, i.e. b < now + g (b <= now without a tile).
    stop = bisect_left(ends, now + g)
    slices = []
    for window in plan.windows:
        edge = now - window
        if not plan.exact:
            edge -= edge % g  # Python's % is a floor modulo: right for times before 1970 too
        slices.append((bisect_right(ends, edge), stop))
    columns = tiles.get("c", {})
    out = []
    for feature, index in zip(plan.features, plan.window_of, strict=True):
        start, end = slices[index]
        if feature.column is None:
            out.append(sum(tiles["n"][start:end]))
            continue
        states = columns[feature.column]
        out.append(_FUNCTIONS[feature.function](states, start, end, feature.dtype))
    return out


def _count(states: dict[str, list[Any]], i: int, j: int, dtype: str) -> int:
    return sum(states["n"][i:j])


def _sum(states: dict[str, list[Any]], i: int, j: int, dtype: str) -> Any:
    if not sum(states["n"][i:j]):
        return None
    return sum(s for s in states["s"][i:j] if s is not None)


def _mean(states: dict[str, list[Any]], i: int, j: int, dtype: str) -> Any:
    count = sum(states["n"][i:j])
    if not count:
        return None
    return sum(s for s in states["s"][i:j] if s is not None) / count


def _moments(states: dict[str, list[Any]], i: int, j: int) -> tuple[int, float]:
    """Count and M2 of the union of tiles (Chan et al.'s pairwise update: stable)."""
    n, mean, m2 = 0, 0.0, 0.0
    for nb, mb, qb in zip(states["n"][i:j], states["m"][i:j], states["q"][i:j], strict=True):
        if not nb:
            continue
        if n == 0:
            n, mean, m2 = nb, mb, qb
            continue
        total = n + nb
        delta = mb - mean
        mean += delta * nb / total
        m2 += qb + delta * delta * n * nb / total
        n = total
    return n, m2


def _variance(states: dict[str, list[Any]], i: int, j: int, dtype: str) -> Any:
    n, m2 = _moments(states, i, j)
    return m2 / (n - 1) if n >= 2 else None


def _stddev(states: dict[str, list[Any]], i: int, j: int, dtype: str) -> Any:
    variance = _variance(states, i, j, dtype)
    return None if variance is None else math.sqrt(variance)


def _typed(value: Any, dtype: str) -> Any:
    if value is None:
        return None
    return micros_to_datetime(value) if dtype == "timestamp" else value


def _min(states: dict[str, list[Any]], i: int, j: int, dtype: str) -> Any:
    return _typed(min((v for v in states["lo"][i:j] if v is not None), default=None), dtype)


def _max(states: dict[str, list[Any]], i: int, j: int, dtype: str) -> Any:
    return _typed(max((v for v in states["hi"][i:j] if v is not None), default=None), dtype)


def _last(states: dict[str, list[Any]], i: int, j: int, dtype: str) -> Any:
    # Latest event time, then the greatest value (the offline query's struct order).
    best = max(
        ((item["t"], item["v"]) for item in states["l"][i:j] if item is not None), default=None
    )
    return None if best is None else _typed(best[1], dtype)


def _count_distinct(states: dict[str, list[Any]], i: int, j: int, dtype: str) -> int:
    seen: set[Any] = set()
    for values in states["d"][i:j]:
        if values:
            seen.update(values)
    return len(seen)


_FUNCTIONS: dict[str, Callable[[dict[str, list[Any]], int, int, str], Any]] = {
    "count": _count,
    "sum": _sum,
    "mean": _mean,
    "min": _min,
    "max": _max,
    "stddev": _stddev,
    "variance": _variance,
    "last": _last,
    "count_distinct": _count_distinct,
}
