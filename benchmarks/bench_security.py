"""Access control's cost: a permission decision in process, and the HTTP feature server
with JWT authentication, permissions and the audit log on beside the same server with
auth off (same repo, same Redis, alternating rounds so a shared machine's noise hits
both alike).

- `permission_check`: `AccessPolicy.decide` for one feature, p50/p99 over 100,000 calls:
  cold (every call a new target: no cache) and warm (the cached decision a request makes);
- `http_auth`: POST /get-online-features, 1 entity × 10 features, c=8, 1 worker, req/s and
  p99 with auth off and on, and the change.

    .venv/bin/python benchmarks/bench_security.py small
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bench_server as http

SECRET = "bench-secret-of-at-least-32-bytes!!!!"
PERMISSIONS = """
from almanac import Permission, Resource
readers = Permission(name="readers", principals=["role:model"], actions=["read_online"],
                     resources=[Resource(service="model")])
other = Permission(name="other", principals=["group:elsewhere"], actions=["read_online"],
                   resources=[Resource(view="nothing_*")])
pii = Permission(name="pii", principals=["group:privacy"], actions=["read_online"],
                 resources=[Resource(tags={"pii": "true"})])
"""


def _record(case: str, metric: str, value: float, unit: str, note: str) -> dict[str, Any]:
    return {"benchmark": "security", "backend": "redis", "case": case, "metric": metric,
            "value": round(value, 3), "unit": unit, "note": note}  # fmt: skip


def _decisions(repo: Path) -> list[dict[str, Any]]:
    from almanac import FeatureStore
    from almanac.security.access import AccessPolicy, Principal, Target

    with FeatureStore(repo) as store:
        policy = AccessPolicy(store.catalog)
        [target] = policy.feature_targets([("stats", "f0")])
    principal = Principal.of("user:bench", ["role:model", "group:x"])
    records = []
    cold = [Target("feature", f"f{i}", "stats", "events", ("model",)) for i in range(100_000)]
    for case, targets in (
        ("cold: a new target each call", cold),
        ("warm: the cached decision", [target] * 100_000),
    ):
        samples = []
        for item in targets:
            started = time.perf_counter()
            policy.decide(principal, "read_online", item)
            samples.append(time.perf_counter() - started)
        samples.sort()
        for label, q in (("p50_us", 0.5), ("p99_us", 0.99)):
            records.append(_record(f"permission check, {case}", label, samples[int(len(samples) * q)] * 1e6, "µs", "3 permissions, one granting"))  # fmt: skip
    return records


def run(sizes: list[str]) -> list[dict[str, Any]]:
    import jwt

    records: list[dict[str, Any]] = []
    seconds = http.DURATION.get(sizes[0] if sizes else "small", 5)
    folder = Path(tempfile.mkdtemp(prefix="almanac-bench-security-"))
    redis = http.start_redis()
    servers = {}
    try:
        plain = http._repo(folder / "plain", redis.url)
        secured = http._repo(folder / "secured", redis.url)
        with open(secured / "features.py", "a") as features:
            features.write(PERMISSIONS)
        with open(secured / "almanac.yaml", "a") as settings:
            settings.write(f"server:\n  auth:\n    type: jwt\n    secret: {SECRET}\n    algorithms: [HS256]\n    audience: almanac\naudit:\n  path: audit/almanac.jsonl\n")  # fmt: skip
        from almanac import FeatureStore

        with FeatureStore(secured) as store:
            store.apply()
        records += _decisions(secured)
        token = jwt.encode({"sub": "bench", "aud": "almanac", "roles": ["model"], "exp": datetime.now(UTC) + timedelta(hours=1)}, SECRET, algorithm="HS256")  # fmt: skip
        for name, repo in (("off", plain), ("on", secured)):
            port = http.free_port()
            servers[name] = (port, http._serve(repo, port, 1))
        bodies = http._bodies("/get-online-features", 1)
        runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
        for _ in range(3):
            for name, (port, _) in servers.items():
                headers = {"Authorization": f"Bearer {token}"} if name == "on" else {}
                runs[name].append(http._load(port, "/get-online-features", bodies, 8, max(2, seconds // 2), folder, headers))  # fmt: skip
        merged = {name: http._merge_rounds(figures) for name, figures in runs.items()}
        note = f"{http._stack()}; 3 alternating rounds"
        for name, figures in merged.items():
            label = "auth off" if name == "off" else "JWT + permissions + audit log"
            case = f"HTTP 1 entity x 10 features, c=8, 1 worker, {label}"
            extra = "" if not figures["non_200"] else f"; {int(figures['non_200'])} non-200"
            records.append(_record(case, "req_per_s", figures["req_per_s"], "req/s", note + extra))
            records.append(_record(case, "p99_ms", figures["p99_ms"], "ms", note + extra))
        change = 100 * (merged["on"]["req_per_s"] / merged["off"]["req_per_s"] - 1)
        records.append(_record("HTTP with auth on vs off", "change", change, "% req/s", "target: within -10%"))  # fmt: skip
    finally:
        for _, server in servers.values():
            http._stop(server)
        redis.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return records


if __name__ == "__main__":
    for item in run(sys.argv[1:] or ["small"]):
        print(
            f"{item['case']:70} {item['metric']:10} {item['value']:>12,.3f} {item['unit']:6} {item['note']}"
        )
