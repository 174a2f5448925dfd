"""Expectations: what rows must satisfy to enter a view's stores.

Declared on a view, as plain data that compiles to diffable JSON (`plan` shows an edit):

    FeatureView(..., expectations=[
        Expect.not_null("segment"),
        Expect.between("avg_amount_30d", 0, 100_000),
        Expect.one_of("plan_tier", ["free", "pro", "team"]),
        Expect.matches("email_domain", r"^[a-z.]+$"),
        Expect.row_count(min=1),
    ], on_violation="reject")

`on_violation` says what happens to a batch that breaks one: `reject` (the whole batch is
refused, nothing is written anywhere), `warn` (written; the violation is logged) or
`quarantine` (the rows that pass are written; the others go to the view's quarantine
dataset with the reason). A null value breaks only `not_null`; the other checks look at
the values present. `almanac.semantics.expectations` evaluates them, vectorized.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import model_serializer, model_validator

from almanac.definitions.base import Definition, Name

Check = Literal["not_null", "between", "one_of", "matches", "row_count"]
OnViolation = Literal["reject", "warn", "quarantine"]
Scalar = bool | int | float | str


class Expectation(Definition):
    """One check; build it with `Expect`."""

    check: Check
    column: Name | None = None
    min: float | None = None
    max: float | None = None
    values: list[Scalar] | None = None
    pattern: str | None = None

    @model_validator(mode="after")
    def _arguments(self) -> Self:
        needs_column = self.check != "row_count"
        if needs_column != (self.column is not None):
            raise ValueError(f"{self.check} {'needs' if needs_column else 'takes no'} column")
        given = {
            name for name in ("min", "max", "values", "pattern") if getattr(self, name) is not None
        }
        allowed = {
            "not_null": set(),
            "between": {"min", "max"},
            "row_count": {"min", "max"},
            "one_of": {"values"},
            "matches": {"pattern"},
        }[self.check]
        if given - allowed:
            raise ValueError(f"{self.check} takes no {', '.join(sorted(given - allowed))}")
        if self.check in ("between", "row_count"):
            if self.min is None and self.max is None:
                raise ValueError(f"{self.check} needs min, max or both")
            if self.min is not None and self.max is not None and self.min > self.max:
                raise ValueError(f"min {self.min:g} is greater than max {self.max:g}")
        if self.check == "one_of" and not self.values:
            raise ValueError("one_of needs a non-empty list of values")
        if self.check == "matches":
            _check_pattern(self.pattern or "")
        return self

    @model_serializer(mode="wrap")
    def _spec(self, handler: Any) -> Any:
        return {k: v for k, v in handler(self).items() if v is not None}  # only what is set

    @property
    def label(self) -> str:
        """The expectation as the user wrote it, for messages."""
        if self.check == "not_null":
            return f"not_null({self.column!r})"
        if self.check == "between":
            return f"between({self.column!r}, {_bound(self.min)}, {_bound(self.max)})"
        if self.check == "row_count":
            return f"row_count(min={_bound(self.min)}, max={_bound(self.max)})"
        if self.check == "one_of":
            return f"one_of({self.column!r}, {self.values!r})"
        return f"matches({self.column!r}, {self.pattern!r})"


class Expect:
    """Builders of expectations (each returns an `Expectation`)."""

    @staticmethod
    def not_null(column: str) -> Expectation:
        return Expectation(check="not_null", column=column)

    @staticmethod
    def between(column: str, min: float | None = None, max: float | None = None) -> Expectation:
        """`min <= value <= max` (either bound may be left out)."""
        return Expectation(check="between", column=column, min=min, max=max)

    @staticmethod
    def one_of(column: str, values: list[Any]) -> Expectation:
        return Expectation(check="one_of", column=column, values=list(values))

    @staticmethod
    def matches(column: str, pattern: str) -> Expectation:
        """The text contains a match of `pattern` (RE2 syntax; anchor it with ^...$)."""
        return Expectation(check="matches", column=column, pattern=pattern)

    @staticmethod
    def row_count(min: int | None = None, max: int | None = None) -> Expectation:
        """The batch has between `min` and `max` rows."""
        return Expectation(check="row_count", min=min, max=max)

    @staticmethod
    def from_great_expectations(
        suite: str | Path | Mapping[str, Any], unsupported: Literal["error", "skip"] = "error"
    ) -> list[Expectation]:
        """The expectations of a Great Expectations suite (its JSON file or the parsed
        JSON), for the kinds both have (`almanac.definitions.great_expectations`)."""
        from almanac.definitions.great_expectations import from_great_expectations

        return from_great_expectations(suite, unsupported)


def _bound(value: float | None) -> str:
    return "None" if value is None else f"{value:g}"


def _check_pattern(pattern: str) -> None:
    """Patterns run in Arrow's RE2, which has no lookarounds or backreferences: refuse
    one it cannot compile now, not at the first batch."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        pc.match_substring_regex(pa.array([""], pa.string()), pattern)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise ValueError(f"pattern {pattern!r} is not a valid RE2 pattern: {error}") from None
