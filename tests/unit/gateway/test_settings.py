"""The gateway's settings: where services are, and no development secret in production."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from eventshop.services import BACKENDS
from eventshop.services.gateway.settings import DEV_JWT_SECRET, GatewaySettings

STRONG = "a-production-secret-that-is-32-chars-or-more"


def test_development_runs_with_the_development_secret() -> None:
    settings = GatewaySettings(environment="development")
    assert settings.jwt_secret.get_secret_value() == DEV_JWT_SECRET
    assert settings.jwt_ttl_s == 3_600


@pytest.mark.parametrize("secret", [DEV_JWT_SECRET, "short-but-not-the-default"])
def test_production_refuses_a_weak_or_default_secret(secret: str) -> None:
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        GatewaySettings(environment="production", jwt_secret=secret)  # type: ignore[arg-type]


def test_production_takes_a_strong_secret() -> None:
    settings = GatewaySettings(environment="production", jwt_secret=STRONG)  # type: ignore[arg-type]
    assert settings.jwt_secret.get_secret_value() == STRONG
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
