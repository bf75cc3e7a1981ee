"""One request cannot hurt the next: after a service failed one request (an unhandled error, a
JSON 500 from the real uvicorn stack), the gateway's next call on the same pool succeeds."""

from __future__ import annotations

import uuid

import pytest
from fastapi import FastAPI

from eventshop.platform.http import install_conventions
from eventshop.services.gateway.adapters.upstream import Upstreams
from tests.support.loopback import serving

pytestmark = pytest.mark.integration


def failing_service() -> FastAPI:
    app = FastAPI()
    install_conventions(app)

    @app.post("/orders")
    async def place(body: dict[str, str]) -> dict[str, str]:
        if body.get("name") == "boom":
            raise RuntimeError("a bug this request found")
        return {"order_id": "o-1"}

    @app.get("/orders")
    async def mine() -> list[str]:
        return []

    return app


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_request_after_a_failed_one_succeeds_on_the_same_pool(method: str) -> None:
    async with serving(failing_service()) as [url]:
        upstreams = Upstreams.at({"orders": url}, timeout_s=5.0, connect_timeout_s=1.0)
        try:
            for _ in range(5):
                failed = await upstreams.call(
                    "orders", "POST", "/orders", who=None, correlation_id="c", json={"name": "boom"}
                )
                assert failed.status == 500
                assert failed.body.startswith(b'{"error"')
                if method == "GET":
                    ok = await upstreams.call(
                        "orders", "GET", "/orders", who=None, correlation_id="c"
                    )
                else:
                    ok = await upstreams.call(
                        "orders", "POST", "/orders", who=None, correlation_id="c",
                        json={"name": "fine"}, headers={"Idempotency-Key": uuid.uuid4().hex},
                    )  # fmt: skip
                assert ok.status in (200, 202), ok.body
        finally:
            await upstreams.aclose()
