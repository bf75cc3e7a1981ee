"""Snapshots for long streams: load = the latest snapshot + the events after it.

A snapshot is never needed for a correct result. The loader ignores a snapshot whose state has
another shape (`StateCodec.schema_version`), one past the version asked for, and one it can't
decode, and then replays the stream from its first event; the tests check that loading with
and without snapshots gives the same state. Snapshots are written by the appender, in the
same transaction as the append that crossed a multiple of the interval.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from eventshop.platform.eventstore.port import EventStore, RecordedEvent, Snapshot
from eventshop.platform.observability.logging import get_logger

log = get_logger(__name__)

S = TypeVar("S")
C = TypeVar("C")


@dataclass(frozen=True)
class SnapshotPolicy:
    """Snapshot a stream each time its version crosses a multiple of `every` (0: never)."""

    every: int = 0

    def __post_init__(self) -> None:
        if self.every < 0:
            raise ValueError("a snapshot interval is >= 0 (0: no snapshots)")

    def due(self, before: int, after: int) -> bool:
        """Whether an append that took a stream from `before` to `after` should snapshot it."""
        return self.every > 0 and after // self.every > before // self.every


class StateCodec(Protocol[S]):
    """How a state is kept in a snapshot; bump `schema_version` when the state's shape changes."""

    schema_version: int

    def encode(self, state: S) -> dict[str, Any]: ...

    def decode(self, data: dict[str, Any]) -> S: ...


@dataclass(frozen=True)
class Loaded(Generic[S]):
    """A folded stream: the state, its version, and how it was made."""

    state: S | None
    version: int
    #: the snapshot's version the fold started from (0: from the first event)
    snapshot_version: int
    #: events folded after the snapshot
    replayed: int


Fold = Callable[[S | None, RecordedEvent], S]


async def load_state(
    store: EventStore[C],
    conn: C,
    stream_id: str,
    fold: Fold[S],
    codec: StateCodec[S] | None = None,
    *,
    to_version: int | None = None,
    until: datetime | None = None,
) -> Loaded[S]:
    """Fold `stream_id` (up to `to_version` or `until`), from a usable snapshot if there is one.

    A time bound replays from the start: a snapshot does not say when its version was recorded.
    """
    state: S | None = None
    start = 0
    if codec is not None and until is None:
        snapshot = await store.load_snapshot(conn, stream_id)
        if snapshot is not None and _usable(snapshot, codec, to_version):
            try:
                state = codec.decode(snapshot.state)
                start = snapshot.version
            except Exception as exc:  # a snapshot is only an optimisation: replay instead
                log.warning("eventstore.snapshot_ignored", stream_id=stream_id, error=repr(exc))
                state, start = None, 0
    events = await store.load(conn, stream_id, start, to_version=to_version, until=until)
    for event in events:
        state = fold(state, event)
    version = events[-1].version if events else start
    return Loaded(state, version, start, len(events))


def _usable(snapshot: Snapshot, codec: StateCodec[Any], to_version: int | None) -> bool:
    return snapshot.schema_version == codec.schema_version and (
        to_version is None or snapshot.version <= to_version
    )


async def snapshot_if_due(
    store: EventStore[C],
    conn: C,
    stream_id: str,
    state: S,
    *,
    before: int,
    after: int,
    policy: SnapshotPolicy,
    codec: StateCodec[S],
) -> bool:
    """After an append from `before` to `after`: keep `state` (as of `after`) if it is due."""
    if not policy.due(before, after):
        return False
    await store.save_snapshot(
        conn, Snapshot(stream_id, after, codec.schema_version, codec.encode(state))
    )
    return True
