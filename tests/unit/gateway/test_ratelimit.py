"""Fixed-window arithmetic, key names and verdicts: pure, no Redis."""

from __future__ import annotations

import pytest

from eventshop.services.gateway.adapters.ratelimit import (
    Limit,
    Window,
    counter_key,
    judge,
    retry_after_s,
    window_at,
)


@pytest.mark.parametrize(
    "now, window_s, index, remaining",
    [
        (0.0, 1, 0, 1.0),
        (10.25, 1, 10, 0.75),
        (59.9, 60, 0, 0.1),
        (60.0, 60, 1, 60.0),
        (1_700_000_010.5, 60, 28_333_333, 29.5),
    ],
)
def test_an_instant_falls_in_one_window(
    now: float, window_s: int, index: int, remaining: float
) -> None:
    window = window_at(now, window_s)
    assert window.index == index
    assert window.remaining_s == pytest.approx(remaining)


@pytest.mark.parametrize(
    "remaining, retry_after", [(0.001, 1), (0.999, 1), (1.0, 1), (1.01, 2), (29.5, 30), (60.0, 60)]
)
def test_retry_after_is_whole_seconds_never_early_never_zero(
    remaining: float, retry_after: int
) -> None:
    assert retry_after_s(Window(index=0, remaining_s=remaining)) == retry_after


def test_keys_name_the_scope_the_caller_and_the_window() -> None:
    window = Window(index=42, remaining_s=0.5)
    assert counter_key("", "ip", "10.0.0.1", window) == "ratelimit:ip:10.0.0.1:42"
    assert counter_key("t1:", "user", "u-9", window) == "t1:ratelimit:user:u-9:42"
    assert counter_key("", "ip", "10.0.0.1", Window(43, 1.0)) != counter_key(
        "", "ip", "10.0.0.1", window
    )


IP = Limit("ip", "10.0.0.1", 50)
USER = Limit("user", "u1", 20)


@pytest.mark.parametrize(
    "counts, allowed, refused_by",
    [
        ([1, 1], True, None),
        ([50, 20], True, None),  # the limit-th request still passes
        ([51, 1], False, IP),
        ([3, 21], False, USER),
        ([51, 21], False, IP),
    ],
)
def test_a_request_is_refused_once_any_counter_passes_its_limit(
    counts: list[int], allowed: bool, refused_by: Limit | None
) -> None:
    verdict = judge([IP, USER], counts, Window(index=0, remaining_s=0.3))
    assert verdict.allowed is allowed
    assert verdict.refused_by == refused_by
    assert verdict.retry_after_s == (0 if allowed else 1)
