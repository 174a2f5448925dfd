"""The cadence scheduler: each view's incremental materialization at its
`materialize_every`, and the compaction of push and stream logs.

What is due is read from the run history (`almanac.materialize.history`), not kept in
the process, so `almanac run-due` from cron and a long-running `almanac schedule` agree,
and a restarted scheduler carries on where the last one stopped (a view's write-time
on-demand views run with it):

- a view that never ran is due now;
- after a success (or a refusal, or a skip) it is due `materialize_every` later, from
  when that run started — a manual run counts too;
- after n failures in a row it is retried with backoff: 10 s, 20 s, 40 s … but never
  later than its cadence.

A view is run under a lease in the registry (`materialize:<view>`, renewed while it
runs): two schedulers never run one view at once, and a scheduler that dies loses its
lease when it expires (`LEASE`, 60 s), so another takes over. A failing view is recorded
and retried; it never stops the others.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from almanac.config import RepoConfig
from almanac.definitions import FeatureView
from almanac.definitions.sources import PushSource
from almanac.errors import InputError
from almanac.materialize import history
from almanac.materialize.history import RunRecord
from almanac.materialize.jobs import ViewRun, materialize_incremental
from almanac.materialize.late import LateRows
from almanac.offline.compaction import compact
from almanac.ports.handles import StoreHandle
from almanac.registry.on_demand import write_time_views
from almanac.registry.state import OperationalState

log = logging.getLogger("almanac.schedule")

LEASE = timedelta(seconds=60)
BACKOFF = timedelta(seconds=10)
COMPACT_EVERY = timedelta(minutes=10)
KEEP_RUNS = timedelta(days=90)


@dataclass(frozen=True)
class Due:
    view: str
    every: timedelta
    due_at: datetime
    failures: int  # in a row, since the last run that did not fail
    last: RunRecord | None


def scheduled_views(store: StoreHandle, names: Sequence[str] | None = None) -> list[FeatureView]:
    """Online views with a `materialize_every` (all of them, or those of `names`)."""
    views = store.catalog.all_views()
    if names:
        missing = [n for n in names if n not in views]
        if missing:
            store.catalog.view(missing[0])  # the NotFoundError, with suggestions
        chosen = [views[n] for n in names]
        unscheduled = [v.name for v in chosen if v.materialize_every is None or not v.online]
        if unscheduled:
            raise InputError(
                f"feature view '{unscheduled[0]}' has no materialize_every (or online=False): "
                "the scheduler runs only views with a cadence"
            )
        return chosen
    return [v for v in views.values() if v.online and v.materialize_every is not None]


def due_times(store: StoreHandle, state: OperationalState, names: Sequence[str] | None = None) -> list[Due]:  # fmt: skip
    """When each scheduled view is due, from its run history."""
    out = []
    for view in scheduled_views(store, names):
        every = view.materialize_every
        assert every is not None
        recent = history.runs(state, view.name, limit=50)
        failures = 0
        for run in recent:
            if run.outcome != "failed":
                break
            failures += 1
        if not recent:
            due_at = datetime.min.replace(tzinfo=UTC)
        elif failures:
            due_at = recent[0].started_at + min(every, BACKOFF * 2 ** min(failures - 1, 20))
        else:
            due_at = recent[0].started_at + every
        out.append(Due(view.name, every, due_at, failures, recent[0] if recent else None))
    return out


def recorder(state: OperationalState, trigger: str, kept: list[RunRecord] | None = None) -> Callable[[ViewRun], None]:  # fmt: skip
    """A `RunCallback` that records each run in the history (and in `kept`). A history
    that cannot be written is logged: the materialization itself has succeeded."""
    host = history.holder()

    def record(run: ViewRun) -> None:
        entry = RunRecord(
            view=run.view, started_at=run.started_at, start=run.start, end=run.end,
            rows=run.rows, seconds=run.seconds, outcome=run.outcome,
            error=run.error or run.refused, trigger=trigger, host=host,
        )  # fmt: skip
        if kept is not None:
            kept.append(entry)
        try:
            history.record(state, entry)
        except Exception:
            log.warning("could not record the run of '%s' in the history", run.view, exc_info=True)

    return record


def run_due(
    store: StoreHandle,
    state: OperationalState,
    names: Sequence[str] | None = None,
    *,
    holder: str | None = None,
    lease: timedelta = LEASE,
    stop: threading.Event | None = None,
) -> list[RunRecord]:
    """Run every view that is due now, each under its lease; the runs made (a view
    another scheduler holds is left to it)."""
    holder = holder or history.holder(unique=True)
    done: list[RunRecord] = []
    for due in due_times(store, state, names):
        if stop is not None and stop.is_set():
            break
        if due.due_at > datetime.now(UTC):
            continue
        name = f"materialize:{due.view}"
        if not state.acquire_lease(name, holder, lease):
            continue
        try:
            with _renewed(state, name, holder, lease):
                # Due still? Another scheduler may have run it just before the lease.
                fresh = {d.view: d for d in due_times(store, state, [due.view])}[due.view]
                if fresh.due_at > datetime.now(UTC):
                    continue
                done += _run_one(store, state, due.view)
        finally:
            state.release_lease(name, holder)
    return done


def _run_one(store: StoreHandle, state: OperationalState, view: str) -> list[RunRecord]:
    runs: list[RunRecord] = []
    try:
        late = LateRows(store.config, store.catalog, state)
        record = recorder(state, "schedule", runs)
        # Its write-time on-demand views are computed from its rows: on its cadence too.
        derived = [v.name for v in write_time_views(store.catalog, view)]
        materialize_incremental(store, datetime.now(UTC), [view, *derived], on_run=record, late=late)  # fmt: skip
    except Exception as error:  # recorded as failed by the job; the others go on
        log.warning("materialization of '%s' failed: %s", view, error)
    return runs


class _renewed:
    """Renew a lease every third of its time while the block runs."""

    def __init__(self, state: OperationalState, name: str, holder: str, lease: timedelta) -> None:
        self.args, self.every = (name, holder, lease), lease.total_seconds() / 3
        self.state, self.done = state, threading.Event()
        self.thread = threading.Thread(target=self._renew, name="almanac-lease", daemon=True)

    def _renew(self) -> None:
        while not self.done.wait(self.every):
            try:
                if not self.state.acquire_lease(*self.args):
                    # Another holder has it (this one was too slow to renew): its run
                    # may overlap this one; the monotonic writes keep the values right.
                    log.error("lost the lease %s to another scheduler while running", self.args[0])  # fmt: skip
            except Exception:  # the registry away a moment: the next renewal tries again
                log.warning("could not renew the lease %s", self.args[0], exc_info=True)

    def __enter__(self) -> None:
        self.thread.start()

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()


class Scheduler:
    """`almanac schedule`: `run_due` every `poll_seconds` until `stop` is set (the run
    in hand finishes first), and every `compact_every` the compaction of push and
    stream logs."""

    def __init__(
        self,
        store: StoreHandle,
        state: OperationalState,
        names: Sequence[str] | None = None,
        *,
        poll_seconds: float = 1.0,
        lease: timedelta = LEASE,
        compact_every: timedelta | None = COMPACT_EVERY,
        on_run: Callable[[RunRecord], None] | None = None,
    ) -> None:
        self.store, self.state, self.names = store, state, names
        self.poll_seconds, self.lease, self.compact_every = poll_seconds, lease, compact_every
        self.on_run = on_run
        self.holder = history.holder(unique=True)
        self._compacted = time.monotonic()
        self._pruned = 0.0

    def run(self, stop: threading.Event) -> None:
        scheduled_views(self.store, self.names)  # a bad --views fails at once
        while not stop.is_set():
            try:
                for run in run_due(self.store, self.state, self.names, holder=self.holder, lease=self.lease, stop=stop):  # fmt: skip
                    if self.on_run is not None:
                        self.on_run(run)
                self._housekeeping()
            except Exception:  # the registry or a store away: try again next round
                log.exception("scheduler round failed")
            stop.wait(self.poll_seconds)

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if self.compact_every is not None and now - self._compacted >= self.compact_every.total_seconds():  # fmt: skip
            self._compacted = now
            compact_logs(self.store.config, self.store, self.state, self.holder, self.lease)
        if now - self._pruned >= 3600:
            self._pruned = now
            self.state.prune_runs(history.KIND, datetime.now(UTC) - KEEP_RUNS)


def compact_logs(config: RepoConfig, store: StoreHandle, state: OperationalState, holder: str, lease: timedelta) -> None:  # fmt: skip
    """Compact every push and stream source's log, each under its lease."""
    for name, source in store.catalog.sources.items():
        if not isinstance(source, PushSource):
            continue
        lease_name = f"compact:{name}"
        if not state.acquire_lease(lease_name, holder, lease):
            continue
        try:
            done = compact(config, source)
            if done.merged_files:
                log.info("compacted %s: %d files, %d rows", name, done.merged_files, done.rows)
        except Exception:
            log.exception("compaction of %s failed", name)
        finally:
            state.release_lease(lease_name, holder)
