"""Rule 2 by brute force, in plain Python: obviously correct, quadratic, for tests only.

Rows are dicts. Each source row carries its keys, `e` (event time, aware UTC datetime),
`c` (created time or None), `order` (its position in file order: later wins) and its
feature values.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

NEG_INF = datetime.min.replace(tzinfo=UTC)


def value_rank(row: dict[str, Any], features: list[str]) -> tuple:
    """The tie order of sources without file order: greatest values, nulls first."""
    return tuple((row[f] is not None, row[f] if row[f] is not None else 0) for f in features)


def winner(
    rows: list[dict[str, Any]],
    keys: dict[str, Any],
    at: datetime | None,
    ttl: timedelta | None,
    start: datetime | None = None,
    by_values: list[str] | None = None,
) -> dict[str, Any] | None:
    """The row rule 2 picks for `keys` at time `at` (None: no upper bound)."""
    candidates = [
        row
        for row in rows
        if all(row[k] == v for k, v in keys.items())
        and (at is None or row["e"] <= at)
        and (ttl is None or at is None or row["e"] >= at - ttl)
        and (start is None or row["e"] >= start)
    ]
    if not candidates:
        return None

    def rank(row: dict[str, Any]) -> tuple:
        tie = value_rank(row, by_values) if by_values is not None else (row["order"],)
        return (row["e"], row["c"] if row["c"] is not None else NEG_INF, *tie)

    return max(candidates, key=rank)


def expected_features(
    spine: list[dict[str, Any]],
    views: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """For each spine row (keys and "T"), the output columns of every view.

    A view is {"rows", "keys": [key names], "ttl", "features": {feature: output name}}.
    """
    out = []
    for entity in spine:
        result: dict[str, Any] = {}
        for view in views:
            keys = {k: entity[k] for k in view["keys"]}
            if any(v is None for v in keys.values()) or entity["T"] is None:
                row = None
            else:
                row = winner(
                    view["rows"], keys, entity["T"], view["ttl"], by_values=view.get("by_values")
                )
            for feature, output in view["features"].items():
                result[output] = None if row is None else row[feature]
        out.append(result)
    return out
