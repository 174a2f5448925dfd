"""Access control: `keys` (API keys in the registry: create, list, revoke) and `access
check` (explains a decision: which permission allows, or why none does); see
docs/security.md."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from almanac.cli.app import app, console, duration, open_store
from almanac.definitions.permission import ACTIONS
from almanac.errors import InputError

keys_app = typer.Typer(help="API keys of the feature server (kept hashed in the registry).", no_args_is_help=True)  # fmt: skip
access_app = typer.Typer(help="Check what a principal may do.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(access_app, name="access")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="The key's name (letters, digits, _).")],
    principal: Annotated[
        list[str],
        typer.Option(
            "--principal", "-p", help="What the key acts as: role:…, group:…, user:…; repeat."
        ),
    ],
    expires: Annotated[str | None, typer.Option("--expires", help="Lifetime, e.g. 90d.")] = None,
) -> None:
    """Make an API key and print it once: only its hash is stored."""
    from almanac.security.keys import create_key

    lifetime = None if expires is None else duration(expires, "--expires")
    with open_store() as store:
        key = create_key(store.registry.state, name, principal, lifetime)
    typer.echo(key)
    console.print(f"[dim]key '{name}' for {', '.join(principal)}: shown once, store it now[/]", highlight=False)  # fmt: skip


@keys_app.command("list")
def keys_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The API keys: name, principals, created, expires, status (never the key)."""
    from almanac.security.keys import list_keys

    with open_store() as store:
        found = list_keys(store.registry.state)
    if as_json:
        typer.echo(json.dumps([k.public() for k in found], indent=2))
        return
    table = Table(title="API keys")
    for column in ("name", "principals", "created", "expires", "status"):
        table.add_column(column)
    for key in found:
        table.add_row(key.name, ", ".join(key.principals), key.created_at[:19], (key.expires_at or "never")[:19], key.status)  # fmt: skip
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="The key to revoke.")]) -> None:
    """Revoke a key: servers refuse it within a second, no restart needed."""
    from almanac.security.keys import revoke_key

    with open_store() as store:
        key = revoke_key(store.registry.state, name)
    console.print(f"key '{key.name}' revoked at {key.revoked_at}", highlight=False)


@access_app.command("check")
def access_check(
    principal: Annotated[
        list[str], typer.Option("--principal", "-p", help="An identity of the caller; repeat.")
    ],
    action: Annotated[str, typer.Option("--action", "-a", help=f"One of: {', '.join(ACTIONS)}.")],
    feature: Annotated[
        list[str] | None, typer.Option("--feature", "-f", help="view:feature; repeat.")
    ] = None,
    view: Annotated[str | None, typer.Option("--view", help="A view.")] = None,
    source: Annotated[str | None, typer.Option("--source", help="A source.")] = None,
    service: Annotated[str | None, typer.Option("--service", help="A feature service.")] = None,
) -> None:
    """Whether the principal may do the action, and why: the permissions that grant it,
    or what none of them covers. Exits 1 when denied."""
    from almanac.security.access import AccessPolicy, Principal

    if action not in ACTIONS:
        raise InputError(f"--action: '{action}' is not one of {', '.join(ACTIONS)}")
    with open_store() as store:
        policy = AccessPolicy(store.catalog)
        targets = []
        for ref in feature or []:
            view_name, _, name = ref.partition(":")
            store.catalog.resolve([ref])  # an unknown feature is an error naming it
            targets += policy.feature_targets([(view_name, name)])
        if view:
            targets.append(policy.view_target(view))
        if source:
            if source not in store.catalog.sources:
                raise InputError(f"--source: no source named '{source}'")
            targets.append(policy.source_target(source))
        if service:
            targets.append(policy.service_target(service))
    if not targets:
        raise InputError("name what to check: --feature view:feature, --view, --source or --service")  # fmt: skip
    who = Principal.of(principal[0], principal[1:])
    denied = False
    for target in targets:
        decision = policy.decide(who, action, target)
        mark = "[green]allowed[/]" if decision.allowed else "[red]denied[/]"
        console.print(f"{mark} {action} on {target.label}: {decision.reason}", highlight=False, soft_wrap=True)  # fmt: skip
        denied |= not decision.allowed
    if denied:
        raise typer.Exit(1)


@app.command("audit")
def audit_log(
    principal: Annotated[
        str | None, typer.Option("--principal", help="Only this principal's requests.")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only from this time (ISO 8601).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="The newest this many.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """The audit log (audit.path): the server's requests, the SDK's and CLI's operations."""
    from collections import deque

    from almanac.security.audit import read
    from almanac.semantics.times import to_utc

    with open_store() as store:
        config = store.config
    if config.audit is None:
        raise InputError("no audit log: set audit.path in almanac.yaml (docs/security.md)")
    moment = None if since is None else to_utc(since, "--since")
    lines = deque(read(config.resolve_path(config.audit.path), principal, moment), maxlen=limit)
    if as_json:
        for line in lines:
            typer.echo(json.dumps(line))
        return
    table = Table(title="audit")
    for column in ("at", "principal", "request", "decision", "status", "what"):
        table.add_column(column, overflow="fold")
    for line in lines:
        request = line.get("operation") or f"{line.get('method')} {line.get('endpoint')}"
        keys = ("features", "source", "view", "views", "changes")
        what = next((line[k] for k in keys if line.get(k)), "")
        table.add_row(
            line["at"][:23], str(line.get("principal")), request, line["decision"],
            str(line["status"]), str(what)[:80],
        )  # fmt: skip
    console.print(table)
