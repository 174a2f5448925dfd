"""`almanac serve`: the HTTP feature server over the repo's registry and online store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from almanac.cli.app import app, console, err_console, state


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 6566,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes (one event loop each).")
    ] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
    access_log: Annotated[bool, typer.Option(help="Log every request (costs throughput).")] = False,
    ssl_certfile: Annotated[
        Path | None, typer.Option(help="Serve HTTPS with this certificate (PEM).")
    ] = None,
    ssl_keyfile: Annotated[
        Path | None, typer.Option(help="The certificate's private key (PEM).")
    ] = None,
    ssl_ca_certs: Annotated[
        Path | None, typer.Option(help="CA certificates that sign client certificates.")
    ] = None,
    ssl_client_cert: Annotated[
        str, typer.Option(help="Client certificates: none, optional or required (mutual TLS).")
    ] = "none",
) -> None:
    """Serve online features, LLM context, pushes and the catalog over HTTP (docs at /docs)."""
    from almanac.serving.server import TlsOptions, run
    from almanac.store import FeatureStore

    repo = state.repo.resolve()
    store = FeatureStore(repo)  # fail here, with the CLI's one-line error, if the repo is broken
    secured = store.config.server.auth is not None or bool(store.config.server.api_keys)
    store.close()
    tls = TlsOptions.of(ssl_certfile, ssl_keyfile, ssl_ca_certs, ssl_client_cert)
    if host not in ("127.0.0.1", "localhost", "::1") and not secured:
        err_console.print(
            f"[bold red]warning:[/] serving on {host} without authentication: anyone who can "
            "reach this port reads and writes every feature. Set server.auth (docs/security.md).",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
    scheme = "https" if tls is not None else "http"
    console.print(
        f"Almanac feature server on {scheme}://{host}:{port} (docs: /docs), {workers} worker(s)"
    )
    run(repo, host, port, workers, log_level, access_log, tls)
