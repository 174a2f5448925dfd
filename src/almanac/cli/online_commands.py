"""Commands that fill and read the online store: materialize, materialize-incremental,
get-online."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from almanac.cli.app import app, console, err_console, open_store
from almanac.errors import InputError, NotFoundError
from almanac.registry.catalog import Catalog

if TYPE_CHECKING:
    from almanac.materialize.jobs import MaterializeResult, ProgressCallback


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:,} rows"),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console, transient=False,
    )  # fmt: skip


def _run_with_progress(job: Callable[[ProgressCallback], MaterializeResult]) -> MaterializeResult:
    tasks: dict[str, TaskID] = {}
    started: dict[str, float] = {}
    last_seen = [time.perf_counter()]
    with _progress() as progress:

        def on_batch(view: str, rows: int) -> None:
            now = time.perf_counter()
            if view not in tasks:
                tasks[view] = progress.add_task(view, total=None, rate="")
                # The view's clock starts when the previous one ended: its query counts too.
                started[view] = last_seen[0]
            last_seen[0] = now
            done = progress.tasks[tasks[view]].completed + rows
            rate = f"{done / (now - started[view]):,.0f} rows/s" if now > started[view] else ""
            progress.update(tasks[view], advance=rows, rate=rate)

        result = job(on_batch)
    _summary(result)
    return result


def _summary(result: MaterializeResult) -> None:
    table = Table(title="materialized")
    for column in ("view", "from", "to", "rows", "seconds", "rows/s"):
        table.add_column(column)
    for run in result.runs:
        rows = "[red]refused[/]" if run.refused else f"{run.rows:,}"
        table.add_row(
            run.view, run.start.isoformat() if run.start else "(first row)", run.end.isoformat(),
            rows + (f" ({run.skipped})" if run.skipped else ""),
            f"{run.seconds:.2f}", f"{run.rows_per_second:,.0f}",
        )  # fmt: skip
    console.print(table)
    for run in result.refused:
        err_console.print(f"[bold red]error:[/] {run.refused}", highlight=False, soft_wrap=True)
    if result.refused:
        raise typer.Exit(1)


@app.command()
def materialize(
    start: Annotated[str, typer.Argument(help="Start time (ISO 8601, UTC if no zone).")],
    end: Annotated[str, typer.Argument(help="End time (ISO 8601, UTC if no zone).")],
    views: Annotated[
        list[str] | None, typer.Option("--views", "-v", help="Views (default: all online).")
    ] = None,
) -> None:
    """Write the latest value per entity with event time in [START, END] to the online store."""
    store = open_store()
    _run_with_progress(lambda on_batch: store.materialize(start, end, views, progress=on_batch))


@app.command("materialize-incremental")
def materialize_incremental(
    end: Annotated[str | None, typer.Argument(help="End time (ISO 8601); default now.")] = None,
    views: Annotated[
        list[str] | None, typer.Option("--views", "-v", help="Views (default: all online).")
    ] = None,
) -> None:
    """Materialize each view from its watermark up to END."""
    store = open_store()
    until = end or datetime.now(UTC).isoformat()
    _run_with_progress(
        lambda on_batch: store.materialize_incremental(until, views, progress=on_batch)
    )


def parse_keys(items: list[str], catalog: Catalog) -> dict[str, object]:
    """`user_id=8a2f` pairs, typed by the entities' declared key types."""
    dtypes = {k: t for entity in catalog.entities.values() for k, t in entity.join_keys.items()}
    row: dict[str, object] = {}
    for name, value in _pairs(items, "--key", "join key", dtypes):
        if dtypes[name] == "int64":
            try:
                row[name] = int(value)
            except ValueError:
                raise InputError(f"--key {name}: '{value}' is not an int64") from None
        else:
            row[name] = value
    return row


def parse_request(items: list[str], catalog: Catalog) -> dict[str, object]:
    """`amount=129.5` pairs, typed by the request sources' declared types (times as
    ISO 8601 text, read by the store)."""
    dtypes = {f.name: f.dtype for r in catalog.request_sources.values() for f in r.features}
    return {name: _typed_text(name, dtypes[name], text) for name, text in _pairs(items, "--request", "request field", dtypes)}  # fmt: skip


def _pairs(items: list[str], option: str, kind: str, known: dict[str, str]) -> list[tuple[str, str]]:  # fmt: skip
    """`name=value` items, each name one of `known`."""
    pairs = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"{option} '{item}' is not name=value")
        if name not in known:
            raise NotFoundError(kind, name, known)
        pairs.append((name, value))
    return pairs


def _typed_text(name: str, dtype: str, text: str) -> object:
    try:
        if dtype in ("int32", "int64"):
            return int(text)
        if dtype in ("float32", "float64"):
            return float(text)
    except ValueError:
        raise InputError(f"--request {name}: '{text}' is not {dtype}") from None
    if dtype == "bool":
        if text.lower() not in ("true", "false"):
            raise InputError(f"--request {name}: '{text}' is not true or false")
        return text.lower() == "true"
    return text


@app.command("get-online")
def get_online(
    key: Annotated[
        list[str],
        typer.Option("--key", "-k", help="Join key: name=value (repeat for composite keys)."),
    ],
    features: Annotated[
        list[str] | None, typer.Option("--features", "-f", help="view:feature or view.")
    ] = None,
    service: Annotated[
        str | None, typer.Option("--service", "-s", help="A feature service.")
    ] = None,
    request: Annotated[
        list[str] | None,
        typer.Option("--request", "-r", help="A request field of on-demand features: name=value."),
    ] = None,
    transformed: Annotated[
        bool, typer.Option("--transformed", help="Apply the service's fitted transforms.")
    ] = False,
) -> None:
    """Read one entity's online features, with statuses and event times."""
    store = open_store()
    row = parse_keys(key, store.catalog)
    response = store.get_online_features(
        features, [row], feature_service=service, transformed=transformed,
        request_data=parse_request(request or [], store.catalog),
    )  # fmt: skip
    typer.echo(json.dumps(response.to_dict(include_statuses=True), indent=2, default=str))
