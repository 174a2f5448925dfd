"""The Spark engine's settings, its one SparkSession per process, and its errors.

A JVM is expensive to start (seconds) and a process can hold only one SparkContext, so
every engine of a process shares one session, started on first use with the first
engine's settings (`offline.spark`). Spark's own failures are turned into Almanac's
errors here: a Spark that cannot start is a `ConfigError` naming the setting (no Java
stack trace), a failed job an `InputError` naming what was being computed, with the
first line of the reason (for a failure in Python code, the Python exception's line).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from almanac.errors import AlmanacError, ConfigError, InputError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


class SparkSettings(BaseModel):
    """`offline.spark` in almanac.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    master: str = "local[*]"  # local[N], spark://host:7077, yarn, k8s://...
    remote: str | None = None  # a Spark Connect URL (sc://host:15002); replaces master
    app_name: str = "almanac"
    conf: dict[str, str | int | float | bool] = {}
    # How many partitions (hash buckets of the join keys) the rows are shuffled into;
    # each is one DuckDB query in one Python worker, so it must fit in a worker's
    # memory. Default: what adaptive query execution makes of the shuffled bytes.
    buckets: int | None = Field(None, ge=1)
    # Spark's own log4j level: its failures reach you as Almanac errors, with their reason.
    log_level: str = "FATAL"


_lock = threading.Lock()
_session: SparkSession | None = None

# Settings Almanac needs whatever the user configures.
_REQUIRED = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Parquet nanosecond timestamps (pandas' and Arrow's default) are read as int64
    # nanoseconds and converted by the scan (Spark refuses them otherwise).
    "spark.sql.legacy.parquet.nanosAsLong": "true",
}


def session(settings: SparkSettings) -> SparkSession:
    """The process's SparkSession (started on first use); ConfigError if Spark cannot
    start."""
    global _session
    with _lock:
        if _session is not None:
            return _session
        setting = "offline.spark.remote" if settings.remote else "offline.spark.master"
        value = settings.remote or settings.master
        try:
            from pyspark.sql import SparkSession
        except ImportError as error:
            raise ConfigError(
                f'offline.engine: spark needs pyspark: pip install "almanac[spark]" ({error})'
            ) from None
        builder: Any = SparkSession.builder.appName(settings.app_name)
        if settings.remote:
            builder = builder.remote(settings.remote)
        else:
            # Python workers run this interpreter (its packages: almanac, DuckDB, Arrow).
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            builder = builder.master(settings.master)
        defaults = {
            # Almanac creates no tables: keep Spark's warehouse folder out of the working one.
            "spark.sql.warehouse.dir": os.path.join(
                tempfile.gettempdir(), "almanac-spark-warehouse"
            ),
            # Spark's 1 GiB default is the whole of a local session (driver and executors
            # share its JVM): a training set of a million rows runs it out of heap.
            "spark.driver.memory": "4g",
        }
        own = {key: _text(value) for key, value in settings.conf.items()}
        conf = defaults | own | _REQUIRED
        for key, item in conf.items():
            builder = builder.config(key, item)
        try:
            spark: SparkSession = builder.getOrCreate()
            if not settings.remote:
                spark.sparkContext.setLogLevel(settings.log_level)
            spark.range(1).count()  # a master URL is only resolved by a first job
        except Exception as error:
            raise ConfigError(
                f"{setting}: Spark cannot start with {value!r}: {first_line(error)}"
            ) from None
        _session = spark
        return spark


def _text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


_PYTHON_ERROR = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception)): (.+)$")
_PREFERRED = ("InputError", "DefinitionError")


def first_line(error: BaseException) -> str:
    """The reason of a Spark error in one line: the last Python exception raised in a
    worker (an Almanac error first), else the first line of the message."""
    text = str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    found = [m for m in (_PYTHON_ERROR.match(line) for line in lines) if m]
    for match in reversed(found):
        if match.group(1) in _PREFERRED:
            return match.group(2)
    if "Traceback" in text and found:
        return f"{found[-1].group(1)}: {found[-1].group(2)}"
    head = lines[0] if lines else type(error).__name__
    return re.sub(r"\s*SQLSTATE: \w+\.?$", "", head)


@contextmanager
def job(what: str) -> Iterator[None]:
    """Run Spark actions for `what` (e.g. "feature view 'x'"); a failure is an
    InputError naming it (Almanac's own errors pass through)."""
    try:
        yield
    except AlmanacError:
        raise
    except Exception as error:
        if type(error).__module__.startswith(("pyspark", "py4j")):
            raise InputError(f"{what}: the Spark job failed: {first_line(error)}") from None
        raise
