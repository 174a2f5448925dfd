"""The offline store: point-in-time correct training sets, writes, and history.

`open_offline_engine(config)` gives the configured `OfflineEngine` (DuckDB by default).
The semantics of rule 2 live in `point_in_time`; backends only run them.
"""

from almanac.offline.engine import OfflineEngine, open_offline_engine
from almanac.offline.retrieval import RetrievalJob

__all__ = ["OfflineEngine", "RetrievalJob", "open_offline_engine"]
