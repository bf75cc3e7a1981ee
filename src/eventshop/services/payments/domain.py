"""Payment rules: pure, no I/O.

- `fraud_check`: whether a payment request looks fraudulent, and why. It is decided when the
  request arrives, before any charge, so a fraudulent order is failed at once.
- `on_cancel`: what a cancelled order means for its payment, whatever state that payment is in
  (or if there is none yet): the compensation half of the saga, on the payments side.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True)
class FraudRules:
    #: a single payment above this (minor units) is refused
    amount_limit_minor: int = 1_000_000
    #: payers whose email is at one of these domains (or a subdomain) are refused
    blocked_email_domains: frozenset[str] = field(default_factory=lambda: frozenset({"fraud.test"}))
    #: more than this many payment requests by one user within the window is refused
    velocity_max_requests: int = 20
    velocity_window_s: float = 60.0

    @classmethod
    def of(
        cls,
        *,
        amount_limit_minor: int,
        blocked_email_domains: Iterable[str],
        velocity_max_requests: int,
        velocity_window_s: float,
    ) -> FraudRules:
        return cls(
            amount_limit_minor=amount_limit_minor,
            blocked_email_domains=frozenset(d.strip().lower() for d in blocked_email_domains),
            velocity_max_requests=velocity_max_requests,
            velocity_window_s=velocity_window_s,
        )


@dataclass(frozen=True)
class PaymentAttempt:
    amount_minor: int
    email: str
    #: payment requests by the same user within the velocity window, this one not counted
    recent_requests: int


def fraud_check(rules: FraudRules, attempt: PaymentAttempt) -> str | None:
    """Why `attempt` is refused as fraud, or None if it may be charged."""
    if attempt.amount_minor > rules.amount_limit_minor:
        return f"amount {attempt.amount_minor} is above the limit of {rules.amount_limit_minor}"
    domain = email_domain(attempt.email)
    if domain is not None and _is_blocked(domain, rules.blocked_email_domains):
        return f"email domain {domain} is blocked"
    if attempt.recent_requests >= rules.velocity_max_requests:
        return (
            f"more than {rules.velocity_max_requests} payment requests"
            f" within {rules.velocity_window_s:g} s"
        )
    return None


def email_domain(email: str) -> str | None:
    _, at, domain = email.strip().rpartition("@")
    return domain.lower() if at and domain else None


def _is_blocked(domain: str, blocked: frozenset[str]) -> bool:
    return any(domain == b or domain.endswith("." + b) for b in blocked)


class Status(StrEnum):
    PENDING = "pending"  # accepted, waiting for the charge job
    CHARGING = "charging"  # the charge job is calling the provider
    CAPTURED = "captured"
    REFUNDING = "refunding"  # captured, the charge job is refunding it
    REFUNDED = "refunded"
    FAILED = "failed"  # fraud, declined or provider_error: never captured
    VOIDED = "voided"  # cancelled before any charge (or a tombstone)


class OnCancel(StrEnum):
    #: no payment yet: leave a tombstone so a late payment.requested is not charged
    TOMBSTONE = "tombstone"
    #: not charged yet: never charge it
    VOID = "void"
    #: being charged: let the charge finish, and refund right after if it is captured
    REFUND_AFTER_CAPTURE = "refund_after_capture"
    #: captured: refund it
    REFUND = "refund"
    #: nothing is (or will be) captured
    NOTHING = "nothing"


_ON_CANCEL: dict[Status, OnCancel] = {
    Status.PENDING: OnCancel.VOID,
    Status.CHARGING: OnCancel.REFUND_AFTER_CAPTURE,
    Status.CAPTURED: OnCancel.REFUND,
    Status.REFUNDING: OnCancel.NOTHING,
    Status.REFUNDED: OnCancel.NOTHING,
    Status.FAILED: OnCancel.NOTHING,
    Status.VOIDED: OnCancel.NOTHING,
}


def on_cancel(status: Status | None, *, charge_attempted: bool = False) -> OnCancel:
    """What a cancelled order means for its payment in `status` (None: there is no payment).

    `charge_attempted`: a provider call was already made for it. A pending payment waiting to
    be tried again after a call that got no answer may have been captured by that call: it is
    charged again with the same idempotency key, which tells, and refunded if it was.
    """
    if status is None:
        return OnCancel.TOMBSTONE
    if status is Status.PENDING and charge_attempted:
        return OnCancel.REFUND_AFTER_CAPTURE
    return _ON_CANCEL[status]
