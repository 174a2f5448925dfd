"""Spark engine benchmark: the same training set as bench_offline, on DuckDB and on Spark
(`local[2]` and `local[1]`), each in a fresh process, from the same run.

Reported per engine: the training set's seconds (Spark: after its session started, which
is reported apart), the driver's peak RSS (the Python process; Spark's JVM and workers are
children), and a fingerprint of every feature column, which must be identical across
engines ("same results to the row").

    python benchmarks/bench_spark.py small medium
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datagen import FEATURES, SIZES, make_repo

# Runs in a fresh interpreter: argv = [repo, features]; engine settings come from the
# environment (ALMANAC_OFFLINE_ENGINE, ALMANAC_OFFLINE_SPARK_MASTER); prints one JSON line.
CHILD = r"""
import json, math, os, sys, time
import pyarrow as pa
import pyarrow.compute as pc

repo, features = sys.argv[1], json.loads(sys.argv[2])
from almanac.store import FeatureStore

store = FeatureStore(repo)
start = time.perf_counter()
engine = store.offline
if store.config.offline.engine == "spark":
    engine.spark  # start the session outside the timed join
startup = time.perf_counter() - start
start = time.perf_counter()
table = store.get_historical_features(repo + "/spine.parquet", features).to_arrow()
seconds = time.perf_counter() - start
out = {}
for name in [f.split(":")[1] for f in features]:
    col = table.column(name)
    if pa.types.is_string(col.type):
        total = pc.sum(pc.utf8_length(col)).as_py()
    else:
        # fsum: exact, so the same values give the same total however they are laid out
        total = math.fsum(col.cast(pa.float64()).drop_null().to_pylist())
    out[name] = [col.null_count, round(total or 0.0, 3)]
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
store.close()
print(json.dumps({"seconds": seconds, "startup": startup, "peak_mib": peak,
                  "rows": table.num_rows, "fingerprint": out, "load": os.getloadavg()[0]}))
"""

ENGINES = {
    "duckdb": {"ALMANAC_OFFLINE_ENGINE": "duckdb"},
    "spark local[2]": {
        "ALMANAC_OFFLINE_ENGINE": "spark",
        "ALMANAC_OFFLINE_SPARK_MASTER": "local[2]",
    },
    "spark local[1]": {
        "ALMANAC_OFFLINE_ENGINE": "spark",
        "ALMANAC_OFFLINE_SPARK_MASTER": "local[1]",
    },
}


def _measure(repo: Path, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(repo), json.dumps(FEATURES)],
        capture_output=True, text=True, check=False, env={**os.environ, **env},
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"spark benchmark failed ({env}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(sizes: list[str]) -> list[dict[str, Any]]:
    from almanac.store import FeatureStore

    records: list[dict[str, Any]] = []
    for size in sizes:
        spec = SIZES[size]
        repo = make_repo(size)
        with FeatureStore(repo) as store:
            store.apply()
        shape = f"{spec.spine:,} spine × {spec.rows + spec.merchant_rows:,} rows, 2 views"
        results = {name: _measure(repo, env) for name, env in ENGINES.items()}
        duck = results["duckdb"]
        for name, result in results.items():
            same = result["fingerprint"] == duck["fingerprint"]
            note = f"{shape}; {'same output as DuckDB' if same else 'OUTPUT DIFFERS FROM DUCKDB'}"
            note += f"; load {result['load']:.1f} on {os.cpu_count()} cores"

            def record(
                metric: str, value: float, unit: str, text: str = note, size: str = size,
                name: str = name,
            ) -> None:  # fmt: skip
                records.append(
                    {"benchmark": "point_in_time_join_engines", "size": size, "backend": name,
                     "metric": metric, "value": round(value, 3), "unit": unit, "note": text}
                )  # fmt: skip

            record("seconds", result["seconds"], "s")
            record("driver_peak_rss", result["peak_mib"], "MiB", "the Python driver process")
            if name != "duckdb":
                record(
                    "startup_seconds", result["startup"], "s", "SparkSession start, not in seconds"
                )
                record("ratio_to_duckdb", result["seconds"] / duck["seconds"], "x")
        one, two = results["spark local[1]"]["seconds"], results["spark local[2]"]["seconds"]
        records.append(
            {"benchmark": "point_in_time_join_engines", "size": size, "backend": "spark",
             "metric": "speedup_local2_over_local1", "value": round(one / two, 3), "unit": "x",
             "note": "same job, local[1] seconds / local[2] seconds"}
        )  # fmt: skip
    return records


if __name__ == "__main__":
    for item in run(sys.argv[1:] or ["small"]):
        print(json.dumps(item, ensure_ascii=False))
