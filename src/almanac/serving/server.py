"""Running the server with uvicorn (what `almanac serve` calls)."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from uvicorn.supervisors import Multiprocess

from almanac.errors import InputError

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


@dataclass(frozen=True)
class TlsOptions:
    """HTTPS for the server: its certificate and key, and for mutual TLS the CA that
    signs client certificates and whether one is required."""

    certfile: Path
    keyfile: Path
    ca_certs: Path | None = None
    client_cert: int = ssl.CERT_NONE

    @classmethod
    def of(cls, certfile: Path | None, keyfile: Path | None, ca_certs: Path | None, client_cert: str) -> TlsOptions | None:  # fmt: skip
        modes = {
            "none": ssl.CERT_NONE,
            "optional": ssl.CERT_OPTIONAL,
            "required": ssl.CERT_REQUIRED,
        }
        if client_cert not in modes:
            raise InputError(f"--ssl-client-cert: '{client_cert}' is not one of none, optional, required")  # fmt: skip
        if certfile is None and keyfile is None:
            if ca_certs is not None or client_cert != "none":
                raise InputError("--ssl-ca-certs and --ssl-client-cert need --ssl-certfile and --ssl-keyfile")  # fmt: skip
            return None
        if certfile is None or keyfile is None:
            raise InputError("HTTPS needs both --ssl-certfile and --ssl-keyfile")
        for path in (certfile, keyfile, ca_certs):
            if path is not None and not path.is_file():
                raise InputError(f"{path}: no such file")
        if modes[client_cert] != ssl.CERT_NONE and ca_certs is None:
            raise InputError("--ssl-client-cert optional/required needs --ssl-ca-certs (the CA of the clients)")  # fmt: skip
        return cls(certfile, keyfile, ca_certs, modes[client_cert])


def run(
    repo: Path,
    host: str = "127.0.0.1",
    port: int = 6566,
    workers: int = 1,
    log_level: str = "warning",
    access_log: bool = False,
    tls: TlsOptions | None = None,
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
        # Over TLS, httptools with the client's certificate in the scope (mutual TLS).
        http="auto" if tls is None else "almanac.serving.tls:TlsScopeProtocol",
        ssl_certfile=None if tls is None else str(tls.certfile),
        ssl_keyfile=None if tls is None else str(tls.keyfile),
        ssl_ca_certs=None if tls is None or tls.ca_certs is None else str(tls.ca_certs),
        ssl_cert_reqs=ssl.CERT_NONE if tls is None else tls.client_cert,
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
