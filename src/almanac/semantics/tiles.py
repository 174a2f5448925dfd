"""Aggregation views online: per-entity tiles stored as one blob, merged at read time.

Materialization writes, per entity, one `bytes` feature named `TILES_FEATURE` through the
ordinary `OnlineStore.write_batch` (its event time is the entity's latest event, so the
store's monotonic rule keeps the newest blob), and `get_online_features` reads it with
`OnlineStore.read`. The blob (JSON: built by the offline engine's SQL when materializing,
`almanac.offline.duckdb.aggregations`, and by `almanac.semantics.tile_build` for pushes)
holds partial aggregates per tile ``(b - tile, b]`` (without a tile, per distinct event
time ``b``):

    {"g": tile size µs (1: exact), "b": [tile ends, µs, ascending], "n": [rows],
     "c": {column: {"n": [non-null count], "s": [sum], "m": [mean], "q": [M2],
                    "lo": [min], "hi": [max], "l": [{"t": µs, "v": value}], "d": [[distinct]]}}}

At read time R a window W keeps the tiles with ``lower_W(R) < b`` and ``b - tile < R``
(the ones overlapping ``(lower_W(R), R]``), which selects exactly the events the offline
query selects at T = R: a 7-day count decays as events age out, without any write.

Tiles are mergeable partial aggregates, so pushed events update a blob in place
(`merge_blobs`): `tile_build.build_tiles` computes the tiles of the pushed rows alone, in
process (no engine query), and
each entity's stored blob and new tiles are combined tile by tile (equal ends merge
their states; others are inserted), under the online store's atomic read-modify-write
(`OnlineStore.merge_batch`). The blob's event time becomes the later of the two.
Tiles that no read at or after the blob's latest event can reach (ending at or before
``latest - longest window - tile``) are dropped, so a blob stays as small as
materialization makes it.

Online values are exact for reads at or after the blob's latest event (serving reads
"now"). A read before it (a `now=` replay) also counts, with a tile, the later events of
its own tile. A materialization writes blobs computed from a snapshot of the offline
data: a late event pushed while it runs may be overwritten for that entity until the
next materialization (which reads it back from the offline data).

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
import pyarrow as pa

from almanac.definitions.aggregation import AggregateFeature, AggregationView
from almanac.semantics.rows import EVENT_TIMESTAMP, ViewRows
from almanac.semantics.times import micros_to_datetime
from almanac.semantics.windows import window_lower

TILES_FEATURE = "tiles"
TILES_DTYPE = "bytes"
# The per-tile states each function needs: a blob's layout. Every builder writes these
# (the engine's SQL when materializing, `tile_build` for pushes); `merge_blobs` merges two
# blobs only if their layouts are equal.
STATES: dict[str, tuple[str, ...]] = {
    "count": ("n",),
    "sum": ("n", "s"),
    "mean": ("n", "s"),
    "stddev": ("n", "m", "q"),
    "variance": ("n", "m", "q"),
    "min": ("lo",),
    "max": ("hi",),
    "last": ("l",),
    "count_distinct": ("d",),
}
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
        try:
            values = values_at(plan, decode(blob), now_micros)
        except (KeyError, IndexError):
            # A blob written under an earlier definition of the view (`apply` clears
            # them, but a server with a cached catalog may write one meanwhile).
            values = plan.defaults
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return ViewRows(rows.event_times, columns)


def decode(blob: bytes) -> dict[str, Any]:
    tiles: dict[str, Any]
    try:
        tiles = orjson.loads(blob)
    except orjson.JSONDecodeError:  # NaN or Infinity among the values: JSON5-ish tokens
        tiles = json.loads(blob)
    return tiles


def values_at(plan: TilePlan, tiles: dict[str, Any], now: int) -> list[Any]:
    """Each feature's value over the tiles overlapping its window ending at `now`."""
    ends = tiles["b"]
    g = plan.tile_us
    # Tiles with b - g < now, i.e. b < now + g (b <= now without a tile).
    stop = bisect_left(ends, now + g)
    slices = []
    tile = None if plan.exact else g
    for window in plan.windows:
        slices.append((bisect_right(ends, window_lower(now, window, tile)), stop))
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
    if n < 2:
        return None
    if any(m is not None and not math.isfinite(m) for m in states["m"][i:j]):
        return math.nan  # an infinite value among them: inf - inf, as the offline query has
    return m2 / (n - 1)


def _stddev(states: dict[str, list[Any]], i: int, j: int, dtype: str) -> Any:
    variance = _variance(states, i, j, dtype)
    return None if variance is None else math.sqrt(variance)


def _typed(value: Any, dtype: str) -> Any:
    if value is None:
        return None
    return micros_to_datetime(value) if dtype == "timestamp" else value


def _nan_greatest(value: Any) -> Any:
    """A sort key ordering NaN above every number, as DuckDB (and so the offline query)
    does; Python's comparisons with NaN are all false."""
    return (
        (True, 0.0) if value != value else (False, value)
    )  # NaN is the one value unequal to itself


def _min(states: dict[str, list[Any]], i: int, j: int, dtype: str) -> Any:
    values = [v for v in states["lo"][i:j] if v is not None]
    return _typed(min(values, key=_nan_greatest, default=None), dtype)


def _max(states: dict[str, list[Any]], i: int, j: int, dtype: str) -> Any:
    values = [v for v in states["hi"][i:j] if v is not None]
    return _typed(max(values, key=_nan_greatest, default=None), dtype)


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


# ---- merging pushed tiles into stored ones --------------------------------------------------


# An online-only field of an aggregation view fed by pushes or a stream: when (µs since
# the epoch, the writer's clock) a push last merged into the entity's tiles. A
# materialization leaves tiles alone that a push merged after it began (or shortly
# before: the push's offline file may not have been in its snapshot yet).
MERGED_AT = "__almanac_merged_at"


def reach_micros(view: AggregationView) -> int:
    """How far back from a read time the longest window can look, tile included."""
    return view.reach // _US


def merge_blobs(stored: ViewRows, new: pa.Table, reach: int, now: int) -> pa.Table:
    """`new` (keys, event time, tiles of pushed rows) with each row's tiles merged into
    the entity's stored ones (`stored`: one row per row of `new`, in order). `now` (µs)
    bounds what is dropped: an event pushed with a future time must not discard tiles
    that reads until then still need."""
    times = new.column(EVENT_TIMESTAMP).cast(pa.int64()).to_pylist()
    blobs = new.column(TILES_FEATURE).to_pylist()
    merged_times, merged_blobs = [], []
    for old_time, old_blob, time, blob in zip(
        stored.event_times, stored.columns[0], times, blobs, strict=True
    ):
        tiles, latest = decode(blob), time
        old = None if old_blob is None else decode(old_blob)
        if old is not None and _layout(old) == _layout(tiles):
            tiles = merge_tiles(old, tiles)
            latest = max(time, old_time if old_time is not None else time)
        # A blob of another layout was written under an earlier definition of the view:
        # its tiles no longer count (nor does its time for what to drop), but the write
        # keeps the stored time, so that the store's monotonic rule accepts it.
        merged_times.append(max(latest, old_time) if old_time is not None else latest)
        merged_blobs.append(_encode(_drop_before(tiles, min(latest, now) - reach)))
    columns = {name: new.column(name) for name in new.column_names}
    columns[EVENT_TIMESTAMP] = pa.array(merged_times, pa.int64()).cast(new.schema.field(EVENT_TIMESTAMP).type)  # fmt: skip
    columns[TILES_FEATURE] = pa.array(merged_blobs, pa.binary())
    return pa.table(columns)


def _layout(tiles: dict[str, Any]) -> tuple[Any, ...]:
    """What two blobs must share to merge: the tile size, the columns and their states."""
    columns = tiles.get("c", {})
    return tiles.get("g"), sorted((name, sorted(states)) for name, states in columns.items())


def _encode(tiles: dict[str, Any]) -> bytes:
    # The json module, not orjson: orjson writes NaN and infinities as null.
    return json.dumps(tiles, separators=(",", ":"), allow_nan=True).encode()


def merge_tiles(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The union of two blobs of the same layout, tiles with equal ends combined."""
    ends = sorted(set(old["b"]) | set(new["b"]))
    where_old = {b: i for i, b in enumerate(old["b"])}
    where_new = {b: i for i, b in enumerate(new["b"])}
    out: dict[str, Any] = {key: value for key, value in new.items() if key not in ("b", "n", "c")}
    out |= {"b": ends, "n": []}
    columns: dict[str, dict[str, list[Any]]] = {
        name: {state: [] for state in states} for name, states in new.get("c", {}).items()
    }
    for end in ends:
        i, j = where_old.get(end), where_new.get(end)
        if i is None or j is None:
            source, k = (new, j) if i is None else (old, i)
            out["n"].append(source["n"][k])
            for name, states in columns.items():
                for state, values in states.items():
                    values.append(source["c"][name][state][k])
            continue
        out["n"].append(old["n"][i] + new["n"][j])
        for name, states in columns.items():
            a, b = old["c"][name], new["c"][name]
            for state, values in states.items():
                values.append(_merge_state(state, a, i, b, j))
    if columns:
        out["c"] = columns
    return out


def _merge_state(state: str, a: dict[str, list[Any]], i: int, b: dict[str, list[Any]], j: int) -> Any:  # fmt: skip
    x, y = a[state][i], b[state][j]
    if state == "m" or state == "q":  # Chan et al.: needs both sides' counts and means
        return _merge_moments(a["n"][i], a["m"][i], a["q"][i], b["n"][j], b["m"][j], b["q"][j], state)  # fmt: skip
    if x is None or y is None:
        return y if x is None else x
    if state in ("n", "s"):
        return x + y
    if state == "lo":
        return min(x, y, key=_nan_greatest)
    if state == "hi":
        return max(x, y, key=_nan_greatest)
    if state == "l":
        return max(x, y, key=lambda item: (item["t"], item["v"]))
    if state == "d":
        return list(dict.fromkeys(x + y))
    raise ValueError(f"unknown tile state {state!r}")


def _merge_moments(na: int, ma: Any, qa: Any, nb: int, mb: Any, qb: Any, state: str) -> Any:
    if not nb:
        return ma if state == "m" else qa
    if not na:
        return mb if state == "m" else qb
    total = na + nb
    delta = mb - ma
    if state == "m":
        return ma + delta * nb / total
    return qa + qb + delta * delta * na * nb / total


def _drop_before(tiles: dict[str, Any], edge: int) -> dict[str, Any]:
    """The blob without tiles ending at or before `edge`."""
    start = bisect_right(tiles["b"], edge)
    if start == 0:
        return tiles
    out = {key: value for key, value in tiles.items() if key not in ("b", "n", "c")}
    out |= {"b": tiles["b"][start:], "n": tiles["n"][start:]}
    if "c" in tiles:
        out["c"] = {
            name: {state: values[start:] for state, values in states.items()}
            for name, states in tiles["c"].items()
        }
    return out
