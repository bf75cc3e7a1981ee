"""A unit of work made for a handled event (`caused_by`) or for another request of a group
(`acting_for`) is the same transaction: its events and its after-commit hooks are the ones the
outer unit of work writes and runs, and only the ids its events carry change."""

from __future__ import annotations

from typing import Any, cast

import asyncpg

from eventshop.contracts.envelope import new_envelope
from eventshop.platform.bus.outbox import UnitOfWork


def outer() -> UnitOfWork:
    conn = cast(asyncpg.Connection, object())
    return UnitOfWork(conn=conn, service="orders", correlation_id="request-1", traceparent="tp-0")


def test_caused_by_carries_the_cause_s_ids_in_the_same_transaction() -> None:
    uow = outer()
    cause = new_envelope(
        "order.created", 1, "o-1", {}, correlation_id="saga-7", traceparent="00-aa-bb-01"
    )
    inner = uow.caused_by(cause)

    assert (inner.correlation_id, inner.causation_id, inner.traceparent) == (
        "saga-7",
        str(cause.event_id),
        "00-aa-bb-01",
    )
    assert inner.conn is uow.conn and inner.service == "orders"
    assert inner.pending is uow.pending and inner.committed_hooks is uow.committed_hooks
    assert (uow.correlation_id, uow.causation_id, uow.traceparent) == ("request-1", None, "tp-0")


def test_acting_for_starts_another_request_s_chain_in_the_same_transaction() -> None:
    uow = outer().caused_by(new_envelope("order.created", 1, "o-1", {}))
    inner = uow.acting_for("request-2", None)
    ran: list[Any] = []
    inner.after_commit(lambda: ran.append("hook"))

    assert (inner.correlation_id, inner.causation_id, inner.traceparent) == (
        "request-2",
        None,
        None,
    )
    assert inner.pending is uow.pending
    uow.run_committed_hooks()
    assert ran == ["hook"]
