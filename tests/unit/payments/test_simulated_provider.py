"""The simulated provider's test mode: deterministic tokens, idempotency keys, random declines.

In-process and fast (no latency): nothing to fake.
"""

from __future__ import annotations

import random

import pytest

from eventshop.services.payments.adapters import ProviderError, SimulatedProvider


def provider(decline_rate: float = 0.0, rng: random.Random | None = None) -> SimulatedProvider:
    return SimulatedProvider(latency_ms=0, slow_latency_ms=0, decline_rate=decline_rate, rng=rng)


@pytest.mark.parametrize(
    ("token", "captured", "code"),
    [
        ("tok_visa", True, ""),
        ("tok_mastercard", True, ""),
        ("tok_slow", True, ""),
        ("tok_decline", False, "card_declined"),
        ("tok_unheard_of", False, "invalid_token"),
    ],
)
async def test_test_tokens(token: str, captured: bool, code: str) -> None:
    charge = await provider().charge(
        idempotency_key="p-1", token=token, amount_minor=100, currency="EUR"
    )
    assert (charge.captured, charge.decline_code) == (captured, code)


async def test_tok_error_fails_every_time() -> None:
    p = provider()
    for _ in range(2):
        with pytest.raises(ProviderError):
            await p.charge(idempotency_key="p-1", token="tok_error", amount_minor=1, currency="EUR")


async def test_the_same_idempotency_key_gets_the_same_outcome() -> None:
    p = provider(decline_rate=0.5, rng=random.Random(7))
    first = [
        await p.charge(idempotency_key=f"p-{i}", token="tok_visa", amount_minor=1, currency="EUR")
        for i in range(40)
    ]
    again = [
        await p.charge(idempotency_key=f"p-{i}", token="tok_visa", amount_minor=1, currency="EUR")
        for i in range(40)
    ]
    assert first == again
    assert {c.captured for c in first} == {True, False}  # the rate does decline some
    refund = await p.refund(
        idempotency_key="refund:p-0", charge_reference="ch_1", amount_minor=1, currency="EUR"
    )
    assert refund == await p.refund(
        idempotency_key="refund:p-0", charge_reference="ch_1", amount_minor=1, currency="EUR"
    )
