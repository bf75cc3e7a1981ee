"""The event store's contract against InMemoryEventStore: no I/O, nothing else faked.

The same suite runs against PostgreSQL in tests/integration/test_eventstore_contract.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from eventshop.platform.eventstore import (
    ConcurrencyError,
    InMemoryEventStore,
    MemoryTransaction,
    NewEvent,
    Upcasters,
)
from eventshop.platform.eventstore.memory import TransactionAbortedError
from tests.unit.eventstore.contract import EventStoreContract, stream


@dataclass
class MemoryBackend:
    base: InMemoryEventStore = field(default_factory=InMemoryEventStore)

    def store(self, upcasters: Upcasters | None = None) -> InMemoryEventStore:
        return self.base if upcasters is None else self.base.with_upcasters(upcasters)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryTransaction]:
        async with self.base.transaction() as tx:
            yield tx


@pytest.fixture
def backend() -> MemoryBackend:
    return MemoryBackend()


class TestInMemoryEventStore(EventStoreContract):
    pass


# -- what only the in-memory adapter has to say -------------------------------------------------
async def test_a_lost_race_aborts_the_transaction_as_in_postgresql() -> None:
    store, sid = InMemoryEventStore(), stream()
    async with store.transaction() as loser:
        async with store.transaction() as winner:
            await store.append(winner, sid, 0, [NewEvent("Won", {})])
            racing = asyncio.create_task(store.append(loser, sid, 0, [NewEvent("Lost", {})]))
            await asyncio.sleep(0.01)
            assert not racing.done()  # queued behind the winner's head lock
        with pytest.raises(ConcurrencyError, match="a concurrent append won"):
            await racing
        with pytest.raises(TransactionAbortedError, match="roll it back"):
            await store.version_of(loser, sid)
    async with store.transaction() as tx:  # leaving it rolled it back, without an error
        assert [e.event_type for e in await store.load(tx, sid)] == ["Won"]


async def test_a_transaction_belongs_to_its_store() -> None:
    one, other = InMemoryEventStore(), InMemoryEventStore()
    async with one.transaction() as tx:
        with pytest.raises(ValueError, match="another in-memory store"):
            await other.head(tx)
    with pytest.raises(TransactionAbortedError, match="has ended"):
        await one.head(tx)


async def test_a_payload_is_copied_in_and_out() -> None:
    store, sid = InMemoryEventStore(), stream()
    payload = {"items": [1, 2]}
    async with store.transaction() as tx:
        (recorded,) = await store.append(tx, sid, 0, [NewEvent("A", payload)])
    payload["items"].append(3)
    recorded.payload["items"].append(4)
    async with store.transaction() as tx:
        (loaded,) = await store.load(tx, sid)
    assert loaded.payload == {"items": [1, 2]}
