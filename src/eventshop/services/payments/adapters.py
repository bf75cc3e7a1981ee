"""The payment provider: the port payments charges through, and a simulated provider for
development and tests that behaves like a real one's test mode.

Every call carries an idempotency key (the payment id for a charge, "refund:<payment id>" for
a refund): a call repeated after a timeout or a crash, with the same key, returns the first
call's outcome and never charges twice, as the real providers' idempotency keys do.
"""

from __future__ import annotations

import asyncio
import collections
import random
import uuid
from dataclasses import dataclass
from typing import Protocol, TypeVar

V = TypeVar("V")


@dataclass(frozen=True)
class Charge:
    """A charge's outcome: captured, or declined with the provider's code."""

    captured: bool
    reference: str
    decline_code: str = ""


class ProviderError(Exception):
    """The provider gave no answer (network, 5xx): the outcome is unknown, try again later."""


class PaymentProvider(Protocol):
    async def charge(
        self, *, idempotency_key: str, token: str, amount_minor: int, currency: str
    ) -> Charge: ...

    async def refund(
        self, *, idempotency_key: str, charge_reference: str, amount_minor: int, currency: str
    ) -> str:
        """Refund a captured charge in full; returns the refund's reference."""
        ...


#: test tokens, as in a real provider's test mode
TOKEN_VISA = "tok_visa"  # captured
TOKEN_MASTERCARD = "tok_mastercard"  # captured
TOKEN_DECLINE = "tok_decline"  # declined (card_declined)
TOKEN_SLOW = "tok_slow"  # captured after the slow latency: makes an order time out
TOKEN_ERROR = "tok_error"  # the provider fails (processing_error) on every try


class SimulatedProvider:
    """An in-process provider with configurable latency and random declines.

    Outcomes are remembered per idempotency key (the latest `remember` of them), so retries
    behave as with a real provider. Any token not listed above is declined as invalid.
    """

    def __init__(
        self,
        *,
        latency_ms: int = 20,
        slow_latency_ms: int = 10_000,
        decline_rate: float = 0.0,
        rng: random.Random | None = None,
        remember: int = 100_000,
    ) -> None:
        self._latency_s = latency_ms / 1_000
        self._slow_latency_s = slow_latency_ms / 1_000
        self._decline_rate = decline_rate
        self._rng = rng or random.Random()
        self._remember = remember
        self._charges: collections.OrderedDict[str, Charge] = collections.OrderedDict()
        self._refunds: collections.OrderedDict[str, str] = collections.OrderedDict()
        #: the latest charge calls made (idempotency key, token): what a test inspects
        self.calls: collections.deque[tuple[str, str]] = collections.deque(maxlen=10_000)

    async def charge(
        self, *, idempotency_key: str, token: str, amount_minor: int, currency: str
    ) -> Charge:
        self.calls.append((idempotency_key, token))
        await asyncio.sleep(self._slow_latency_s if token == TOKEN_SLOW else self._latency_s)
        if token == TOKEN_ERROR:
            raise ProviderError("processing_error (simulated)")
        known = self._charges.get(idempotency_key)
        if known is not None:
            return known
        if token not in (TOKEN_VISA, TOKEN_MASTERCARD, TOKEN_SLOW, TOKEN_DECLINE):
            outcome = Charge(False, _reference("ch"), "invalid_token")
        elif token == TOKEN_DECLINE:
            outcome = Charge(False, _reference("ch"), "card_declined")
        elif self._decline_rate and self._rng.random() < self._decline_rate:
            outcome = Charge(False, _reference("ch"), "card_declined (random)")
        else:
            outcome = Charge(True, _reference("ch"))
        _keep(self._charges, idempotency_key, outcome, self._remember)
        return outcome

    async def refund(
        self, *, idempotency_key: str, charge_reference: str, amount_minor: int, currency: str
    ) -> str:
        await asyncio.sleep(self._latency_s)
        known = self._refunds.get(idempotency_key)
        if known is not None:
            return known
        reference = _reference("re")
        _keep(self._refunds, idempotency_key, reference, self._remember)
        return reference


def _reference(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def _keep(memory: collections.OrderedDict[str, V], key: str, value: V, limit: int) -> None:
    memory[key] = value
    while len(memory) > limit:
        memory.popitem(last=False)
