"""Cold start: each CLI command in a fresh process, as a user runs it in a container
(`PYTHONDONTWRITEBYTECODE=1`: nothing is cached between processes but what was compiled
at install).

The starter repo (`almanac init`, 3,000 users, 300,000 watch events) is created and
applied once under `benchmarks/.data/cold-start/`. Almanac's own source is compiled to
bytecode first, as `pip install` does for a user (the dev checkout is an editable
install). Each command runs `RUNS` times; the median wall time is reported, with the
time to import the Python interpreter alone (`python -c pass`) as the floor.
`materialize-incremental` starts from an empty online store each time, so it does the
whole job, not a no-op.

Beside them, in the same run, Feast's CLI on its own starter repo (`feast init`: driver
statistics, SQLite online store) when `.tools/feast-venv` has Feast (`make test`
installs it): `feast --help`, `feature-views list`, `plan` and `materialize-incremental`,
each in a fresh process with the same environment (its venv is compiled by pip too).

    .venv/bin/python benchmarks/bench_cold_start.py small
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE / ".data" / "cold-start"
RUNS = 3
BIN = Path(sys.executable).parent

COMMANDS: dict[str, list[str]] = {
    "--help": ["--help"],
    "list": ["list", "views"],
    "plan": ["plan"],
    "historical → Parquet": [
        "historical", "-e", "data/labels.parquet", "-s", "recommender_v1", "-o", "out/train.parquet",
    ],
    "materialize-incremental": ["materialize-incremental"],
    "get-online": ["get-online", "-k", "user_id=1", "-s", "recommender_v1"],
}  # fmt: skip


FEAST = HERE.parent / ".tools" / "feast-venv" / "bin" / "feast"
FEAST_REPO = HERE / ".data" / "cold-start-feast"
FEAST_COMMANDS: dict[str, list[str]] = {
    "--help": ["--help"],
    "feature-views list": ["feature-views", "list"],
    "plan": ["plan"],
    "materialize-incremental": ["materialize-incremental", "2026-01-01T00:00:00"],
}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALMANAC_")}
    return {**env, "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "120"}


def _run(args: list[str], cwd: Path = REPO) -> float:
    started = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return seconds


def _prepare() -> None:
    src = HERE.parent / "src"
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(src)], check=True)
    if REPO.exists():
        shutil.rmtree(REPO)
    REPO.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([BIN / "almanac", "init", str(REPO)], check=True, capture_output=True)
    _run([str(BIN / "almanac"), "apply"])
    _run([str(BIN / "almanac"), "materialize-incremental"])  # get-online reads these


def run(sizes: list[str]) -> list[dict[str, Any]]:
    if "small" not in sizes and "medium" not in sizes:
        return []
    _prepare()
    records = []
    floor = statistics.median(_run([sys.executable, "-c", "pass"]) for _ in range(RUNS))
    records.append(_record("python -c pass", floor, "the interpreter alone: the floor"))
    for name, args in COMMANDS.items():
        samples = []
        for _ in range(RUNS):
            if name == "materialize-incremental":
                (REPO / ".almanac" / "online.db").unlink(missing_ok=True)
            samples.append(_run([str(BIN / "almanac"), *args]))
        note = f"median of {RUNS} fresh processes; starter repo"
        records.append(_record(f"almanac {name}", statistics.median(samples), note))
    return records + _feast()


def _feast() -> list[dict[str, Any]]:
    """Feast's CLI, cold, on its own starter repo (none when Feast is not installed)."""
    if not FEAST.exists():
        return []
    if FEAST_REPO.exists():
        shutil.rmtree(FEAST_REPO)
    FEAST_REPO.mkdir(parents=True)
    subprocess.run([FEAST, "init", "demo"], cwd=FEAST_REPO, env=_env(), check=True, capture_output=True)  # fmt: skip
    repo = FEAST_REPO / "demo" / "feature_repo"
    _run([str(FEAST), "apply"], cwd=repo)
    records = []
    for name, args in FEAST_COMMANDS.items():
        samples = []
        for _ in range(RUNS):
            if name == "materialize-incremental":
                (repo / "data" / "online_store.db").unlink(missing_ok=True)
                _run([str(FEAST), "apply"], cwd=repo)  # its watermark lives in the registry
            samples.append(_run([str(FEAST), *args], cwd=repo))
        note = f"Feast 0.67, same run, median of {RUNS}; its own starter repo (feast init)"
        records.append(_record(f"feast {name}", statistics.median(samples), note))
    return records


def _record(case: str, seconds: float, note: str) -> dict[str, Any]:
    return {"benchmark": "cold_start", "size": "starter", "backend": "cli", "case": case,
            "metric": "seconds", "value": round(seconds, 3), "unit": "s", "note": note}  # fmt: skip


if __name__ == "__main__":
    for item in run(sys.argv[1:] or ["small"]):
        print(json.dumps(item, ensure_ascii=False))
