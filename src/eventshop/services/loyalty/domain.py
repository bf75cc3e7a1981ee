"""Loyalty rules: pure, no I/O."""

from __future__ import annotations

#: one point per whole currency unit spent (prices are in minor units)
MINOR_UNITS_PER_POINT = 100


def points_for(total_minor: int) -> int:
    return max(0, total_minor // MINOR_UNITS_PER_POINT)
