"""A small feature repo for the server tests, written to a temp folder and applied, and
`almanac serve` run on it as users run it (a subprocess)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from almanac import FeatureStore
from servers import free_port

NOW = datetime.now(UTC).replace(microsecond=0)
FRESH = NOW - timedelta(hours=1)
STALE = NOW - timedelta(days=3)  # older than user_stats' TTL of 1 day

FEATURES_PY = """
from almanac import (Array, Bool, Bytes, Entity, FeatureService, FeatureView, Field, Float32,
                     Float64, Int64, PushSource, String, Timestamp)

user = Entity(name="user", join_keys=["user_id"], description="A shopper.", owner="crm@example.com")
item = Entity(name="item", join_keys=["item_id"], dtype=Int64)

user_events = PushSource(name="user_events")
user_stats = FeatureView(
    name="user_stats", entities=[user], source=user_events, ttl="1d",
    schema=[Field("clicks", Int64, description="Clicks in the last hour."),
            Field("spend", Float64), Field("segment", String, tags={"pii": "no"})],
    owner="growth@example.com", description="Shopping activity.", tags={"team": "growth"},
)
user_recent = FeatureView(
    name="user_recent", entities=[user], source=user_events,
    schema=[Field("last_page", String)],
)
user_profile = FeatureView(
    name="user_profile", entities=[user], source=PushSource(name="profile_events"),
    schema=[Field("avatar", Bytes), Field("signup_at", Timestamp),
            Field("embedding", Array(Float32)), Field("vip", Bool)],
)
item_stats = FeatureView(
    name="item_stats", entities=[item], source=PushSource(name="item_events"),
    schema=[Field("price", Float64, description="List price in euros.")],
)
user_item = FeatureView(
    name="user_item", entities=[user, item], source=PushSource(name="user_item_events"),
    schema=[Field("affinity", Float64)],
)
ranker = FeatureService(name="ranker", features=[user_stats, "item_stats:price"])
assistant = FeatureService(
    name="assistant", features=["user_stats:clicks", "user_stats:segment"],
    prompt_template="Segment {{ segment }}, {{ clicks }} clicks.",
)
"""


def write_repo(path: Path, online_url: str, **server: Any) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    server_yaml = "".join(
        f"  {k}: {v!r}\n" if not isinstance(v, list) else f"  {k}: {v}\n" for k, v in server.items()
    )
    (path / "almanac.yaml").write_text(
        textwrap.dedent(
            f"""\
            project: shop
            registry:
              url: sqlite:///.almanac/registry.db
              refresh_seconds: 0.1
            online:
              url: {online_url}
              timeout_seconds: 1
            """
        )
        + (f"server:\n{server_yaml}" if server else "")
    )
    (path / "features.py").write_text(FEATURES_PY)
    with FeatureStore(path) as store:
        store.apply()
    return path


def seed(store: FeatureStore) -> None:
    """Known online values: u1 fresh, u2 stale (past the TTL), u3 fresh with a null."""
    stamp = pa.timestamp("us", tz="UTC")
    store.online.write_batch("shop", "user_stats", ["user_id"], ["clicks", "spend", "segment"], pa.table({
        "user_id": ["u1", "u2", "u3"],
        "event_timestamp": pa.array([FRESH, STALE, FRESH], stamp),
        "clicks": [5, 7, 9],
        "spend": [12.5, 1.0, None],
        "segment": ["gold", "silver", "bronze"],
    }))  # fmt: skip
    store.online.write_batch("shop", "user_profile", ["user_id"], ["avatar", "signup_at", "embedding", "vip"], pa.table({
        "user_id": ["u1"],
        "event_timestamp": pa.array([FRESH], stamp),
        "avatar": [b"\x00\xffpng"],
        "signup_at": pa.array([datetime(2020, 1, 2, 3, 4, 5, 6, tzinfo=UTC)], stamp),
        "embedding": pa.array([[0.5, -1.25]], pa.list_(pa.float32())),
        "vip": [True],
    }))  # fmt: skip
    store.online.write_batch("shop", "item_stats", ["item_id"], ["price"], pa.table({
        "item_id": [10, 11], "event_timestamp": pa.array([FRESH, FRESH], stamp), "price": [9.99, 20.0],
    }))  # fmt: skip
    store.online.write_batch("shop", "user_item", ["user_id", "item_id"], ["affinity"], pa.table({
        "user_id": ["u1"], "item_id": [10], "event_timestamp": pa.array([FRESH], stamp), "affinity": [0.75],
    }))  # fmt: skip


@dataclass
class Served:
    url: str  # http://127.0.0.1:<port>
    pid: int


@contextlib.contextmanager
def serving(
    repo: Path, *args: str, prefix: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> Iterator[Served]:
    """`almanac serve` on `repo` in a subprocess (its own session) on a free port, until
    /health answers; yields its URL and process id and stops it afterwards. `prefix` runs
    it under another command (`unshare ...`, which must exec it), `args` go to `serve`."""
    port = free_port()
    environ = {
        k: v for k, v in os.environ.items() if k not in ("ALMANAC_REPO", "PROMETHEUS_MULTIPROC_DIR")
    }
    process = subprocess.Popen(
        [*prefix, sys.executable, "-c", "from almanac.cli import main; main()", "--repo",
         str(repo), "serve", "--port", str(port), *args],
        env={**environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"almanac serve exited: {process.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(base + "/health", timeout=5):
                    break
            except urllib.error.HTTPError:
                break  # it answers (a 503 is a health report, not a dead server)
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("almanac serve did not come up within 30 s")
            time.sleep(0.1)
        yield Served(base, process.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        process.stderr.close()  # type: ignore[union-attr]


def http(
    method: str, url: str, body: Any = None, headers: Mapping[str, str] | None = None
) -> tuple[int, Any]:
    """One request to a running server: (status, decoded JSON body or text)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"content-type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            status, raw = answer.status, answer.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()
