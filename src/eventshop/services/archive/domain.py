"""Which slice of history a query or a replay is about: pure, no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from eventshop.contracts import Envelope

#: an event type, or a pattern where `*` stands for one dot-separated word ("product.*")
TYPE_PATTERN = re.compile(r"^([a-z0-9_]+|\*)(\.([a-z0-9_]+|\*))+$")


class InvalidFilterError(ValueError):
    """A filter that can match nothing by construction, or is malformed."""


@dataclass(frozen=True)
class EventFilter:
    """Events matching every field given: type (or `*` pattern), correlation id, aggregate id,
    and occurred_at in [since, until). Times without a zone are taken as UTC."""

    event_type: str | None = None
    correlation_id: str | None = None
    aggregate_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.event_type is not None and not TYPE_PATTERN.match(self.event_type):
            raise InvalidFilterError(
                f"type {self.event_type!r} is neither an event type nor a pattern like 'order.*'"
            )
        object.__setattr__(self, "since", _utc(self.since))
        object.__setattr__(self, "until", _utc(self.until))
        if self.since is not None and self.until is not None and self.since > self.until:
            raise InvalidFilterError("since is after until")

    @property
    def type_regex(self) -> str | None:
        """The POSIX regex of a `*` pattern (None for an exact type or no type)."""
        if self.event_type is None or "*" not in self.event_type:
            return None
        words = ("[a-z0-9_]+" if w == "*" else w for w in self.event_type.split("."))
        return "^" + r"\.".join(words) + "$"


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ArchivedEvent:
    position: int
    archived_at: datetime
    envelope: Envelope
