"""loyalty's rule as a table: one point per whole currency unit, never negative (pure, no I/O)."""

from __future__ import annotations

import pytest

from eventshop.services.loyalty import domain


@pytest.mark.parametrize(
    ("total_minor", "points"),
    [
        (0, 0),
        (99, 0),
        (100, 1),
        (199, 1),
        (12_345, 123),
        (-500, 0),  # a refund-shaped total earns nothing rather than taking points away
    ],
)
def test_points_for_a_total(total_minor: int, points: int) -> None:
    assert domain.points_for(total_minor) == points
