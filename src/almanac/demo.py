"""`make demo`: the whole product, end to end, on the embedded defaults.

Each step prints what it does and what it shows; any failure exits non-zero. Set
ALMANAC_ONLINE_URL=redis://... to run the same demo against Redis.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

console = Console()
REPO = Path("demo_repo")


def step(number: int, title: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            console.rule(f"[bold cyan]{number}. {title}")
            started = time.perf_counter()
            result = func(*args)
            console.print(f"[dim]   ({time.perf_counter() - started:.1f} s)[/]")
            return result

        return run

    return wrap


@step(1, "Create a feature repo, plan and apply it")
def create_repo() -> Any:
    from almanac import FeatureStore
    from almanac.cli.registry_commands import listing_rows, print_rows, render_plan
    from almanac.registry.catalog import Catalog  # noqa: F401 - the type of store.catalog
    from almanac.starter import create_starter_repo

    if REPO.exists():
        shutil.rmtree(REPO)
    create_starter_repo(REPO)
    console.print(
        f"almanac init {REPO}: a streaming platform with 3,000 users and 300,000 watch events"
    )
    store = FeatureStore(REPO)
    plan = store.plan()
    render_plan(plan)
    store.apply(plan)
    console.print(f"applied: registry version {store.catalog.version}")
    from almanac.cli.registry_commands import Listing

    print_rows(listing_rows(store.catalog, Listing.features), "features")
    return store


def main() -> int:
    console.print(
        Panel.fit("Almanac demo: declare features once, train and serve them without skew")
    )
    started = time.perf_counter()
    try:
        create_repo()
    except Exception as error:  # the demo must say clearly which step failed
        console.print_exception() if "--debug" in sys.argv else console.print(
            f"[red]demo failed: {error}"
        )
        return 1
    console.rule()
    console.print(
        f"Done in {time.perf_counter() - started:.1f} s. Try next: cd {REPO} && almanac describe user_stats"
    )
    _ = datetime.now(UTC), Table
    return 0


if __name__ == "__main__":
    sys.exit(main())
