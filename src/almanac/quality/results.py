"""The recorded results of expectations: one row per expectation per batch checked,
passed or not, from every entry path (push, `write_to_offline_store`, materialization,
`almanac validate`), rejected batches included.

Columns: `at` (when it was checked), `view`, `batch` (an id shared by the rows of one
check), `entry` (push | write | materialize | validate), `expectation` (its label),
`observed` (rows that break it; for `row_count`, the batch's rows), `rows` (in the
batch), `passed`, and `policy` (the view's `on_violation`). Kept under
`<data_path>/.quality/results/` (Parquet), written off the caller's path
(`almanac.quality.parquet_log`): another process sees them within a second.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from almanac.config import RepoConfig
from almanac.definitions.feature_view import FeatureView
from almanac.quality.parquet_log import ParquetLog, flush_open, retention_of
from almanac.semantics.expectations import Breach
from almanac.semantics.validate import UTC_US

SCHEMA = pa.schema([
    ("at", UTC_US),
    ("view", pa.string()),
    ("batch", pa.string()),
    ("entry", pa.string()),
    ("expectation", pa.string()),
    ("observed", pa.int64()),
    ("rows", pa.int64()),
    ("passed", pa.bool_()),
    ("policy", pa.string()),
])  # fmt: skip
_LOGS: dict[Path, ParquetLog] = {}
# Called with each result as it is recorded (the feature server counts them in /metrics).
Observer = Callable[[dict[str, Any]], None]
_OBSERVERS: list[Observer] = []


def observe(observer: Observer) -> Callable[[], None]:
    """Call `observer` with every result recorded in this process; returns the call
    that stops it."""
    _OBSERVERS.append(observer)
    return lambda: _OBSERVERS.remove(observer)


def results_folder(config: RepoConfig) -> Path:
    return config.resolve_path(config.offline.data_path) / ".quality" / "results"


def record(
    config: RepoConfig, view: FeatureView, rows: int, found: Sequence[Breach], entry: str
) -> str:
    """Record each of `view`'s expectations over one batch of `rows` (`found`: those it
    breaks); returns the batch's id."""
    batch = uuid.uuid4().hex[:16]
    if not view.expectations:
        return batch
    now = datetime.now(UTC)
    failed = {breach.expectation.label: breach.failed for breach in found}
    folder = results_folder(config)
    log = _LOGS.get(folder)
    if log is None:
        keep = retention_of(config.offline.log_retention_days)
        log = _LOGS.setdefault(folder, ParquetLog(folder, SCHEMA, what="quality-results", retention=keep))  # fmt: skip
    for expectation in view.expectations:
        label = expectation.label
        result = {
            "at": now, "view": view.name, "batch": batch, "entry": entry,
            "expectation": label, "observed": failed.get(label, rows if expectation.check == "row_count" else 0),
            "rows": rows, "passed": label not in failed, "policy": view.on_violation,
        }  # fmt: skip
        log.append(result)
        for observer in _OBSERVERS:
            observer(result)
    return batch


@dataclass
class Results:
    """Recorded results, newest first."""

    rows: pa.Table

    def to_dict(self, limit: int = 100) -> dict[str, Any]:
        failed = pc.sum(pc.invert(self.rows.column("passed")).cast(pa.int64())).as_py() or 0
        return {
            "results": self.rows.num_rows,
            "failed": failed,
            "newest": self.rows.slice(0, limit).to_pylist(),
        }


def read(
    config: RepoConfig,
    view: str | None = None,
    since: datetime | None = None,
    failed_only: bool = False,
) -> Results:
    """The recorded results (of `view`, from `since`, only the failed ones if asked)."""
    folder = results_folder(config)
    flush_open(folder)
    files = sorted(str(p) for p in folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return Results(SCHEMA.empty_table())
    # Here, not at the top: pyarrow.dataset imports pandas (0.3-0.4 s of a cold start),
    # and every materialization imports this module (admission records breaches).
    import pyarrow.dataset as ds

    condition = None
    for term in (
        None if view is None else ds.field("view") == view,
        None if since is None else ds.field("at") >= pa.scalar(since, UTC_US),
        ~ds.field("passed") if failed_only else None,
    ):
        if term is not None:
            condition = term if condition is None else condition & term
    table = ds.dataset(files, schema=SCHEMA).to_table(filter=condition)
    return Results(table.sort_by([("at", "descending"), ("batch", "ascending")]))
