"""The quality verbs over a view's offline rows (read through the configured engine's
`rows`): `statistics`, `drift` between two samples (time windows or saved training
sets), and `validate` (the view's expectations over rows already stored)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from almanac.definitions.aggregation import AggregationView
from almanac.definitions.feature_view import FeatureView
from almanac.errors import InputError
from almanac.offline.files import quarantine_folder
from almanac.ports.handles import StoreHandle
from almanac.quality.datasets import load
from almanac.quality.drift import DRIFT_PSI, WARN_PSI, FeatureDrift, drift
from almanac.quality.results import record
from almanac.quality.served import Served, served_rows
from almanac.quality.statistics import FeatureStatistics, describe
from almanac.semantics.expectations import QUARANTINED_AT, REASON, Breach, breaches
from almanac.semantics.times import time_range

Window = tuple[datetime | str | None, datetime | str | None]
# A time window of a view's offline rows, the name of a saved dataset, or the values
# the serving log holds (`Served`).
Sample = Window | str | Served


def parse_window(text: str, what: str) -> tuple[str | None, str | None]:
    """'START..END' (ISO 8601; either side may be empty) as (start, end)."""
    if ".." not in text:
        raise InputError(f"{what}: expected START..END (ISO 8601, either may be empty), got {text!r}")  # fmt: skip
    start, end = text.split("..", 1)
    return start.strip() or None, end.strip() or None


def sample(window: str | None, dataset: str | None, what: str, served: str | None = None) -> Sample:
    """A drift sample from text: a window START..END of the offline rows, a saved
    dataset's name, or a window START..END of the served values (one of them)."""
    if sum(v is not None for v in (window, dataset, served)) != 1:
        raise InputError(f"{what}: give exactly one of them (a window START..END, a saved dataset)")  # fmt: skip
    if served is not None:
        return Served(*parse_window(served, what))
    return dataset if dataset is not None else parse_window(window or "", what)


@dataclass
class BreachReport:
    expectation: str
    failed: int
    examples: list[Any]


@dataclass
class ValidationReport:
    """`Validation` as JSON."""

    view: str
    rows: int
    passed: bool
    breaches: list[BreachReport]


@dataclass
class Validation:
    view: str
    rows: int
    breaches: list[Breach]

    @property
    def passed(self) -> bool:
        return not self.breaches

    def to_dict(self) -> dict[str, Any]:
        found = [BreachReport(b.expectation.label, b.failed, b.examples) for b in self.breaches]
        return asdict(ValidationReport(self.view, self.rows, self.passed, found))


def statistics(
    store: StoreHandle, view: str, start: datetime | str | None, end: datetime | str | None
) -> list[FeatureStatistics]:
    definition = _feature_view(store, view)
    table = _rows(store, definition, (start, end))
    return describe(table, {f.name: f.dtype for f in definition.features})


def feature_drift(
    store: StoreHandle,
    view: str,
    reference: Sample,
    current: Sample,
    warn_psi: float = WARN_PSI,
    drift_psi: float = DRIFT_PSI,
) -> list[FeatureDrift]:
    """Drift of `view`'s features between two samples: windows of its offline rows,
    saved datasets (their columns of its features), or what was served. An aggregation
    view has no rows, so neither of its samples may be a window."""
    definition = store.catalog.view(view)
    if any(isinstance(s, tuple) for s in (reference, current)):
        definition = _feature_view(store, view)
    names = definition.feature_names
    if isinstance(reference, str) and isinstance(current, str):
        # The features both hold (a later set may add or drop some).
        first = load(store.config, reference).columns_of(view).values()
        second = set(load(store.config, current).columns_of(view).values())
        names = [name for name in first if name in second] or list(first)
    before, after = (sample_rows(store, definition, s, names) for s in (reference, current))
    return drift(before, after, names, warn_psi, drift_psi)


def sample_rows(
    store: StoreHandle, view: FeatureView, sample: Sample, names: list[str] | None = None
) -> pa.Table:
    """A sample of `view`'s features (`names`, default all): its offline rows in a
    window, a saved dataset's columns of them, or the served values (each named as the
    feature)."""
    names = view.feature_names if names is None else names
    if isinstance(sample, str):
        return _dataset_rows(store, sample, view.name, names)
    if isinstance(sample, Served):
        return served_rows(store, view, sample)
    return _rows(store, view, sample)


def _dataset_rows(store: StoreHandle, name: str, view: str, names: list[str]) -> pa.Table:
    """The saved dataset's columns of `view`'s features `names` (which it must all
    hold), named as the features."""
    dataset = load(store.config, name)
    by_feature = {feature: column for column, feature in dataset.columns_of(view).items()}
    missing = [n for n in names if n not in by_feature]
    if not by_feature or missing:
        held = ", ".join(f.ref for f in dataset.features) or "none"
        lacking = f"features of '{view}'" if not by_feature else ", ".join(f"{view}:{n}" for n in missing)  # fmt: skip
        raise InputError(f"saved dataset '{name}' has no {lacking} (it holds: {held})")
    return dataset.read([by_feature[n] for n in names]).rename_columns(names)


def validate(
    store: StoreHandle, view: str, start: datetime | str | None, end: datetime | str | None
) -> Validation:
    definition = _feature_view(store, view)
    if not definition.expectations:
        raise InputError(f"feature view '{view}' declares no expectations")
    table = _rows(store, definition, (start, end))
    found = breaches(table, definition.expectations, f"feature view '{view}'")
    record(store.config, definition, table.num_rows, found, "validate")
    return Validation(view, table.num_rows, found)


@dataclass
class Quarantine:
    """What a view's quarantine holds: its rows (with `__almanac_reason` and
    `__almanac_quarantined_at`), newest first."""

    view: str
    rows: pa.Table

    def reasons(self) -> dict[str, int]:
        if self.rows.num_rows == 0:
            return {}
        counts = pc.value_counts(self.rows.column(REASON))
        return dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True))  # fmt: skip

    def to_dict(self, limit: int = 20) -> dict[str, Any]:
        return {
            "view": self.view,
            "rows": self.rows.num_rows,
            "reasons": self.reasons(),
            "newest": self.rows.slice(0, limit).to_pylist(),
        }


def quarantined(store: StoreHandle, view: str) -> Quarantine:
    """The rows `view` kept aside under `on_violation="quarantine"`."""
    store.catalog.view(view)  # NotFoundError for an unknown view
    folder = quarantine_folder(store.config, view)
    files = sorted(folder.glob("*.parquet")) if folder.exists() else []
    if not files:
        return Quarantine(view, pa.table({REASON: pa.array([], pa.string())}))
    table = pa.concat_tables([pq.read_table(path) for path in files], promote_options="permissive")
    return Quarantine(view, table.sort_by([(QUARANTINED_AT, "descending")]))


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
