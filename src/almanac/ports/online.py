"""The online-store interface: latest feature values per (project, view, entity key).

A backend is a small class behind this interface. Two rules hold inside every backend,
not in the caller (DESIGN.md, rule 3):

* a write never replaces a newer event time with an older one for the same
  (project, view, entity key); on an equal event time the later created time wins (a
  row without one is the oldest, as offline), and an equal pair overwrites, so replays
  are harmless. That is rule 2's order, so the store keeps the row training data uses;
* the rule holds across concurrent writers (it is enforced by the store itself: a Lua
  script on Redis, a conditional upsert on SQLite).

Each store also keeps, per (project, view), the materialization watermark: the time up to
which the view's offline rows have been written into *this* store, and the fingerprint
of the definition they were computed under. It lives beside the data it describes, so a
new, swapped or emptied store (a Redis restarted without persistence) has no watermark
and is materialized from the start, a store holding values of an earlier definition is
found out by its fingerprint, and `delete_view` forgets it with the data.

Reads take every view and every entity of a request at once so that a backend can
answer in one round trip. Statuses and TTLs are not the store's business: it returns
raw values and event times, and `almanac.online.response` turns them into statuses.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import pyarrow as pa

if TYPE_CHECKING:
    from almanac.config import RepoConfig

# The columns every store reads and writes, and the shape of what it reads back, are
# defined with the rules (tiles evaluate ViewRows too).
from almanac.semantics.rows import CREATED_TIMESTAMP, EVENT_TIMESTAMP, ViewRows

__all__ = [
    "CREATED_TIMESTAMP",
    "EVENT_TIMESTAMP",
    "Merge",
    "OnlineStore",
    "ViewRead",
    "ViewRows",
    "Watermark",
]


class ViewRead(NamedTuple):
    """What to read from one view: the features of each entity row.

    `key_columns[i]` holds the values of `join_keys[i]`, one per entity row (ints for
    int64 keys, str for string keys, already validated). `dtypes[j]` is the dtype of
    `features[j]`; backends that store untyped bytes need it to decode.
    """

    view: str
    join_keys: list[str]
    key_columns: list[list[Any]]
    features: list[str]
    dtypes: list[str]


# (what the store holds for each row's entity, the rows) -> the rows to write
Merge = Callable[[ViewRows, pa.Table], pa.Table]


class Watermark(NamedTuple):
    """How far a view is materialized into one store: up to `time` (aware UTC; None:
    values were written, by pushes or a run not finished yet, but no materialization
    completed), under the definition whose `values_fingerprint` is `layout`."""

    time: datetime | None
    layout: str


class OnlineStore(ABC):
    """Latest values per (project, view, entity key); see the module docstring."""

    @classmethod
    @abstractmethod
    def from_config(cls, config: RepoConfig) -> OnlineStore:
        """The store `config.online.url` names (a backend registered for its scheme)."""

    @abstractmethod
    def write_batch(
        self, project: str, view: str, join_keys: list[str], features: list[str], table: pa.Table
    ) -> int:
        """Write rows (join keys, features, `event_timestamp`, optionally
        `created_timestamp`); return how many rows changed the store (rows older than
        what is stored are skipped).

        A batch that fails validation raises `InputError` before anything is written.
        """

    @abstractmethod
    def merge_batch(
        self,
        project: str,
        view: str,
        join_keys: list[str],
        features: list[str],
        table: pa.Table,
        merge: Merge,
    ) -> int:
        """A read-modify-write of each row's entity: write ``merge(stored, table)``,
        where `stored` is what the store holds for the rows' entities (in row order;
        `table` has one row per entity). Atomic per entity: no other write to an
        entity lands between reading it and writing it. `merge` may be called again
        for rows another writer changed meanwhile, so it must be a pure function; it
        returns the same keys in the same order, with event times no older than the
        stored ones. Returns the number of rows written."""

    @abstractmethod
    def read(self, project: str, requests: list[ViewRead]) -> list[ViewRows]:
        """Read every request in one round trip; one `ViewRows` per request, in order."""

    def read_with_watermarks(
        self, project: str, requests: list[ViewRead]
    ) -> tuple[list[ViewRows], dict[str, Watermark]]:
        """`read` and `watermarks` together (a read at an explicit time checks the views'
        watermarks): in one round trip where the backend can, as one Redis node does."""
        return self.read(project, requests), self.watermarks(project)

    async def read_async(self, project: str, requests: list[ViewRead]) -> list[ViewRows]:
        """`read` for an asyncio caller: must never block the event loop. The default
        runs `read` in a worker thread; backends with a native async path override it."""
        return await asyncio.to_thread(self.read, project, requests)

    async def ping_async(self) -> None:
        """`ping` without blocking the event loop."""
        await asyncio.to_thread(self.ping)

    async def aclose(self) -> None:
        """Release what the running event loop holds (connections opened by
        `read_async`); `close` still releases everything else."""
        return None  # nothing by default: the default read_async holds no connection

    @property
    def backend(self) -> str:
        """A short name for metrics and health reports ("sqlite", "redis")."""
        return type(self).__name__

    @abstractmethod
    def delete_view(self, project: str, view: str) -> None:
        """Forget every value of a view and its watermark (for example when it is
        deleted or retyped). The watermark goes first: a deletion that fails half-way
        leaves a view that the next materialization rewrites from the start."""

    @abstractmethod
    def watermarks(self, project: str) -> dict[str, Watermark]:
        """Per view, how far materialization has written it into this store; views never
        materialized here are absent."""

    @abstractmethod
    def set_watermark(
        self, project: str, view: str, watermark: datetime | None, layout: str
    ) -> None:
        """Record that `view` is materialized into this store up to `watermark` under
        definition `layout` (None: values of that layout are being written, nothing is
        materialized yet). Under the same layout a watermark never moves back (an older
        one, or None, is ignored); a new layout replaces it."""

    @abstractmethod
    def ping(self) -> None:
        """Cheap health check: return when the store answers, else StoreUnavailableError."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the store must not be used afterwards."""

    def __enter__(self) -> OnlineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
