"""The gateway's settings: where services are, and no development secret in production."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from eventshop.services import BACKENDS
from eventshop.services.gateway import settings as gateway_settings
from eventshop.services.gateway.settings import GatewaySettings

STRONG = "a-production-secret-that-is-32-chars-or-more"


def test_development_runs_with_this_installations_own_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTSHOP_SECRETS_DIR", str(tmp_path))
    settings = GatewaySettings(environment="development")
    assert settings.jwt_secret is None
    key = settings.signing_key()
    assert len(key) >= 32 and key == GatewaySettings().signing_key()  # made once, then kept
    assert key not in Path(gateway_settings.__file__).read_text()
    assert settings.jwt_ttl_s == 3_600


def test_a_development_key_that_cannot_be_kept_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_a_directory = tmp_path / "a-file"
    not_a_directory.write_text("")
    monkeypatch.setenv("EVENTSHOP_SECRETS_DIR", str(not_a_directory))
    settings = GatewaySettings()  # reads nothing yet: the key is made when the service starts
    with pytest.raises(RuntimeError, match="EVENTSHOP_GATEWAY_JWT_SECRET"):
        settings.signing_key()


def test_production_refuses_to_start_without_a_secret_of_its_own() -> None:
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        GatewaySettings(environment="production")


@pytest.mark.parametrize("environment", ["development", "production"])
def test_a_short_secret_is_refused(environment: str) -> None:
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        GatewaySettings(environment=environment, jwt_secret="short-but-set")  # type: ignore[arg-type]


def test_production_takes_a_strong_secret() -> None:
    settings = GatewaySettings(environment="production", jwt_secret=STRONG)  # type: ignore[arg-type]
    assert settings.signing_key() == STRONG
    assert STRONG not in repr(settings)


def test_services_default_to_their_loopback_port_and_can_be_moved() -> None:
    settings = GatewaySettings(upstreams={"orders": "http://orders.internal:9000"})
    urls = settings.upstream_urls()
    assert sorted(urls) == sorted(BACKENDS)  # every service behind the gateway, and only those
    assert urls["users"] == "http://127.0.0.1:8001"
    assert urls["archive"] == "http://127.0.0.1:8008"
    assert urls["orders"] == "http://orders.internal:9000"


@pytest.mark.parametrize("name", ["gateway", "shipping", "Orders"])
def test_an_upstream_that_is_no_service_is_refused(name: str) -> None:
    with pytest.raises(ValidationError, match=f"no such service: {name}"):
        GatewaySettings(upstreams={name: "http://10.0.0.9:9000"})


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTSHOP_GATEWAY_RATE_PER_USER", "7")
    monkeypatch.setenv("EVENTSHOP_GATEWAY_RATE_PER_IP", "70")
    monkeypatch.setenv("EVENTSHOP_GATEWAY_UPSTREAMS", '{"catalog": "http://10.0.0.2:8002"}')
    settings = GatewaySettings()
    assert (settings.rate_per_user, settings.rate_per_ip) == (7, 70)
    assert settings.upstream_urls()["catalog"] == "http://10.0.0.2:8002"
