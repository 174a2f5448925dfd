"""Admission: what a batch must satisfy to enter the stores, checked once for every entry
path (`push`, `POST /push`, `write_to_offline_store`) before anything is written.

Every check is recorded, passed or not (`almanac.quality.results`).

1. **Strict columns.** A column that no view of the source reads, and that is not a join
   key or a time column, is refused by name (a typo'd feature would otherwise vanish);
   a push source with `extra_columns="ignore"` drops such columns instead.
2. **Expectations**, per view, by the view's `on_violation`: `reject` refuses the whole
   batch (an InputError naming each breached expectation with counts and examples);
   `warn` writes it and logs the breach (logger `almanac.quality`); `quarantine` writes
   the rows that pass and keeps the others, with the reason, in the view's quarantine
   dataset (`<data_path>/.quarantine/<view>/`, Parquet), once the batch is committed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from almanac.config import RepoConfig
from almanac.definitions.feature_view import FeatureView
from almanac.errors import InputError
from almanac.offline.files import quarantine_folder
from almanac.offline.writer import stage_parquet
from almanac.quality.results import record
from almanac.semantics.expectations import (
    QUARANTINED_AT,
    REASON,
    Breach,
    bad_rows,
    breaches,
    reasons,
)
from almanac.semantics.validate import UTC_US

log = logging.getLogger("almanac.quality")


def check_columns(
    table: pa.Table, allowed: Iterable[str], extra_columns: str, what: str
) -> pa.Table:
    """`table` without columns outside `allowed` if `extra_columns` is "ignore";
    otherwise an InputError naming them."""
    known = set(allowed)
    extra = [name for name in table.column_names if name not in known]
    if not extra:
        return table
    if extra_columns == "ignore":
        return table.drop_columns(extra)
    raise InputError(
        f"{what}: unknown column(s) {', '.join(repr(name) for name in extra)}: no view of the "
        f"source reads them (columns read: {', '.join(sorted(known))}); remove them, or set "
        'extra_columns="ignore" on the source to drop such columns'
    )


@dataclass
class Admission:
    """The rows admitted, and the rows each quarantining view keeps aside."""

    rows: pa.Table
    quarantined: list[tuple[FeatureView, pa.Table]] = field(default_factory=list)

    def record(self, config: RepoConfig) -> None:
        """Write the quarantined rows, after the admitted ones were committed: a failure
        here (a full disk) is logged, not raised, as the batch itself is in."""
        for view, rows in self.quarantined:
            try:
                stage_parquet(rows, quarantine_folder(config, view.name)).commit()
            except Exception as error:
                log.error("view '%s': %d quarantined rows not kept: %s", view.name, rows.num_rows, error)  # fmt: skip


def check_empty(views: Sequence[FeatureView], what: str, config: RepoConfig, entry: str) -> None:
    """An empty batch breaks only a `row_count` with a minimum: refused or logged by the
    view's policy (there are no rows to quarantine)."""
    for view in views:
        found = [
            Breach(expectation, 0, 0, [], None)
            for expectation in view.expectations
            if expectation.check == "row_count" and (expectation.min or 0) > 0
        ]
        record(config, view, 0, found, entry)
        for breach in found:
            message = f"view '{view.name}' expects {breach.expectation.label}: the batch has 0 rows"
            if view.on_violation == "reject":
                raise InputError(f"{what}: refused, nothing was written: {message}")
            log.warning("%s: %s", what, message)


def admit(
    batch: pa.Table,
    views: Sequence[FeatureView],
    what: str,
    config: RepoConfig | None = None,
    entry: str = "",
) -> Admission:
    """Apply each view's expectations to `batch` (its columns in their declared types).
    With `config`, each result is recorded (`almanac.quality.results`; `entry` names the
    path: push, write, materialize)."""
    rejected: list[tuple[FeatureView, list[Breach]]] = []
    dropped = pa.chunked_array([pa.repeat(pa.scalar(False), batch.num_rows)])
    quarantined: list[tuple[FeatureView, pa.Table]] = []
    for view in views:
        if not view.expectations:
            continue
        found = breaches(batch, view.expectations, f"{what} (view '{view.name}')")
        if config is not None:
            record(config, view, batch.num_rows, found, entry)
        if not found:
            continue
        if view.on_violation == "reject":
            rejected.append((view, found))
        elif view.on_violation == "warn":
            for breach in found:
                log.warning("%s: view '%s': %s", what, view.name, breach.describe())
        else:
            mask = bad_rows(found, batch.num_rows)
            kept = batch.filter(mask).append_column(
                REASON, reasons(found, batch.num_rows).filter(mask.combine_chunks())
            )
            now = pa.scalar(datetime.now(UTC), UTC_US)
            quarantined.append((view, kept.append_column(QUARANTINED_AT, pa.repeat(now, kept.num_rows))))  # fmt: skip
            dropped = pc.or_(dropped, mask)
    if rejected:
        raise InputError(
            f"{what}: refused, nothing was written: "
            + "; ".join(
                f"view '{view.name}' expects {breach.describe()}"
                for view, found in rejected
                for breach in found
            )
        )
    rows = batch.filter(pc.invert(dropped)) if quarantined else batch
    return Admission(rows, quarantined)
