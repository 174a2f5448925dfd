"""`make bench`: run every benchmark module and print the figures as a table and JSON.

Each `benchmarks/bench_*.py` module exposes `run(sizes: list[str]) -> list[dict]`; a
record has at least benchmark, metric, value and unit (plus size, backend, case, note).
Sizes: small (seconds), medium (the issue targets), large (minutes; opt in with
`make bench SIZES=small,medium,large`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas  # noqa: F401  (see below)
from rich.console import Console
from rich.table import Table

# pyarrow imports pandas on the first use of pyarrow.compute (0.3 s, 1.5 s without
# bytecode caches): a one-time cost of the process, imported here so that it is not
# counted in whichever timed step happens to come first.

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--sizes", default="small,medium", help="comma-separated: small,medium,large"
    )
    parser.add_argument(
        "--only", default="", help="comma-separated module names, e.g. bench_offline"
    )
    parser.add_argument("--out", default=str(HERE / "results" / "latest.json"))
    args = parser.parse_args()
    sizes = [s for s in args.sizes.split(",") if s]
    modules = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if args.only:
        modules = [m for m in modules if m in args.only.split(",")]

    console = Console(stderr=True)
    records: list[dict] = []
    for name in modules:
        console.print(f"[bold]running {name}[/] ({', '.join(sizes)})")
        started = time.perf_counter()
        module = importlib.import_module(name)
        for record in module.run(sizes):
            record.setdefault("module", name)
            records.append(record)
        console.print(f"  done in {time.perf_counter() - started:.1f} s")

    table = Table(title="Almanac benchmarks")
    for column in ("benchmark", "size", "backend", "case", "metric", "value", "unit", "note"):
        table.add_column(column, overflow="fold")
    for r in records:
        value = r.get("value")
        shown = (
            f"{value:,.3f}"
            if isinstance(value, float)
            else f"{value:,}"
            if isinstance(value, int)
            else str(value)
        )
        table.add_row(
            str(r.get("benchmark", "")), str(r.get("size", "")), str(r.get("backend", "")),
            str(r.get("case", "")), str(r.get("metric", "")), shown, str(r.get("unit", "")),
            str(r.get("note", "")),
        )  # fmt: skip
    Console(width=160).print(table)

    result = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "sizes": sizes,
        "records": records,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
