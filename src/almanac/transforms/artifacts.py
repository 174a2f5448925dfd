"""A feature service's fitted transforms as versioned registry artifacts.

`fit_service` fits a service's `transforms` on a training set and records the result in
the registry's state (kind ``fitted_transforms``, key ``<service>:<version>``): plain
JSON, never pickle, with the service's transform definition hash and the training set's
fingerprint. Every fit is a new version; nothing is overwritten, so a model trained on
version 3 can keep being served version 3 (`version=`) while version 4 is evaluated.

The fingerprint hashes the training set's identity columns — the join keys, the
timestamp and the targets, in row order — so that `get_historical_features(...,
transformed=True)` on the same labelled rows recognises them and gives target encoders'
out-of-fold values (leakage-safe), and any other rows the full-data encoding.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import pyarrow as pa

from almanac.definitions.feature_service import FeatureService
from almanac.errors import InputError
from almanac.registry.catalog import Catalog
from almanac.transforms.fitted import FittedTransforms, fingerprint_of, fit

KIND = "fitted_transforms"
UTC_US = pa.timestamp("us", tz="UTC")


class StatusStore(Protocol):
    """The part of the registry's operational state artifacts live in."""

    def put_status(self, kind: str, key: str, value: dict[str, Any]) -> None: ...
    def status(self, kind: str) -> dict[str, tuple[datetime, dict[str, Any]]]: ...


@dataclass(frozen=True)
class FittedVersion:
    """One fit of one service's transforms."""

    service: str
    version: int
    definition: str  # `definition_hash` of the service when it was fitted
    fitted: FittedTransforms
    fitted_at: datetime
    identity: tuple[str, ...]  # the columns the fingerprint hashes

    @property
    def fingerprint(self) -> str:
        return self.fitted.fingerprint


def definition_hash(service: FeatureService) -> str:
    """What the fitted parameters depend on: the service's features and transforms."""
    spec = service.to_spec()
    text = json.dumps({"features": spec["features"], "transforms": spec.get("transforms", [])}, sort_keys=True)  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def feature_columns(catalog: Catalog, service: str) -> dict[str, str]:
    """Each feature of the service (``view:feature``) → its column in a training set."""
    return {ref.ref: ref.output_name for ref in catalog.resolve(service=service)}


def identity_columns(catalog: Catalog, service: FeatureService, table: pa.Table, timestamp_field: str) -> list[str]:  # fmt: skip
    """The columns that identify a training set's rows: join keys, time, targets."""
    keys: list[str] = []
    for view in service.views:
        if view in catalog.on_demand_views:
            continue
        keys += [k for k in catalog.join_keys(view) if k not in keys]
    targets = [t.target for t in service.transforms if getattr(t, "target", None)]  # type: ignore[union-attr]
    wanted = [*keys, timestamp_field, *dict.fromkeys(targets)]
    return [name for name in wanted if name in table.column_names]


def fingerprint(table: pa.Table, columns: list[str], timestamp_field: str) -> str:
    """The training set's fingerprint, its time read as UTC (rule 1) whatever its type."""
    if timestamp_field in table.column_names:
        column = table.column(timestamp_field)
        if pa.types.is_timestamp(column.type) and column.type != UTC_US:
            index = table.column_names.index(timestamp_field)
            table = table.set_column(index, timestamp_field, column.cast(UTC_US))
    return fingerprint_of(table, columns)


def fit_service(
    catalog: Catalog, state: StatusStore, name: str, table: pa.Table, timestamp_field: str
) -> FittedVersion:
    """Fit service `name`'s transforms on `table` and record them as a new version."""
    service = catalog.service(name)
    if not service.transforms:
        raise InputError(f"feature service '{name}' declares no transforms to fit")
    columns = feature_columns(catalog, name)
    identity = identity_columns(catalog, service, table, timestamp_field)
    fitted = fit(service.transforms, table, columns, fingerprint=fingerprint(table, identity, timestamp_field))  # fmt: skip
    version = max((v.version for v in versions(state, name)), default=0) + 1
    record = {
        "service": name, "version": version, "definition": definition_hash(service),
        "identity": identity, "fitted": fitted.to_json(),
    }  # fmt: skip
    state.put_status(KIND, f"{name}:{version:06d}", record)
    at = state.status(KIND)[f"{name}:{version:06d}"][0]
    return FittedVersion(name, version, record["definition"], fitted, at, tuple(identity))  # type: ignore[arg-type]


def versions(state: StatusStore, name: str) -> list[FittedVersion]:
    """Every fit of service `name`, oldest first."""
    found = []
    for key, (at, record) in state.status(KIND).items():
        if key.rpartition(":")[0] == name:
            fitted = FittedTransforms.from_json(record["fitted"])
            found.append(FittedVersion(name, int(record["version"]), record["definition"], fitted, at, tuple(record.get("identity", ()))))  # fmt: skip
    return sorted(found, key=lambda v: v.version)


def load(
    catalog: Catalog, state: StatusStore, name: str, version: int | None = None
) -> FittedVersion:
    """The fit to apply for service `name` (the latest, or `version`), checked against
    the service as it is defined now."""
    service = catalog.service(name)
    if not service.transforms:
        raise InputError(f"feature service '{name}' declares no transforms (transformed=True)")
    found = versions(state, name)
    if version is not None:
        found = [v for v in found if v.version == version]
        if not found:
            raise InputError(f"feature service '{name}' has no fitted transforms of version {version}")  # fmt: skip
    if not found:
        raise InputError(
            f"feature service '{name}' has no fitted transforms: fit them on a training set "
            "first (store.fit_transforms(service, training_df))"
        )
    chosen = found[-1]
    if chosen.definition != definition_hash(service):
        raise InputError(
            f"the transforms of feature service '{name}' changed since version "
            f"{chosen.version} was fitted; fit them again (store.fit_transforms)"
        )
    return chosen


class FittedCache:
    """Fits and their services' feature columns in memory, for as long as the registry
    view is trusted (`registry.refresh_seconds`): an online read looks one up in a dict."""

    def __init__(self, state: Callable[[], StatusStore], seconds: float) -> None:
        self._state = state
        self._seconds = seconds
        self._entries: dict[tuple[str, int | None, int], tuple[float, FittedVersion, dict[str, str]]] = {}  # fmt: skip

    def get(self, catalog: Catalog, service: str, version: int | None) -> tuple[FittedVersion, dict[str, str]]:  # fmt: skip
        key = (service, version, catalog.version)
        found = self._entries.get(key)
        now = time.monotonic()
        if found is None or now - found[0] > self._seconds:
            chosen = load(catalog, self._state(), service, version)
            found = self._entries[key] = (now, chosen, feature_columns(catalog, service))
        return found[1], found[2]

    def clear(self) -> None:
        self._entries.clear()
