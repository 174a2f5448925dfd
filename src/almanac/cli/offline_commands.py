"""Commands on the offline store: `historical` (training sets), `history-values` (one
entity's timeline, and what a model saw at a time) and `compact` (push and stream logs)."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from almanac.cli.app import app, console, open_store
from almanac.errors import InputError
from almanac.semantics.times import to_utc

_PREVIEW_ROWS = 10


def _entities(text: str) -> str | Path:
    """A Parquet file or folder, or a CSV file, by path (the engine reads and checks
    them); anything else is SQL text."""
    path = Path(text)
    if path.suffix.lower() in (".parquet", ".pq") or path.is_dir():
        return path.resolve()
    if path.suffix.lower() in (".csv", ".tsv"):
        return str(path.resolve())
    return text


@app.command()
def historical(
    entities: Annotated[
        str,
        typer.Option(
            "--entities", "-e", help="Entity rows: a Parquet or CSV file, or a DuckDB SQL query."
        ),
    ],
    features: Annotated[
        list[str] | None,
        typer.Option(
            "--features", "-f", help="A feature ('view:feature') or a whole view; repeat."
        ),
    ] = None,
    service: Annotated[
        str | None, typer.Option("--service", "-s", help="A feature service.")
    ] = None,
    full_feature_names: Annotated[
        bool, typer.Option("--full-feature-names", help="Name columns view__feature.")
    ] = False,
    timestamp_field: Annotated[
        str, typer.Option("--timestamp-field", help="The entity rows' time column.")
    ] = "event_timestamp",
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write the training set here (Parquet, atomic)."),
    ] = None,
    save_as: Annotated[
        str | None,
        typer.Option(
            "--save-as", help="Keep it as a saved dataset (the reference for `almanac drift`)."
        ),
    ] = None,
    transformed: Annotated[
        bool, typer.Option("--transformed", help="Apply the service's fitted transforms.")
    ] = False,
) -> None:
    """Build a point-in-time correct training set (request fields of on-demand features
    are read from the entity rows' columns)."""
    started = time.perf_counter()
    with open_store() as store:
        job = store.get_historical_features(
            _entities(entities),
            features or None,
            feature_service=service,
            full_feature_names=full_feature_names,
            timestamp_field=timestamp_field,
            save_as=save_as,
            transformed=transformed,
        )
        table = job.to_arrow()
        if out is not None:
            job.to_parquet(out)
    seconds = time.perf_counter() - started
    summary = Table(title=f"training set: {table.num_rows:,} rows, {seconds:.2f} s")
    summary.add_column("feature")
    summary.add_column("type")
    summary.add_column("filled", justify="right")
    for field in job.feature_schema:
        nulls = table.column(field.name).null_count
        filled = 100.0 * (table.num_rows - nulls) / table.num_rows if table.num_rows else 0.0
        summary.add_row(field.name, str(field.type), f"{filled:.1f}%")
    console.print(summary)
    if save_as is not None:
        console.print(f"saved as dataset '{save_as}' (almanac datasets show {save_as})")
    if out is not None:
        console.print(f"wrote {out}")
    else:
        _preview(table)


@app.command("fit-transforms")
def fit_transforms(
    service: Annotated[str, typer.Argument(help="The feature service whose transforms to fit.")],
    training: Annotated[
        str,
        typer.Option(
            "--training",
            "-t",
            help="The training set: its features and label columns (a Parquet file).",
        ),
    ],
    timestamp_field: Annotated[
        str, typer.Option("--timestamp-field", help="The training set's time column.")
    ] = "event_timestamp",
) -> None:
    """Fit a feature service's transforms (scalers, encoders) on a training set and record
    them in the registry as a new version (applied by `--transformed` reads)."""
    with open_store() as store:
        fitted = store.fit_transforms(service, _entities(training), timestamp_field=timestamp_field)  # fmt: skip
    console.print(
        f"fitted {len(fitted.fitted.transforms)} transforms of '{service}' on "
        f"{fitted.fitted.num_rows:,} rows: version {fitted.version}"
    )


def _preview(table: Any) -> None:
    preview = Table(title=f"first {min(_PREVIEW_ROWS, table.num_rows)} rows (use --out to save)")
    for name in table.column_names:
        preview.add_column(name)
    for row in table.slice(0, _PREVIEW_ROWS).to_pylist():
        preview.add_row(*[_show(value) for value in row.values()])
    console.print(preview)


def _show(value: Any) -> str:
    if value is None:
        return "[dim]null[/]"
    if isinstance(value, datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S")
        return text + (f".{value.microsecond:06d}" if value.microsecond else "")
    return str(value)


@app.command("history-values")
def history_values(
    view: Annotated[str, typer.Argument(help="The feature view.")],
    key: Annotated[
        list[str],
        typer.Option("--key", "-k", help="A join key value, key=value; repeat for composite keys."),
    ],
    at: Annotated[
        str | None, typer.Option("--at", help="Mark the row a model saw at this time (ISO 8601).")
    ] = None,
) -> None:
    """Show one entity's rows in a view, oldest first."""
    keys: dict[str, str] = {}
    for item in key:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InputError(f"--key: expected key=value, got {item!r}")
        keys[name.strip()] = value
    moment = to_utc(at, "--at") if at is not None else None
    with open_store() as store:
        catalog = store.catalog
        history = store.offline.value_history(catalog, catalog.view(view), keys, at=moment)
    label = ", ".join(f"{k}={v}" for k, v in keys.items())
    table = Table(title=f"{view} for {label}: {history.num_rows} row(s)")
    columns = [name for name in history.column_names if name != "selected"]
    for name in columns:
        table.add_column(name)
    if moment is not None:
        table.add_column(f"seen at {moment.isoformat()}")
    selected = history.column("selected").to_pylist() if moment is not None else []
    for i, row in enumerate(history.to_pylist()):
        cells = [_show(row[name]) for name in columns]
        if moment is not None:
            cells.append("[bold green]◀ this row[/]" if selected[i] else "")
        table.add_row(*cells, style="bold" if selected and selected[i] else None)
    console.print(table)
    if moment is not None and not any(selected):
        console.print(
            f"[yellow]no row counts at {moment.isoformat()}[/] (none yet, or older than the TTL)"
        )


@app.command()
def compact(
    sources: Annotated[
        list[str] | None, typer.Argument(help="Push or stream sources (default: all of them).")
    ] = None,
    min_age: Annotated[
        str, typer.Option("--min-age", help="Merge only files at least this old (e.g. 1m, 0s).")
    ] = "1m",
    grace: Annotated[
        str,
        typer.Option("--grace", help="Delete replaced files once their merge is this old."),
    ] = "10m",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Merge the small files of push and stream sources' offline logs into one per
    source, in order (training sets are unchanged and read fewer files)."""
    from dataclasses import asdict

    with open_store() as store:
        done = store.compact(sources, min_age=min_age, grace=grace)
    if as_json:
        typer.echo(json.dumps([asdict(c) for c in done], indent=2))
        return
    table = Table(title="compaction")
    for column in ("source", "files before", "merged", "rows", "files after", "deleted", "note"):
        table.add_column(column)
    for c in done:
        table.add_row(
            c.source, f"{c.files_before:,}", f"{c.merged_files:,}", f"{c.rows:,}",
            f"{c.files_after:,}", f"{c.deleted_files:,}", c.skipped or f"{c.seconds:.2f} s",
        )  # fmt: skip
    console.print(table)
