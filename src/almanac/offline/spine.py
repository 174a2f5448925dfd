"""The entity rows of a training set, as every engine receives them (engine-neutral).

`prepare_spine` checks the request once, whatever the engine: no feature may be named
like a column of entity_df, a join key must have one type across the views joined, keys
are cast to their declared types and times become UTC (rule 1, by `almanac.offline.frames`).
The engine then sees only the *narrow* spine: a row id, the join keys and the UTC time;
labels stay with the caller's table, untouched (`RetrievalJob` puts them back).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from almanac.definitions.feature_view import FeatureView
from almanac.definitions.types import Int64, arrow_type
from almanac.errors import InputError
from almanac.offline import frames
from almanac.registry.catalog import Catalog, FeatureRef
from almanac.semantics.rows import CREATED_TIMESTAMP, EVENT_TIMESTAMP
from almanac.semantics.validate import UTC_US

# Column names of the narrow spine (no user column can be named so).
ROW_ID = "__almanac_row"
TS = "__almanac_ts"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Spine:
    entities: pa.Table  # the caller's rows, the time column as UTC
    narrow: pa.Table  # ROW_ID, the join keys (declared types), TS (timestamp[us, UTC])
    views: list[FeatureView]  # in the order of their first feature in the request
    refs_of: dict[str, list[FeatureRef]]  # per view name, its requested features
    features: pa.Schema  # the output columns: output names and declared types
    low: datetime | None  # the earliest and latest spine time (None: no row has one)
    high: datetime | None


def prepare_spine(
    catalog: Catalog,
    table: pa.Table,
    refs: list[FeatureRef],
    timestamp_field: str,
    parse_text: frames.TimeParser,
) -> Spine:
    taken = set(table.column_names)
    for ref in refs:
        if ref.output_name in taken:
            raise InputError(
                f"feature '{ref.ref}' would be named '{ref.output_name}', which is already "
                "a column of entity_df; rename that column or pass full_feature_names=True"
            )
    refs_of: dict[str, list[FeatureRef]] = {}
    for ref in refs:
        refs_of.setdefault(ref.view, []).append(ref)
    views = [catalog.view(name) for name in refs_of]

    times = frames.utc_timestamps(table, timestamp_field, "entity_df", parse_text)
    entities = table.set_column(table.column_names.index(timestamp_field), timestamp_field, times)
    narrow: dict[str, Any] = {ROW_ID: row_ids(table.num_rows)}
    key_types: dict[str, tuple[str, str]] = {}
    for view in views:
        for key, dtype in catalog.join_keys(view).items():
            owner = f"feature view '{view.name}'"
            if key in key_types and key_types[key][0] != dtype:
                raise InputError(
                    f"join key '{key}' is {key_types[key][0]} for {key_types[key][1]} but "
                    f"{dtype} for {owner}; these views cannot be joined in one call"
                )
            key_types[key] = (dtype, owner)
            narrow[key] = frames.key_column(table, key, dtype, "entity_df", owner)
    narrow[TS] = frames.to_utc_us(times)
    spine = pa.table(narrow)
    features = pa.schema([(ref.output_name, arrow_type(ref.field.dtype)) for ref in refs])
    low, high = time_range(spine.column(TS))
    return Spine(entities, spine, views, refs_of, features, low, high)


def time_range(times: pa.ChunkedArray) -> tuple[datetime | None, datetime | None]:
    # Via int64: a timestamp scalar's as_py() imports pandas.
    bounds = pc.min_max(times.cast(pa.int64()))
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low is None or high is None:
        return None, None
    return _EPOCH + timedelta(microseconds=low), _EPOCH + timedelta(microseconds=high)


def row_ids(count: int) -> pa.Array:
    # From a buffer: pa.array(numpy) would import pandas (seconds on a cold start).
    buffer = pa.py_buffer(np.arange(count, dtype=np.int64))
    return pa.Array.from_buffers(pa.int64(), count, [None, buffer])


def entity_key(view: FeatureView, keys: dict[str, str], key: dict[str, Any]) -> dict[str, Any]:
    """One entity's key (`value_history`), checked against the view's join keys and cast
    to their types."""
    unknown = [k for k in key if k not in keys]
    missing = [k for k in keys if k not in key]
    if unknown or missing:
        raise InputError(
            f"feature view '{view.name}' is keyed by {', '.join(keys)}"
            + (f"; unknown key(s): {', '.join(unknown)}" if unknown else "")
            + (f"; missing key(s): {', '.join(missing)}" if missing else "")
        )
    return {k: _key_value(k, v, keys[k]) for k, v in key.items()}


def rows_schema(view: FeatureView, keys: dict[str, str], has_created: bool) -> pa.Schema:
    """The columns of `latest_rows` and `rows`: join keys, features, `event_timestamp`
    and, when the source has a created time, `created_timestamp`."""
    return pa.schema(
        [(k, arrow_type(t)) for k, t in keys.items()]
        + [(f.name, arrow_type(f.dtype)) for f in view.features]
        + [(EVENT_TIMESTAMP, UTC_US)]
        + ([(CREATED_TIMESTAMP, UTC_US)] if has_created else [])
    )


def check_latest_columns(view: FeatureView, keys: dict[str, str]) -> None:
    """`latest_rows` names the row's times `event_timestamp` and `created_timestamp`: a
    view with a key or feature of either name cannot be materialized."""
    for reserved in (EVENT_TIMESTAMP, CREATED_TIMESTAMP):
        if reserved in keys or reserved in view.feature_names:
            raise InputError(
                f"feature view '{view.name}' has a column named '{reserved}', which "
                "latest_rows uses for the row's times"
            )


def _key_value(key: str, value: Any, dtype: str) -> Any:
    if dtype == Int64:
        try:
            return int(value)
        except (TypeError, ValueError):
            raise InputError(f"join key '{key}' is int64; {value!r} is not an integer") from None
    return str(value)
