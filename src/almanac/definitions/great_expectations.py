"""Reading a Great Expectations suite (its JSON, 0.x or 1.x) into expectations, for
the kinds the two share; no Great Expectations dependency:

| Great Expectations | Almanac |
|---|---|
| `expect_column_values_to_not_be_null` | `Expect.not_null` |
| `expect_column_values_to_be_between` (`min_value`, `max_value`) | `Expect.between` |
| `expect_column_values_to_be_in_set` (`value_set`) | `Expect.one_of` |
| `expect_column_values_to_match_regex` (`regex`) | `Expect.matches` |
| `expect_table_row_count_to_be_between` | `Expect.row_count` |

Both ignore nulls in all but the first, and a regex matches anywhere in the text in
both. What has no equivalent — another expectation type, `mostly` below 1 (Almanac's
checks hold for every row), `strict_min`/`strict_max`, row conditions — is an error
naming it, unless `unsupported="skip"`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from almanac.definitions.expectations import Expect, Expectation
from almanac.errors import DefinitionError

_Builder = Callable[[dict[str, Any]], Expectation]
_BUILDERS: dict[str, tuple[_Builder, set[str]]] = {
    "expect_column_values_to_not_be_null": (
        lambda k: Expect.not_null(k["column"]), {"column"},
    ),
    "expect_column_values_to_be_between": (
        lambda k: Expect.between(k["column"], k.get("min_value"), k.get("max_value")),
        {"column", "min_value", "max_value"},
    ),
    "expect_column_values_to_be_in_set": (
        lambda k: Expect.one_of(k["column"], k["value_set"]), {"column", "value_set"},
    ),
    "expect_column_values_to_match_regex": (
        lambda k: Expect.matches(k["column"], k["regex"]), {"column", "regex"},
    ),
    "expect_table_row_count_to_be_between": (
        lambda k: Expect.row_count(k.get("min_value"), k.get("max_value")),
        {"min_value", "max_value"},
    ),
}  # fmt: skip
# Keyword arguments that change nothing when left at these values.
_NEUTRAL: dict[str, Any] = {
    "mostly": 1, "strict_min": False, "strict_max": False, "row_condition": None,
    "condition_parser": None, "result_format": None, "catch_exceptions": None,
    "include_config": None, "meta": None, "parse_strings_as_datetimes": False,
}  # fmt: skip


def from_great_expectations(
    suite: str | Path | Mapping[str, Any], unsupported: Literal["error", "skip"] = "error"
) -> list[Expectation]:
    """The expectations of a Great Expectations suite: a path to its JSON, or the
    parsed JSON itself."""
    if isinstance(suite, str | Path):
        path = Path(suite)
        try:
            suite = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise DefinitionError(f"Great Expectations suite {path}: {error}") from None
    if not isinstance(suite, Mapping) or not isinstance(suite.get("expectations"), list):
        raise DefinitionError("a Great Expectations suite is an object with a list 'expectations'")  # fmt: skip
    name = suite.get("name") or suite.get("expectation_suite_name") or "suite"
    out: list[Expectation] = []
    problems: list[str] = []
    for number, item in enumerate(suite["expectations"], 1):
        kind = item.get("type") or item.get("expectation_type") if isinstance(item, Mapping) else None  # fmt: skip
        kwargs = dict(item.get("kwargs") or {}) if isinstance(item, Mapping) else {}
        where = f"expectation {number} ({kind or 'no type'})"
        if kind not in _BUILDERS:
            problems.append(f"{where}: no Almanac equivalent")
            continue
        builder, known = _BUILDERS[kind]
        odd = [k for k, v in kwargs.items() if k not in known and (k not in _NEUTRAL or v != _NEUTRAL[k])]  # fmt: skip
        if odd:
            problems.append(f"{where}: {', '.join(f'{k}={kwargs[k]!r}' for k in odd)} has no Almanac equivalent")  # fmt: skip
            continue
        try:
            out.append(builder(kwargs))
        except KeyError as error:
            problems.append(f"{where}: no {error}")
        except (DefinitionError, ValueError) as error:
            problems.append(f"{where}: {error}")
    if problems and unsupported == "error":
        raise DefinitionError(
            f"Great Expectations suite '{name}': " + "; ".join(problems)
            + ' (unsupported="skip" leaves these out)'
        )  # fmt: skip
    return out
