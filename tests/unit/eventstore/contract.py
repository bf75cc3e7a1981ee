"""The event store's contract: what every adapter of the port must do, as one test suite.

`EventStoreContract` is not collected itself (no Test prefix); each adapter's test module
subclasses it and provides a `backend` fixture:

- tests/unit/eventstore/test_memory_store.py        InMemoryEventStore (no I/O)
- tests/integration/test_eventstore_contract.py     PostgresEventStore (the real PostgreSQL)

A backend hands out transactions (`async with backend.transaction() as tx`) and stores over
the same data, optionally with other upcasters (`backend.store(upcasters)`): an older version
of the code writes, a newer one reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from eventshop.platform.eventstore import (
    ConcurrencyError,
    EventStore,
    NewEvent,
    RecordedEvent,
    Snapshot,
    SnapshotPolicy,
    StreamAppend,
    UpcastError,
    Upcasters,
    load_state,
    snapshot_if_due,
)


class Backend(Protocol):
    def store(self, upcasters: Upcasters | None = None) -> EventStore[Any]: ...

    def transaction(self) -> AbstractAsyncContextManager[Any]: ...


def stream() -> str:
    return f"thing-{uuid.uuid4().hex[:12]}"


def events(*names: str) -> list[NewEvent]:
    return [NewEvent(name, {"name": name, "n": i}) for i, name in enumerate(names)]


class Boom(Exception):
    pass


# -- a small aggregate for snapshots: a running total ---------------------------------------------
def fold_total(state: dict[str, int] | None, event: RecordedEvent) -> dict[str, int]:
    state = dict(state or {"total": 0, "count": 0})
    state["total"] += int(event.payload["n"])
    state["count"] += 1
    return state


class TotalCodec:
    def __init__(self, schema_version: int = 1, broken: bool = False) -> None:
        self.schema_version = schema_version
        self.broken = broken

    def encode(self, state: dict[str, int]) -> dict[str, Any]:
        return dict(state)

    def decode(self, data: dict[str, Any]) -> dict[str, int]:
        if self.broken:
            raise ValueError("a snapshot this code can't read")
        return {"total": int(data["total"]), "count": int(data["count"])}


PROPERTY_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    # the contract suite runs the same test method for every adapter's subclass on purpose
    # (each builds its own store per example), which is what differing_executors flags
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.differing_executors,
    ],
)

# a writer's plan: appends of 1-3 events to one of 3 streams
plans = st.lists(
    st.lists(st.tuples(st.integers(0, 2), st.integers(1, 3)), min_size=1, max_size=6),
    min_size=2,
    max_size=5,
)


class EventStoreContract:
    """Subclasses provide the `backend` fixture."""

    # -- appending and loading ------------------------------------------------------------------
    async def test_append_then_load_in_order(self, backend: Backend) -> None:
        store, sid = backend.store(), stream()
        async with backend.transaction() as tx:
            first = await store.append(
                tx,
                sid,
                0,
                events("Created", "Renamed"),
                metadata={"correlation_id": "c-1", "causation_id": "e-0"},
            )
        async with backend.transaction() as tx:
            second = await store.append(tx, sid, 2, [NewEvent("Closed", {"why": "done"}, 3)])
        async with backend.transaction() as tx:
            loaded = await store.load(tx, sid)
            assert [r.version for r in first + second] == [1, 2, 3]
            assert loaded == first + second
            assert [(r.event_type, r.payload) for r in loaded] == [
                ("Created", {"name": "Created", "n": 0}),
                ("Renamed", {"name": "Renamed", "n": 1}),
                ("Closed", {"why": "done"}),
            ]
            assert loaded[2].schema_version == 3 and not loaded[2].was_upcast
            assert (loaded[0].correlation_id, loaded[0].causation_id) == ("c-1", "e-0")
            assert loaded[2].metadata == {}
            positions = [r.global_position for r in loaded]
            assert positions == sorted(positions) and len(set(positions)) == 3
            assert [r.version for r in await store.load(tx, sid, 2)] == [3]
            assert [r.version for r in await store.load(tx, sid, to_version=2)] == [1, 2]
            assert await store.load(tx, sid, 3) == []
            assert await store.load(tx, stream()) == []
            assert await store.version_of(tx, sid) == 3
            assert await store.version_of(tx, stream()) == 0

    async def test_an_events_own_metadata_is_merged_over_the_appends(
        self, backend: Backend
    ) -> None:
        store, sid = backend.store(), stream()
        async with backend.transaction() as tx:
            await store.append(
                tx,
                sid,
                0,
                [NewEvent("A", {}), NewEvent("B", {}, metadata={"causation_id": "own", "x": 1})],
                metadata={"correlation_id": "c", "causation_id": "shared"},
            )
            a, b = await store.load(tx, sid)
        assert a.metadata == {"correlation_id": "c", "causation_id": "shared"}
        assert b.metadata == {"correlation_id": "c", "causation_id": "own", "x": 1}

    async def test_streams_are_independent_and_share_one_contiguous_global_order(
        self, backend: Backend
    ) -> None:
        store, a, b = backend.store(), stream(), stream()
        async with backend.transaction() as tx:
            start = await store.head(tx)
        async with backend.transaction() as tx:
            ra = await store.append(tx, a, 0, events("A1"))
        async with backend.transaction() as tx:
            rb = await store.append(tx, b, 0, events("B1", "B2"))
        async with backend.transaction() as tx:
            ra2 = await store.append(tx, a, 1, events("A2"))
        assert [r.version for r in ra + rb + ra2] == [1, 1, 2, 2]
        assert [r.global_position for r in ra + rb + ra2] == [start + i for i in (1, 2, 3, 4)]
        async with backend.transaction() as tx:
            assert await store.head(tx) == start + 4

    @pytest.mark.parametrize("stale", [0, 1, 3, 7])
    async def test_a_stale_expected_version_is_a_concurrency_error(
        self, backend: Backend, stale: int
    ) -> None:
        store, sid = backend.store(), stream()
        async with backend.transaction() as tx:
            await store.append(tx, sid, 0, events("One", "Two"))
        with pytest.raises(ConcurrencyError, match=f"no longer at version {stale}") as caught:
            async with backend.transaction() as tx:
                await store.append(tx, sid, stale, events("Three"))
        assert caught.value.stream_id == sid and caught.value.expected_version == stale
        async with backend.transaction() as tx:
            assert await store.version_of(tx, sid) == 2  # nothing was written, no gap either

    async def test_a_negative_expected_version_is_a_programming_error(
        self, backend: Backend
    ) -> None:
        store = backend.store()
        async with backend.transaction() as tx:
            with pytest.raises(ValueError):
                await store.append(tx, stream(), -1, events("X"))
            assert await store.append(tx, stream(), 0, []) == []

    async def test_a_rolled_back_append_leaves_nothing_and_no_gap(self, backend: Backend) -> None:
        store, kept, dropped = backend.store(), stream(), stream()
        async with backend.transaction() as tx:
            start = await store.head(tx)
        with pytest.raises(Boom):
            async with backend.transaction() as tx:
                await store.append(tx, dropped, 0, events("Dropped", "Too"))
                assert await store.version_of(tx, dropped) == 2  # visible to itself
                raise Boom
        async with backend.transaction() as tx:
            recorded = await store.append(tx, kept, 0, events("Kept"))
        assert recorded[0].global_position == start + 1
        async with backend.transaction() as tx:
            assert await store.load(tx, dropped) == []
            page = await store.read_all(tx, start)
        assert [e.stream_id for e in page.events] == [kept]

    # -- several streams at once ----------------------------------------------------------------
    async def test_append_many_writes_every_stream_in_the_order_given(
        self, backend: Backend
    ) -> None:
        store, a, b, fresh = backend.store(), stream(), stream(), stream()
        async with backend.transaction() as tx:
            await store.append(tx, a, 0, events("A1"))
            await store.append(tx, b, 0, events("B1", "B2"))
            start = await store.head(tx)
        async with backend.transaction() as tx:
            recorded = await store.append_many(
                tx,
                [
                    StreamAppend(b, 2, events("B3"), {"correlation_id": "cb"}),
                    StreamAppend(fresh, 0, events("F1", "F2")),
                    StreamAppend(a, 1, [NewEvent("A2", {}, metadata={"causation_id": "own"})]),
                ],
            )
        assert [(r.stream_id, r.version) for r in recorded] == [
            (b, 3), (fresh, 1), (fresh, 2), (a, 2),
        ]  # fmt: skip
        assert [r.global_position for r in recorded] == [start + i for i in (1, 2, 3, 4)]
        async with backend.transaction() as tx:
            loaded = await store.load_many(tx, [a, b, fresh, stream()])
            assert loaded[a] == await store.load(tx, a)
            assert [len(v) for v in loaded.values()] == [2, 3, 2, 0]
            assert loaded[b][2] == recorded[0] and loaded[b][2].correlation_id == "cb"
            assert loaded[a][1].metadata == {"causation_id": "own"}
            assert await store.head(tx) == start + 4

    async def test_append_many_writes_nothing_when_one_stream_moved(self, backend: Backend) -> None:
        store, a, b = backend.store(), stream(), stream()
        async with backend.transaction() as tx:
            await store.append(tx, a, 0, events("A1"))
            await store.append(tx, b, 0, events("B1"))
            start = await store.head(tx)
        with pytest.raises(ConcurrencyError):
            async with backend.transaction() as tx:
                await store.append_many(
                    tx, [StreamAppend(a, 1, events("A2")), StreamAppend(b, 0, events("B-stale"))]
                )
        async with backend.transaction() as tx:
            assert [await store.version_of(tx, s) for s in (a, b)] == [1, 1]
            assert await store.head(tx) == start  # no position handed out, no gap
            with pytest.raises(ValueError):
                await store.append_many(
                    tx, [StreamAppend(a, 1, events("X")), StreamAppend(a, 2, events("Y"))]
                )
            assert await store.append_many(tx, []) == []

    # -- concurrent writers ---------------------------------------------------------------------
    async def test_two_concurrent_appenders_one_wins(self, backend: Backend) -> None:
        store, sid = backend.store(), stream()
        async with contextlib.AsyncExitStack() as stack:
            first = await stack.enter_async_context(backend.transaction())
            await store.append(first, sid, 0, events("ByFirst"))

            async def second() -> None:
                async with backend.transaction() as tx:
                    await store.append(tx, sid, 0, events("BySecond"))

            racing = asyncio.create_task(second())
            await asyncio.sleep(0.1)
            assert not racing.done()  # it waits for the first to end
        with pytest.raises(ConcurrencyError):
            await racing
        async with backend.transaction() as tx:
            assert [r.event_type for r in await store.load(tx, sid)] == ["ByFirst"]

    async def test_many_concurrent_appenders_exactly_one_wins(self, backend: Backend) -> None:
        store, sid = backend.store(), stream()

        async def append(i: int) -> bool:
            try:
                async with backend.transaction() as tx:
                    await store.append(tx, sid, 0, events(f"By{i}"))
            except ConcurrencyError:
                return False
            return True

        outcomes = await asyncio.gather(*(append(i) for i in range(8)))
        assert outcomes.count(True) == 1
        async with backend.transaction() as tx:
            assert len(await store.load(tx, sid)) == 1

    # -- reading the global log -----------------------------------------------------------------
    async def test_read_all_pages_through_the_log_in_order(self, backend: Backend) -> None:
        store = backend.store()
        async with backend.transaction() as tx:
            start = await store.head(tx)
        written: list[RecordedEvent] = []
        for i in range(7):
            async with backend.transaction() as tx:
                written += await store.append(tx, stream(), 0, events(f"E{i}", f"F{i}"))
        seen: list[RecordedEvent] = []
        position = start
        async with backend.transaction() as tx:
            while True:
                page = await store.read_all(tx, position, limit=3)
                assert len(page.events) <= 3
                seen += page.events
                position = page.position
                if page.caught_up:
                    break
        assert seen == written
        assert position == page.head == start + 14

    async def test_read_all_by_type_moves_past_the_other_types(self, backend: Backend) -> None:
        store = backend.store()
        async with backend.transaction() as tx:
            start = await store.head(tx)
            await store.append(tx, stream(), 0, events("Wanted", "Other", "Other", "Wanted"))
            await store.append(tx, stream(), 0, events("Other"))
        async with backend.transaction() as tx:
            page = await store.read_all(tx, start, event_types=["Wanted"])
            assert [e.global_position - start for e in page.events] == [1, 4]
            assert (page.position, page.head, page.caught_up) == (start + 5, start + 5, True)
            full = await store.read_all(tx, start, limit=1, event_types=["Wanted"])
            assert (full.position, full.caught_up) == (start + 1, False)
            assert (await store.read_all(tx, start + 5)).events == []

    async def test_a_reader_never_races_past_a_position_not_yet_committed(
        self, backend: Backend
    ) -> None:
        """A holds position p open; B, which would commit p+1, waits for A; the reader in the
        meantime sees neither, then both, in order. (With a plain sequence B would commit p+1
        first and a reader at p+1 would never see p: tests/integration/test_eventstore.py.)"""
        store, a, b = backend.store(), stream(), stream()
        async with backend.transaction() as tx:
            start = await store.head(tx)
        async with contextlib.AsyncExitStack() as stack:
            holder = await stack.enter_async_context(backend.transaction())
            (held,) = await store.append(holder, a, 0, events("Held"))
            assert held.global_position == start + 1

            async def later() -> list[RecordedEvent]:
                async with backend.transaction() as tx:
                    return await store.append(tx, b, 0, events("Later"))

            committing = asyncio.create_task(later())
            await asyncio.sleep(0.1)
            assert not committing.done()  # it can't commit a higher position first
            async with backend.transaction() as tx:
                page = await store.read_all(tx, start)
            assert (page.events, page.position, page.head) == ([], start, start)
        (late,) = await committing
        assert late.global_position == start + 2
        async with backend.transaction() as tx:
            page = await store.read_all(tx, page.position)
        assert [(e.event_type, e.global_position) for e in page.events] == [
            ("Held", start + 1),
            ("Later", start + 2),
        ]

    @PROPERTY_SETTINGS
    @given(plan=plans, readers=st.integers(1, 3), page=st.integers(1, 7))
    async def test_concurrent_writers_and_readers(
        self, backend: Backend, plan: list[list[tuple[int, int]]], readers: int, page: int
    ) -> None:
        """Writers read a stream's version and append after it, retrying on a conflict, while
        readers follow the global log. Then: no lost update (every planned event is there, each
        appended after the version its writer read), no duplicate or missing version, and every
        reader saw every event exactly once, in global order, each stream in version order."""
        store, prefix = backend.store(), uuid.uuid4().hex[:8]
        async with backend.transaction() as tx:
            start = await store.head(tx)
        writing_done = asyncio.Event()
        conflicts = 0

        async def write(writer: int, steps: Sequence[tuple[int, int]]) -> None:
            nonlocal conflicts
            for step, (k, n) in enumerate(steps):
                sid = f"{prefix}-{k}"
                while True:
                    try:
                        async with backend.transaction() as tx:
                            seen = await store.version_of(tx, sid)
                            await asyncio.sleep(0)  # let another writer in between
                            batch = [
                                NewEvent("Counted", {"w": writer, "s": step, "i": i, "seen": seen})
                                for i in range(n)
                            ]
                            await store.append(tx, sid, seen, batch)
                        break
                    except ConcurrencyError:
                        conflicts += 1
                        continue  # reload and decide again

        async def read() -> list[RecordedEvent]:
            got: list[RecordedEvent] = []
            position = start
            while True:
                finished = writing_done.is_set()
                async with backend.transaction() as tx:
                    result = await store.read_all(tx, position, limit=page)
                got += result.events
                position = result.position
                if result.caught_up:
                    if finished:
                        return got
                    await asyncio.sleep(0.001)

        reading = [asyncio.create_task(read()) for _ in range(readers)]
        await asyncio.gather(*(write(w, steps) for w, steps in enumerate(plan)))
        writing_done.set()
        seen_by_readers = await asyncio.gather(*reading)
        event("writers conflicted" if conflicts else "no conflict")  # --hypothesis-show-statistics

        planned = sorted(
            (w, s, i)
            for w, steps in enumerate(plan)
            for s, (_, n) in enumerate(steps)
            for i in range(n)
        )
        async with backend.transaction() as tx:
            head = await store.head(tx)
            stored = [e for k in range(3) for e in await store.load(tx, f"{prefix}-{k}")]
        assert head - start == len(planned)  # contiguous positions, one per event
        assert sorted((e.payload["w"], e.payload["s"], e.payload["i"]) for e in stored) == planned
        for k in range(3):
            versions = [e.version for e in stored if e.stream_id == f"{prefix}-{k}"]
            assert versions == list(range(1, len(versions) + 1))
        for e in stored:  # appended right after the version its writer read: nothing lost
            assert e.version == e.payload["seen"] + e.payload["i"] + 1
        everything = sorted(stored, key=lambda e: e.global_position)
        for got in seen_by_readers:
            assert [e.global_position for e in got] == list(range(start + 1, head + 1))
            assert got == everything

    # -- snapshots ------------------------------------------------------------------------------
    async def test_the_newest_snapshot_is_kept(self, backend: Backend) -> None:
        store, sid = backend.store(), stream()
        async with backend.transaction() as tx:
            assert await store.load_snapshot(tx, sid) is None
            await store.save_snapshot(tx, Snapshot(sid, 10, 1, {"at": 10}))
        async with backend.transaction() as tx:
            await store.save_snapshot(tx, Snapshot(sid, 20, 1, {"at": 20}))
            await store.save_snapshot(tx, Snapshot(sid, 15, 1, {"at": 15}))  # older: ignored
        with pytest.raises(Boom):
            async with backend.transaction() as tx:
                await store.save_snapshot(tx, Snapshot(sid, 30, 1, {"at": 30}))
                raise Boom
        async with backend.transaction() as tx:
            kept = await store.load_snapshot(tx, sid)
        assert kept is not None
        assert (kept.version, kept.schema_version, kept.state) == (20, 1, {"at": 20})
        assert kept.taken_at is not None

    async def test_a_snapshot_changes_no_loaded_state(self, backend: Backend) -> None:
        store, sid, codec, policy = backend.store(), stream(), TotalCodec(), SnapshotPolicy(10)
        version = 0
        for n in (3, 4, 5, 1, 9, 3):  # 25 events, in appends that cross 10 and 20
            async with backend.transaction() as tx:
                recorded = await store.append(
                    tx, sid, version, [NewEvent("Added", {"n": i}) for i in range(n)]
                )
                loaded = await load_state(store, tx, sid, fold_total)
                assert loaded.state is not None
                await snapshot_if_due(
                    store,
                    tx,
                    sid,
                    loaded.state,
                    before=version,
                    after=recorded[-1].version,
                    policy=policy,
                    codec=codec,
                )
                version = recorded[-1].version
        async with backend.transaction() as tx:
            replayed = await load_state(store, tx, sid, fold_total)
            fast = await load_state(store, tx, sid, fold_total, codec)
            assert (fast.snapshot_version, fast.replayed) == (22, 3)  # snapshots at 12, 22
            assert (fast.state, fast.version) == (replayed.state, replayed.version) != (None, 0)
            # a snapshot past the version asked for, of another shape, or unreadable: replay
            early = await load_state(store, tx, sid, fold_total, codec, to_version=12)
            assert early.snapshot_version == 0 and early.state is not None
            assert early.state["count"] == 12
            for other in (TotalCodec(schema_version=2), TotalCodec(broken=True)):
                again = await load_state(store, tx, sid, fold_total, other)
                assert (again.snapshot_version, again.state) == (0, replayed.state)

    # -- upcasting ------------------------------------------------------------------------------
    async def test_an_old_schema_version_is_read_as_the_current_one(self, backend: Backend) -> None:
        upcasters = Upcasters()

        @upcasters.register("Renamed", 1)
        def _split(payload: dict[str, Any]) -> dict[str, Any]:
            return {"full_name": payload.pop("name")}

        @upcasters.register("Renamed", 2)
        def _nickname(payload: dict[str, Any]) -> dict[str, Any]:
            return {**payload, "nickname": None}

        old_code, new_code, sid = backend.store(), backend.store(upcasters), stream()
        async with backend.transaction() as tx:
            start = await new_code.head(tx)
            await old_code.append(tx, sid, 0, [NewEvent("Renamed", {"name": "Ada"}, 1)])
            await old_code.append(tx, sid, 1, [NewEvent("Renamed", {"full_name": "Ada L"}, 2)])
            await new_code.append(
                tx, sid, 2, [NewEvent("Renamed", {"full_name": "Ada", "nickname": "A"}, 3)]
            )
            await new_code.append(tx, sid, 3, [NewEvent("Other", {"kept": True}, 1)])
        async with backend.transaction() as tx:
            loaded = await new_code.load(tx, sid)
            page = await new_code.read_all(tx, start)
            as_stored = await old_code.load(tx, sid)
        assert [(e.schema_version, e.stored_schema_version, e.payload) for e in loaded] == [
            (3, 1, {"full_name": "Ada", "nickname": None}),
            (3, 2, {"full_name": "Ada L", "nickname": None}),
            (3, None, {"full_name": "Ada", "nickname": "A"}),
            (1, None, {"kept": True}),
        ]
        assert page.events == loaded
        assert [(e.schema_version, e.payload) for e in as_stored][:2] == [
            (1, {"name": "Ada"}),
            (2, {"full_name": "Ada L"}),
        ]

    async def test_a_missing_upcaster_is_an_error_not_a_wrong_payload(
        self, backend: Backend
    ) -> None:
        upcasters = Upcasters()
        upcasters.register("Renamed", 2)(lambda p: {**p, "nickname": None})
        sid = stream()
        async with backend.transaction() as tx:
            await backend.store().append(tx, sid, 0, [NewEvent("Renamed", {"name": "Ada"}, 1)])
        async with backend.transaction() as tx:
            with pytest.raises(UpcastError, match="no upcaster for Renamed v1 -> v2"):
                await backend.store(upcasters).load(tx, sid)
