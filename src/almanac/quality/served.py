"""What was served: a view's feature values as the serving log holds them, one row per
logged entity read — the `current` sample of drift on live traffic
(`store.drift(view, "train_v3", Served(start, end))`).

Every logged answer that asked for any of the view's features counts, whichever service
or feature list asked (each answer's columns are mapped back to the view's features
through the catalog, so `full_feature_names` makes no difference). A value the read did
not find is a null: drift reports it in the null rate, as it does for stored rows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from almanac.definitions.feature_view import FeatureView
from almanac.definitions.types import arrow_type
from almanac.errors import AlmanacError, InputError
from almanac.ports.handles import StoreHandle
from almanac.quality.serving_log import read
from almanac.semantics.times import time_range


@dataclass(frozen=True)
class Served:
    """A drift sample: the values the serving log holds, of reads in [start, end]."""

    start: datetime | str | None = None
    end: datetime | str | None = None


def served_rows(store: StoreHandle, view: FeatureView, sample: Served) -> pa.Table:
    """The served values of `view`'s features (one column each, named as the feature)."""
    low, high = time_range(sample.start, sample.end)
    logged = read(store.config, low, high)
    groups: dict[tuple[str | None, str | None, bool], list[int]] = defaultdict(list)
    asked = zip(
        logged["features"].to_pylist(), logged["feature_service"].to_pylist(),
        logged["full_feature_names"].to_pylist(), strict=True,
    )  # fmt: skip
    for i, key in enumerate(asked):
        groups[key].append(i)
    columns: dict[str, list[Any]] = {name: [] for name in view.feature_names}
    texts = logged["values"]
    for (features, service, full), rows in groups.items():
        try:
            refs = store.catalog.resolve(
                None if features is None else orjson.loads(features), service, bool(full)
            )
        except AlmanacError:  # a feature or service removed since: its reads do not count
            continue
        mine = {ref.output_name: ref.field.name for ref in refs if ref.view == view.name}
        if not mine:
            continue
        for text in texts.take(rows).to_pylist():
            values = orjson.loads(text)
            width = len(next(iter(values.values()), []))
            for column, name in mine.items():
                columns[name].extend(values.get(column) or [None] * width)
    if not any(columns.values()):
        raise InputError(
            f"the serving log holds no reads of feature view '{view.name}' in that window: "
            "set server.log_sample_rate (or online.log_sample_rate) and serve some traffic"
        )
    return pa.table({f.name: _typed(columns[f.name], f.dtype) for f in view.features})


def _typed(values: list[Any], dtype: str) -> pa.Array:
    """Logged values (JSON: times as ISO 8601 text) as the feature's declared type."""
    kind = arrow_type(dtype)
    try:
        if pa.types.is_timestamp(kind):
            return pc.cast(pa.array(values, pa.string()), kind)
        return pa.array(values, kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # bytes (logged as text): not comparable
        return pa.nulls(len(values), kind)
