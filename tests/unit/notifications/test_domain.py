"""notifications' templates and Message-IDs: pure functions, no I/O, no fakes needed."""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass

import pytest

from eventshop.services.notifications import domain
from eventshop.services.notifications.adapters import render

# RFC 5322 msg-id with a dot-atom left part
ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
MSG_ID = re.compile(rf"^<{ATEXT}(\.{ATEXT})*@eventshop>$")


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    unit_price_minor: int | None = None


class TestMessageId:
    def test_is_derived_from_kind_and_ref_only(self) -> None:
        assert domain.message_id("welcome", "u-1") == "<welcome.u-1@eventshop>"
        assert domain.message_id("welcome", "u-1") == domain.message_id("welcome", "u-1")

    def test_is_the_emails_own(self) -> None:
        mail = domain.order_cancelled(order_id="o-9", email="a@example.com", reason="fraud")
        assert mail.message_id == domain.message_id("order_cancelled", "o-9")

    @pytest.mark.parametrize(
        "ref",
        ["plain", "a.b", "a=2Eb", "x@y", "<evil>", "with space", "ünï", "a..b", ".", "=", ""],
    )
    def test_is_a_valid_msg_id_whatever_the_ref(self, ref: str) -> None:
        assert MSG_ID.match(domain.message_id("order_confirmed", ref))

    def test_never_gives_two_notifications_the_same_id(self) -> None:
        refs = ["a.b", "a=2Eb", "a_b", "a-b", "ab", "a b", "a=20b", "=", "", "u1", "U1"]
        pairs = [(kind, ref) for kind in ("welcome", "order_confirmed") for ref in refs]
        ids = {domain.message_id(kind, ref) for kind, ref in pairs}  # type: ignore[arg-type]
        assert len(ids) == len(pairs)

    def test_is_the_message_id_header_of_the_mail_sent(self) -> None:
        mail = domain.welcome(user_id="u-7", email="ann@example.com", name="Ann")
        raw = render(mail, sender="shop <no-reply@example.com>")
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert msg["Message-ID"] == "<welcome.u-7@eventshop>"


class TestWelcome:
    def test_greets_the_new_user_at_their_address(self) -> None:
        mail = domain.welcome(user_id="u-1", email="ann@example.com", name="Ann")
        assert (mail.kind, mail.ref, mail.recipient) == ("welcome", "u-1", "ann@example.com")
        assert mail.subject == "Welcome to eventshop, Ann"
        assert "Hello Ann," in mail.body
        assert "ann@example.com" in mail.body

    @pytest.mark.parametrize(
        ("name", "shown"), [("Ann\r\nBcc: x@y", "Ann Bcc: x@y"), ("  ", "there"), ("", "there")]
    )
    def test_a_name_never_breaks_the_subject_line(self, name: str, shown: str) -> None:
        mail = domain.welcome(user_id="u-1", email="a@example.com", name=name)
        assert mail.subject == f"Welcome to eventshop, {shown}"
        raw = render(mail, sender="s@example.com")  # refuses a line break in a header
        assert email.message_from_bytes(raw, policy=email.policy.default)["Subject"] == mail.subject


class TestOrderConfirmed:
    def test_lists_the_lines_and_the_total(self) -> None:
        mail = domain.order_confirmed(
            order_id="o-1",
            email="bob@example.com",
            total_minor=125_050,
            currency="EUR",
            lines=[Line("SKU-1", 2, 50_000), Line("SKU-2", 1, 25_050), Line("SKU-3", 3)],
        )
        assert (mail.kind, mail.ref, mail.recipient) == (
            "order_confirmed",
            "o-1",
            "bob@example.com",
        )
        assert mail.subject == "Your order o-1 is confirmed"
        assert "  2 x SKU-1 at 500.00 EUR\n" in mail.body
        assert "  1 x SKU-2 at 250.50 EUR\n" in mail.body
        assert "  3 x SKU-3\n" in mail.body
        assert "Total: 1,250.50 EUR" in mail.body


class TestOrderCancelled:
    @pytest.mark.parametrize(
        ("reason", "words"),
        [
            ("out_of_stock", "because some of the items you ordered are out of stock."),
            ("unknown_sku", "because it contained a product we do not sell."),
            ("payment_declined", "because your payment was declined."),
            ("fraud", "because we could not verify your payment."),
            ("timeout", "because we could not complete it in time."),
            ("a_reason_added_later", "because of a problem while processing it."),
        ],
    )
    def test_says_the_reason_in_words(self, reason: str, words: str) -> None:
        mail = domain.order_cancelled(order_id="o-2", email="c@example.com", reason=reason)
        assert (mail.kind, mail.ref, mail.recipient) == ("order_cancelled", "o-2", "c@example.com")
        assert mail.subject == "Your order o-2 was cancelled"
        assert f"your order o-2 was cancelled {words}" in mail.body
        assert reason not in mail.body  # words, not codes

    def test_every_reason_the_orders_service_gives_has_words(self) -> None:
        from typing import get_args

        from eventshop.contracts.orders import CancelReason

        assert set(get_args(CancelReason)) <= set(domain.CANCEL_REASONS)

    def test_mentions_a_refund_only_when_a_payment_may_have_been_taken(self) -> None:
        def body(reason: str) -> str:
            return domain.order_cancelled(order_id="o", email="e@x.io", reason=reason).body

        assert "refunded" in body("timeout")
        assert "refunded" not in body("payment_declined")
        assert "refunded" not in body("out_of_stock")


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (0, "EUR", "0.00 EUR"),
        (5, "EUR", "0.05 EUR"),
        (123_456_789, "usd", "1,234,567.89 USD"),
        (-250, "EUR", "-2.50 EUR"),
        (1_500, "JPY", "1,500 JPY"),
        (1_234, "KWD", "1.234 KWD"),
    ],
)
def test_format_money(minor: int, currency: str, text: str) -> None:
    assert domain.format_money(minor, currency) == text
