"""What the gateway sends downstream and what it relays back: pure, no network."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from eventshop.services.gateway.adapters.auth import Principal
from eventshop.services.gateway.adapters.upstream import UpstreamAnswer, identity_headers, relay

ADA = Principal(user_id="u1", email="ada@example.com", role="admin", jti="j1", expires_at=0)


def test_the_identity_sent_is_the_authenticated_one() -> None:
    assert identity_headers(ADA, "cid-1") == {
        "X-Correlation-ID": "cid-1",
        "X-User-Id": "u1",
        "X-User-Role": "admin",
        "X-User-Email": "ada@example.com",
    }


def test_an_anonymous_request_carries_only_the_correlation_id() -> None:
    assert identity_headers(None, "cid-2") == {"X-Correlation-ID": "cid-2"}


def test_an_answer_is_relayed_with_its_status_body_and_content_headers() -> None:
    answer = UpstreamAnswer(
        202,
        # as aiohttp hands them over: looked up whatever the case
        CIMultiDictProxy(
            CIMultiDict(
                {
                    "Content-Type": "application/json",
                    "Location": "/orders/o1",
                    "X-Correlation-ID": "from-the-service",
                    "Server": "uvicorn",
                }
            )
        ),
        b'{"order_id": "o1", "status": "PENDING"}',
    )
    response = relay(answer)
    assert response.status_code == 202
    assert response.body == b'{"order_id": "o1", "status": "PENDING"}'
    assert response.headers["content-type"] == "application/json"
    assert response.headers["location"] == "/orders/o1"
    assert "server" not in response.headers
    assert "x-correlation-id" not in response.headers  # the gateway sets its own (the same)


def test_an_answer_reads_as_json() -> None:
    answer = UpstreamAnswer(200, {}, b'{"checks": {"database": true}}')
    assert answer.json() == {"checks": {"database": True}}
