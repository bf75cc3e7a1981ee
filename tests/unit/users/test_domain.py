"""Account rules: pure, no I/O."""

from __future__ import annotations

import pytest

from eventshop.services.users import domain


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("a@example.com", "a@example.com"),
        ("  Bob.Smith+shop@Mail.Example.org ", "Bob.Smith+shop@Mail.Example.org"),
    ],
)
def test_good_emails_are_kept_as_typed_but_trimmed(raw: str, clean: str) -> None:
    assert domain.check_email(raw) == clean


@pytest.mark.parametrize(
    "bad",
    ["plain", "@example.com", "a@", "a@localhost", "a@b..com", "a b@example.com",
     "a@b@example.com", "é@example.com", "a@example.", "x" * 320 + "@example.com"],
)  # fmt: skip
def test_bad_emails_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        domain.check_email(bad)


def test_emails_compare_case_insensitively() -> None:
    assert domain.email_key(" Alice@Example.COM ") == domain.email_key("alice@example.com")


@pytest.mark.parametrize(
    "raw, keys",
    [
        ("admin@eventshop.test", {"admin@eventshop.test"}),
        (" Root@X.io , ops@x.io,, ", {"root@x.io", "ops@x.io"}),
        ("", set()),
    ],
)
def test_the_admin_setting_is_a_comma_separated_list(raw: str, keys: set[str]) -> None:
    assert domain.parse_email_list(raw) == keys


@pytest.mark.parametrize(
    "email, role",
    [("admin@eventshop.test", "admin"), ("ADMIN@EventShop.test", "admin"), ("a@x.io", "customer")],
)
def test_bootstrap_emails_make_admins(email: str, role: str) -> None:
    assert domain.role_for(email, domain.parse_email_list("admin@eventshop.test")) == role
