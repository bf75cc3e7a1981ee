"""Catalog rules as tables: pure functions, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from eventshop.services.catalog import domain
from eventshop.services.catalog.domain import Product, ProductDetails

T0 = datetime(2024, 1, 1, tzinfo=UTC)
T1 = datetime(2024, 1, 2, tzinfo=UTC)
CURRENT = Product("SKU-1", "Mug", 1_200, "EUR", True, 3, T0)


@pytest.mark.parametrize(
    ("wanted", "changed"),
    [
        (ProductDetails("Mug", 1_200, "EUR", True), False),
        (ProductDetails("Mug", 1_300, "EUR", True), True),
        (ProductDetails("Big mug", 1_200, "EUR", True), True),
        (ProductDetails("Mug", 1_200, "USD", True), True),
        (ProductDetails("Mug", 1_200, "EUR", False), True),
    ],
)
def test_revise(wanted: ProductDetails, changed: bool) -> None:
    revised = domain.revise(CURRENT, wanted, now=T1)
    if not changed:
        assert revised is None  # no new version, no event
        return
    assert revised is not None
    assert domain.details_of(revised) == wanted
    assert (revised.sku, revised.version, revised.updated_at) == ("SKU-1", 4, T1)
