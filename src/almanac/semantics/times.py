"""Rule 1 in one place: every time Almanac is handed becomes a tz-aware UTC datetime.

It is also where the accepted range of times is written (docs/concepts.md, rule 1):

* an event time (and a created time) is between `MIN_EVENT_TIME` (1900-01-01) and
  now + `FUTURE_TOLERANCE` (5 s of clock skew). A row dated in the future would win
  rule 2's ordering online until that time came (later rows of its entity ignored) and
  be served before it happened; materialization refuses an end time in the future with
  the same tolerance;
* a timestamp feature value is between `MIN_TIMESTAMP` and `MAX_TIMESTAMP`, what a
  Python datetime (and so every reader: the SDK, pandas in microseconds, JSON) can hold:
  0001-01-01 to 9999-12-31T23:59:59.999999 UTC.

Rows outside these ranges are refused where they come in (`almanac.semantics.validate`), so a
store never holds a time that a read cannot return.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from almanac.errors import InputError

MIN_EVENT_TIME = datetime(1900, 1, 1, tzinfo=UTC)
FUTURE_TOLERANCE = timedelta(seconds=5)  # clock skew allowed between a client and Almanac
MIN_TIMESTAMP = datetime.min.replace(tzinfo=UTC)
MAX_TIMESTAMP = datetime.max.replace(tzinfo=UTC)


def latest_event_time(now: datetime | None = None) -> datetime:
    """The latest event time accepted at `now` (default: the current time)."""
    return (now or datetime.now(UTC)) + FUTURE_TOLERANCE


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


def time_range(
    start: datetime | str | None, end: datetime | str | None
) -> tuple[datetime | None, datetime | None]:
    """`start` and `end` as UTC times (None: open); InputError if start is after end."""
    low = None if start is None else to_utc(start, "start")
    high = None if end is None else to_utc(end, "end")
    if low is not None and high is not None and low > high:
        raise InputError(f"start {low.isoformat()} is after end {high.isoformat()}")
    return low, high


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros_to_datetime(micros: int) -> datetime:
    """Microseconds since the epoch as an aware UTC datetime (exact, no float rounding);
    outside years 1 to 9999, the nearest datetime there is (never an error)."""
    try:
        return _EPOCH + timedelta(microseconds=micros)
    except OverflowError:  # rare: only a time the door would refuse today
        return MIN_TIMESTAMP if micros < 0 else MAX_TIMESTAMP


def datetime_to_micros(value: datetime) -> int:
    """An aware (or naive = UTC, rule 1) datetime as microseconds since the epoch."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // timedelta(microseconds=1)
