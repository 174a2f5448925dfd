"""Commands on data quality: `stats`, `drift` and `validate` over a view's offline rows
(each with `--json`)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any

import typer
from rich.table import Table

from almanac.cli.app import app, console, open_store
from almanac.quality.checks import parse_window

_START = typer.Option("--start", help="Earliest event time (ISO 8601); default: the first.")
_END = typer.Option("--end", help="Latest event time (ISO 8601); default: the last.")
_JSON = typer.Option("--json", help="Print JSON.")


def _number(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:,.4g}" if isinstance(value, float) else str(value)


@app.command()
def stats(
    view: Annotated[str, typer.Argument(help="A feature view.")],
    start: Annotated[str | None, _START] = None,
    end: Annotated[str | None, _END] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Statistics of each feature of a view over its offline rows."""
    with open_store() as store:
        found = store.statistics(view, start, end)
    if as_json:
        typer.echo(json.dumps([s.to_dict() for s in found], indent=2, default=str))
        return
    table = Table(title=f"{view}: {found[0].rows:,} rows" if found else view)
    for column in ("feature", "nulls", "distinct", "min", "p50", "max", "mean", "stddev", "top"):
        table.add_column(column, overflow="fold")
    for s in found:
        top = ", ".join(f"{v} ({n:,})" for v, n in s.top[:3])
        table.add_row(
            s.feature + (" (lengths)" if s.of == "lengths" else ""), f"{s.null_rate:.1%}",
            _number(s.distinct), _number(s.min), _number(s.quantiles.get("p50")),
            _number(s.max), _number(s.mean), _number(s.stddev), top,
        )  # fmt: skip
    console.print(table)


@app.command()
def drift(
    view: Annotated[str, typer.Argument(help="A feature view.")],
    reference: Annotated[
        str, typer.Option("--reference", help="The reference window START..END (ISO 8601).")
    ],
    current: Annotated[
        str, typer.Option("--current", help="The current window START..END (ISO 8601).")
    ],
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Drift of each feature of a view between two windows: PSI, Jensen–Shannon, KS."""
    with open_store() as store:
        found = store.drift(
            view, parse_window(reference, "--reference"), parse_window(current, "--current")
        )
    if as_json:
        typer.echo(json.dumps([d.to_dict() for d in found], indent=2))
        return
    table = Table(title=f"{view}: {reference} → {current}")
    for column in ("feature", "rows", "psi", "js", "ks", "status"):
        table.add_column(column)
    colors = {"ok": "green", "warn": "yellow", "drift": "red"}
    for d in found:
        status = f"[{colors.get(d.status, 'white')}]{d.status}[/]"
        table.add_row(
            d.feature, f"{d.reference_rows:,} → {d.current_rows:,}", _number(d.psi),
            _number(d.js), _number(d.ks), status,
        )  # fmt: skip
    console.print(table)


@app.command()
def validate(
    view: Annotated[str, typer.Argument(help="A feature view with expectations.")],
    start: Annotated[str | None, _START] = None,
    end: Annotated[str | None, _END] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Check a view's expectations over its offline rows; exit 1 if any is breached."""
    with open_store() as store:
        result = store.validate(view, start, end)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
    elif result.passed:
        console.print(f"[green]{view}: {result.rows:,} rows meet every expectation[/]")
    else:
        for breach in result.breaches:
            console.print(f"[red]{view}: {breach.describe()}[/]")
    if not result.passed:
        raise typer.Exit(1)


@app.command()
def freshness(
    views: Annotated[list[str] | None, typer.Argument(help="Views (default: all).")] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """How old each view's newest event and online refresh are, against its SLO; exit 1
    if any view is stale or lagging."""
    with open_store() as store:
        found = store.freshness(views or None)
    if as_json:
        typer.echo(json.dumps([f.to_dict() for f in found], indent=2))
    else:
        table = Table(title="freshness")
        for column in ("view", "newest event", "age", "online lag", "slo", "status"):
            table.add_column(column)
        colors = {"ok": "green", "stale": "red", "lagging": "yellow"}
        for f in found:
            table.add_row(
                f.view, "" if f.newest_event is None else f.newest_event.isoformat(timespec="seconds"),
                _age(f.event_age_seconds), _age(f.materialization_lag_seconds),
                _age(f.slo_seconds), f"[{colors.get(f.status, 'white')}]{f.status}[/]",
            )  # fmt: skip
        console.print(table)
    if any(f.status in ("stale", "lagging") for f in found):
        raise typer.Exit(1)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    from almanac.definitions.base import format_duration

    return format_duration(timedelta(seconds=round(seconds)))


@app.command()
def quarantine(
    view: Annotated[str, typer.Argument(help="A view with on_violation='quarantine'.")],
    limit: Annotated[int, typer.Option("--limit", "-n", help="Rows to show.")] = 10,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """List the rows a view kept aside, newest first, with the expectations they broke."""
    with open_store() as store:
        held = store.quarantine(view)
    if as_json:
        typer.echo(json.dumps(held.to_dict(limit), indent=2, default=str))
        return
    console.print(f"{view}: {held.rows.num_rows:,} rows in quarantine")
    for reason, count in sorted(held.reasons().items(), key=lambda item: -item[1]):
        console.print(f"  {count:,} × {reason}")
    if held.rows.num_rows:
        table = Table()
        for name in held.rows.column_names:
            table.add_column(name, overflow="fold")
        for row in held.rows.slice(0, limit).to_pylist():
            table.add_row(*(str(value) for value in row.values()))
        console.print(table)


@app.command()
def skew(
    service: Annotated[str, typer.Argument(help="A feature service.")],
    start: Annotated[
        str | None, typer.Option("--start", help="Earliest read time (ISO 8601).")
    ] = None,
    end: Annotated[str | None, typer.Option("--end", help="Latest read time (ISO 8601).")] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Replay the logged online reads of a feature service offline and compare them
    value by value; exit 1 if any feature differs."""
    with open_store() as store:
        report = store.skew(service, start, end)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        table = Table(title=f"{service}: {report.rows:,} logged entity reads")
        for column in ("feature", "compared", "mismatches", "missing", "extra", "rate"):
            table.add_column(column)
        for f in report.features:
            color = "green" if f.rate == 0 else "red"
            table.add_row(
                f.feature, f"{f.compared:,}", f"{f.mismatches:,}", f"{f.missing:,}",
                f"{f.extra:,}", f"[{color}]{f.rate:.2%}[/]",
            )  # fmt: skip
        console.print(table)
    if any(f.rate for f in report.features):
        raise typer.Exit(1)
