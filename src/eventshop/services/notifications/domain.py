"""What each notification says, and how it is named: pure functions, no I/O.

A notification is identified by its kind and what it is about (`ref`: a user id or an order
id); its Message-ID is derived from that pair alone, so the same notification sent twice is
recognisably the same message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Kind = Literal["welcome", "order_confirmed", "order_cancelled"]

SHOP_NAME = "eventshop"
MESSAGE_ID_DOMAIN = "eventshop"

#: why an order was cancelled, said to its customer; the keys are the orders service's reasons
CANCEL_REASONS: dict[str, str] = {
    "out_of_stock": "some of the items you ordered are out of stock",
    "unknown_sku": "it contained a product we do not sell",
    "payment_declined": "your payment was declined",
    "fraud": "we could not verify your payment",
    "timeout": "we could not complete it in time",
}
UNKNOWN_CANCEL_REASON = "of a problem while processing it"

#: ISO 4217 currencies whose minor unit is not a hundredth
_MINOR_DIGITS = {
    "JPY": 0,
    "KRW": 0,
    "ISK": 0,
    "CLP": 0,
    "VND": 0,
    "BHD": 3,
    "KWD": 3,
    "JOD": 3,
    "TND": 3,
}

# characters kept as they are in a Message-ID's left part; anything else is escaped as =XX
_ID_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass(frozen=True)
class Email:
    """One notification, ready to send."""

    kind: Kind
    ref: str
    recipient: str
    subject: str
    body: str

    @property
    def message_id(self) -> str:
        return message_id(self.kind, self.ref)


class OrderLine(Protocol):
    """What a line of an order shows in an email (the contracts' `Line` is one)."""

    @property
    def sku(self) -> str: ...

    @property
    def quantity(self) -> int: ...

    @property
    def unit_price_minor(self) -> int | None: ...


def message_id(kind: Kind, ref: str) -> str:
    """The Message-ID of notification (kind, ref): the same pair always gives the same id, two
    different pairs never do (the ref is escaped, so no ref can forge another pair's id), and
    the result is a valid RFC 5322 msg-id whatever characters the ref holds."""
    escaped = "".join(c if c in _ID_SAFE else "".join(f"={b:02X}" for b in c.encode()) for c in ref)
    return f"<{kind}.{escaped or '='}@{MESSAGE_ID_DOMAIN}>"


def format_money(minor: int, currency: str) -> str:
    """12345, "EUR" -> "123.45 EUR" (minor units, per the currency's exponent)."""
    digits = _MINOR_DIGITS.get(currency.upper(), 2)
    sign = "-" if minor < 0 else ""
    whole, fraction = divmod(abs(minor), 10**digits)
    amount = f"{whole:,}" + (f".{fraction:0{digits}d}" if digits else "")
    return f"{sign}{amount} {currency.upper()}"


def cancel_reason_in_words(reason: str) -> str:
    return CANCEL_REASONS.get(reason, UNKNOWN_CANCEL_REASON)


def _one_line(text: str) -> str:
    # what goes into the Subject header must not break it into lines
    return " ".join(text.split())


def welcome(*, user_id: str, email: str, name: str) -> Email:
    name = _one_line(name) or "there"
    return Email(
        kind="welcome",
        ref=user_id,
        recipient=email,
        subject=f"Welcome to {SHOP_NAME}, {name}",
        body=(
            f"Hello {name},\n\n"
            f"welcome to {SHOP_NAME}! Your account is ready: sign in with {email}.\n\n"
            f"The {SHOP_NAME} team\n"
        ),
    )


def order_confirmed(
    *, order_id: str, email: str, total_minor: int, currency: str, lines: Sequence[OrderLine]
) -> Email:
    rows = []
    for line in lines:
        price = (
            f" at {format_money(line.unit_price_minor, currency)}"
            if line.unit_price_minor is not None
            else ""
        )
        rows.append(f"  {line.quantity} x {line.sku}{price}")
    body = "\n".join(
        [
            "Hello,",
            "",
            f"thank you for your order {order_id}: your payment went through and it is confirmed.",
            "",
            *rows,
            "",
            f"Total: {format_money(total_minor, currency)}",
            "",
            f"The {SHOP_NAME} team",
            "",
        ]
    )
    return Email(
        kind="order_confirmed",
        ref=order_id,
        recipient=email,
        subject=f"Your order {_one_line(order_id)} is confirmed",
        body=body,
    )


def order_cancelled(*, order_id: str, email: str, reason: str) -> Email:
    refund = (
        "If you were charged for it, the amount has been refunded.\n\n"
        if reason == "timeout"  # the only reason a payment may have been taken first
        else ""
    )
    return Email(
        kind="order_cancelled",
        ref=order_id,
        recipient=email,
        subject=f"Your order {_one_line(order_id)} was cancelled",
        body=(
            "Hello,\n\n"
            f"we are sorry: your order {order_id} was cancelled because "
            f"{cancel_reason_in_words(reason)}.\n\n"
            f"{refund}"
            f"The {SHOP_NAME} team\n"
        ),
    )
