"""Per-installation secrets: made once, kept private, never a constant."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from eventshop.platform.secrets import read_secret, secret


@pytest.fixture(autouse=True)
def secrets_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "secrets"
    monkeypatch.setenv("EVENTSHOP_SECRETS_DIR", str(where))
    return where


def test_a_secret_is_made_once_and_then_read(secrets_here: Path) -> None:
    assert read_secret("amqp-orders") is None
    first = secret("amqp-orders")
    assert len(first) >= 43  # 32 random bytes, base64url
    assert secret("amqp-orders") == first == read_secret("amqp-orders")
    assert secret("amqp-payments") != first


def test_only_its_owner_can_read_it(secrets_here: Path) -> None:
    secret("gateway-jwt")
    assert stat.S_IMODE(secrets_here.stat().st_mode) == 0o700
    assert stat.S_IMODE((secrets_here / "gateway-jwt").stat().st_mode) == 0o600


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "", ".hidden", "UPPER"])
def test_a_name_cannot_leave_the_directory(name: str) -> None:
    with pytest.raises(ValueError, match="not a secret's name"):
        secret(name)
