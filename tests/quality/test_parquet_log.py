"""The logs Almanac keeps for quality (serving log, expectation results): written off
the caller's path, read back in the same process at once, and pruned past their
retention (`offline.log_retention_days`)."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from almanac.config import load_config
from almanac.quality.parquet_log import ParquetLog, flush_open, prune, retention_of

SCHEMA = pa.schema([("n", pa.int64())])


def test_records_are_written_and_old_files_pruned(tmp_path: Path) -> None:
    log = ParquetLog(tmp_path / "log", SCHEMA, flush_seconds=3600, retention=timedelta(days=1))
    for n in range(5):
        assert log.append({"n": n})
    flush_open(tmp_path / "log")  # a reader in this process sees them at once
    (fresh,) = (tmp_path / "log").glob("*.parquet")
    assert pq.read_table(fresh).column("n").to_pylist() == [0, 1, 2, 3, 4]
    old = time.time_ns() - int(timedelta(days=2).total_seconds() * 1e9)
    pq.write_table(pa.table({"n": [9]}), tmp_path / "log" / f"part-{old:020d}-abcd1234.parquet")
    assert prune(tmp_path / "log", timedelta(days=1)) == 1
    assert list((tmp_path / "log").glob("*.parquet")) == [fresh]
    log.close()


def test_a_full_log_drops_and_counts(tmp_path: Path) -> None:
    log = ParquetLog(tmp_path / "log", SCHEMA, flush_seconds=3600, capacity=3)
    assert [log.append({"n": n}) for n in range(5)] == [True, True, True, False, False]
    assert log.dropped == 2
    log.close()
    (path,) = (tmp_path / "log").glob("*.parquet")
    assert pq.read_table(path).num_rows == 3


def test_retention_is_configured(tmp_path: Path) -> None:
    (tmp_path / "almanac.yaml").write_text("project: p\noffline:\n  log_retention_days: 7\n")
    assert retention_of(load_config(tmp_path).offline.log_retention_days) == timedelta(days=7)
    assert retention_of(0) is None
