"""Who may have published an event: its producer, the consumer's own retry ladder, a replay."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from eventshop.platform.bus.provenance import Provenance
from eventshop.platform.bus.wire import H_PRODUCER


@dataclass
class Received:
    """The parts of an incoming message provenance reads."""

    user_id: str | None
    headers: dict[str, Any] = field(default_factory=dict)
    app_id: str | None = None


ORDERS = Provenance("orders")


def refusal(p: Provenance, message: Received, event_type: str) -> str | None:
    return p.refusal(message, event_type)  # type: ignore[arg-type]


def test_an_event_from_its_producer_is_accepted() -> None:
    assert refusal(ORDERS, Received("payments"), "payment.succeeded") is None
    assert refusal(ORDERS, Received("inventory"), "inventory.reserved") is None


@pytest.mark.parametrize("user", ["loyalty", "orders", "archive", "guest", None])
def test_an_event_from_anyone_else_is_refused_with_the_reason(user: str | None) -> None:
    reason = refusal(ORDERS, Received(user), "payment.succeeded")
    assert reason is not None
    assert reason.startswith("UnauthorisedProducerError")
    assert "'payments'" in reason and repr(user) in reason


def test_our_own_retry_ladder_is_accepted_when_it_began_at_the_producer() -> None:
    came_back = Received("orders", {H_PRODUCER: "payments", "x-attempt": 1})
    assert refusal(ORDERS, came_back, "payment.succeeded") is None
    laundered = Received("orders", {H_PRODUCER: "loyalty", "x-attempt": 1})
    assert refusal(ORDERS, laundered, "payment.succeeded") is not None
    no_origin = Received("orders")
    assert refusal(ORDERS, no_origin, "payment.succeeded") is not None


def test_the_archive_may_replay_but_not_publish() -> None:
    assert refusal(ORDERS, Received("archive", app_id="archive"), "payment.succeeded") is None
    assert refusal(ORDERS, Received("archive"), "payment.succeeded") is not None
    assert refusal(ORDERS, Received("loyalty", app_id="archive"), "payment.succeeded") is not None


def test_an_event_type_nobody_produces_is_refused() -> None:
    reason = refusal(ORDERS, Received("payments"), "payment.invented")
    assert reason is not None and "no service produces" in reason


def test_with_one_shared_user_that_user_is_the_producer_of_everything() -> None:
    shared = Provenance("guest", "shared")
    assert refusal(shared, Received("guest"), "selfcheck.pinged") is None
    assert refusal(shared, Received(None), "selfcheck.pinged") is not None
    assert refusal(shared, Received("payments"), "payment.succeeded") is not None
