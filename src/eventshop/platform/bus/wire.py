"""Envelope <-> AMQP message: body JSON plus the properties of docs/DESIGN.md §4.2."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import aio_pika
import pydantic_core
from pamqp.commands import Basic

from eventshop.contracts import Envelope

CONTENT_TYPE = "application/json"

# headers the bus adds to a message on its way up the retry ladder and into the parking lot
H_ATTEMPT = "x-attempt"
H_ERROR = "x-error"
H_FIRST_FAILURE = "x-first-failure-at"
H_ROUTING_KEY = "x-original-routing-key"
H_PARKED_AT = "x-parked-at"
H_PARKED_BY = "x-parked-by"
#: the broker user that first published a message now on the retry ladder or parked
#: (its user_id is then the consuming service's own: provenance.py)
H_PRODUCER = "x-producer"


def header_int(headers: Mapping[str, Any] | None, key: str) -> int:
    """An integer header (the attempt count); 0 when absent or not a number."""
    value = (headers or {}).get(key)
    try:
        return int(value) if isinstance(value, (int, str, float)) else 0
    except ValueError:
        return 0


def encode_body(envelope: Envelope) -> bytes:
    # pydantic's own JSON writer, straight to bytes: the same bytes as orjson over
    # `model_dump(mode="json")` in half the time (1.5 against 3.2 us an envelope)
    return pydantic_core.to_json(envelope)


def _headers(
    schema_version: int, causation_id: str | None, traceparent: str | None
) -> dict[str, Any]:
    headers: dict[str, Any] = {"schema_version": schema_version}
    if causation_id:
        headers["causation_id"] = causation_id
    if traceparent:
        headers["traceparent"] = traceparent
    return headers


def properties_from_row(
    *,
    event_id: str,
    event_type: str,
    schema_version: int,
    occurred_at: datetime,
    correlation_id: str,
    causation_id: str | None,
    traceparent: str | None,
    app_id: str | None = None,
) -> Basic.Properties:
    """The AMQP properties `message_from_envelope(...).properties` has, built directly.

    The relay publishes thousands of rows a second; an `aio_pika.Message` per row (each field
    set through its lock check, then copied into these properties) was a sixth of its CPU.
    The frames on the wire are the same byte for byte.
    """
    return Basic.Properties(
        content_type=CONTENT_TYPE,
        headers=_headers(schema_version, causation_id, traceparent),
        delivery_mode=2,  # persistent
        priority=0,  # as aio_pika.Message sets it
        correlation_id=correlation_id,
        message_id=event_id,
        timestamp=occurred_at,
        message_type=event_type,
        app_id=app_id,
    )


def message_from_envelope(envelope: Envelope, app_id: str | None = None) -> aio_pika.Message:
    """The envelope as the relay sends it (the same properties as `properties_from_row`)."""
    return aio_pika.Message(
        encode_body(envelope),
        content_type=CONTENT_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=str(envelope.event_id),
        type=envelope.event_type,
        correlation_id=envelope.correlation_id,
        timestamp=envelope.occurred_at,
        headers=_headers(envelope.schema_version, envelope.causation_id, envelope.traceparent),
        app_id=app_id,
    )
