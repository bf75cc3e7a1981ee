"""archive's event handler: every event type lands here, a window of events at a time."""

from __future__ import annotations

from collections.abc import Sequence

from eventshop.platform.bus.consumer import Delivery
from eventshop.services.archive import store


async def archive_events(events: Sequence[Delivery]) -> None:
    """Keep a window's events, in delivery order, with one INSERT (a `BatchHandler`).

    They share one transaction, so the first event's connection serves them all. ON CONFLICT
    makes it idempotent beyond the inbox too: the same event archived by two archive consumers
    (or re-read after an inbox cleanup) is kept once.
    """
    await store.archive_events(events[0][0].conn, [envelope for _, envelope, _ in events])
