"""Online results: values, statuses and event times per feature and entity row.

This is the one place where raw store rows become statuses (DESIGN.md, rule 4):

* ``NOT_FOUND``: the store has no row for the entity in that view;
* ``OUTSIDE_MAX_AGE``: the row is older than the view's TTL at read time (valid iff
  ``event_time >= now - ttl``, the same inclusive bound as the point-in-time join);
  its values are returned as null, its event time is kept;
* ``NULL_VALUE``: the row is there and fresh, the value is null;
* ``PRESENT``: otherwise.

`OnlineResponse` is plain data (lists and dicts, no backend objects), so the HTTP
client can build the same object from a JSON answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from almanac.ports.online import ViewRows
from almanac.semantics.times import micros_to_datetime

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

STATUS_SUFFIX = "__status"
EVENT_TIMESTAMP_SUFFIX = "__event_timestamp"


class FeatureStatus(StrEnum):
    PRESENT = "PRESENT"
    NULL_VALUE = "NULL_VALUE"
    NOT_FOUND = "NOT_FOUND"
    OUTSIDE_MAX_AGE = "OUTSIDE_MAX_AGE"


PRESENT = FeatureStatus.PRESENT
NULL_VALUE = FeatureStatus.NULL_VALUE
NOT_FOUND = FeatureStatus.NOT_FOUND
OUTSIDE_MAX_AGE = FeatureStatus.OUTSIDE_MAX_AGE


class OnlineResponse:
    """Feature values for each requested entity row, in request order.

    `join_keys` and `values` map column names to one list entry per entity row;
    `statuses` and `event_timestamps` map each feature to its per-row status and event
    time (aware UTC datetimes; ints are read as microseconds since the epoch). `dtypes`
    gives the Almanac dtype of every key and feature column (used by `to_arrow`).
    """

    __slots__ = (
        "_datetimes", "_event_timestamps", "dtypes", "join_keys", "read_time", "statuses", "values",
    )  # fmt: skip

    def __init__(
        self,
        join_keys: Mapping[str, list[Any]],
        values: Mapping[str, list[Any]],
        statuses: Mapping[str, list[FeatureStatus]],
        event_timestamps: Mapping[str, Sequence[datetime | int | None]],
        dtypes: Mapping[str, str] | None = None,
    ) -> None:
        self.join_keys = dict(join_keys)
        self.values = dict(values)
        self.statuses = dict(statuses)
        self._event_timestamps = dict(event_timestamps)
        self._datetimes: dict[str, list[datetime | None]] | None = None
        self.dtypes = dict(dtypes or {})
        # The time the values were read at (TTLs and windows are measured from it), when
        # known: what a replay of this read through the offline store must use.
        self.read_time: datetime | None = None

    @property
    def feature_names(self) -> list[str]:
        return list(self.values)

    @property
    def event_timestamps(self) -> dict[str, list[datetime | None]]:
        """Per feature, the event time of each row's value (None when not found)."""
        if self._datetimes is None:
            # Features of one view share one list of microseconds: convert it once.
            converted: dict[int, list[datetime | None]] = {}
            out = {}
            for name, times in self._event_timestamps.items():
                done = converted.get(id(times))
                if done is None:
                    done = converted[id(times)] = [
                        micros_to_datetime(t) if isinstance(t, int) else t for t in times
                    ]
                out[name] = done
            self._datetimes = out
        return self._datetimes

    def __len__(self) -> int:
        for column in (*self.join_keys.values(), *self.values.values()):
            return len(column)
        return 0

    def __repr__(self) -> str:
        return f"OnlineResponse(rows={len(self)}, features={self.feature_names})"

    def to_dict(
        self, include_statuses: bool = False, include_event_timestamps: bool = False
    ) -> dict[str, list[Any]]:
        """Join keys, then features (request order), each a list with one entry per row.
        With `include_statuses` / `include_event_timestamps`, each feature is followed
        by ``<feature>__status`` (text) / ``<feature>__event_timestamp`` columns."""
        out: dict[str, list[Any]] = {name: list(v) for name, v in self.join_keys.items()}
        stamps = self.event_timestamps if include_event_timestamps else {}
        for name, column in self.values.items():
            out[name] = list(column)
            if include_statuses:
                out[name + STATUS_SUFFIX] = [str(s) for s in self.statuses[name]]
            if include_event_timestamps:
                out[name + EVENT_TIMESTAMP_SUFFIX] = list(stamps[name])
        return out

    def to_arrow(
        self, include_statuses: bool = False, include_event_timestamps: bool = False
    ) -> pa.Table:
        """An Arrow table typed by the features' dtypes (same columns as `to_dict`)."""
        import pyarrow as pa

        from almanac.definitions.types import arrow_type

        columns = self.to_dict(include_statuses, include_event_timestamps)
        stamp = pa.timestamp("us", tz="UTC")
        arrays = {}
        for name, column in columns.items():
            dtype = self.dtypes.get(name)
            if dtype is not None:
                kind = arrow_type(dtype)
            elif name.endswith(STATUS_SUFFIX):
                kind = pa.string()
            elif name.endswith(EVENT_TIMESTAMP_SUFFIX):
                kind = stamp
            else:
                kind = None
            arrays[name] = pa.array(column, type=kind)
        return pa.table(arrays)

    @property
    def columns(self) -> list[str]:
        """The features, in the order requested: the columns of `to_numpy`."""
        return list(self.values)

    def to_numpy(self) -> np.ndarray:
        """The feature vectors, one row per entity row, in `columns` order: float64 with
        NaN for missing values when every feature is numeric, else objects (see
        `almanac.semantics.vectors`; `RetrievalJob.to_numpy` gives the same offline)."""
        from almanac.semantics.vectors import feature_matrix

        return feature_matrix(self.to_arrow(), self.columns)

    def to_pandas(
        self, include_statuses: bool = False, include_event_timestamps: bool = False
    ) -> pd.DataFrame:
        frame: pd.DataFrame = self.to_arrow(include_statuses, include_event_timestamps).to_pandas()
        return frame


def build_response(
    join_keys: Mapping[str, list[Any]],
    outputs: Sequence[tuple[str, int, int]],
    rows: Sequence[ViewRows],
    ttls: Sequence[int | None],
    now_micros: int,
    dtypes: Mapping[str, str],
    defaults: Mapping[str, Any] | None = None,
) -> OnlineResponse:
    """Turn store rows into an `OnlineResponse`.

    `outputs` lists, in request order, each feature's output name, the index of its
    view's rows in `rows` and its position among that view's features; `ttls[i]` is
    view i's TTL in microseconds (None: values never expire). `defaults` gives the
    value of a feature for an entity the store does not have (status NOT_FOUND), where
    it is not null: an aggregation view's counts are 0 for an entity with no events.
    """
    defaults = defaults or {}
    # Per view: which rows count as found.
    fresh: list[list[bool] | None] = []  # None: every row found and fresh
    for view_rows, ttl in zip(rows, ttls, strict=True):
        times = view_rows.event_times
        if ttl is None:
            ok = [t is not None for t in times]
        else:
            cutoff = now_micros - ttl
            ok = [t is not None and t >= cutoff for t in times]
        fresh.append(None if all(ok) else ok)
    values: dict[str, list[Any]] = {}
    statuses: dict[str, list[FeatureStatus]] = {}
    stamps: dict[str, Sequence[datetime | int | None]] = {}
    for name, view_index, feature_index in outputs:
        column = rows[view_index].columns[feature_index]
        found = fresh[view_index]
        times = rows[view_index].event_times
        if found is None:
            values[name] = column if column.__class__ is list else list(column)
            statuses[name] = [NULL_VALUE if v is None else PRESENT for v in column]
        else:
            default = defaults.get(name)
            values[name] = [
                v if good else (default if t is None else None)
                for v, good, t in zip(column, found, times, strict=True)
            ]
            statuses[name] = [
                (NULL_VALUE if v is None else PRESENT)
                if good
                else (NOT_FOUND if t is None else OUTSIDE_MAX_AGE)
                for v, good, t in zip(column, found, times, strict=True)
            ]
        stamps[name] = times
    return OnlineResponse(join_keys, values, statuses, stamps, dtypes)
