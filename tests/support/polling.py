"""`eventually`: the one polling helper of the tests (unit, integration, e2e).

Tests wait for an outcome by polling it with a deadline, never by a blind sleep:

    await eventually(lambda: effects_of(pool, env.event_id), 1)            # a value to equal
    [p] = await eventually(lambda: parked(node), lambda ps: len(ps) == 1)  # or a predicate
    await eventually(lambda: health(svc), lambda sb: sb[0] == 200, timeout=90, interval=0.1,
                     what="ready again once the broker is back")

The probe may be sync or async (what it returns is awaited if awaitable). An exception the
probe raises ends the wait at once, unless its type is in `retry_on`: then it counts as "not
yet", and the last one is reported (and chained) if time runs out.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

_NOTHING = object()  # no value seen yet


@overload
async def eventually(
    probe: Callable[[], Awaitable[T]],
    expected: object = ...,
    *,
    timeout: float = ...,
    interval: float = ...,
    what: str = ...,
    retry_on: tuple[type[Exception], ...] = ...,
) -> T: ...


@overload
async def eventually(
    probe: Callable[[], T],
    expected: object = ...,
    *,
    timeout: float = ...,
    interval: float = ...,
    what: str = ...,
    retry_on: tuple[type[Exception], ...] = ...,
) -> T: ...


async def eventually(
    probe: Callable[[], Any],
    expected: object = True,
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "",
    retry_on: tuple[type[Exception], ...] = (),
) -> Any:
    """Poll `probe()` every `interval` s until its value equals `expected` or, if `expected`
    is callable, until `expected(value)` is true; return that value.

    After `timeout` s, fail (AssertionError) with `what` the test waited for, what it wanted
    and the last value the probe gave, or the last error of `retry_on` it raised.
    """
    accept: Callable[[Any], object] = (
        expected if callable(expected) else (lambda value: value == expected)
    )
    deadline = time.monotonic() + timeout
    value: Any = _NOTHING
    error: Exception | None = None
    while True:
        try:
            value = probe()
            if inspect.isawaitable(value):
                value = await value
        except retry_on as exc:
            value, error = _NOTHING, exc
        else:
            error = None
            if accept(value):
                return value
        if time.monotonic() >= deadline:
            raise AssertionError(_timed_out(timeout, what, expected, value, error)) from error
        await asyncio.sleep(interval)


def _timed_out(
    timeout: float, what: str, expected: object, value: object, error: Exception | None
) -> str:
    wanted = repr(expected)
    if callable(expected):
        name = getattr(expected, "__name__", "<lambda>")
        wanted = "a value the predicate accepts" if name == "<lambda>" else f"{name}(value)"
    last = f"last error: {error!r}" if error is not None else f"last value: {value!r}"
    subject = f"{what}: " if what else ""
    return f"not within {timeout:g} s: {subject}wanted {wanted} ({last})"
