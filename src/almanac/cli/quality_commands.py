"""Commands on data quality: `stats`, `drift` and `validate` over a view's offline rows,
`freshness`, `quarantine`, `skew`, and the saved training sets (`datasets`); each with
`--json`."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any

import typer
from rich.table import Table

from almanac.cli.app import app, console, open_store

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
        str | None,
        typer.Option("--reference", help="The reference window START..END (ISO 8601)."),
    ] = None,
    current: Annotated[
        str | None, typer.Option("--current", help="The current window START..END (ISO 8601).")
    ] = None,
    reference_dataset: Annotated[
        str | None,
        typer.Option("--reference-dataset", help="A saved dataset as the reference."),
    ] = None,
    current_dataset: Annotated[
        str | None, typer.Option("--current-dataset", help="A saved dataset as the current.")
    ] = None,
    current_served: Annotated[
        str | None,
        typer.Option("--current-served", help="The values served in START..END (the serving log)."),
    ] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Drift of each feature of a view between two samples (windows of its offline rows,
    saved datasets, or the values served): PSI, Jensen–Shannon, KS."""
    from almanac.quality.checks import sample

    before = sample(reference, reference_dataset, "--reference / --reference-dataset")
    after = sample(
        current, current_dataset, "--current / --current-dataset / --current-served",
        current_served,
    )  # fmt: skip
    with open_store() as store:
        found = store.drift(view, before, after)
    reference = reference or f"dataset {reference_dataset}"
    current = current or (f"dataset {current_dataset}" if current_dataset else f"served {current_served}")  # fmt: skip
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


datasets_app = typer.Typer(help="Saved training sets (`almanac historical --save-as NAME`).")
app.add_typer(datasets_app, name="datasets")


@datasets_app.command("list")
def datasets_list(as_json: Annotated[bool, _JSON] = False) -> None:
    """The saved datasets, newest first."""
    with open_store() as store:
        found = store.datasets()
    if as_json:
        typer.echo(json.dumps([d.to_dict() for d in found], indent=2, default=str))
        return
    table = Table(title="saved datasets")
    for column in ("name", "created", "rows", "features", "service", "registry version"):
        table.add_column(column, overflow="fold")
    for d in found:
        table.add_row(
            d.name, d.created_at, f"{d.rows:,}", str(len(d.features)),
            d.feature_service or "", str(d.registry_version),
        )  # fmt: skip
    console.print(table)


@datasets_app.command("show")
def datasets_show(
    name: Annotated[str, typer.Argument(help="A saved dataset.")],
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """A saved dataset's features and their statistics at the time it was saved."""
    with open_store() as store:
        found = store.dataset(name)
    if as_json:
        typer.echo(json.dumps(found.to_dict(), indent=2, default=str))
        return
    console.print(
        f"{found.name}: {found.rows:,} rows, saved {found.created_at} under registry version "
        f"{found.registry_version}"
        + (f" (service {found.feature_service})" if found.feature_service else "")
    )
    table = Table()
    for column in ("feature", "column", "nulls", "distinct", "min", "p50", "max", "mean"):
        table.add_column(column, overflow="fold")
    by_column = {s["feature"]: s for s in found.statistics}
    for f in found.features:
        s = by_column.get(f.column, {})
        table.add_row(
            f.ref, f.column, f"{s.get('null_rate', 0):.1%}", _number(s.get("distinct")),
            _number(s.get("min")), _number(s.get("quantiles", {}).get("p50")),
            _number(s.get("max")), _number(s.get("mean")),
        )  # fmt: skip
    console.print(table)


@datasets_app.command("delete")
def datasets_delete(name: Annotated[str, typer.Argument(help="A saved dataset.")]) -> None:
    """Delete a saved dataset (its rows and its statistics)."""
    from almanac.quality.datasets import delete

    with open_store() as store:
        delete(store.config, name)
    console.print(f"deleted dataset '{name}'")


@app.command()
def results(
    view: Annotated[str | None, typer.Argument(help="A view (default: all).")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only results from this time (ISO 8601).")
    ] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Only the failed ones.")] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Results to show.")] = 20,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """The recorded results of expectations, newest first: one per expectation per batch
    checked (push, write, materialization, validate)."""
    from almanac.semantics.times import to_utc

    with open_store() as store:
        found = store.results(view, None if since is None else to_utc(since, "--since"), failed)
    if as_json:
        typer.echo(json.dumps(found.to_dict(limit), indent=2, default=str))
        return
    summary = found.to_dict(limit)
    table = Table(title=f"{summary['results']:,} results, {summary['failed']:,} failed")
    for column in ("at", "view", "entry", "batch", "expectation", "observed", "rows", "passed", "policy"):  # fmt: skip
        table.add_column(column, overflow="fold")
    for r in summary["newest"]:
        passed = "[green]yes[/]" if r["passed"] else "[red]no[/]"
        table.add_row(
            r["at"].isoformat(timespec="seconds"), r["view"], r["entry"], r["batch"],
            r["expectation"], f"{r['observed']:,}", f"{r['rows']:,}", passed, r["policy"],
        )  # fmt: skip
    console.print(table)
