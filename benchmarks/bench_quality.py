"""Data quality: expectations at the door, statistics and drift, on in-memory Arrow data
(what the entry paths and `almanac stats`/`drift` run after reading the rows).

- `expectations`: `admit` of a batch against 10 expectations (2 not_null, 3 between,
  2 one_of, 2 matches, 1 row_count), none breached (every row checked), and the same
  batch with 1% of the rows breaking one expectation under `quarantine` (the split);
- `statistics`: `describe` of 10 features (6 numeric, 3 text, 1 timestamp);
- `drift`: `drift` of the same 10 features between two such batches.
Sizes: small 100k rows (statistics 1M), medium 1M rows (statistics 10M).
Targets (the issue): validate 1M rows × 10 expectations ≤ 1 s; statistics over 10M rows
× 10 features ≤ 5 s.

    .venv/bin/python benchmarks/bench_quality.py small
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from almanac import Expect, FeatureView, Field
from almanac.quality.admission import admit
from almanac.quality.drift import drift
from almanac.quality.statistics import describe

ROWS = {"small": 100_000, "medium": 1_000_000, "large": 10_000_000}
STATS_ROWS = {"small": 1_000_000, "medium": 10_000_000, "large": 10_000_000}
NUMERIC = ["amount", "fee", "balance", "age_days", "score", "count_7d"]
TEXT = ["plan", "country", "email_domain"]
REPEATS = 3


def _table(rows: int, seed: int, shift: float = 0.0) -> pa.Table:
    rng = np.random.default_rng(seed)
    start = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1e6)
    columns: dict[str, Any] = {
        "amount": rng.gamma(2.0, 50.0, rows) + shift,
        "fee": rng.uniform(0, 5, rows),
        "balance": rng.normal(1000, 300, rows),
        "age_days": rng.integers(0, 3650, rows).astype(np.int64),
        "score": rng.beta(2, 5, rows),
        "count_7d": rng.poisson(3, rows).astype(np.int64),
        "plan": pa.array(rng.choice(["free", "pro", "team"], rows, p=[0.7, 0.2, 0.1])),
        "country": pa.array(rng.choice(["DE", "FR", "US", "GB", "NL", "ES"], rows)),
        "email_domain": pa.array(rng.choice(["gmail.com", "example.org", "mail.de"], rows)),
    }
    micros = start + rng.integers(0, 86_400_000_000 * 90, rows)
    columns["seen_at"] = pa.array(micros, pa.timestamp("us", tz="UTC"))
    return pa.table(columns)


EXPECTATIONS = [
    Expect.not_null("amount"), Expect.not_null("plan"),
    Expect.between("amount", 0, 1_000_000), Expect.between("fee", 0, 5),
    Expect.between("score", 0, 1),
    Expect.one_of("plan", ["free", "pro", "team"]),
    Expect.one_of("country", ["DE", "FR", "US", "GB", "NL", "ES"]),
    Expect.matches("email_domain", r"^[a-z.]+$"), Expect.matches("country", r"^[A-Z]{2}$"),
    Expect.row_count(min=1),
]  # fmt: skip


def _view(policy: str) -> FeatureView:
    schema = [Field(name, "float64") for name in NUMERIC] + [Field(name, "string") for name in TEXT]
    return FeatureView(
        name="payments", entities=["customer"], source="payments", schema=schema,
        expectations=EXPECTATIONS, on_violation=policy,
    )  # fmt: skip


def _best(run: Any) -> float:
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def _record(size: str, case: str, seconds: float, note: str) -> dict[str, Any]:
    return {"benchmark": "quality", "size": size, "backend": "arrow", "case": case,
            "metric": "seconds", "value": round(seconds, 3), "unit": "s", "note": note}  # fmt: skip


SKEW_READS = {"small": 10_000, "medium": 100_000, "large": 100_000}
SKEW_FEATURES = """
from almanac import Entity, FeatureService, FeatureView, Field, FileSource, Float64, Int64, String

user = Entity(name="user", join_keys=["user_id"], dtype="int64")
profile = FeatureView(
    name="profile", entities=[user], source=FileSource(name="profile_source", path="data/profile/"),
    schema=[Field("score", Float64), Field("visits", Int64), Field("tier", String)],
)
ranker = FeatureService(name="ranker", features=[profile])
"""


def _skew(size: str) -> dict[str, Any]:
    """`skew` over N logged entity reads (1,000 entities per read, as the server logs
    them), every value compared."""
    import tempfile
    from datetime import timedelta
    from pathlib import Path

    from almanac import FeatureStore
    from almanac.quality.serving_log import ServingLog, log_folder

    reads = SKEW_READS[size]
    with tempfile.TemporaryDirectory() as folder:
        repo = Path(folder)
        (repo / "data" / "profile").mkdir(parents=True)
        (repo / "almanac.yaml").write_text("project: skew\n")
        (repo / "features.py").write_text(SKEW_FEATURES)
        with FeatureStore(repo) as store:
            store.apply()
            at = datetime.now(UTC) - timedelta(days=1)
            rng = np.random.default_rng(5)
            store.write_to_offline_store("profile", {
                "user_id": np.arange(reads), "event_timestamp": pa.array([at] * reads, pa.timestamp("us", tz="UTC")),
                "score": rng.random(reads), "visits": rng.integers(0, 100, reads),
                "tier": rng.choice(["free", "pro"], reads),
            })  # fmt: skip
            store.materialize(None, at + timedelta(hours=1))
            served = ServingLog(log_folder(store.config), 1.0, capacity=reads)
            for start in range(0, reads, 1000):
                users = list(range(start, min(start + 1000, reads)))
                response = store.get_online_features(feature_service="ranker", entity_rows={"user_id": users})  # fmt: skip
                assert response.read_time is not None
                served.record(response, response.read_time, None, "ranker", False)
            served.close()
            seconds = _best(lambda: store.skew("ranker"))
            report = store.skew("ranker")
            assert report.rows == reads and all(f.rate == 0 for f in report.features)
    return _record(size, "skew report", seconds, f"{reads:,} logged entity reads x 3 features, replayed offline and compared, best of {REPEATS}; target ≤ 10 s at 100k")  # fmt: skip


def run(sizes: list[str]) -> list[dict[str, Any]]:
    records = []
    for size in sizes:
        rows = ROWS[size]
        batch = _table(rows, 1)
        clean = _view("reject")
        seconds = _best(lambda: admit(batch, [clean], "bench"))  # noqa: B023
        records.append(_record(size, "expectations, 10 over a clean batch", seconds,
                               f"{rows:,} rows, best of {REPEATS}; target ≤ 1 s at 1M"))  # fmt: skip
        amounts = batch.column("amount").to_numpy().copy()
        amounts[::100] = -1.0  # 1% of the rows break between('amount', 0, ...)
        dirty = batch.set_column(0, "amount", pa.array(amounts))
        split = _view("quarantine")
        result = admit(dirty, [split], "bench")
        assert result.quarantined[0][1].num_rows == (rows + 99) // 100
        seconds = _best(lambda: admit(dirty, [split], "bench"))  # noqa: B023
        records.append(_record(size, "expectations, quarantine 1% of the rows", seconds,
                               f"{rows:,} rows, best of {REPEATS}"))  # fmt: skip
        stats_rows = STATS_ROWS[size]
        wide = _table(stats_rows, 2)
        features = {**{n: "float64" for n in NUMERIC}, **{n: "string" for n in TEXT}, "seen_at": "timestamp"}  # fmt: skip
        seconds = _best(lambda: describe(wide, features))  # noqa: B023
        records.append(_record(size, "statistics, 10 features", seconds,
                               f"{stats_rows:,} rows, best of {REPEATS}; target ≤ 5 s at 10M"))  # fmt: skip
        current = _table(rows, 3, shift=10.0)
        seconds = _best(lambda: drift(batch, current, list(features)))  # noqa: B023
        records.append(_record(size, "drift, 10 features", seconds,
                               f"{rows:,} reference × {rows:,} current rows, best of {REPEATS}"))  # fmt: skip
        records.append(_skew(size))
    return records


if __name__ == "__main__":
    for item in run(sys.argv[1:] or ["small"]):
        print(json.dumps(item, ensure_ascii=False))
