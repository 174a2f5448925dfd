"""The Typer app every command module adds to, and what commands share.

Each `cli/*_commands.py` module defines its commands on `app`. `open_store` loads the
repo named by `--repo` (default: the current folder). User errors (`AlmanacError`)
print one line and exit 2; `--debug` shows the full traceback.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import typer
from rich.console import Console

from almanac.errors import InputError
from almanac.store import FeatureStore

app = typer.Typer(
    name="almanac",
    help="Almanac: a feature store. Declare features once; train and serve them without skew.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


class _State:
    repo: Path = Path(".")
    debug: bool = False


state = _State()


def open_store() -> FeatureStore:
    return FeatureStore(state.repo)


def duration(text: str, option: str) -> timedelta:
    """A duration option's value ('90s', '10m', '1h30m'), or a clean error naming it."""
    from almanac.definitions import parse_duration

    try:
        return parse_duration(text)
    except ValueError as error:
        raise InputError(f"{option}: {error}") from None
