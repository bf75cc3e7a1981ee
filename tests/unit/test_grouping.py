"""Group commit (platform/grouping.py): who goes alone, who goes together, who gets which answer.

The writer here is a fake that records its groups and holds each write until the test lets it
end, so what arrives during a write is known exactly.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence

import pytest

from eventshop.platform.grouping import GroupCommit


class HeldWriter:
    """Records each group; a write ends when the test sets `go` (then it is cleared again)."""

    def __init__(self, *, fail_on: str | None = None, raise_on: str | None = None) -> None:
        self.groups: list[list[str]] = []
        self.go = asyncio.Event()
        self.began = asyncio.Condition()
        self.fail_on, self.raise_on = fail_on, raise_on

    async def __call__(self, items: Sequence[str]) -> list[str | Exception]:
        async with self.began:
            self.groups.append(list(items))
            self.began.notify_all()
        await self.go.wait()
        self.go.clear()
        if self.raise_on in items:
            raise RuntimeError("the whole group failed")
        return [ValueError(i) if i == self.fail_on else i.upper() for i in items]


async def _until_written(writer: HeldWriter, groups: int) -> None:
    """Until the writer has begun its `groups`-th group."""
    async with writer.began:
        await writer.began.wait_for(lambda: len(writer.groups) >= groups)


async def test_alone_when_idle_then_together_what_arrived_during_the_write() -> None:
    group: GroupCommit[str, str] = GroupCommit(max_group=10)
    writer = HeldWriter()
    first = asyncio.create_task(group.submit("a", writer))
    await _until_written(writer, 1)
    later = [asyncio.create_task(group.submit(x, writer)) for x in "bcd"]
    await asyncio.sleep(0)
    assert writer.groups == [["a"]]  # b, c, d wait for a's write to end
    writer.go.set()
    assert await first == "A"
    await _until_written(writer, 2)
    writer.go.set()
    assert [await t for t in later] == ["B", "C", "D"]
    assert writer.groups == [["a"], ["b", "c", "d"]]
    assert (group.groups, group.items) == (2, 4)


async def test_a_group_holds_at_most_max_group() -> None:
    group: GroupCommit[str, str] = GroupCommit(max_group=2)
    writer = HeldWriter()
    tasks = [asyncio.create_task(group.submit(x, writer)) for x in "abcde"]
    for expected in (1, 2, 3):
        await _until_written(writer, expected)
        writer.go.set()
    assert [await t for t in tasks] == list("ABCDE")
    assert writer.groups == [["a", "b"], ["c", "d"], ["e"]]


async def test_an_item_that_fails_alone_fails_alone() -> None:
    group: GroupCommit[str, str] = GroupCommit()
    writer = HeldWriter(fail_on="b")
    writer.go.set()
    tasks = [asyncio.create_task(group.submit(x, writer)) for x in "abc"]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] == "A" and results[2] == "C"
    assert isinstance(results[1], ValueError)


async def test_a_failed_write_fails_its_group_and_the_next_group_is_written() -> None:
    group: GroupCommit[str, str] = GroupCommit()
    writer = HeldWriter(raise_on="x")
    doomed = [asyncio.create_task(group.submit(x, writer)) for x in "xy"]
    await _until_written(writer, 1)
    fine = asyncio.create_task(group.submit("z", writer))
    writer.go.set()
    for task in doomed:
        with pytest.raises(RuntimeError, match="whole group"):
            await task
    await _until_written(writer, 2)
    writer.go.set()
    assert await fine == "Z"


async def test_a_writer_answering_the_wrong_number_of_results_fails_the_group() -> None:
    group: GroupCommit[str, str] = GroupCommit()

    async def short(items: Sequence[str]) -> list[str | Exception]:
        return ["only one"]

    # both are waiting before the writer first runs: one group of two, one answer
    results = await asyncio.gather(
        group.submit("a", short), group.submit("b", short), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_a_caller_that_stops_waiting_is_left_out_of_a_group_not_yet_begun() -> None:
    group: GroupCommit[str, str] = GroupCommit()
    writer = HeldWriter()
    first = asyncio.create_task(group.submit("a", writer))
    await _until_written(writer, 1)
    gone = asyncio.create_task(group.submit("b", writer))
    stays = asyncio.create_task(group.submit("c", writer))
    await asyncio.sleep(0)
    gone.cancel()
    writer.go.set()
    assert await first == "A"
    await _until_written(writer, 2)
    writer.go.set()
    assert await stays == "C"
    assert writer.groups == [["a"], ["c"]]


async def test_the_group_is_written_outside_the_first_callers_context() -> None:
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="none")
    seen: list[str] = []

    async def write(items: Sequence[str]) -> list[str | Exception]:
        seen.append(marker.get())
        return list(items)

    marker.set("the first request's")
    group: GroupCommit[str, str] = GroupCommit()
    assert await group.submit("a", write) == "a"
    assert seen == ["none"]


def test_max_group_is_at_least_one() -> None:
    with pytest.raises(ValueError):
        GroupCommit(max_group=0)


async def test_close_cancels_the_group_in_hand_and_those_waiting_then_a_new_one_begins() -> None:
    group: GroupCommit[str, str] = GroupCommit()
    writer = HeldWriter()
    writing = asyncio.create_task(group.submit("a", writer))
    await _until_written(writer, 1)
    waiting = asyncio.create_task(group.submit("b", writer))
    await asyncio.sleep(0)
    await group.close()
    for task in (writing, waiting):
        with pytest.raises(asyncio.CancelledError):
            await task
    writer.go.set()
    assert await group.submit("c", writer) == "C"
    assert writer.groups == [["a"], ["c"]]
