"""What every definition shares: a validated name, immutability and a JSON form.

Definitions are frozen Pydantic models. Construction validates every field; a
failure becomes a `DefinitionError` naming the object and the field. `to_spec` gives
the plain JSON-able dict stored in the registry and diffed by `plan`.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Annotated, Any, ClassVar, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, ValidationError

from almanac.errors import DefinitionError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_DURATION = re.compile(r"(\d+)(w|d|h|m|s)")
_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def check_name(value: str) -> str:
    """Names end up in SQL and Redis keys: they must be plain identifiers."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid name: use letters, digits and underscores, "
            "starting with a letter or underscore (at most 63 characters)"
        )
    return value


def parse_duration(value: Any) -> timedelta:
    """Accept a timedelta, a number of seconds, or text such as '30d', '1h30m', '90s'.

    Durations are whole seconds, so that their text form (`format_duration`) is exact."""
    duration = _as_timedelta(value)
    if duration is None:
        raise ValueError(f"{value!r} is not a duration (examples: '30d', '12h', '1h30m', 3600)")
    if duration % timedelta(seconds=1):
        raise ValueError(f"{value!r} is not a whole number of seconds")
    return duration


def _as_timedelta(value: Any) -> timedelta | None:
    if isinstance(value, timedelta):
        return value
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return timedelta(seconds=value)
        if isinstance(value, str):
            text = value.strip().lower()
            sign = -1 if text.startswith("-") else 1
            body = text.lstrip("-")
            parts = _DURATION.findall(body)
            if parts and "".join(n + u for n, u in parts) == body:
                return sign * timedelta(seconds=sum(int(n) * _UNIT_SECONDS[u] for n, u in parts))
    except (OverflowError, ValueError):  # too large for a timedelta, or NaN
        return None
    return None


def format_duration(value: timedelta) -> str:
    """The compact text form of a duration, the inverse of `parse_duration`."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    sign, seconds, out = ("-" if seconds < 0 else ""), abs(seconds), []
    for unit in ("d", "h", "m", "s"):
        count, seconds = divmod(seconds, _UNIT_SECONDS[unit])
        if count:
            out.append(f"{count}{unit}")
    return sign + "".join(out)


Name = Annotated[str, BeforeValidator(check_name)]
Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]


def _label(kind: str, name: Any) -> str:
    """`FeatureView 'x'`: the name quoted by repr, so even a bad name stays on one line."""
    return f"{kind} {name!r}" if isinstance(name, str) else kind


def describe_validation_error(kind: str, name: Any, error: ValidationError) -> str:
    """One line per problem: `FeatureView 'x': field 'ttl': must not be negative`."""
    label = _label(kind, name)
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"] if part != "__root__")
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"{label}: field '{where}': {message}" if where else f"{label}: {message}")
    return "; ".join(lines)


class Definition(BaseModel):
    """Base of all user-written definitions."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)
    kind: ClassVar[str] = "definition"

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise DefinitionError(
                describe_validation_error(type(self).__name__, data.get("name"), error)
            ) from None
        except DefinitionError as error:  # a nested definition, e.g. a schema entry as a dict
            raise DefinitionError(
                f"{_label(type(self).__name__, data.get('name'))}: {error}"
            ) from None

    def to_spec(self) -> dict[str, Any]:
        """The JSON-able form stored in the registry (and shown by `plan`)."""
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Self:
        return cls(**spec)

    def __eq__(self, other: object) -> bool:
        # Compare what is stored, not the Python objects a definition was built from.
        return type(other) is type(self) and other.to_spec() == self.to_spec()

    def __hash__(self) -> int:
        return hash((type(self).__name__, json.dumps(self.to_spec(), sort_keys=True)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={getattr(self, 'name', None)!r})"


class Dialect:
    """The SQL dialect of a definition's query text (`SqlSource`, `SqlTransformation`)."""

    DEFAULT = "duckdb"
    KNOWN = ("duckdb", "spark")  # a plug-in engine may run others; each engine says


def check_dialect(value: str) -> str:
    if not isinstance(value, str) or not value.isidentifier() or value != value.lower():
        raise ValueError(f"dialect must be a lower-case name such as {' or '.join(Dialect.KNOWN)}")
    return value


def drop_defaults(spec: Any, defaults: dict[str, Any]) -> Any:
    """`spec` without the fields that hold their default: specs written before a field
    existed stay byte-identical (no plan change, no online reset)."""
    if isinstance(spec, dict):
        spec = {k: v for k, v in spec.items() if k not in defaults or v != defaults[k]}
    return spec


def drop_default_dialect(spec: Any) -> Any:
    # Specs written before dialects existed stay byte-identical (no plan change, no
    # online reset): the default is not written out.
    if isinstance(spec, dict) and spec.get("dialect") == Dialect.DEFAULT:
        spec = {k: v for k, v in spec.items() if k != "dialect"}
    return spec
