"""Payment rules as tables: fraud checks and what a cancelled order means for its payment.

Pure: no I/O, nothing faked.
"""

from __future__ import annotations

import pytest

from eventshop.services.payments.domain import (
    FraudRules,
    OnCancel,
    PaymentAttempt,
    Status,
    fraud_check,
    on_cancel,
)
from eventshop.services.payments.settings import PaymentsSettings

RULES = FraudRules()  # the defaults: 1_000_000 minor, fraud.test, 20 requests in 60 s


@pytest.mark.parametrize(
    ("amount", "email", "recent", "refused_for"),
    [
        (1_000, "ada@example.com", 0, None),
        (1_000_000, "ada@example.com", 0, None),  # the limit itself is allowed
        (1_000_001, "ada@example.com", 0, "above the limit"),
        (0, "eve@fraud.test", 0, "fraud.test is blocked"),
        (0, "Eve@FRAUD.TEST", 0, "fraud.test is blocked"),
        (0, "eve@mail.fraud.test", 0, "mail.fraud.test is blocked"),
        (0, "eve@notfraud.test", 0, None),  # not a subdomain
        (0, "no-at-sign", 0, None),
        (0, "ada@example.com", 19, None),
        (0, "ada@example.com", 20, "more than 20 payment requests within 60 s"),
        (0, "ada@example.com", 500, "more than 20"),
        # several reasons: the amount is named first
        (2_000_000, "eve@fraud.test", 99, "above the limit"),
    ],
)
def test_fraud_check(amount: int, email: str, recent: int, refused_for: str | None) -> None:
    verdict = fraud_check(
        RULES, PaymentAttempt(amount_minor=amount, email=email, recent_requests=recent)
    )
    if refused_for is None:
        assert verdict is None
    else:
        assert verdict is not None and refused_for in verdict


def test_rules_come_from_settings() -> None:
    rules = PaymentsSettings(
        fraud_amount_limit_minor=10,
        fraud_blocked_email_domains=[" Spam.Example "],
        fraud_velocity_max_requests=2,
        fraud_velocity_window_s=5,
    ).fraud_rules()
    assert fraud_check(rules, PaymentAttempt(11, "a@b.c", 0)) is not None
    assert fraud_check(rules, PaymentAttempt(1, "a@spam.example", 0)) is not None
    assert (
        fraud_check(rules, PaymentAttempt(1, "a@b.c", 2))
        == "more than 2 payment requests within 5 s"
    )
    assert fraud_check(rules, PaymentAttempt(1, "a@b.c", 1)) is None


def test_a_lease_shorter_than_a_provider_call_is_refused() -> None:
    with pytest.raises(ValueError, match="charge_lease_s"):
        PaymentsSettings(charge_lease_s=5, provider_timeout_s=10)


@pytest.mark.parametrize(
    ("status", "attempted", "action"),
    [
        (None, False, OnCancel.TOMBSTONE),
        (Status.PENDING, False, OnCancel.VOID),
        # a retry is waiting after a call that got no answer: it may have captured
        (Status.PENDING, True, OnCancel.REFUND_AFTER_CAPTURE),
        (Status.CHARGING, True, OnCancel.REFUND_AFTER_CAPTURE),
        (Status.CAPTURED, True, OnCancel.REFUND),
        (Status.REFUNDING, True, OnCancel.NOTHING),
        (Status.REFUNDED, True, OnCancel.NOTHING),
        (Status.FAILED, False, OnCancel.NOTHING),
        (Status.FAILED, True, OnCancel.NOTHING),
        (Status.VOIDED, False, OnCancel.NOTHING),
    ],
)
def test_on_cancel(status: Status | None, attempted: bool, action: OnCancel) -> None:
    assert on_cancel(status, charge_attempted=attempted) is action
