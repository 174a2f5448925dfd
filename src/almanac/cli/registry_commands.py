"""Commands for definitions and the registry: init, plan, apply, list, describe, history."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from almanac.cli.app import app, console, open_store
from almanac.definitions.aggregation import AggregationView
from almanac.definitions.base import format_duration
from almanac.errors import NotFoundError
from almanac.registry.catalog import KINDS, Catalog
from almanac.registry.diff import Plan
from almanac.registry.store import VersionRecord

_ACTION_STYLE = {
    "create": "[green]+ create[/]",
    "update": "[yellow]~ update[/]",
    "delete": "[red]- delete[/]",
}


def _show(value: Any) -> str:
    """A value as text, escaped so that rich prints brackets (`schema[x]`) as they are."""
    text = "∅" if value is None else json.dumps(value) if not isinstance(value, str) else value
    return escape(text)


def render_plan(plan: Plan) -> None:
    for kind, name in plan.kept:
        console.print(
            f"[dim]· keep {kind.replace('_', ' ')} [bold]{escape(name)}[/bold]: not in your "
            "repo and never applied from it (another author's); --prune deletes it[/]",
            highlight=False,
            soft_wrap=True,
        )
    if plan.empty:
        console.print("No changes: the registry matches the repo.")
        return
    tree = Tree(f"Plan against registry version {plan.base_version}")
    for change in plan.changes:
        node = tree.add(
            f"{_ACTION_STYLE[change.action]} {change.kind.replace('_', ' ')} [bold]{change.name}[/]"
        )
        for field in change.fields:
            node.add(
                f"{_show(field.path)}: [red]{_show(field.before)}[/] → "
                f"[green]{_show(field.after)}[/]"
            )
    console.print(tree, highlight=False)
    counts = plan.counts()
    console.print(
        f"{counts['create']} to create, {counts['update']} to update, {counts['delete']} to delete."
    )


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Folder to create.")] = Path("demo_repo"),
    users: Annotated[int, typer.Option(help="Users in the generated sample data.")] = 3000,
    events: Annotated[int, typer.Option(help="Watch events in the sample data.")] = 300_000,
) -> None:
    """Create a starter feature repo (a streaming platform) with generated sample data."""
    from almanac.starter import create_starter_repo

    create_starter_repo(path, users=users, events=events)
    console.print(
        f"Created feature repo [bold]{path}[/] with sample data. Next: cd {path} && almanac plan"
    )


_PRUNE_HELP = (
    "Also delete registered objects this repo does not declare and never applied "
    "(by default they are another author's, and kept)."
)


@app.command()
def plan(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    prune: Annotated[bool, typer.Option("--prune", help=_PRUNE_HELP)] = False,
) -> None:
    """Show what `apply` would change, field by field. Writes nothing."""
    result = open_store().plan(prune=prune)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        render_plan(result)


@app.command()
def apply(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    prune: Annotated[bool, typer.Option("--prune", help=_PRUNE_HELP)] = False,
) -> None:
    """Register the repo's definitions: one atomic, versioned change. The plan (every
    deletion included) is printed before anything is applied."""
    store = open_store()
    planned = store.plan(prune=prune)
    if not as_json:
        render_plan(planned)
    result = store.apply(planned)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    elif not result.empty:
        console.print(f"Applied: registry version {store.catalog.version}.")


class Listing(StrEnum):
    entities = "entities"
    sources = "sources"
    views = "views"
    features = "features"
    services = "services"


def listing_rows(catalog: Catalog, what: Listing) -> list[dict[str, Any]]:
    if what is Listing.entities:
        return [
            {"entity": e.name, "join_keys": ", ".join(f"{k} ({t})" for k, t in e.join_keys.items()),
             "owner": e.owner, "description": e.description}
            for e in catalog.entities.values()
        ]  # fmt: skip
    if what is Listing.sources:
        return [
            {"source": s.name, "type": s.type, "location": getattr(s, "path", None) or getattr(s, "query", "") or "(pushed rows)",
             "timestamp": s.timestamp_field}
            for s in catalog.sources.values()
        ] + [
            {"source": r.name, "type": "request", "location": "(sent with each request): " + ", ".join(f.name for f in r.features),
             "timestamp": ""}
            for r in catalog.request_sources.values()
        ]  # fmt: skip
    if what is Listing.views:
        return [
            {"view": v.name, "kind": v.kind.replace("_", " "), "entities": ", ".join(v.entities),
             "features": len(v.features), "source": v.source,
             "ttl": format_duration(v.ttl) if v.ttl else "", "online": v.online, "owner": v.owner}
            for v in catalog.all_views().values()
        ] + [
            {"view": v.name, "kind": "on-demand view", "entities": "", "features": len(catalog.on_demand_fields(v.name)),
             "source": ", ".join(v.sources), "ttl": "", "online": True, "owner": v.owner}
            for v in catalog.on_demand_views.values()
        ]  # fmt: skip
    if what is Listing.features:
        return [
            {"view": v.name, "feature": f.name, "type": f.dtype, "entity": ", ".join(v.entities),
             "owner": v.owner, "description": f.description}
            for v in catalog.all_views().values() for f in v.features
        ] + [
            {"view": v.name, "feature": f.name, "type": f.dtype, "entity": "(on demand)",
             "owner": v.owner, "description": f.description or v.expressions.get(f.name, "")}
            for v in catalog.on_demand_views.values() for f in catalog.on_demand_fields(v.name)
        ]  # fmt: skip
    return [
        {"service": s.name, "features": ", ".join(s.features), "owner": s.owner, "description": s.description}
        for s in catalog.services.values()
    ]  # fmt: skip


def print_rows(rows: list[dict[str, Any]], title: str) -> None:
    if not rows:
        console.print(f"No {title} registered yet (run `almanac apply`).")
        return
    table = Table(title=title)
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(escape(str(v)) for v in row.values()))
    print_table(table)


def print_table(table: Table) -> None:
    """Fit a table to the terminal; in a pipe or a log, print it whole so no name is cut."""
    if console.is_terminal:
        console.print(table, highlight=False)
    else:
        natural = console.measure(table, options=console.options.update_width(10_000))
        width = max(console.width, natural.maximum)
        Console(file=console.file, width=width, color_system=None).print(table, highlight=False)


@app.command("list")
def list_objects(
    what: Annotated[Listing, typer.Argument(help="What to list.")] = Listing.features,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List registered entities, sources, views, features or services."""
    rows = listing_rows(open_store().catalog, what)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        print_rows(rows, what.value)


def _find(catalog: Catalog, name: str) -> tuple[str, Any]:
    for kind in ("feature_view", "aggregation_view", "on_demand_view", "feature_service", "entity", "source", "request_source"):  # fmt: skip
        if name in catalog.of_kind(kind):
            return kind, catalog.of_kind(kind)[name]
    known = [n for kind in KINDS for n in catalog.of_kind(kind)]
    raise NotFoundError("object", name, known)


@app.command()
def describe(
    name: Annotated[str, typer.Argument(help="A view, service, entity or source.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show one object: its definition and its version history."""
    store = open_store()
    kind, obj = _find(store.catalog, name)
    history = store.registry.history(name, kind)
    if as_json:
        versions = [{"version": h.version, "action": h.action, "author": h.author,
                     "applied_at": h.applied_at.isoformat()} for h in history]  # fmt: skip
        typer.echo(
            json.dumps({"kind": kind, "spec": obj.to_spec(), "versions": versions}, indent=2)
        )
        return
    spec = obj.to_spec()
    console.print(
        f"[bold]{name}[/] ({kind.replace('_', ' ')}, version {history[-1].version if history else '?'})"
    )
    if kind in ("feature_view", "aggregation_view"):
        source = store.catalog.source_of(obj)
        keys = store.catalog.join_keys(obj)
        console.print(
            f"  entities: {', '.join(obj.entities)} (keys: {', '.join(f'{k} {t}' for k, t in keys.items())})"
        )
        location = getattr(source, "path", None) or getattr(source, "query", None) or "pushed rows"
        console.print(
            f"  source: {source.name} ({source.type}: {escape(location)}), time column {source.timestamp_field}",
            highlight=False,
        )
        console.print(f"  ttl: {format_duration(obj.ttl) if obj.ttl else 'none'}   online: {obj.online}   "
                      f"materialize every: {format_duration(obj.materialize_every) if obj.materialize_every else '-'}")  # fmt: skip
        console.print(f"  owner: {escape(obj.owner or '-')}   tags: {_show(obj.tags or '-')}")
        if obj.description:
            console.print(f"  {escape(obj.description)}", highlight=False)
        if obj.transformation is not None:
            console.print(f"  transformation: {_show(obj.transformation.to_spec())}", highlight=False)  # fmt: skip
        if obj.freshness is not None:
            console.print(f"  freshness SLO: {format_duration(obj.freshness)}")
        if obj.expectations:
            labels = ", ".join(e.label for e in obj.expectations)
            console.print(f"  expectations ({obj.on_violation}): {escape(labels)}", highlight=False)
        if isinstance(obj, AggregationView):
            console.print(f"  tile: {format_duration(obj.tile) if obj.tile else 'none (exact windows)'}")  # fmt: skip
            print_rows(
                [
                    {"feature": f.name, "function": f.function, "column": f.column or "(rows)",
                     "window": format_duration(f.window), "type": f.dtype}
                    for f in obj.aggregate_features
                ],
                "aggregations",
            )  # fmt: skip
            _print_history(history)
            return
        print_rows(
            [
                {"feature": f.name, "type": f.dtype, "description": f.description}
                for f in obj.features
            ],
            "schema",
        )
    else:
        for key, value in spec.items():
            if key != "name":
                console.print(f"  {key}: {_show(value)}", highlight=False)
    _print_history(history)


def _print_history(history: list[VersionRecord]) -> None:
    table = Table(title="versions")
    for column in ("version", "action", "applied at", "author", "changes"):
        table.add_column(column)
    for h in history:
        changes = "; ".join(
            f"{_show(d['path'])}: {_show(d['before'])} → {_show(d['after'])}" for d in h.diff
        )
        table.add_row(
            str(h.version), h.action, h.applied_at.strftime("%Y-%m-%d %H:%M:%S"), h.author, changes
        )
    print_table(table)


@app.command()
def history(
    name: Annotated[str, typer.Argument(help="A view, service, entity or source.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List every version of one object, with the field-level diff of each."""
    store = open_store()
    records = store.registry.history(name)
    if not records:
        known = [n for kind in KINDS for n in store.catalog.of_kind(kind)]
        raise NotFoundError("object", name, known)
    if as_json:
        typer.echo(json.dumps([
            {"kind": h.kind, "version": h.version, "registry_version": h.registry_version,
             "action": h.action, "author": h.author, "applied_at": h.applied_at.isoformat(),
             "diff": h.diff, "spec": h.spec}
            for h in records
        ], indent=2))  # fmt: skip
        return
    _print_history(records)
