"""notifications' message rendering: pure functions, no I/O, no fakes needed.

What `render` produces is read back with the standard library's strictest parser (the default
policy), as a mail client would: what went in must come out, with no defect reported.
"""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from email.utils import parsedate_to_datetime

import pytest

from eventshop.services.notifications import domain
from eventshop.services.notifications.adapters import render

SENDER = "eventshop <no-reply@eventshop.test>"


def parsed(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, _class=EmailMessage, policy=email.policy.default)
    assert msg.defects == []
    for name in msg:
        assert msg[name].defects == (), name
    return msg


def body_of(msg: EmailMessage) -> str:
    return str(msg.get_content()).replace("\r\n", "\n")


def is_wire_format(raw: bytes) -> bool:
    """7-bit, CRLF line ends only, no line longer than RFC 5322's 998."""
    lines = raw.split(b"\r\n")
    return raw.isascii() and all(
        b"\r" not in line and b"\n" not in line and len(line) <= 998 for line in lines
    )


def test_has_the_headers_of_a_notification() -> None:
    mail = domain.welcome(user_id="u-7", email="ann@example.com", name="Ann")
    raw = render(mail, sender=SENDER)
    msg = parsed(raw)
    assert msg["From"] == SENDER
    assert msg["To"] == "ann@example.com"
    assert msg["Subject"] == "Welcome to eventshop, Ann"
    assert msg["Message-ID"] == "<welcome.u-7@eventshop>" == mail.message_id
    assert parsedate_to_datetime(str(msg["Date"])).tzinfo is not None
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["X-Eventshop-Notification"] == "welcome u-7"
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"
    assert body_of(msg) == mail.body
    assert is_wire_format(raw)


def test_an_ascii_body_goes_as_it_is() -> None:
    mail = domain.order_cancelled(order_id="o-9", email="c@example.com", reason="fraud")
    raw = render(mail, sender=SENDER, date="Mon, 24 Nov 2025 10:00:00 GMT")
    assert parsed(raw)["Content-Transfer-Encoding"] == "7bit"
    assert raw.endswith(mail.body.replace("\n", "\r\n").encode())


def test_non_ascii_subject_and_body_come_back_as_they_went() -> None:
    name = "Zoë Ångström-Łukasiewicz 日本語 👋"
    mail = domain.welcome(user_id="u-ü", email="zoe@example.com", name=name)
    raw = render(mail, sender="Bütik Ünïcode <shop@example.com>")
    msg = parsed(raw)
    assert msg["Subject"] == f"Welcome to eventshop, {name}"
    assert msg["From"].addresses[0].display_name == "Bütik Ünïcode"
    assert msg["From"].addresses[0].addr_spec == "shop@example.com"
    assert msg["X-Eventshop-Notification"] == "welcome u-ü"
    assert msg["Message-ID"] == mail.message_id
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert body_of(msg) == mail.body
    assert f"Hello {name}," in body_of(msg)
    assert is_wire_format(raw)


def test_a_long_subject_is_folded_and_unfolds_to_itself() -> None:
    for name in ["Ann " * 60, "Ünïcödé " * 30, "x" * 200]:
        mail = domain.welcome(user_id="u-1", email="a@example.com", name=name)
        raw = render(mail, sender=SENDER)
        assert parsed(raw)["Subject"] == mail.subject
        assert is_wire_format(raw)


def test_awkward_bodies_come_back_as_they_went() -> None:
    bodies = [
        "trailing spaces   \n\ttab line\t\n",
        ".\n..leading dots\n.\n",  # SMTP's end of data, were it not for dot-stuffing
        "a = b, =?utf-8?q?not-an-encoded-word?=\n",
        "x" * 2_000 + "\n",  # longer than any line may be
        "é" * 1_000 + "\n",
        "no newline at the end",
        "\n\nblank lines first\n",
    ]
    for body in bodies:
        mail = domain.Email(
            kind="welcome", ref="u-1", recipient="a@example.com", subject="s", body=body
        )
        raw = render(mail, sender=SENDER)
        assert is_wire_format(raw)
        expected = body if body.endswith("\n") else body + "\n"
        assert body_of(parsed(raw)) == expected


def test_carriage_returns_become_line_ends() -> None:
    mail = domain.Email(
        kind="welcome", ref="u", recipient="a@example.com", subject="s", body="a\r\nb\rc\n"
    )
    raw = render(mail, sender=SENDER)
    assert is_wire_format(raw)
    assert body_of(parsed(raw)) == "a\nb\nc\n"


@pytest.mark.parametrize(
    "fields",
    [
        {"subject": "hi\r\nBcc: victim@example.com"},
        {"subject": "hi\nBcc: victim@example.com"},
        {"ref": "o-1\r\nBcc: victim@example.com"},
        {"recipient": "a@example.com\r\nBcc: victim@example.com"},
    ],
)
def test_a_line_break_in_a_header_is_refused(fields: dict[str, str]) -> None:
    values = {"ref": "u", "recipient": "a@example.com", "subject": "s", **fields}
    mail = domain.Email(kind="welcome", body="b", **values)
    with pytest.raises(ValueError, match="line break"):
        render(mail, sender=SENDER)


def test_a_non_ascii_recipient_is_refused() -> None:
    mail = domain.welcome(user_id="u", email="zoë@example.com", name="Zoë")
    with pytest.raises(ValueError, match="ASCII"):
        render(mail, sender=SENDER)
