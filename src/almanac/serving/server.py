"""Running the server with uvicorn (what `almanac serve` calls)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import uvicorn
from uvicorn.supervisors import Multiprocess

APP = "almanac.serving.app:app_from_env"


class NoDelayConfig(uvicorn.Config):
    """uvicorn's config, with TCP_NODELAY on the listening socket.

    With several workers uvicorn binds the socket itself (protocol number 0), and
    asyncio then skips TCP_NODELAY on the connections it accepts; as uvicorn writes
    headers and body separately, Nagle's algorithm and delayed ACKs add 40 ms to every
    answer (measured: 177 req/s instead of thousands). Accepted sockets inherit the
    option from the listening one on Linux. (Module level: workers unpickle it.)"""

    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def run(
    repo: Path,
    host: str = "127.0.0.1",
    port: int = 6566,
    workers: int = 1,
    log_level: str = "warning",
    access_log: bool = False,
) -> None:
    """Serve `repo` until interrupted. Workers import the app by name, so the repo
    travels in the environment (ALMANAC_REPO)."""
    os.environ["ALMANAC_REPO"] = str(repo)
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker counts in shared files; /metrics then adds up every worker.
        metrics_dir = tempfile.mkdtemp(prefix="almanac-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    config = NoDelayConfig(
        APP,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=access_log,
        # uvloop and httptools when installed (3-4x the request rate of the pure-Python
        # defaults on 2 cores, measured); asyncio and h11 otherwise.
        loop="auto",
        http="auto",
    )
    try:
        if workers > 1:
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        else:
            uvicorn.Server(config).run()
    except KeyboardInterrupt:
        pass
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
