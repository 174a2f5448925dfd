"""The quality verbs over a view's offline rows (read through the configured engine's
`rows`): `statistics`, `drift` between two time windows, and `validate` (the view's
expectations over rows already stored)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from almanac.definitions.aggregation import AggregationView
from almanac.definitions.feature_view import FeatureView
from almanac.errors import InputError
from almanac.ports.handles import StoreHandle
from almanac.quality.drift import DRIFT_PSI, WARN_PSI, FeatureDrift, drift
from almanac.quality.statistics import FeatureStatistics, describe
from almanac.semantics.expectations import Breach, breaches
from almanac.semantics.times import time_range

Window = tuple[datetime | str | None, datetime | str | None]


@dataclass
class Validation:
    view: str
    rows: int
    breaches: list[Breach]

    @property
    def passed(self) -> bool:
        return not self.breaches

    def to_dict(self) -> dict[str, Any]:
        return {
            "view": self.view,
            "rows": self.rows,
            "passed": self.passed,
            "breaches": [
                {"expectation": b.expectation.label, "failed": b.failed, "examples": b.examples}
                for b in self.breaches
            ],
        }


def statistics(
    store: StoreHandle, view: str, start: datetime | str | None, end: datetime | str | None
) -> list[FeatureStatistics]:
    definition = _feature_view(store, view)
    table = _rows(store, definition, (start, end))
    return describe(table, {f.name: f.dtype for f in definition.features})


def feature_drift(
    store: StoreHandle,
    view: str,
    reference: Window,
    current: Window,
    warn_psi: float = WARN_PSI,
    drift_psi: float = DRIFT_PSI,
) -> list[FeatureDrift]:
    definition = _feature_view(store, view)
    before, after = _rows(store, definition, reference), _rows(store, definition, current)
    return drift(before, after, definition.feature_names, warn_psi, drift_psi)


def validate(
    store: StoreHandle, view: str, start: datetime | str | None, end: datetime | str | None
) -> Validation:
    definition = _feature_view(store, view)
    if not definition.expectations:
        raise InputError(f"feature view '{view}' declares no expectations")
    table = _rows(store, definition, (start, end))
    found = breaches(table, definition.expectations, f"feature view '{view}'")
    return Validation(view, table.num_rows, found)


def _feature_view(store: StoreHandle, name: str) -> FeatureView:
    view = store.catalog.view(name)
    if isinstance(view, AggregationView):
        raise InputError(
            f"'{name}' is an aggregation view: its values exist per read time, not as rows; "
            "statistics, drift and validation read the rows of feature views"
        )
    return view


def _rows(store: StoreHandle, view: FeatureView, window: Window) -> pa.Table:
    start, end = time_range(*window)
    table: pa.Table = store.offline.rows(store.catalog, view, start, end).read_all()
    return table
