"""Placing an order: pricing from the local price list, as tables. Pure: no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from eventshop.contracts import orders as integration
from eventshop.contracts.common import Line
from eventshop.services.orders import domain
from eventshop.services.orders.domain import Price

PRICES = {
    "A": Price("A", "Apple", 150, "EUR"),
    "B": Price("B", "Bread", 320, "EUR"),
    "OLD": Price("OLD", "Discontinued", 100, "EUR", active=False),
    "US": Price("US", "Bagel", 200, "USD"),
    "FREE": Price("FREE", "Sticker", 0, "EUR"),
}


def want(*lines: tuple[str, int]) -> list[Line]:
    return [Line(sku=sku, quantity=quantity) for sku, quantity in lines]


@pytest.mark.parametrize(
    ("wanted", "total", "currency"),
    [
        (want(("A", 1)), 150, "EUR"),
        (want(("A", 3), ("B", 2)), 3 * 150 + 2 * 320, "EUR"),
        (want(("FREE", 100)), 0, "EUR"),
        (want(("US", 2)), 400, "USD"),
    ],
)
def test_prices_every_line(wanted: list[Line], total: int, currency: str) -> None:
    lines, got_total, got_currency = domain.price_lines(wanted, PRICES)
    assert (got_total, got_currency) == (total, currency)
    assert [(line.sku, line.quantity) for line in lines] == [(w.sku, w.quantity) for w in wanted]
    assert all(line.unit_price_minor == PRICES[line.sku].price_minor for line in lines)


@pytest.mark.parametrize(
    ("wanted", "error", "named"),
    [
        (want(("NOPE", 1)), domain.UnknownSkuError, ("NOPE",)),
        (want(("A", 1), ("OLD", 1)), domain.UnknownSkuError, ("OLD",)),
        (want(("X", 1), ("A", 1), ("Y", 2)), domain.UnknownSkuError, ("X", "Y")),
        (want(("A", 1), ("US", 1)), domain.MixedCurrencyError, ("EUR", "USD")),
    ],
)
def test_refuses(wanted: list[Line], error: type[Exception], named: tuple[str, ...]) -> None:
    with pytest.raises(error) as caught:
        domain.price_lines(wanted, PRICES)
    for name in named:
        assert name in str(caught.value)


def test_place_starts_a_pending_order_and_announces_it() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    decision = domain.place(
        order_id="o-1",
        user_id="u-1",
        email="ada@example.com",
        wanted=want(("A", 2)),
        prices=PRICES,
        payment_token="tok_decline",
        now=now,
        timeout=timedelta(seconds=30),
    )
    state = decision.state
    assert (state.status, state.version, state.total_minor) == (domain.Status.PENDING, 1, 300)
    assert state.deadline == now + timedelta(seconds=30)
    assert state.payment_token == "tok_decline"
    (placed,) = decision.record
    assert isinstance(placed, domain.OrderPlaced)
    assert decision.emit == (
        integration.OrderCreated(
            order_id="o-1",
            user_id="u-1",
            email="ada@example.com",
            lines=(Line(sku="A", quantity=2, unit_price_minor=150),),
            total_minor=300,
            currency="EUR",
        ),
    )
