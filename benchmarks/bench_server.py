"""HTTP feature server figures: req/s and p50/p99 latency on loopback, beside a floor.

`run(["small"])` starts its own redis-server on a free port (tests/servers.py), writes
10,000 users x 10 features, starts `almanac serve` (1 and 2 workers) and loads it with
wrk (`apt-get install wrk`; without it, a bounded asyncio load generator in a separate
process) for a fixed duration per case:

* POST /get-online-features, 1 entity x 10 features and 100 entities x 10 features, at
  8 and 64 connections, 1 and 2 workers (Redis);
* POST /context next to POST /get-online-features for the same service (1 entity);
* the same 1- and 100-entity reads on the SQLite online store (1 worker, c=8);
* the floor: a minimal FastAPI app doing one redis.asyncio HMGET per request.

The load generator shares the 2 cores with the server, as in PERFORMANCE.md.

    .venv/bin/python benchmarks/bench_server.py small
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from servers import free_port, start_redis  # noqa: E402

DURATION = {"small": 5, "medium": 10, "large": 20}
USERS = 10_000
FEATURES = {f"f{i}": "float64" for i in range(4)} | {f"c{i}": "int64" for i in range(3)}
FEATURES |= {"r0": "float32", "segment": "string", "active": "bool"}
DTYPE_NAMES = {"float64": "Float64", "int64": "Int64", "float32": "Float32", "string": "String",
               "bool": "Bool"}  # fmt: skip
BODIES = 500  # distinct request bodies per case (random users), cycled by the generator


def _repo(folder: Path, online_url: str) -> Path:
    schema = ", ".join(f'Field("{n}", {DTYPE_NAMES[d]})' for n, d in FEATURES.items())
    placeholders = ", ".join(f"{n}={{{{ {n} }}}}" for n in FEATURES)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "almanac.yaml").write_text(
        f"project: bench\nregistry:\n  url: sqlite:///.almanac/registry.db\n"
        f"online:\n  url: {online_url}\n  timeout_seconds: 2\n"
    )
    (folder / "features.py").write_text(
        textwrap.dedent(f"""\
        from almanac import (Bool, Entity, FeatureService, FeatureView, Field, Float32, Float64,
                             Int64, PushSource, String)
        user = Entity(name="user", join_keys=["user_id"], dtype=Int64)
        stats = FeatureView(name="stats", entities=[user], source=PushSource(name="events"),
                            schema=[{schema}], ttl="30d")
        model = FeatureService(name="model", features=[stats],
                               prompt_template="User {{{{ user_id }}}}: {placeholders}.")
        """)
    )
    from almanac import FeatureStore

    with FeatureStore(folder) as store:
        store.apply()
        store.online.write_batch("bench", "stats", ["user_id"], list(FEATURES), _rows())
    return folder


def _rows() -> pa.Table:
    rng = np.random.default_rng(0)
    now = datetime.now(UTC) - timedelta(hours=1)
    columns: dict[str, Any] = {
        "user_id": pa.array(np.arange(USERS, dtype=np.int64)),
        "event_timestamp": pa.array([now] * USERS, pa.timestamp("us", tz="UTC")),
    }
    for name, dtype in FEATURES.items():
        if dtype == "float64":
            columns[name] = pa.array(rng.random(USERS))
        elif dtype == "float32":
            columns[name] = pa.array(rng.random(USERS, dtype=np.float32))
        elif dtype == "int64":
            columns[name] = pa.array(rng.integers(0, 10_000, USERS))
        elif dtype == "bool":
            columns[name] = pa.array(rng.random(USERS) < 0.5)
        else:
            columns[name] = pa.array([f"segment_{i % 16}" for i in range(USERS)])
    return pa.table(columns)


def _bodies(path: str, entities: int) -> list[str]:
    rng = random.Random(entities)
    out = []
    for _ in range(BODIES):
        users = [rng.randrange(USERS) for _ in range(entities)]
        if path == "/context":
            body = {"feature_service": "model", "entity": {"user_id": users[0]}}
        elif path == "/get-online-features-service":
            body = {"feature_service": "model", "entities": {"user_id": users}}
        else:
            body = {"features": [f"stats:{n}" for n in FEATURES], "entities": {"user_id": users}}
        out.append(json.dumps(body, separators=(",", ":")))
    return out


# ---- servers ------------------------------------------------------------------------------


def _start(command: list[str], port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
                if answer.status == 200:
                    return process
        except OSError:
            time.sleep(0.2)
    _stop(process)
    raise RuntimeError("server did not become healthy within 60 s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)  # uvicorn's workers are in its session
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def _serve(
    repo: Path, port: int, workers: int, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-c", "from almanac.cli import main; main()", "--repo", str(repo),
               "serve", "--port", str(port), "--workers", str(workers)]  # fmt: skip
    return _start(command, port, {**os.environ, **(env or {})})


FLOOR_APP = """
import orjson, os, redis.asyncio as redis
from fastapi import FastAPI
from fastapi.responses import ORJSONResponse
app = FastAPI()
client = redis.Redis.from_url(os.environ["FLOOR_REDIS"])
FIELDS = ["stats#ts"] + [f"stats:{n}" for n in os.environ["FLOOR_FIELDS"].split(",")]
@app.post("/get-online-features")
async def read(body: dict):
    user = body["entities"]["user_id"][0]
    values = await client.hmget(f"alm:bench:user_id=i{user}", FIELDS)
    return ORJSONResponse({"values": [v.hex() if v else None for v in values]})
"""


def _serve_floor(folder: Path, redis_url: str, port: int) -> subprocess.Popen[bytes]:
    (folder / "floor_app.py").write_text(FLOOR_APP)
    env = dict(os.environ, FLOOR_REDIS=redis_url, FLOOR_FIELDS=",".join(FEATURES),
               PYTHONPATH=str(folder) + os.pathsep + os.environ.get("PYTHONPATH", ""))  # fmt: skip
    command = [sys.executable, "-m", "uvicorn", "floor_app:app", "--port", str(port),
               "--log-level", "warning", "--no-access-log"]  # fmt: skip
    # The floor app has no /health: wait for its port by asking for a 404.
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/nothing", timeout=1)
        except urllib.error.HTTPError:
            return process
        except OSError:
            time.sleep(0.2)
    _stop(process)
    raise RuntimeError("floor app did not start")


# ---- load generation ----------------------------------------------------------------------

WRK_SCRIPT = """
local bodies = {%s}
local requests = {}
local n = 0
init = function(args)
  for i, body in ipairs(bodies) do
    requests[i] = wrk.format("POST", "%s", {["Content-Type"] = "application/json"%s}, body)
  end
end
request = function()
  n = n %% #requests + 1
  return requests[n]
end
"""


def _load(
    port: int,
    path: str,
    bodies: list[str],
    connections: int,
    seconds: int,
    folder: Path,
    headers: dict[str, str] | None = None,
) -> dict[str, float]:
    """req/s, p50 and p99 (ms) and the count of non-200 answers for one case."""
    if shutil.which("wrk"):
        return _wrk(port, path, bodies, connections, seconds, folder, headers or {})
    return _python_load(port, path, bodies, connections, seconds, headers or {})


def _wrk(
    port: int,
    path: str,
    bodies: list[str],
    connections: int,
    seconds: int,
    folder: Path,
    headers: dict[str, str],
) -> dict[str, float]:
    script = folder / "load.lua"
    lua_bodies = ",".join("[==[" + b + "]==]" for b in bodies)
    extra = "".join(f', ["{k}"] = [==[{v}]==]' for k, v in headers.items())
    script.write_text(WRK_SCRIPT % (lua_bodies, path, extra))
    url = f"http://127.0.0.1:{port}{path}"
    # One warm-up second (connections, plan caches), then the measured run.
    subprocess.run(["wrk", "-t1", f"-c{connections}", "-d1s", "-s", str(script), url],
                   capture_output=True, timeout=60, check=True)  # fmt: skip
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout

    def millis(label: str) -> float:
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if match is None:
            raise RuntimeError(f"cannot read the {label}th percentile from wrk:\n{out}")
        return float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]

    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "req_per_s": float(rate.group(1)) if rate else 0.0,
        "p50_ms": millis("50"),
        "p99_ms": millis("99"),
        "non_200": float(bad.group(1)) if bad else 0.0,
        "socket_errors": 1.0 if errors else 0.0,
    }


LOADGEN = r"""
import asyncio, json, sys, time
port, path, connections, seconds = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
extra = "".join(f"{k}: {v}\r\n" for k, v in json.loads(sys.argv[5]).items())
bodies = json.load(sys.stdin)
requests = [(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
             f"Content-Length: {len(b)}\r\n\r\n{b}").encode() for b in bodies]
async def worker(index, stop, latencies, bad):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = index
    while time.perf_counter() < stop:
        n = (n + 1) % len(requests)
        started = time.perf_counter()
        writer.write(requests[n])
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")))
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - started)
        if not head.startswith(b"HTTP/1.1 200"):
            bad.append(1)
    writer.close()
async def main():
    latencies, bad = [], []
    await asyncio.gather(*[worker(i, time.perf_counter() + 1, [], []) for i in range(connections)])
    started = time.perf_counter()
    await asyncio.gather(*[worker(i, started + seconds, latencies, bad) for i in range(connections)])
    elapsed = time.perf_counter() - started
    latencies.sort()
    print(json.dumps({"req_per_s": len(latencies) / elapsed, "p50_ms": latencies[len(latencies) // 2] * 1e3,
                      "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3, "non_200": len(bad), "socket_errors": 0}))
asyncio.run(main())
"""


def _python_load(
    port: int, path: str, bodies: list[str], connections: int, seconds: int, headers: dict[str, str]
) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            LOADGEN,
            str(port),
            path,
            str(connections),
            str(seconds),
            json.dumps(headers),
        ],
        input=json.dumps(bodies),
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    return json.loads(out)


# ---- the run ------------------------------------------------------------------------------

PAIR = (
    ("/get-online-features-service", "/get-online-features", "POST /get-online-features (service)"),
    ("/context", "/context", "POST /context"),
)


def _paired(port: int, seconds: int, folder: Path, size: str, note: str) -> list[dict[str, Any]]:
    """/context beside /get-online-features for the same service and entity, in
    alternating rounds so that noise from a shared machine hits both alike: req/s is
    the mean over rounds, p50/p99 the median."""
    rounds = 3
    runs: dict[str, list[dict[str, float]]] = {label: [] for _, _, label in PAIR}
    for _ in range(rounds):
        for kind, target, label in PAIR:
            runs[label].append(
                _load(port, target, _bodies(kind, 1), 8, max(2, seconds // 2), folder)
            )
    out = []
    for label, figures in runs.items():
        merged = _merge_rounds(figures)
        case = f"{label}, 1 entity x 10 features, c=8, 1 worker"
        out += _records(size, "redis", case, merged, f"{note}; {rounds} alternating rounds")
    return out


def _merge_rounds(figures: list[dict[str, float]]) -> dict[str, float]:
    """Alternating rounds of one case: req/s the mean, p50 and p99 the median."""
    rounds = len(figures)
    return {
        "req_per_s": sum(f["req_per_s"] for f in figures) / rounds,
        "p50_ms": sorted(f["p50_ms"] for f in figures)[rounds // 2],
        "p99_ms": sorted(f["p99_ms"] for f in figures)[rounds // 2],
        "non_200": sum(f["non_200"] for f in figures),
        "socket_errors": max(f["socket_errors"] for f in figures),
    }


def _records(
    size: str, backend: str, case: str, figures: dict[str, float], note: str
) -> list[dict[str, Any]]:
    if figures.get("non_200") or figures.get("socket_errors"):
        note = f"{note}; {int(figures.get('non_200', 0))} non-200 answers, socket errors: {bool(figures.get('socket_errors'))}"
    units = {"req_per_s": "req/s", "p50_ms": "ms", "p99_ms": "ms"}
    return [
        {"benchmark": "http", "size": size, "backend": backend, "case": case, "metric": metric,
         "value": round(figures[metric], 3), "unit": unit, "note": note}
        for metric, unit in units.items()
    ]  # fmt: skip


def _stack() -> str:
    fast = [name for name in ("uvloop", "httptools") if importlib.util.find_spec(name)]
    generator = "wrk" if shutil.which("wrk") else "asyncio load generator"
    return f"{generator}; event loop/parser: {'+'.join(fast) if fast else 'asyncio+h11 (no uvloop/httptools)'}"


def _with_serving_log(
    repo: Path, seconds: int, folder: Path, size: str, note: str
) -> list[dict[str, Any]]:
    """The 1- and 100-entity reads (c=8, 1 worker) with the serving log off, sampling 1%
    and sampling 100% of the entities (the skew report's input): three servers side by
    side, loaded in alternating rounds so that a shared machine's noise hits all alike;
    req/s is the mean over rounds, and `vs_log_off` the change from the log-off server."""
    rounds, rates = 3, (0.0, 0.01, 1.0)
    servers = {}
    try:
        for rate in rates:
            port = free_port()
            servers[rate] = (port, _serve(repo, port, 1, {"ALMANAC_SERVER_LOG_SAMPLE_RATE": str(rate)}))  # fmt: skip
        runs: dict[tuple[int, float], list[dict[str, float]]] = {}
        for _ in range(rounds):
            for entities in (1, 100):
                bodies = _bodies("/get-online-features", entities)
                for rate, (port, _) in servers.items():
                    figures = _load(port, "/get-online-features", bodies, 8, max(2, seconds // 2), folder)  # fmt: skip
                    runs.setdefault((entities, rate), []).append(figures)
    finally:
        for _, server in servers.values():
            _stop(server)
    records = []
    for (entities, rate), figures in runs.items():
        merged = _merge_rounds(figures)
        off = sum(f["req_per_s"] for f in runs[(entities, 0.0)]) / rounds
        label = "off" if rate == 0 else f"{rate:.0%}"
        case = f"{entities} entit{'y' if entities == 1 else 'ies'} x 10 features, c=8, 1 worker, serving log {label}"
        records += _records(size, "redis", case, merged, f"{note}; {rounds} alternating rounds")
        if rate:
            records.append({
                "benchmark": "http", "size": size, "backend": "redis", "case": case,
                "metric": "vs_log_off", "value": round(100 * (merged["req_per_s"] / off - 1), 1),
                "unit": "% req/s", "note": "change from the log-off server of the same rounds",
            })  # fmt: skip
    return records


def _push_bodies() -> list[str]:
    """One row per push, every feature of `stats`, random users."""
    rng = random.Random(5)
    when = (datetime.now(UTC) - timedelta(minutes=30)).isoformat()
    out = []
    for _ in range(BODIES):
        row: dict[str, Any] = {"user_id": [rng.randrange(USERS)], "event_timestamp": [when]}
        for name, dtype in FEATURES.items():
            row[name] = [
                rng.random() if dtype.startswith("float") else rng.randrange(1000) if dtype == "int64"
                else rng.random() < 0.5 if dtype == "bool" else f"v{rng.randrange(50)}"
            ]  # fmt: skip
        out.append(json.dumps({"push_source_name": "events", "df": row}, separators=(",", ":")))
    return out


def _with_pushes(repo: Path, seconds: int, folder: Path, size: str, note: str) -> list[dict[str, Any]]:  # fmt: skip
    """64 concurrent pushers (1 row each; group commit writes concurrent pushes
    together), and 1-entity reads (c=8) alone and while the pushes run."""
    import threading

    port = free_port()
    server = _serve(repo, port, 1)
    records = []
    try:
        pushes = _load(port, "/push", _push_bodies(), 64, seconds, folder)
        records += _records(size, "redis", "POST /push, 1 row, c=64, 1 worker", pushes, note)
        reads_bodies = _bodies("/get-online-features", 1)
        alone = _load(port, "/get-online-features", reads_bodies, 8, seconds, folder)
        records += _records(size, "redis", "1 entity x 10 features, c=8, 1 worker, no pushes", alone, note)  # fmt: skip
        push_folder = folder / "pushes"
        push_folder.mkdir(exist_ok=True)
        background: dict[str, Any] = {}
        pusher = threading.Thread(target=lambda: background.update(_load(port, "/push", _push_bodies(), 64, seconds + 2, push_folder)))  # fmt: skip
        pusher.start()
        time.sleep(2)  # the pushes' warm-up second, then both run
        loaded = _load(port, "/get-online-features", reads_bodies, 8, seconds, folder)
        pusher.join()
        records += _records(size, "redis", "1 entity x 10 features, c=8, 1 worker, under 64 pushers", loaded, note)  # fmt: skip
        records += _records(size, "redis", "POST /push, 1 row, c=64, 1 worker, beside reads", background, note)  # fmt: skip
    finally:
        _stop(server)
    return records


def run(sizes: list[str]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for size in sizes:
        seconds = DURATION.get(size, 5)
        note = f"{_stack()}; {seconds}s per case"
        folder = Path(tempfile.mkdtemp(prefix="almanac-bench-server-"))
        redis = start_redis()
        try:
            repo = _repo(folder / "redis_repo", redis.url)
            online = [(1, "/get-online-features"), (100, "/get-online-features")]
            for workers in (1, 2):
                port = free_port()
                server = _serve(repo, port, workers)
                try:
                    for entities, path in online:
                        bodies = _bodies(path, entities)
                        for connections in (8, 64):
                            figures = _load(port, path, bodies, connections, seconds, folder)
                            case = f"{entities} entit{'y' if entities == 1 else 'ies'} x 10 features, c={connections}, {workers} worker{'s' if workers > 1 else ''}"
                            records += _records(size, "redis", case, figures, note)
                    if workers == 1:
                        records += _paired(port, seconds, folder, size, note)
                finally:
                    _stop(server)
            records += _with_serving_log(repo, seconds, folder, size, note)
            records += _with_pushes(repo, seconds, folder, size, note)
            port = free_port()
            floor = _serve_floor(folder, redis.url, port)
            try:
                figures = _load(
                    port,
                    "/get-online-features",
                    _bodies("/get-online-features", 1),
                    8,
                    seconds,
                    folder,
                )
                records += _records(
                    size,
                    "redis",
                    "floor: FastAPI + one redis.asyncio HMGET, c=8, 1 worker",
                    figures,
                    note,
                )
            finally:
                _stop(floor)
            sqlite_repo = _repo(folder / "sqlite_repo", "sqlite:///.almanac/online.db")
            port = free_port()
            server = _serve(sqlite_repo, port, 1)
            try:
                for entities in (1, 100):
                    figures = _load(
                        port,
                        "/get-online-features",
                        _bodies("/get-online-features", entities),
                        8,
                        seconds,
                        folder,
                    )
                    case = f"{entities} entit{'y' if entities == 1 else 'ies'} x 10 features, c=8, 1 worker"
                    records += _records(size, "sqlite", case, figures, note)
            finally:
                _stop(server)
        finally:
            redis.stop()
            shutil.rmtree(folder, ignore_errors=True)
    return records


if __name__ == "__main__":
    for record in run(sys.argv[1:] or ["small"]):
        print(
            f"{record['backend']:7} {record['case']:75} {record['metric']:10} {record['value']:>10} {record['unit']}  {record['note']}"
        )
