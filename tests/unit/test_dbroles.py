"""tooling/dbroles.py without a database: identifiers, URLs and password verifiers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from eventshop.platform.secrets import secret
from eventshop.tooling.dbroles import (
    database_url,
    password_matches,
    quote_ident,
    role_name,
    scram_verifier,
)


@pytest.fixture(autouse=True)
def secrets_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "secrets"
    monkeypatch.setenv("EVENTSHOP_SECRETS_DIR", str(where))
    monkeypatch.delenv("EVENTSHOP_DATABASE_URL", raising=False)
    monkeypatch.delenv("EVENTSHOP_ORDERS_DATABASE_PASSWORD", raising=False)
    return where


@pytest.mark.parametrize("name", ["orders", "eventshop_orders", "_x", "a1_b2", "x" * 63])
def test_a_plain_identifier_is_double_quoted(name: str) -> None:
    assert quote_ident(name) == f'"{name}"'


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Orders",
        "1orders",
        "or ders",
        'or"ders',
        "orders; DROP ROLE root",
        "orders--",
        "ordérs",
        "public.orders",
        "x" * 64,
        "orders\n",
    ],
)
def test_anything_else_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a plain SQL identifier"):
        quote_ident(name)


def test_a_service_whose_role_would_not_be_an_identifier_is_refused() -> None:
    assert role_name("orders") == "eventshop_orders"
    with pytest.raises(ValueError):
        role_name('orders"; --')


def test_the_url_is_the_roles_with_its_password_on_the_platforms_database() -> None:
    password = secret("pg-orders")
    assert database_url("orders") == (
        f"postgresql://eventshop_orders:{password}@127.0.0.1:5432/eventshop"
    )
    assert database_url("orders", "postgresql://root@db.internal:6543/shop?sslmode=require") == (
        f"postgresql://eventshop_orders:{password}@db.internal:6543/shop?sslmode=require"
    )


def test_a_scram_verifier_matches_its_password_only() -> None:
    verifier = scram_verifier("s3cret", b"0123456789abcdef")
    assert verifier.startswith("SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$")
    assert password_matches(verifier, "s3cret", "eventshop_orders")
    assert not password_matches(verifier, "s3cret!", "eventshop_orders")
    assert not password_matches(None, "s3cret", "eventshop_orders")


def test_an_md5_password_is_checked_too() -> None:
    stored = "md5" + hashlib.md5(b"s3creteventshop_orders").hexdigest()
    assert password_matches(stored, "s3cret", "eventshop_orders")
    assert not password_matches(stored, "s3cret", "eventshop_users")
