"""The shape of feature rows between the stores and the rules: the time columns every
writer sends, and what a store reads back for one view (`ViewRows`)."""

from __future__ import annotations

from typing import Any, NamedTuple

EVENT_TIMESTAMP = "event_timestamp"
# Optional column of rows to write: the created time that breaks event-time ties.
CREATED_TIMESTAMP = "created_timestamp"


class ViewRows(NamedTuple):
    """The answer for one `ViewRead`, one entry per requested entity row, in order.

    `event_times[i]` is the stored event time of row i in microseconds since the Unix
    epoch (UTC), or None when the store has no row for that entity. `columns[j][i]` is
    the value of feature `ViewRead.features[j]` for row i (None when absent). Columns,
    not rows: decoding runs one comprehension per feature and the response is
    column-shaped too.
    """

    event_times: list[int | None]
    columns: list[list[Any]]
