"""Rule 1 in one place: every time Almanac is handed becomes a tz-aware UTC datetime."""

from __future__ import annotations

from datetime import UTC, datetime

from almanac.errors import InputError


def to_utc(value: datetime | str, name: str = "time") -> datetime:
    """A naive datetime is UTC; text is ISO 8601 (a trailing 'Z' means UTC). `name` is
    what the error message calls the value (an option, a parameter)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InputError(
                f"{name}: '{value}' is not an ISO 8601 time (e.g. 2026-06-01T00:00:00Z)"
            ) from None
    if not isinstance(value, datetime):
        raise InputError(f"{name}: expected a datetime, got {value!r}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
