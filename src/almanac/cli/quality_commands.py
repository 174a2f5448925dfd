"""Commands on data quality: `stats`, `drift` and `validate` over a view's offline rows
(each with `--json`)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from almanac.cli.app import app, console, open_store
from almanac.errors import InputError

_START = typer.Option("--start", help="Earliest event time (ISO 8601); default: the first.")
_END = typer.Option("--end", help="Latest event time (ISO 8601); default: the last.")
_JSON = typer.Option("--json", help="Print JSON.")


def _window(text: str, option: str) -> tuple[str | None, str | None]:
    """'T1..T2' (either side may be empty) as (start, end)."""
    if ".." not in text:
        raise InputError(f"{option}: expected START..END (ISO 8601, either may be empty), got {text!r}")  # fmt: skip
    start, end = text.split("..", 1)
    return start.strip() or None, end.strip() or None


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
        found = store.drift(view, _window(reference, "--reference"), _window(current, "--current"))
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
