"""Running materialization on each view's cadence: `schedule` (a long-running process),
`run-due` (once, for cron and Airflow) and `runs` (the history of every materialization);
see `almanac.materialize.scheduler`."""

from __future__ import annotations

import json
import logging
import signal
import threading
from datetime import timedelta
from typing import Annotated

import typer
from rich.table import Table

from almanac.cli.app import app, console, duration, err_console, open_store
from almanac.definitions import format_duration
from almanac.materialize.history import RunRecord

_VIEWS = typer.Option("--views", "-v", help="Only these views (default: every view with materialize_every).")  # fmt: skip
_JSON = typer.Option("--json", help="Print JSON.")


def _runs_table(runs: list[RunRecord], title: str) -> Table:
    table = Table(title=title)
    for column in ("started", "view", "window", "rows", "seconds", "outcome", "trigger", "error"):
        table.add_column(column, overflow="fold")
    colour = {"success": "green", "skipped": "dim", "refused": "yellow", "failed": "red"}
    for r in runs:
        window = f"{r.start.isoformat() if r.start else '(first row)'} → {r.end.isoformat()}"
        table.add_row(
            r.started_at.isoformat(timespec="seconds"), r.view, window, f"{r.rows:,}",
            f"{r.seconds:.2f}", f"[{colour[r.outcome]}]{r.outcome}[/]", r.trigger, r.error[:200],
        )  # fmt: skip
    return table


@app.command()
def runs(
    view: Annotated[str | None, typer.Option("--view", help="One view's runs.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Runs started at or after (ISO 8601).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 50,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """The materialization history, newest first: manual and scheduled runs, their
    windows, rows, durations, outcomes and errors."""
    with open_store() as store:
        found = store.runs(view, since=since, limit=limit)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in found], indent=2))
        return
    console.print(_runs_table(found, "materialization runs"))


@app.command("run-due")
def run_due(
    views: Annotated[list[str] | None, _VIEWS] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Materialize once every view whose materialize_every says it is due, and exit:
    0 when every run succeeded (or nothing was due), 1 when one failed or was refused."""
    with open_store() as store:
        done = store.run_due(views)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in done], indent=2))
    elif done:
        console.print(_runs_table(done, "runs"))
    else:
        console.print("nothing is due")
    if any(r.outcome in ("failed", "refused") for r in done):
        raise typer.Exit(1)


@app.command()
def schedule(
    views: Annotated[list[str] | None, _VIEWS] = None,
    poll: Annotated[
        float, typer.Option("--poll", min=0.05, help="Seconds between two looks for due views.")
    ] = 1.0,
    lease: Annotated[
        str,
        typer.Option(
            "--lease",
            help="A view's lease; another scheduler takes over this long after this one dies.",
        ),
    ] = "60s",
    compact_every: Annotated[
        str,
        typer.Option(
            "--compact-every", help="Compact push and stream logs this often (0s: never)."
        ),
    ] = "10m",
) -> None:
    """Run each view's incremental materialization at its materialize_every, under a
    lease (several schedulers may run: never two on one view), retrying failures with
    backoff, and compact the push and stream logs. SIGTERM or Ctrl-C finishes the run
    in hand and stops."""
    from almanac.materialize.scheduler import Scheduler, due_times, scheduled_views

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    store = open_store()
    every = duration(compact_every, "--compact-every")
    scheduler = Scheduler(
        store, store.registry.state, views, poll_seconds=poll,
        lease=duration(lease, "--lease"), compact_every=every if every > timedelta(0) else None,
        on_run=lambda r: console.print(
            f"{r.started_at:%H:%M:%S} {r.view}: {r.outcome}, {r.rows:,} rows in {r.seconds:.2f} s"
            + (f" — {r.error}" if r.error else ""), highlight=False, soft_wrap=True,
        ),
    )  # fmt: skip
    chosen = scheduled_views(store, views)
    if not chosen:
        err_console.print("no view has materialize_every: nothing to schedule")
        raise typer.Exit(2)
    for due in due_times(store, store.registry.state, views):
        console.print(f"{due.view}: every {format_duration(due.every)}", highlight=False)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        scheduler.run(stop)
    finally:
        store.close()
    console.print("scheduler stopped")
