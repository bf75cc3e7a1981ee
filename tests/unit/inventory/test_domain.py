"""Inventory rules as tables: pure functions, no I/O."""

from __future__ import annotations

import pytest

from eventshop.services.inventory import domain
from eventshop.services.inventory.domain import Effect, Reject, ReservationStatus, Reserve

S = ReservationStatus


@pytest.mark.parametrize(
    ("on_hand", "wanted", "expected"),
    [
        # enough of everything: reserve exactly what was asked
        ({"a": 5}, {"a": 5}, Reserve({"a": 5})),
        ({"a": 5, "b": 1}, {"a": 2, "b": 1}, Reserve({"a": 2, "b": 1})),
        # skus in stock but not asked for do not matter
        ({"a": 5, "z": 0}, {"a": 1}, Reserve({"a": 1})),
        # one unit short on one sku: nothing is reserved, that sku is named
        ({"a": 4}, {"a": 5}, Reject("out_of_stock", ("a",))),
        ({"a": 5, "b": 0}, {"a": 1, "b": 1}, Reject("out_of_stock", ("b",))),
        # every failing sku is named, sorted
        ({"c": 0, "a": 0, "b": 9}, {"c": 1, "a": 1, "b": 1}, Reject("out_of_stock", ("a", "c"))),
        # a sku never seen in product.created
        ({}, {"ghost": 1}, Reject("unknown_sku", ("ghost",))),
        # unknown wins over short: no restock can make the order succeed
        ({"a": 0}, {"a": 1, "ghost": 1}, Reject("unknown_sku", ("ghost",))),
    ],
)
def test_decide_reservation(
    on_hand: dict[str, int], wanted: dict[str, int], expected: Reserve | Reject
) -> None:
    assert domain.decide_reservation(on_hand, wanted) == expected


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([("a", 1)], {"a": 1}),
        ([("a", 1), ("b", 2)], {"a": 1, "b": 2}),
        # two lines of one sku compete for the same stock
        ([("a", 1), ("b", 2), ("a", 3)], {"a": 4, "b": 2}),
    ],
)
def test_quantities_by_sku(lines: list[tuple[str, int]], expected: dict[str, int]) -> None:
    assert domain.quantities_by_sku(lines) == expected


def test_two_lines_of_one_sku_must_fit_together() -> None:
    wanted = domain.quantities_by_sku([("a", 3), ("a", 3)])
    assert domain.decide_reservation({"a": 5}, wanted) == Reject("out_of_stock", ("a",))


def test_a_line_asks_for_at_least_one_unit() -> None:
    with pytest.raises(ValueError):
        domain.quantities_by_sku([("a", 0)])


@pytest.mark.parametrize(
    ("status", "effect"),
    [
        (None, Effect.TOMBSTONE),
        (S.RESERVED, Effect.RELEASE),
        (S.RELEASED, Effect.NOTHING),
        (S.COMMITTED, Effect.NOTHING),
        (S.REJECTED, Effect.NOTHING),
        (S.CANCELLED_BEFORE_RESERVE, Effect.NOTHING),
    ],
)
def test_on_order_cancelled(status: ReservationStatus | None, effect: Effect) -> None:
    assert domain.on_order_cancelled(status) is effect


@pytest.mark.parametrize(
    ("status", "effect"),
    [
        (None, Effect.NOTHING),
        (S.RESERVED, Effect.COMMIT),
        (S.RELEASED, Effect.NOTHING),
        (S.COMMITTED, Effect.NOTHING),
        (S.REJECTED, Effect.NOTHING),
        (S.CANCELLED_BEFORE_RESERVE, Effect.NOTHING),
    ],
)
def test_on_order_confirmed(status: ReservationStatus | None, effect: Effect) -> None:
    assert domain.on_order_confirmed(status) is effect
