"""Which rows a read needs, and which events a window holds: the planning every engine
shares, written once (docs/concepts.md, rules 2 and 5).

An engine renders these bounds in its own language (DuckDB SQL, Spark); the online
store evaluates tiles with the same formulas (`almanac.semantics.tiles`), so the value
served at R equals the training value at T = R.

* A feature view read at times in [low, high] needs the rows with event times in
  [low - ttl, high] (all rows up to `high` without a TTL): the winner at T is the latest
  row <= T, and one older than T - ttl is no value at all.
* An aggregation view's window W at T holds the events with ``lower(T) < t <= T``, where
  ``lower(T) = T - W`` (exact), or ``floor_tile(T - W)`` with a tile (tile boundaries are
  multiples of the tile since the Unix epoch, UTC; a floor modulo, so times before 1970
  round the same way). Reads at times in [low, high] need events in
  (low - reach, high], ``reach`` being the longest window plus one tile.
* A tile covers ``(b - tile, b]`` for its end ``b = ceil_tile(t)``; without a tile each
  distinct event time is its own tile (``b = t``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from almanac.definitions.aggregation import AggregationView
from almanac.definitions.feature_view import FeatureView

_US = timedelta(microseconds=1)


def micros(duration: timedelta) -> int:
    """A duration in whole microseconds (the unit of every time in the rules)."""
    return duration // _US


def window_lower(t_us: int, window_us: int, tile_us: int | None) -> int:
    """lower_W(T): the exclusive far edge of the window W ending at T (µs)."""
    edge = t_us - window_us
    return edge if tile_us is None else edge - edge % tile_us  # Python's % floors


def tile_end(t_us: int, tile_us: int | None) -> int:
    """The end b of the tile ``(b - tile, b]`` that holds an event at t (µs)."""
    return t_us if tile_us is None else t_us + (-t_us) % tile_us


def rows_needed(
    view: FeatureView, low: datetime | None, high: datetime | None
) -> tuple[datetime | None, datetime | None]:
    """The event-time span [lower, upper] of `view`'s rows that reads at times in
    [low, high] can see (None: unbounded on that side)."""
    if low is None:
        return None, high
    if isinstance(view, AggregationView):
        return low - view.reach, high
    return (None if view.ttl is None else low - view.ttl), high
