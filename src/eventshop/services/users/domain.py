"""Account rules: pure, no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

Role = Literal["customer", "admin"]

MAX_EMAIL_LENGTH = 320  # RFC 5321: 64 (local part) + 1 + 255 (domain)


def email_key(email: str) -> str:
    """The form two emails are compared in: accounts are unique case-insensitively."""
    return email.strip().lower()


def check_email(email: str) -> str:
    """The email, trimmed, if it looks deliverable; ValueError saying why not.

    Deliberately loose (one `@`, a dotted domain, no spaces): the real check is the welcome
    mail. ASCII only, because the address travels onwards in HTTP headers (X-User-Email).
    """
    email = email.strip()
    if not email.isascii():
        raise ValueError("email must be ASCII")
    if len(email) > MAX_EMAIL_LENGTH:
        raise ValueError(f"email is longer than {MAX_EMAIL_LENGTH} characters")
    local, at, domain = email.rpartition("@")
    if not at or not local or "@" in local or any(c.isspace() for c in email):
        raise ValueError("not an email address")
    labels = domain.split(".")
    if len(labels) < 2 or not all(labels):
        raise ValueError("the email's domain must have a dot, e.g. example.com")
    return email


def parse_email_list(raw: str) -> frozenset[str]:
    """A comma-separated list of emails (a setting) as comparison keys; blanks are skipped."""
    return frozenset(email_key(part) for part in raw.split(",") if part.strip())


def role_for(email: str, admin_emails: Iterable[str]) -> Role:
    """The role a new account gets: admin for the bootstrap emails, customer otherwise.

    `admin_emails` holds comparison keys (see `email_key`).
    """
    return "admin" if email_key(email) in set(admin_emails) else "customer"
