"""The skew report: the served feature vectors of the serving log, replayed through the
offline store at their read times, compared value by value.

Each logged row becomes an entity row of a training set (its join keys, its read time
as the timestamp) asking for the same features; `get_historical_features` answers it
with what the offline store says was true at that time, which is what the online read
should have served (rule 5). Per feature:

- **mismatches**: both have a value and they differ (floats: beyond a relative 1e-9);
- **missing**: the online read served none (NOT_FOUND, OUTSIDE_MAX_AGE, null) where the
  offline store has one;
- **extra**: the online read served a value where the offline store has none;
- **rate** = (mismatches + missing + extra) / rows compared.

A value materialized after the read (the online store was behind) counts too: the report
measures what models were served, whatever the cause.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from almanac.errors import InputError
from almanac.ports.handles import StoreHandle
from almanac.quality.serving_log import SCHEMA, encode, read
from almanac.semantics.times import time_range

_EXAMPLES = 5


@dataclass
class FeatureSkew:
    feature: str
    compared: int
    mismatches: int = 0
    missing: int = 0
    extra: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return (self.mismatches + self.missing + self.extra) / self.compared if self.compared else 0.0  # fmt: skip


@dataclass
class SkewReport:
    feature_service: str
    rows: int
    features: list[FeatureSkew]

    def to_dict(self) -> dict[str, Any]:
        features = [{**asdict(f), "rate": f.rate} for f in self.features]
        return {"feature_service": self.feature_service, "rows": self.rows, "features": features}


def skew(
    store: StoreHandle,
    feature_service: str,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
) -> SkewReport:
    """Replay the logged reads of `feature_service` with read times in [start, end]."""
    catalog = store.catalog
    service = catalog.services.get(feature_service)
    if service is None:
        from almanac.errors import NotFoundError

        raise NotFoundError("feature service", feature_service, catalog.services)
    low, high = time_range(start, end)
    logged = read(store.config, low, high, feature_service)
    if logged.num_rows == 0:
        raise InputError(
            f"no logged reads of feature service '{feature_service}' in that window: set "
            "server.log_sample_rate and serve some traffic first"
        )
    reports: dict[str, FeatureSkew] = {}
    for full in (False, True):
        part = logged.filter(pc.equal(logged["full_feature_names"], full))
        if part.num_rows:
            _compare(store, feature_service, full, part, reports)
    rows = max((f.compared for f in reports.values()), default=0)
    return SkewReport(feature_service, rows, list(reports.values()))


def _compare(
    store: StoreHandle, service: str, full: bool, logged: pa.Table, reports: dict[str, FeatureSkew]
) -> None:
    entities, served, times = _explode(logged)
    spine = pa.Table.from_pylist(entities).append_column(
        "event_timestamp", pa.array(times, SCHEMA.field("read_time").type)
    )
    # Stored features only: the log keeps no request data, and an on-demand feature is
    # computed by the same code from these on both paths.
    catalog = store.catalog
    refs = [r for r in catalog.resolve(None, service, full) if r.view not in catalog.on_demand_views]  # fmt: skip
    offline = store.offline.get_historical_features(catalog, spine, refs).to_arrow()
    for name in served[0] if served else []:
        if name not in offline.column_names:  # no longer in the service: nothing to compare
            continue
        report = reports.setdefault(name, FeatureSkew(name, 0))
        want = [_normal(v) for v in offline.column(name).to_pylist()]
        for i, (got, expected) in enumerate(zip((row.get(name) for row in served), want, strict=True)):  # fmt: skip
            report.compared += 1
            kind = _difference(got, expected)
            if kind is None:
                continue
            setattr(report, kind, getattr(report, kind) + 1)
            if len(report.examples) < _EXAMPLES:
                report.examples.append({
                    "entity": entities[i], "read_time": times[i].isoformat(),
                    "served": got, "offline": expected,
                })  # fmt: skip


def _explode(logged: pa.Table) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[datetime]]:  # fmt: skip
    """The logged answers (JSON objects of columns) as one entry per entity row: its
    join keys, its served values and its read time."""
    entities: list[dict[str, Any]] = []
    served: list[dict[str, Any]] = []
    times: list[datetime] = []
    for keys_text, values_text, read_time in zip(
        logged["entity"].to_pylist(), logged["values"].to_pylist(),
        logged["read_time"].to_pylist(), strict=True,
    ):  # fmt: skip
        keys, values = json.loads(keys_text), json.loads(values_text)
        rows = len(next(iter(keys.values()), []))
        entities += [{name: column[i] for name, column in keys.items()} for i in range(rows)]
        served += [{name: column[i] for name, column in values.items()} for i in range(rows)]
        times += [read_time] * rows
    return entities, served, times


def _normal(value: Any) -> Any:
    """A value as the log holds it (its JSON encoding, read back)."""
    return json.loads(encode(value))


def _difference(served: Any, offline: Any) -> str | None:
    if served is None and offline is None:
        return None
    if served is None:
        return "missing"
    if offline is None:
        return "extra"
    if _same(served, offline):
        return None
    return "mismatches"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, int | float) and isinstance(b, int | float):
            return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
        return False
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
