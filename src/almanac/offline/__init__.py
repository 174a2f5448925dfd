"""The offline store: point-in-time correct training sets, writes, and history.

`open_offline_engine(config)` gives the engine `offline.engine` names: a backend
registered under ``offline.<name>`` (DuckDB by default; Spark with ``almanac[spark]``; see
`almanac.backends`). What the rules mean is in `almanac.semantics`; each engine package
(`offline/duckdb/`, `offline/spark/`) only renders them.
"""

from __future__ import annotations

from almanac import backends
from almanac.config import RepoConfig
from almanac.ports.offline import OfflineEngine
from almanac.ports.retrieval import RetrievalJob

__all__ = ["OfflineEngine", "RetrievalJob", "open_offline_engine"]


def open_offline_engine(config: RepoConfig) -> OfflineEngine:
    """The engine `config.offline.engine` names."""
    engine: OfflineEngine = backends.load("offline", config.offline.engine).from_config(config)
    return engine
