"""The `almanac` command line. Each area's commands live in their own module."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from almanac import __version__
from almanac.cli import registry_commands  # noqa: F401 - registers its commands
from almanac.cli.app import app, err_console, state
from almanac.errors import AlmanacError

for _module in (
    "offline_commands", "online_commands", "quality_commands", "report_command", "serve_commands",
    "stream_commands", "schedule_commands", "security_commands",
):  # fmt: skip
    # Areas register their commands when their module is present.
    try:
        __import__(f"almanac.cli.{_module}")
    except ModuleNotFoundError as _error:
        if _error.name != f"almanac.cli.{_module}":
            raise


def _version(value: bool) -> None:
    if value:
        typer.echo(f"almanac {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    repo: Annotated[
        Path, typer.Option("--repo", "-r", help="Feature repo folder.", envvar="ALMANAC_REPO")
    ] = Path("."),
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    state.repo = repo
    state.debug = debug


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line and exit 2 (traceback with --debug).

    Typer's standalone mode handles usage errors itself (usage line, exit 2)."""
    try:
        app(args=argv, prog_name="almanac")
    except AlmanacError as error:
        if state.debug:
            raise
        err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)
