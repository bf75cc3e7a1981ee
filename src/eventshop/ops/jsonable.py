"""The conventions of every `--json` document: times in ISO 8601 UTC, values JSON can carry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def iso_utc(value: datetime | str | bytes | None) -> str | None:
    """A time as ISO 8601 in UTC (a naive one is taken as UTC); text that is no time is kept
    as it is (a header some other tool wrote), None stays None."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    when = value
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return value
    assert isinstance(when, datetime)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat()


def plain(value: Any) -> Any:
    """A value as JSON can carry it (AMQP tables hold bytes, datetimes, nested tables)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)  # a Decimal, say
