"""The archive's subscription: every event type reaches its batch handler. No I/O, no fakes."""

from __future__ import annotations

import dataclasses

import pytest

from eventshop.contracts import registry
from eventshop.contracts.loyalty import PointsAwarded
from eventshop.platform.bus import BatchHandler, Subscription
from eventshop.platform.service import EVERY_EVENT, Batch
from eventshop.services.archive import handlers
from eventshop.services.archive.service import definition

#: the handler table as the runtime binds it (the archive's handler reads no context)
SUBSCRIPTION = Subscription(definition.name, definition.bind(None))  # type: ignore[arg-type]


def test_the_queue_is_bound_with_the_wildcard_only() -> None:
    assert SUBSCRIPTION.queues.routing_keys == ("#",)


@pytest.mark.parametrize("event_type", registry.event_types())
def test_every_event_type_goes_to_the_one_batch_handler(event_type: str) -> None:
    handler = SUBSCRIPTION.handler_for(event_type)
    assert isinstance(handler, BatchHandler)
    batch = definition.handlers[EVERY_EVENT]
    assert isinstance(batch, Batch) and batch.handle is handlers.archive_events
    # one and the same handler for every type: the consumer groups a window's events by it
    assert handler is SUBSCRIPTION.handler_for("order.created")


def test_the_archive_keeps_no_inbox_and_a_service_without_one_may_publish_nothing() -> None:
    assert not definition.inbox and not definition.publishes
    with pytest.raises(ValueError, match="keeps no inbox"):
        dataclasses.replace(definition, publishes=[PointsAwarded])
