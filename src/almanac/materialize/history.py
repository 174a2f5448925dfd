"""Run history: every materialization of a view, manual or scheduled, recorded in the
registry (`almanac.registry.state`) — its window, rows, duration, outcome and error — so
`almanac runs`, `GET /runs`, the scheduler's cadence and the server's metrics all read
the same record.

Outcomes: `success` (the rows written; the watermark moved), `skipped` (nothing to do:
already materialized to the end), `refused` (the view's expectations refused its rows;
nothing written), `failed` (an error; the watermark did not move).
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from almanac.registry.state import OperationalState

KIND = "materialize"
OUTCOMES = ("success", "skipped", "refused", "failed")


@dataclass(frozen=True)
class RunRecord:
    view: str
    started_at: datetime
    start: datetime | None  # the window's start (None: from the first row)
    end: datetime
    rows: int
    seconds: float
    outcome: str
    error: str = ""
    trigger: str = "manual"  # manual | schedule
    host: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("started_at", "start", "end"):
            out[name] = None if out[name] is None else out[name].isoformat()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        values = dict(data)
        for name in ("started_at", "start", "end"):
            values[name] = None if values.get(name) is None else datetime.fromisoformat(values[name])  # fmt: skip
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})


def holder(unique: bool = False) -> str:
    """Who ran it: host and process (`unique`: and a random tag, for a lease holder:
    two schedulers in one process, or in containers that share a host name and a PID,
    must not share a lease)."""
    base = f"{socket.gethostname()}:{os.getpid()}"
    return f"{base}:{uuid.uuid4().hex[:8]}" if unique else base


def record(state: OperationalState, run: RunRecord) -> None:
    state.record_run(KIND, run.view, run.started_at, run.outcome, run.to_dict())


def runs(
    state: OperationalState,
    view: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[RunRecord]:
    """The newest runs first."""
    return [RunRecord.from_dict(r) for r in state.runs(KIND, view, since, limit)]
