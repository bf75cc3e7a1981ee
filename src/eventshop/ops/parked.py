"""The parking lots, read and acted on as an operator: what `eventshop dlq` lists, shows,
replays and purges, and the JSON a parked message is shown as.

The functions take an open broker connection (the operator's: EVENTSHOP_AMQP_URL) and the
services whose parking lots (`<service>.parked`) to look in; `eventshop.platform.bus.parking`
does the reading and moving.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal

import aiormq
from aio_pika.abc import AbstractConnection

from eventshop.ops.jsonable import iso_utc, plain
from eventshop.platform.bus.parking import ParkedMessage, list_parked, purge_parked, replay_parked
from eventshop.platform.bus.publisher import Publisher
from eventshop.platform.bus.topology import ServiceQueues
from eventshop.platform.settings import PlatformSettings
from eventshop.services import PORTS

#: the services that consume events, so have a queue and a parking lot
CONSUMING = ["inventory", "orders", "payments", "notifications", "loyalty", "archive"]

ParkedFilterFn = Callable[[ParkedMessage], bool]
Action = Literal["replay", "purge"]
#: the ParkedMessage fields that hold a time
_TIMES = ("first_failure_at", "parked_at")


class UnknownParkingLotError(LookupError):
    """A parking lot named on purpose that the broker does not have (most likely a typo)."""


def queues_of(service: str, retry_delays_ms: Sequence[int] | None = None) -> ServiceQueues:
    delays = PlatformSettings().retry_delays_ms if retry_delays_ms is None else retry_delays_ms
    return ServiceQueues(service, (), tuple(delays))


def parked_filter(
    event_type: str | None = None,
    error: str | None = None,
    correlation_id: str | None = None,
    since: datetime | None = None,
    event_id: str | None = None,
) -> ParkedFilterFn:
    """A filter of parked messages: every criterion given must hold (a trailing * in
    `event_type` matches a prefix, `error` is a case-insensitive substring, `since` compares
    with when it was parked)."""

    def match(p: ParkedMessage) -> bool:
        if event_id and p.event_id != event_id:
            return False
        if (
            event_type
            and p.event_type != event_type
            and not (event_type.endswith("*") and (p.event_type or "").startswith(event_type[:-1]))
        ):
            return False
        if error and error.lower() not in p.error.lower():
            return False
        if correlation_id and p.correlation_id != correlation_id:
            return False
        if since and p.parked_at:
            try:
                if datetime.fromisoformat(p.parked_at) < since.astimezone(
                    datetime.fromisoformat(p.parked_at).tzinfo
                ):
                    return False
            except ValueError:
                pass
        return True

    return match


async def parked_of(
    conn: AbstractConnection,
    services: Sequence[str],
    where: ParkedFilterFn | None = None,
    *,
    limit: int = 1_000,
) -> list[tuple[str, ParkedMessage]]:
    """The parked messages `where` matches, in these services' parking lots, with the service
    each is parked for; they stay parked. A service of the platform (PORTS) without a parking
    lot yet (never started) has none; any other name without one raises UnknownParkingLotError.
    """
    found: list[tuple[str, ParkedMessage]] = []
    for s in services:
        try:
            parked = await list_parked(conn, queues_of(s), limit=limit, where=where)
        except aiormq.exceptions.ChannelNotFoundEntity:
            if s not in PORTS:
                raise UnknownParkingLotError(f"no parking lot {s}.parked on the broker") from None
            continue  # a service of the platform that has not started yet
        found += [(s, p) for p in parked]
    return found


async def act_on_parked(
    conn: AbstractConnection,
    action: Action | str,
    services: Sequence[str],
    where: ParkedFilterFn,
) -> list[tuple[str, ParkedMessage]]:
    """Replay (to their service's queue, as the operator, under their producer's name) or
    purge the parked messages `where` matches in these services' parking lots; what was."""
    if action not in ("replay", "purge"):
        raise ValueError(f"unknown action {action!r}: replay or purge")
    done: list[tuple[str, ParkedMessage]] = []
    publisher = Publisher(conn, PlatformSettings().exchange, impersonate=True)
    await publisher.start()
    try:
        for s in services:
            if action == "replay":
                acted = await replay_parked(conn, publisher, queues_of(s), where=where)
            else:
                acted = await purge_parked(conn, queues_of(s), where=where)
            done += [(s, p) for p in acted]
    finally:
        await publisher.close()
    return done


def parked_json(service: str, p: ParkedMessage, *, body: bool = True) -> dict[str, Any]:
    """A parked message as `dlq list --json` (without its body) and `dlq show --json` (with
    it) print it: `service`, then every field of ParkedMessage (event_id, event_type,
    correlation_id, error, attempts, original_routing_key, first_failure_at, parked_at,
    headers, ...; a field added to it later shows too), times in ISO 8601 UTC, headers made
    JSON-safe, the body as text (UTF-8, undecodable bytes replaced) and its size in bytes."""
    found: dict[str, Any] = {"service": service}
    for f in dataclasses.fields(p):
        value = getattr(p, f.name)
        if f.name == "body":
            if body:
                found["body"] = value.decode("utf-8", errors="replace")
                found["body_bytes"] = len(value)
        elif f.name in _TIMES:
            found[f.name] = iso_utc(value)
        else:
            found[f.name] = plain(value)
    return found
