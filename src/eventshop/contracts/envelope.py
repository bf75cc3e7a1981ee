"""The envelope every event travels in (docs/DESIGN.md §4.2).

On the wire the body is the JSON of `Envelope`; the AMQP properties repeat what brokers and
operators look at without parsing the body: message_id = event_id, type = event_type,
correlation_id, timestamp = occurred_at, and headers schema_version, causation_id, traceparent.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import uuid_utils.compat
from pydantic import BaseModel, ConfigDict, Field


class Envelope(BaseModel):
    """One event: who it is about, what caused it and its own data (`payload`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: uuid.UUID
    event_type: str = Field(min_length=1, max_length=200, pattern=r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
    schema_version: int = Field(ge=1)
    occurred_at: datetime
    aggregate_id: str = Field(min_length=1, max_length=200)
    correlation_id: str = Field(min_length=1, max_length=200)
    causation_id: str | None = None
    traceparent: str | None = None
    payload: dict[str, Any]


def new_envelope(
    event_type: str,
    schema_version: int,
    aggregate_id: str,
    payload: dict[str, Any],
    *,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    traceparent: str | None = None,
    event_id: uuid.UUID | None = None,
    occurred_at: datetime | None = None,
) -> Envelope:
    """A fresh envelope; a chain's first event starts its own correlation id.

    Its id is a UUIDv7 (RFC 9562): time-ordered, so the outbox's, the inboxes' and the event
    store's indexes on it grow at one end instead of anywhere (ADR 0020's addendum)."""
    eid = event_id or uuid_utils.compat.uuid7()
    return Envelope(
        event_id=eid,
        event_type=event_type,
        schema_version=schema_version,
        occurred_at=occurred_at or datetime.now(UTC),
        aggregate_id=aggregate_id,
        correlation_id=correlation_id or str(eid),
        causation_id=causation_id,
        traceparent=traceparent,
        payload=payload,
    )
