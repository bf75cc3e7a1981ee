"""Group commit for commands: the requests that arrive while one group is being written go
together, in one transaction, in the next.

A command that arrives when nothing is being written goes at once, alone, so an idle service
adds no wait. One that arrives meanwhile waits for that write to end and is written with every
other that arrived meanwhile (up to `max_group`). Under load the groups grow by themselves, and
one transaction, its round trips and its commit are shared by all in a group: what a consumer's
window does for events (platform/bus/window.py), done for HTTP commands (ADR 0019). The writer
need not be a database's: the gateway's rate limit sends a group's counters in one Redis
pipeline.

`write(items)` answers each item in order: its result, or the exception that item alone failed
with. If `write` itself raises, every item of the group fails with that error; a writer that can
tell whose fault a failure is retries the others without it (orders' `place_orders` does).

The group is written in a context of its own, not the first request's: its database spans
belong to no request's trace. What each item needs of its request (its correlation id, its
traceparent) travels in the item.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Writer = Callable[[Sequence[T]], Awaitable[Sequence[R | Exception]]]


class GroupCommit(Generic[T, R]):
    """Items written in groups by one writer, one group at a time."""

    def __init__(self, *, max_group: int = 32) -> None:
        if max_group < 1:
            raise ValueError("max_group must be at least 1")
        self.max_group = max_group
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None
        #: how many groups were written and how many items they held (for tests and metrics)
        self.groups = 0
        self.items = 0

    async def submit(self, item: T, write: Writer[T, R]) -> R:
        """`item` written (with others, if others are waiting): its result, or its error.

        Every caller of one GroupCommit passes the same `write`. A caller that is cancelled
        stops waiting; its item is still written if its group has begun."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._writer is None:
            self._writer = asyncio.create_task(
                self._write_until_none_wait(write), context=contextvars.Context()
            )
        return await future

    async def close(self) -> None:
        """Stop writing: the group being written is cancelled (its transaction rolls back) and
        its items and those waiting are cancelled too."""
        writer = self._writer
        if writer is not None:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    async def _write_until_none_wait(self, write: Writer[T, R]) -> None:
        group: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._waiting:
                group = [(i, f) for i, f in self._waiting[: self.max_group] if not f.cancelled()]
                del self._waiting[: self.max_group]
                if not group:
                    continue
                self.groups += 1
                self.items += len(group)
                try:
                    results: Sequence[R | Exception] = await write([item for item, _ in group])
                    if len(results) != len(group):
                        raise RuntimeError(f"{len(results)} results for {len(group)} items")
                except Exception as exc:  # every item of the group fails with it
                    results = [exc] * len(group)
                for (_, future), result in zip(group, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._writer = None
            # stopped (`close`, or the loop's end): nothing in hand is left waiting forever
            left, self._waiting = [*group, *self._waiting], []
            for _, future in left:
                if not future.done():
                    future.cancel()
