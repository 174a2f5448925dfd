"""`make demo`: the whole product, end to end, on the embedded defaults.

Each step prints what it does and what it shows; any failure exits non-zero. Set
ALMANAC_ONLINE_URL=redis://... to run the same demo against Redis.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

if TYPE_CHECKING:
    from almanac.store import FeatureStore

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
def create_repo() -> FeatureStore:
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


@step(2, "A point-in-time correct training set")
def training_set(store: FeatureStore) -> None:
    labels = REPO / "data" / "labels.parquet"
    job = store.get_historical_features(labels, feature_service="recommender_v1")
    table = job.to_arrow()
    console.print(
        f"get_historical_features: {table.num_rows:,} labelled rows × "
        f"{len(table.column_names) - 3} features, input order kept"
    )
    frame = table.slice(0, 5).to_pandas()
    shown = Table(*frame.columns)
    for row in frame.itertuples(index=False):
        shown.add_row(*(str(v) for v in row))
    console.print(shown)
    # Show where the first row's values come from: each is the latest row at or before
    # the label's time (and within the view's TTL) — never a value from the future.
    first = table.slice(0, 1).to_pylist()[0]
    at = first["event_timestamp"]
    for view in ("user_profile", "user_last_genre"):
        history = store.offline.value_history(
            store.catalog, store.catalog.view(view), {"user_id": first["user_id"]}, at=at
        ).to_pylist()
        chosen = [row for row in history if row.get("selected")]
        later = sum(row["event_timestamp"] > at for row in history)
        source = chosen[0]["event_timestamp"].isoformat(timespec="minutes") if chosen else "none"
        console.print(
            f"  {view}: value from the row of {source} (label time {at.isoformat(timespec='minutes')}); "
            f"{later} later rows of this user ignored"
        )
    console.print(
        f"  user_stats: watch_count_30d = {first['watch_count_30d']}, the user's watches in "
        "the 30 days up to the label time exactly (an aggregation view, no daily snapshot)"
    )


@step(3, "Materialize the latest values into the online store")
def materialize(store: FeatureStore) -> None:
    from almanac.cli.online_commands import _run_with_progress

    console.print(f"online store: {store.config.online.url}")
    _run_with_progress(
        lambda on_batch: store.materialize_incremental(datetime.now(UTC), progress=on_batch)
    )
    user = _a_user(store)
    response = store.get_online_features(
        entity_rows=[{"user_id": user}], feature_service="recommender_v1"
    )
    console.print(f"get_online_features(user_id={user!r}):")
    console.print(response.to_dict(include_statuses=True))


@step(4, "Serve features over HTTP")
def serve(store: FeatureStore) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        str(Path(sys.executable).parent / "almanac"),
        "--repo",
        str(REPO),
        "serve",
        "--port",
        str(port),
    ]
    console.print(f"$ almanac serve --port {port}")
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_until_healthy(server, url)
    from almanac import Client

    user = _a_user(store)
    with Client(url) as client:
        started = time.perf_counter()
        response = client.get_online_features(
            feature_service="recommender_v1", entity_rows=[{"user_id": user}]
        )
        took = (time.perf_counter() - started) * 1000
        console.print(f"POST {url}/get-online-features (Feast's response shape), {took:.1f} ms:")
        console.print(response.to_dict(include_statuses=True))
        console.print(f"GET {url}/entities/user/{user}?service=recommender_v1:")
        console.print(client.get_entity("user", user, service="recommender_v1"))
    return server, url


@step(5, "Context for an LLM prompt")
def llm_context(store: FeatureStore, url: str) -> None:
    from almanac import Client

    user = _a_user(store)
    with Client(url) as client:
        started = time.perf_counter()
        context = client.get_context("recommender_v1", {"user_id": user})
        took = (time.perf_counter() - started) * 1000
    console.print(f"POST {url}/context, {took:.1f} ms:")
    console.print(Panel(context.text, title=f"context for user {user}", expand=False))
    ages = ", ".join(
        f"{name} {age / 3600:.1f} h old"
        for name, age in context.ages_seconds.items()
        if age is not None
    )
    console.print(f"values: {context.values}\nages: {ages}")
    prompt = (
        "You recommend titles on a streaming platform.\n"
        f"What we know about this user: {context.text}\n"
        "Suggest three titles they would enjoy tonight."
    )
    console.print(Panel(prompt, title="the prompt an LLM application would send", expand=False))


@step(6, "Stop the server")
def stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        server.kill()
    console.print("server stopped. Try next:")
    console.print(
        f"  cd {REPO} && almanac describe user_stats        # schema, aggregations, versions\n"
        f"  cd {REPO} && almanac serve                      # then open http://127.0.0.1:6566/docs\n"
        "  ALMANAC_ONLINE_URL=redis://localhost:6379/0 make demo   # the same on Redis\n"
        "  make bench                                         # the performance figures"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_healthy(server: subprocess.Popen[bytes], url: str, timeout: float = 30) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            stderr = server.stderr.read().decode() if server.stderr else ""
            raise RuntimeError(f"the server exited: {stderr.strip()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"the server did not become healthy within {timeout:.0f} s")


def _a_user(store: FeatureStore) -> str:
    """A user active in the last week, so that every feature is fresh."""
    import duckdb

    events = str(REPO / "data" / "watch_events.parquet")
    query = (
        "SELECT user_id FROM read_parquet($events) WHERE event_timestamp > now() - INTERVAL 7 DAY "
        "GROUP BY user_id HAVING count(*) >= 3 ORDER BY user_id LIMIT 1"
    )
    relation = duckdb.sql(query, params={"events": events})
    assert relation is not None  # a SELECT gives a relation
    user: str = relation.fetchall()[0][0]
    return user


def main() -> int:
    console.print(
        Panel.fit("Almanac demo: declare features once, train and serve them without skew")
    )
    started = time.perf_counter()
    try:
        store = create_repo()
        training_set(store)
        materialize(store)
        server, url = serve(store)
        try:
            llm_context(store, url)
        finally:
            stop(server)
    except Exception as error:  # the demo must say clearly which step failed
        console.print_exception() if "--debug" in sys.argv else console.print(
            f"[red]demo failed: {error}"
        )
        return 1
    console.rule()
    console.print(f"Done in {time.perf_counter() - started:.1f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
