"""Late rows: rows that reach a file source after its view was materialized past their
event time. An incremental run reads from the watermark on, so without this they would
never reach the online store.

After each incremental run, the files of the view's source are remembered (path, size,
modification time) in the registry (`almanac.registry.state`, status kind
`materialize_files`). The next run looks for files that are new or changed since, and
starts from the earliest event time among them (the Parquet footers' statistics of the
timestamp column: no data is read) when it is before the watermark. Where the footer
cannot say (CSV files, a timestamp stored as text or numbers), the run starts from the
first row. SQL sources cannot be tracked this way: run `almanac materialize START END`
over the late window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from almanac.config import RepoConfig
from almanac.definitions import FeatureView
from almanac.definitions.on_demand import OnDemandView
from almanac.definitions.sources import FileSource
from almanac.errors import InputError
from almanac.offline.files import PARQUET_SUFFIXES, list_files
from almanac.registry.catalog import Catalog
from almanac.registry.on_demand import written_from
from almanac.registry.state import OperationalState
from almanac.semantics.times import to_utc

KIND = "materialize_files"


@dataclass
class Arrivals:
    """A view's source files now, and what arrived since the last run."""

    files: dict[str, list[int]] = field(default_factory=dict)  # path -> [size, mtime ns]
    earliest: datetime | None = None  # the earliest event time among new or changed files
    unknown: bool = False  # a new file whose earliest event time its footer does not give


class LateRows:
    def __init__(self, config: RepoConfig, catalog: Catalog, state: OperationalState) -> None:
        self.config, self.catalog, self.state = config, catalog, state
        self._seen = {key: value for key, (_, value) in state.status(KIND).items()}

    def since_last_run(self, view: FeatureView | OnDemandView) -> Arrivals | None:
        """None for views whose source is not a file source (a write-time on-demand
        view's: its source view's source; tracked apart, as it has its own watermark)."""
        if isinstance(view, OnDemandView):
            source = self.catalog.source_of(written_from(self.catalog, view))
        else:
            source = self.catalog.source_of(view)
        if not isinstance(source, FileSource):
            return None
        files, _ = list_files(self.config, source)
        now = {str(p): _fingerprint(p) for p in files}
        arrivals = Arrivals(files=now)
        before = self._seen.get(view.name)
        if before is None:  # never tracked: the watermark's run covers what is there
            return arrivals
        for path, mark in now.items():
            if before.get(path) == mark:
                continue
            earliest = _earliest(Path(path), source.timestamp_field)
            if earliest is None:
                arrivals.unknown = True
            elif arrivals.earliest is None or earliest < arrivals.earliest:
                arrivals.earliest = earliest
        return arrivals

    def seen(self, view: FeatureView | OnDemandView, arrivals: Arrivals) -> None:
        self.state.put_status(KIND, view.name, arrivals.files)
        self._seen[view.name] = arrivals.files


def _fingerprint(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _earliest(path: Path, column: str) -> datetime | None:
    """The smallest value of a timestamp column from a Parquet file's footer, or None
    when the footer cannot say."""
    if not path.name.lower().endswith(PARQUET_SUFFIXES):
        return None
    try:
        metadata = pq.ParquetFile(path).metadata
        schema = metadata.schema.to_arrow_schema()
        if column not in schema.names or not pa.types.is_timestamp(schema.field(column).type):
            return None
        index = schema.names.index(column)
        lows = []
        for group in range(metadata.num_row_groups):
            stats = metadata.row_group(group).column(index).statistics
            if stats is None or not stats.has_min_max:
                if metadata.row_group(group).num_rows:
                    return None
                continue
            lows.append(stats.min)
    except (OSError, pa.ArrowException):
        return None
    if not lows:
        return None
    try:
        return to_utc(min(lows), column)
    except (InputError, TypeError):  # a statistic that is not a datetime
        return None
