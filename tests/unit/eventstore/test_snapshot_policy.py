"""When a snapshot is due, as a table. Pure, nothing faked."""

from __future__ import annotations

import pytest

from eventshop.platform.eventstore import SnapshotPolicy


@pytest.mark.parametrize(
    ("every", "before", "after", "due"),
    [
        (0, 0, 1_000, False),  # off
        (10, 0, 9, False),
        (10, 0, 10, True),
        (10, 9, 10, True),
        (10, 10, 11, False),
        (10, 8, 23, True),  # one append across two multiples: one snapshot
        (1, 4, 5, True),
    ],
)
def test_due(every: int, before: int, after: int, due: bool) -> None:
    assert SnapshotPolicy(every).due(before, after) is due


def test_a_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError):
        SnapshotPolicy(-1)
