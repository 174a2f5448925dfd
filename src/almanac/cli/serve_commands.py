"""`almanac serve`: the HTTP feature server over the repo's registry and online store."""

from __future__ import annotations

from typing import Annotated

import typer

from almanac.cli.app import app, console, state


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 6566,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes (one event loop each).")
    ] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
    access_log: Annotated[bool, typer.Option(help="Log every request (costs throughput).")] = False,
) -> None:
    """Serve online features, LLM context, pushes and the catalog over HTTP (docs at /docs)."""
    from almanac.serving.server import run
    from almanac.store import FeatureStore

    repo = state.repo.resolve()
    FeatureStore(repo).close()  # fail here, with the CLI's one-line error, if the repo is broken
    console.print(
        f"Almanac feature server on http://{host}:{port} (docs: /docs), {workers} worker(s)"
    )
    run(repo, host, port, workers, log_level, access_log)
