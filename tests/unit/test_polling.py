"""`tests.support.polling.eventually`, the one polling helper every test layer uses."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import pytest

from tests.support.polling import eventually


async def test_a_sync_probe_until_it_equals_the_expected_value() -> None:
    counter = itertools.count()
    assert await eventually(lambda: next(counter), 3, timeout=1, interval=0) == 3


async def test_an_async_probe_until_the_predicate_accepts_its_value() -> None:
    counter = itertools.count()

    async def probe() -> list[int]:
        return list(range(next(counter)))

    got = await eventually(probe, lambda xs: len(xs) == 2, timeout=1, interval=0)
    assert got == [0, 1]


async def test_the_default_expectation_is_a_value_equal_to_true_not_any_truthy_one() -> None:
    answers = iter([False, None, True])
    assert await eventually(lambda: next(answers), timeout=1, interval=0) is True
    with pytest.raises(AssertionError, match=r"wanted True \(last value: 2\)"):
        await eventually(lambda: 2, timeout=0.05, interval=0.01)


async def test_a_timeout_names_what_was_awaited_what_was_wanted_and_the_last_value() -> None:
    with pytest.raises(AssertionError) as failed:
        await eventually(lambda: 1, 2, timeout=0.05, interval=0.01, what="the count")
    assert str(failed.value) == "not within 0.05 s: the count: wanted 2 (last value: 1)"

    with pytest.raises(AssertionError, match=re.escape("wanted a value the predicate accepts")):
        await eventually(lambda: [], lambda xs: len(xs) == 1, timeout=0.05, interval=0.01)


async def test_an_error_ends_the_wait_at_once_unless_it_is_retried() -> None:
    calls = 0

    def probe() -> int:
        nonlocal calls
        calls += 1
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        await eventually(probe, 1, timeout=5)
    assert calls == 1

    with pytest.raises(AssertionError, match=r"last error: ConnectionError\('refused'\)") as e:
        await eventually(probe, 1, timeout=0.05, interval=0.01, retry_on=(ConnectionError,))
    assert isinstance(e.value.__cause__, ConnectionError)
    assert calls > 2


async def test_a_retried_error_then_a_good_value() -> None:
    answers: Iterator[int | Exception] = iter([ConnectionError("x"), ConnectionError("y"), 7])

    def probe() -> int:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert await eventually(probe, 7, timeout=1, interval=0, retry_on=(ConnectionError,)) == 7
