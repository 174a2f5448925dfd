"""Real Redis and PostgreSQL servers for the tests, each on a free port in a temp folder.

Integration tests talk to real servers, never fakes: these helpers start the machine's
`redis-server` and PostgreSQL binaries (installed by `make test` when missing) and stop
them afterwards.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def temp_folder(prefix: str) -> Path:
    """A new folder under the system's temp folder, removed when this test process exits
    (a server's files outlive its process: a restart reads them again)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000, as Redis Cluster uses) is free too."""
    import random

    for _ in range(200):
        port = random.randint(20_000, 50_000)
        try:
            for candidate in (port, port + 10_000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass
class RedisServer:
    port: int
    folder: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `make test`, which installs it")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder), "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()


def start_redis() -> RedisServer:
    return RedisServer(port=free_port(), folder=temp_folder("almanac-redis-")).start()


@dataclass
class RedisClusterServer:
    """A real Redis Cluster: `masters` masters and as many replicas, made with
    `redis-cli --cluster create` (slots spread evenly, one replica per master)."""

    nodes: list[RedisServer]
    masters: int
    tls: TlsFiles | None = None
    _clients: dict[int, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[: self.masters])
        if self.tls is None:
            return f"redis+cluster://{seeds}"
        return f"rediss+cluster://{seeds}?ssl_ca_certs={self.tls.ca}"

    def _cli(self, *args: str) -> list[str]:
        tls = [] if self.tls is None else ["--tls", "--cacert", str(self.tls.ca)]
        return ["redis-cli", *tls, *args]

    def start(self) -> RedisClusterServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `make test`, which installs it")
        for node in self.nodes:
            ports = ["--port", str(node.port)] if self.tls is None else [
                "--port", "0", "--tls-port", str(node.port), "--tls-cluster", "yes",
                "--tls-replication", "yes", *_tls_args(self.tls)]  # fmt: skip
            node.process = subprocess.Popen(
                [binary, *ports, "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(node.folder), "--daemonize", "no",
                 "--cluster-enabled", "yes", "--cluster-config-file", str(node.folder / "nodes.conf"),
                 "--cluster-node-timeout", "2000", "--logfile", str(node.folder / "redis.log"),
                 # Always fail over (its data-age check misjudges on clocks that are adjusted).
                 "--cluster-replica-validity-factor", "0",
                 # Sync a replica at once (not after the default 5 s wait for more replicas).
                 "--repl-diskless-sync-delay", "0"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        for node in self.nodes:
            wait_for_port(node.port)
        subprocess.run(
            [*self._cli("--cluster", "create"), *(f"127.0.0.1:{n.port}" for n in self.nodes),
             "--cluster-replicas", str(len(self.nodes) // self.masters - 1), "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
        )  # fmt: skip
        self.wait_healthy()
        return self

    def _ask(self, node: RedisServer, *command: str) -> Any:
        """One command to one node over redis-py (no redis-cli process per question, as
        the fixtures ask before every test); None when the node does not answer."""
        import redis

        client = self._clients.get(node.port)
        if client is None:
            tls = {} if self.tls is None else {"ssl": True, "ssl_ca_certs": str(self.tls.ca)}
            client = redis.Redis(port=node.port, socket_timeout=5, decode_responses=True, **tls)  # type: ignore[arg-type]  # fmt: skip
            self._clients[node.port] = client
        try:
            return client.execute_command(*command)
        except redis.RedisError:
            return None

    def _alive(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Until every live node says the cluster is ok and all slots are served."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = []
            for node in self._alive():
                info = self._ask(node, "CLUSTER INFO") or {}
                states.append(info.get("cluster_state") == "ok" and str(info.get("cluster_slots_ok")) == "16384")  # fmt: skip
            if states and all(states) and self._replicated():
                return
            time.sleep(0.05)
        raise RuntimeError("the Redis Cluster did not become healthy")

    def _replicated(self) -> bool:
        """Every live replica is synced with its master (writes wait for one): as many
        replication links online as live nodes that are not masters."""
        alive = self._alive()
        masters = self.primaries()
        online = 0
        for node in masters:
            info = self._ask(node, "INFO", "replication") or {}
            online += sum(1 for k, v in info.items() if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online")  # fmt: skip
        return online >= len(alive) - len(masters)

    def primaries(self) -> list[RedisServer]:
        """The nodes that are masters now (after a failover, a former replica)."""
        out = []
        for node in self._alive():
            role = self._ask(node, "ROLE")
            if role and role[0] == "master":
                out.append(node)
        return out

    def flushall(self) -> None:
        for node in self.primaries():
            if self._ask(node, "FLUSHALL") is not True:
                raise RuntimeError(f"FLUSHALL failed on 127.0.0.1:{node.port}")

    def stop(self) -> None:
        for client in self._clients.values():
            client.close()
        for node in self.nodes:
            node.stop()


def start_redis_cluster(masters: int = 3, replicas_per_master: int = 1, tls: TlsFiles | None = None) -> RedisClusterServer:  # fmt: skip
    nodes = [
        RedisServer(port=free_cluster_port(), folder=temp_folder("almanac-redis-cluster-"))
        for _ in range(masters * (1 + replicas_per_master))
    ]  # fmt: skip
    return RedisClusterServer(nodes, masters, tls).start()


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path
    client_cert: Path  # a client certificate of the same CA (mutual TLS)
    client_key: Path


def make_tls_files(folder: Path) -> TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost (openssl)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    cert, key, request = folder / "server.pem", folder / "server.key", folder / "server.csr"
    extensions = folder / "san.cnf"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    quiet = {"check": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=almanac-test-ca", "-keyout", str(ca_key), "-out", str(ca)], **quiet)  # type: ignore[call-overload]  # fmt: skip
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(key), "-out", str(request)], **quiet)  # type: ignore[call-overload]  # fmt: skip
    subprocess.run(["openssl", "x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
                    "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(cert)], **quiet)  # type: ignore[call-overload]  # fmt: skip
    client_cert, client_key, client_request = folder / "client.pem", folder / "client.key", folder / "client.csr"  # fmt: skip
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=fraud-model/OU=risk",
                    "-keyout", str(client_key), "-out", str(client_request)], **quiet)  # type: ignore[call-overload]  # fmt: skip
    subprocess.run(["openssl", "x509", "-req", "-in", str(client_request), "-CA", str(ca), "-CAkey", str(ca_key),
                    "-CAcreateserial", "-days", "2", "-out", str(client_cert)], **quiet)  # type: ignore[call-overload]  # fmt: skip
    return TlsFiles(ca, cert, key, client_cert, client_key)


def _tls_args(tls: TlsFiles) -> list[str]:
    return ["--tls-cert-file", str(tls.cert), "--tls-key-file", str(tls.key),
            "--tls-ca-cert-file", str(tls.ca), "--tls-auth-clients", "no"]  # fmt: skip


def start_redis_tls(tls: TlsFiles) -> RedisServer:
    """A redis-server that speaks TLS only (`--tls-port`, no plain port)."""
    server = RedisServer(port=free_port(), folder=temp_folder("almanac-redis-tls-"))
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run `make test`, which installs it")
    server.process = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(server.port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(server.folder), *_tls_args(tls)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for_port(server.port)
    return server


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError(
            "PostgreSQL binaries are not installed: run `make test`, which installs them"
        )
    return Path(found[-1]).parent


@dataclass
class PostgresServer:
    port: int
    folder: Path

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        # initdb refuses to run as root: run the server as the `postgres` system user.
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self) -> PostgresServer:
        binaries = _postgres_bin()
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        data = self.folder / "data"
        self._run(
            str(binaries / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
        )
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(binaries / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-w",
            "-l",
            str(self.folder / "log"),
            "start",
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        binaries = _postgres_bin()
        try:
            self._run(
                str(binaries / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "stop"
            )
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres() -> PostgresServer:
    folder = Path(tempfile.mkdtemp(prefix="almanac-pg-"))
    os.chmod(folder, 0o755)
    return PostgresServer(port=free_port(), folder=folder).start()
